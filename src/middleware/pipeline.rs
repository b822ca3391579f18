//! The verification pipeline, written once: failure budget → lookup by hash (format,
//! SHA-256, constant-time compare, kind, state) → allow-list and binding → owner's
//! permissions → rate limit → access rule. The header is read before it
//! ([`super::service`]), the identity and the audit event after it.
//!
//! Every step is one arm of [`Verification::step_now`] (the part that needs no I/O) and, when
//! it needs the store or a limiter, one arm of [`Verification::step_io`]. The synchronous fast
//! path runs [`Verification::run_now`], which stops at the first step that needs I/O; the
//! asynchronous path runs [`Verification::run`], which does that I/O and carries on. A new
//! policy is a new stage here, and both paths run it.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

use super::layer::Config;
use super::rejection::{Rejection, RejectionKind};
use crate::denial::Denial;
use crate::identity::Identity;
use crate::rate_limit::{FailureLimits, RateLimitDecision, ceil_secs};
use crate::record::TokenRecord;
use crate::token::TokenKind;
use crate::tokens::{Digests, Lookup};

/// A refused request, with what the audit event and the response headers need.
pub(crate) struct Refusal {
    pub(crate) rejection: Rejection,
    /// The record of the presented token, when one was found.
    pub(crate) record: Option<Arc<TokenRecord>>,
    /// The rate-limit decision, for the `RateLimit-*` headers.
    pub(crate) rate: Option<RateLimitDecision>,
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        Self {
            rejection,
            record: None,
            rate: None,
        }
    }
}

/// The steps, in the order they run.
enum Stage {
    /// The client's failure budget (with failure limits): a blocked client is refused
    /// before the store is asked. Shared limits are asked in [`Verification::step_io`].
    Gate,
    /// Format, SHA-256, lookup by hash, constant-time compare, kind, revocation, expiry.
    Lookup,
    /// The same, when the store must be asked: the kind the prefix names, and the digests
    /// to look up.
    Fetch(TokenKind, Digests),
    /// The policies kept on the record: allow-list, then the binding's fingerprint (before
    /// the rate limit, so requests from outside do not use up the token's budget).
    RecordPolicies,
    /// A binding to settle with the store (first use, or another fingerprint).
    Settle(String),
    /// The owner's current permissions (with a permission resolver).
    Owner,
    /// The token's rate limit (with rate limits).
    Rate,
    /// The layer's access rule.
    Access,
    /// A refusal that counts as a failure, to count in shared failure limits first.
    Count(Denial, Option<Arc<TokenRecord>>),
    /// Admitted.
    Done,
}

/// What [`Verification::run_now`] reached.
pub(crate) enum Step {
    /// Every step passed.
    Admitted,
    /// A step refused the request.
    Refused(Refusal),
    /// The next step needs I/O: go on with [`Verification::run`].
    NeedsIo,
}

/// One request's way through the steps.
pub(crate) struct Verification {
    stage: Stage,
    /// [`Tokens::now_nanos`](crate::Tokens::now_nanos), read once (and again after I/O).
    now: i128,
    /// Who a failure counts against (with failure limits): the client, or the socket peer
    /// when the client is unknown.
    failure_key: Option<IpAddr>,
    identity: Option<Identity>,
    rate: Option<RateLimitDecision>,
    /// The current step waits for its I/O ([`step_io`](Self::step_io)).
    pending_io: bool,
}

impl Verification {
    pub(crate) fn new(now: i128, failure_key: Option<IpAddr>) -> Self {
        Self {
            stage: Stage::Gate,
            now,
            failure_key,
            identity: None,
            rate: None,
            pending_io: false,
        }
    }

    /// The identity and the rate-limit decision of an admitted request.
    pub(crate) fn into_admitted(self) -> (Option<Identity>, Option<RateLimitDecision>) {
        (self.identity, self.rate)
    }

    /// Runs the steps that need no I/O, from where the request stands, until it is
    /// admitted, refused, or a step needs I/O. `client_ip` is asked only for a token with
    /// an allow-list.
    #[inline]
    pub(crate) fn run_now(
        &mut self,
        config: &Config,
        method: &Method,
        token: &str,
        client_ip: &(impl Fn() -> Option<IpAddr> + ?Sized),
        headers: &HeaderMap,
    ) -> Step {
        loop {
            if let Stage::Done = self.stage {
                return Step::Admitted;
            }
            match self.step_now(config, method, token, client_ip, headers) {
                Ok(true) => {}
                Ok(false) => {
                    self.pending_io = true;
                    return Step::NeedsIo;
                }
                Err(refusal) => return Step::Refused(refusal),
            }
        }
    }

    /// Runs every step, with the I/O they need.
    pub(crate) async fn run(
        &mut self,
        config: &Config,
        method: &Method,
        token: &str,
        client_ip: &(impl Fn() -> Option<IpAddr> + Sync + ?Sized),
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        loop {
            // A step that already asked for I/O (in `run_now`) is not run again.
            if !self.pending_io {
                match self.run_now(config, method, token, client_ip, headers) {
                    Step::Admitted => return Ok(()),
                    Step::Refused(refusal) => return Err(refusal),
                    Step::NeedsIo => {}
                }
            }
            self.pending_io = false;
            self.step_io(config, client_ip, headers).await?;
            self.now = config.tokens.now_nanos();
        }
    }

    /// The current step, without I/O. `Ok(true)`: on to the next one; `Ok(false)`: this
    /// step needs I/O ([`step_io`](Self::step_io)).
    #[inline]
    fn step_now(
        &mut self,
        config: &Config,
        method: &Method,
        token: &str,
        client_ip: &(impl Fn() -> Option<IpAddr> + ?Sized),
        headers: &HeaderMap,
    ) -> Result<bool, Refusal> {
        match &self.stage {
            Stage::Gate => {
                if let Some((f, ip)) = self.failures(config) {
                    if f.is_shared() {
                        return Ok(false);
                    }
                    if let Some(wait) = f.blocked_local(ip) {
                        return Err(rate_limited(wait).into());
                    }
                }
                self.stage = Stage::Lookup;
            }
            Stage::Count(..) => return Ok(false),
            Stage::Lookup => {
                let accept = config.accept.as_deref();
                match config.tokens.lookup_now(token, accept, self.now) {
                    Lookup::Decided(Ok(identity)) => self.admit_token(identity),
                    Lookup::Decided(Err(d)) => return self.refuse_now(config, d.denial, d.record),
                    Lookup::Fetch(kind, digests) => {
                        self.stage = Stage::Fetch(kind, digests);
                        return Ok(false);
                    }
                }
            }
            Stage::Fetch(..) => return Ok(false),
            Stage::RecordPolicies => {
                let Some(identity) = &self.identity else {
                    return Err(Rejection::new(RejectionKind::UnknownToken).into());
                };
                match config
                    .tokens
                    .record_policies_now(identity, client_ip, headers, self.now)
                {
                    Ok(None) => self.stage = Stage::Owner,
                    Ok(Some(fingerprint)) => {
                        self.stage = Stage::Settle(fingerprint.to_owned());
                        return Ok(false);
                    }
                    Err(denial) => return self.refuse_now(config, denial, self.record()),
                }
            }
            Stage::Settle(_) => return Ok(false),
            Stage::Owner => {
                if config.resolver.is_some() {
                    return Ok(false);
                }
                self.stage = Stage::Rate;
            }
            Stage::Rate => {
                if config.rates.is_some() {
                    return Ok(false);
                }
                self.stage = Stage::Access;
            }
            Stage::Access => {
                let allowed = match &self.identity {
                    Some(identity) => config.check_access(method, identity),
                    None => Err(Rejection::new(RejectionKind::UnknownToken)),
                };
                if let Err(rejection) = allowed {
                    return Err(Refusal {
                        rejection,
                        record: self.record(),
                        rate: self.rate,
                    });
                }
                self.stage = Stage::Done;
            }
            Stage::Done => {}
        }
        Ok(true)
    }

    /// The I/O of the current step: the store's lookup, the binding's write, the owner's
    /// permissions, the rate limiter. Moves on to the next step when it passes.
    async fn step_io(
        &mut self,
        config: &Config,
        client_ip: &(impl Fn() -> Option<IpAddr> + Sync + ?Sized),
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Gate => {
                if let Some((f, ip)) = self.failures(config) {
                    match f.blocked(ip).await {
                        Ok(None) => {}
                        Ok(Some(wait)) => return Err(rate_limited(wait).into()),
                        Err(error) => {
                            tracing::warn!(%error, "failure limits unavailable; refusing the request");
                            return Err(Rejection::new(RejectionKind::StoreUnavailable).into());
                        }
                    }
                }
                self.stage = Stage::Lookup;
            }
            Stage::Count(denial, record) => {
                return Err(self.refuse_io(config, denial, record).await);
            }
            Stage::Fetch(kind, digests) => {
                let accept = config.accept.as_deref();
                match config.tokens.fetch(&kind, &digests, accept).await {
                    Ok(identity) => self.admit_token(identity),
                    Err(d) => return Err(self.refuse_io(config, d.denial, d.record).await),
                }
            }
            Stage::Settle(fingerprint) => {
                let Some(identity) = &self.identity else {
                    return Err(Rejection::new(RejectionKind::UnknownToken).into());
                };
                // The use a first binding records carries the client's details too.
                let who = crate::tokens::client(client_ip, headers);
                match config
                    .tokens
                    .settle_binding(identity, &fingerprint, who)
                    .await
                {
                    Ok(()) => self.stage = Stage::Owner,
                    Err(denial) => {
                        let record = self.record();
                        return Err(self.refuse_io(config, denial, record).await);
                    }
                }
            }
            Stage::Owner => {
                let (Some(resolver), Some(identity)) = (&config.resolver, self.identity.take())
                else {
                    return Err(Rejection::new(RejectionKind::UnknownToken).into());
                };
                let record = identity.record_arc();
                let widen = config.tokens.resolver_may_widen(identity.kind());
                match crate::permissions::effective_for(&**resolver, identity, widen).await {
                    Ok(identity) => {
                        self.identity = Some(identity);
                        self.stage = Stage::Rate;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "owner permissions unavailable; refusing the request");
                        return Err(self.refuse(config, Denial::StoreUnavailable, Some(record)));
                    }
                }
            }
            Stage::Rate => {
                let (Some(limits), Some(identity)) = (&config.rates, &self.identity) else {
                    return Err(Rejection::new(RejectionKind::UnknownToken).into());
                };
                let record = identity.record();
                let checked = limits
                    .check(
                        crate::rate_limit::Lineage::of(record),
                        identity.kind(),
                        record.extras().rate_limit,
                    )
                    .await;
                match checked {
                    Ok(decision) => self.rate = decision,
                    Err(error) => {
                        tracing::warn!(%error, "rate limiter unavailable; refusing the request");
                        return Err(self.refuse_holder(config, Denial::StoreUnavailable));
                    }
                }
                if let Some(wait) = self.rate.and_then(|d| d.retry_after) {
                    return Err(Refusal {
                        rejection: Rejection::new(RejectionKind::RateLimited)
                            .with_retry_after(ceil_secs(wait)),
                        record: self.record(),
                        rate: self.rate,
                    });
                }
                self.stage = Stage::Access;
            }
            // The other steps need no I/O.
            stage => self.stage = stage,
        }
        Ok(())
    }

    fn admit_token(&mut self, identity: Identity) {
        self.identity = Some(identity);
        self.stage = Stage::RecordPolicies;
    }

    fn record(&self) -> Option<Arc<TokenRecord>> {
        self.identity.as_ref().map(Identity::record_arc)
    }

    fn failures<'c>(&self, config: &'c Config) -> Option<(&'c FailureLimits, IpAddr)> {
        config.failures.as_ref().zip(self.failure_key)
    }

    /// A refusal of the token the request holds.
    fn refuse_holder(&self, config: &Config, denial: Denial) -> Refusal {
        self.refuse(config, denial, self.record())
    }

    /// A refusal for `denial`, counted against the client when it is a failure
    /// ([`RejectionKind::counts_as_failure`]): 429 with `Retry-After` instead when the client
    /// is now over its budget. A stolen token replayed from elsewhere is throttled like a
    /// guess. Failure limits kept in process only; shared ones are counted by
    /// [`refuse_io`](Self::refuse_io).
    #[inline]
    fn refuse(&self, config: &Config, denial: Denial, record: Option<Arc<TokenRecord>>) -> Refusal {
        let kind = RejectionKind::from(denial);
        let mut rejection = Rejection::new(kind);
        if kind.counts_as_failure()
            && let Some((f, ip)) = self.failures(config)
            && !f.is_shared()
            && let Some(wait) = f.fail_local(ip)
        {
            rejection = rate_limited(wait);
        }
        Refusal {
            rejection,
            record,
            rate: None,
        }
    }

    /// [`refuse`](Self::refuse) from a step without I/O: a failure to count in shared
    /// limits waits for [`step_io`](Self::step_io) in [`Stage::Count`].
    fn refuse_now(
        &mut self,
        config: &Config,
        denial: Denial,
        record: Option<Arc<TokenRecord>>,
    ) -> Result<bool, Refusal> {
        if RejectionKind::from(denial).counts_as_failure()
            && self.failures(config).is_some_and(|(f, _)| f.is_shared())
        {
            self.stage = Stage::Count(denial, record);
            return Ok(false);
        }
        Err(self.refuse(config, denial, record))
    }

    /// [`refuse`](Self::refuse), counting the failure in shared limits too. When they
    /// cannot be reached the answer is 503 `store_unavailable`: a guess is never left
    /// uncounted.
    async fn refuse_io(
        &self,
        config: &Config,
        denial: Denial,
        record: Option<Arc<TokenRecord>>,
    ) -> Refusal {
        let kind = RejectionKind::from(denial);
        let Some((f, ip)) = self
            .failures(config)
            .filter(|(f, _)| f.is_shared() && kind.counts_as_failure())
        else {
            return self.refuse(config, denial, record);
        };
        let rejection = match f.fail(ip).await {
            Ok(None) => Rejection::new(kind),
            Ok(Some(wait)) => rate_limited(wait),
            Err(error) => {
                tracing::warn!(%error, "failure limits unavailable; refusing the request");
                Rejection::new(RejectionKind::StoreUnavailable)
            }
        };
        Refusal {
            rejection,
            record,
            rate: None,
        }
    }
}

/// 429 `rate_limited`, with `Retry-After` in whole seconds.
fn rate_limited(wait: std::time::Duration) -> Rejection {
    Rejection::new(RejectionKind::RateLimited).with_retry_after(ceil_secs(wait))
}

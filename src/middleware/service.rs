//! [`AuthService`]: reads the header, runs the [`Verification`] steps (without a future
//! when none needs I/O), puts the identity into the request, and records the audit event
//! and the metrics.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, Request, Response};
use tower::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::layer::Config;
use super::pipeline::{Refusal, Step, Verification};
use super::rejection::{Rejection, RejectionKind};
use super::source::{TokenRef, bearer, mark_sensitive, take};
use crate::audit::{RequestEvent, RequestParts};
use crate::client_ip::Addresses;
use crate::header::{MAX_HEADER_LEN, parse_authorization};
use crate::identity::{Anonymous, Identity};
use crate::rate_limit::RateLimitDecision;

pub(crate) fn rejection_response<B>(config: &Config, r: &Rejection) -> Response<ResponseBody<B>> {
    config.reject(r).map(ResponseBody::rejection)
}

/// The service produced by [`AuthLayer`](crate::AuthLayer).
pub struct AuthService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for AuthService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

impl<S> AuthService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

enum Presented {
    Token(TokenRef),
    Nothing,
}

/// The hot path's reading of the `Authorization` value: the scheme `Bearer` (any case),
/// spaces, and the rest as the token, without checking the token68 grammar, which the
/// token's own (stricter) format check covers. A token refused as malformed is judged by
/// the full grammar afterwards ([`refine`]), so the answers are those of [`bearer`].
/// `None`: not that shape; ask [`bearer`].
fn bearer_unchecked(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    // The length limit is the grammar's, not the token's: a value over it is refused even
    // when a well-formed token ends it.
    if bytes.len() > MAX_HEADER_LEN {
        return None;
    }
    let (scheme, rest) = bytes.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    std::str::from_utf8(&rest[start..]).ok()
}

/// A token taken by [`bearer_unchecked`] and refused as malformed: when the header breaks
/// the grammar, the answer is 400 `invalid_request`, as [`bearer`] would have given.
/// Updates `r` in place (only a malformed token pays for the check).
#[inline]
fn refine(headers: &http::HeaderMap, r: &mut Rejection) {
    if r.kind() == RejectionKind::MalformedToken
        && headers
            .get(AUTHORIZATION)
            .is_some_and(|v| parse_authorization(v.as_bytes()).is_err())
    {
        *r = Rejection::new(RejectionKind::InvalidRequest);
    }
}

/// The token from the layer's sources ([`take`]), owned, for the path with policies and
/// for sources other than `Authorization: Bearer`.
fn extract<B>(config: &Config, req: &mut Request<B>) -> Result<Presented, Rejection> {
    Ok(match take(&config.sources, req)? {
        Some(t) => Presented::Token(t),
        None => Presented::Nothing,
    })
}

/// What the current tracing span learns of a decision: the token's id and owner (when a
/// record was found) and `decision` (`allow` or `deny`, with the `reason`), never the
/// token. Fields the span did not declare are left alone; without a subscriber this is one
/// check.
pub(crate) fn record_on_span(
    record: Option<&crate::record::TokenRecord>,
    denial: Option<RejectionKind>,
) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(r) = record {
        span.record("token_id", tracing::field::display(&r.id));
        span.record("owner", &*r.owner);
    }
    match denial {
        None => span.record("decision", "allow"),
        Some(kind) => {
            span.record("decision", "deny");
            span.record("reason", kind.reason())
        }
    };
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if self.config.has_policies() {
            let presented = extract(&self.config, &mut req);
            let config = self.config.clone();
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(Box::pin(with_policies(config, inner, req, presented)));
        }
        if !self.config.bearer_only {
            return self.call_from_sources(req);
        }
        let presented = mark_sensitive(req.headers_mut()).and_then(|()| {
            match req.headers().get(AUTHORIZATION).and_then(bearer_unchecked) {
                Some(t) => Ok(Some(t)),
                None => bearer(req.headers()),
            }
        });
        let token = match presented {
            Ok(Some(t)) => t,
            Ok(None) => return self.nothing_presented(req),
            Err(r) => return self.refused(&r.into()),
        };
        let config = &self.config;
        // The steps that need no I/O run here: with a store that answers from memory
        // (MemoryStore, a cache hit) and a token without a binding to settle, no future is
        // made at all, and the token is read in place. The client address is read only for
        // a token with an allow-list.
        let mut verification = Verification::new(config.tokens.now_nanos(), None);
        let ip = || config.client_ip.client_ip(req.extensions(), req.headers());
        match verification.run_now(config, req.method(), token, &ip, req.headers()) {
            Step::Admitted => return self.admitted(req, verification),
            // A refusal is answered here, before anything else is moved around.
            Step::Refused(mut refusal) => {
                refine(req.headers(), &mut refusal.rejection);
                return self.refused(&refusal);
            }
            Step::NeedsIo => {}
        }
        // A step needs the store: the same steps go on in a future, holding the header.
        let token = match req.headers().get(AUTHORIZATION) {
            Some(value) => TokenRef::of_header(value, token),
            None => return self.refused(&Rejection::new(RejectionKind::MissingToken).into()),
        };
        self.verify_later(req, verification, token, true)
    }
}

/// The service bounds of [`AuthService`]'s `call`, for its helpers.
trait Inner<ReqBody, ResBody>:
    Service<Request<ReqBody>, Response = Response<ResBody>, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T, ReqBody, ResBody> Inner<ReqBody, ResBody> for T where
    T: Service<Request<ReqBody>, Response = Response<ResBody>, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

impl<S> AuthService<S> {
    /// [`call`](Service::call) without policies, for sources other than `Authorization:
    /// Bearer` alone: the token is taken from the request (and removed where its source
    /// requires) before any step runs.
    fn call_from_sources<ReqBody: Send + 'static, ResBody: 'static>(
        &mut self,
        mut req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Inner<ReqBody, ResBody>,
    {
        let token = match extract(&self.config, &mut req) {
            Ok(Presented::Token(t)) => t,
            Ok(Presented::Nothing) => return self.nothing_presented(req),
            Err(r) => return self.refused(&r.into()),
        };
        let config = &self.config;
        let mut verification = Verification::new(config.tokens.now_nanos(), None);
        let ip = || config.client_ip.client_ip(req.extensions(), req.headers());
        match verification.run_now(config, req.method(), token.as_str(), &ip, req.headers()) {
            Step::Admitted => self.admitted(req, verification),
            Step::Refused(refusal) => self.refused(&refusal),
            Step::NeedsIo => self.verify_later(req, verification, token, false),
        }
    }

    /// No token in any source: on to the inner service under an optional layer (which
    /// leaves its mark, so the handler's `Option<Identity>` is `None`, not an error), 401
    /// `missing_token` otherwise.
    fn nothing_presented<ReqBody: Send + 'static, ResBody: 'static>(
        &mut self,
        mut req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Inner<ReqBody, ResBody>,
    {
        if self.config.optional {
            req.extensions_mut().insert(Anonymous);
            record_on_span(None, None);
            return ResponseFuture::inner(self.inner.call(req));
        }
        self.refused(&Rejection::new(RejectionKind::MissingToken).into())
    }

    fn admitted<ReqBody: Send + 'static, ResBody: 'static>(
        &mut self,
        mut req: Request<ReqBody>,
        verification: Verification,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Inner<ReqBody, ResBody>,
    {
        if let (Some(id), _) = verification.into_admitted() {
            record_on_span(Some(id.record()), None);
            req.extensions_mut().insert(id);
        }
        ResponseFuture::inner(self.inner.call(req))
    }

    fn refused<F, ResBody, E>(&self, refusal: &Refusal) -> ResponseFuture<F, ResBody, E> {
        let r = &refusal.rejection;
        record_on_span(refusal.record.as_deref(), Some(r.kind()));
        ResponseFuture::ready(rejection_response(&self.config, r))
    }

    /// The steps that need I/O, in a future holding the token. `refine_header`: the token
    /// came from the fast reading of `Authorization` ([`refine`]).
    fn verify_later<ReqBody: Send + 'static, ResBody: 'static>(
        &mut self,
        mut req: Request<ReqBody>,
        mut verification: Verification,
        token: TokenRef,
        refine_header: bool,
    ) -> ResponseFuture<S::Future, ResBody, S::Error>
    where
        S: Inner<ReqBody, ResBody>,
    {
        let config = self.config.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::boxed(Box::pin(async move {
            let method = req.method().clone();
            let (extensions, headers) = (req.extensions(), req.headers());
            let ip = || config.client_ip.client_ip(extensions, headers);
            let verified = verification
                .run(&config, &method, token.as_str(), &ip, headers)
                .await;
            drop(token);
            if let Err(mut refusal) = verified {
                if refine_header {
                    refine(req.headers(), &mut refusal.rejection);
                }
                let r = &refusal.rejection;
                record_on_span(refusal.record.as_deref(), Some(r.kind()));
                return Ok(rejection_response(&config, r));
            }
            if let (Some(id), _) = verification.into_admitted() {
                record_on_span(Some(id.record()), None);
                req.extensions_mut().insert(id);
            }
            let res = inner.call(req).await?;
            Ok(res.map(ResponseBody::inner))
        }))
    }
}

struct Admitted {
    identity: Option<Identity>,
    rate: Option<RateLimitDecision>,
}

/// Verification with every policy: failure limits per address, rate limits per token, the
/// owner's permissions, the access rule (the steps of [`Verification`]). The allow-list
/// judges the client (unknown: refused); failures count against the client, or the socket
/// peer when the client is unknown.
async fn admit(
    config: &Config,
    method: &Method,
    presented: Result<Presented, Rejection>,
    addrs: Addresses,
    headers: &http::HeaderMap,
) -> Result<Admitted, Refusal> {
    let token = match presented? {
        Presented::Token(t) => t,
        Presented::Nothing if config.optional => {
            return Ok(Admitted {
                identity: None,
                rate: None,
            });
        }
        Presented::Nothing => return Err(Rejection::new(RejectionKind::MissingToken).into()),
    };
    let mut verification = Verification::new(config.tokens.now_nanos(), addrs.failure_key());
    let client = || addrs.client;
    let verified = verification
        .run(config, method, token.as_str(), &client, headers)
        .await;
    drop(token);
    verified?;
    let (identity, rate) = verification.into_admitted();
    Ok(Admitted { identity, rate })
}

async fn with_policies<S, ReqBody, ResBody>(
    config: Arc<Config>,
    mut inner: S,
    mut req: Request<ReqBody>,
    presented: Result<Presented, Rejection>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    let addrs = config.client_ip.resolve(req.extensions(), req.headers());
    // What the audit event needs from the request: reference-counted clones, made into
    // the event's fields by the audit log's writer, off this path.
    let parts = config
        .audit
        .as_ref()
        .map(|_| RequestParts::of(req.method(), req.extensions(), req.uri(), req.headers()));
    // The metrics' `kind` is the kind the presented prefix names (what the client sent),
    // never the stored record's: a label that appeared only for a token on record would
    // tell its holder that the token was real.
    #[cfg(feature = "metrics")]
    let presented_kind = match &presented {
        Ok(Presented::Token(t)) if config.metrics => {
            t.as_str().split_once('_').and_then(|(p, _)| {
                let kinds = config.tokens.kinds();
                let index = kinds.iter().position(|k| k.prefix() == p)?;
                Some((index, kinds[index].name()))
            })
        }
        _ => None,
    };
    let method = req.method().clone();
    let (res, record, denial) = match admit(&config, &method, presented, addrs, req.headers()).await
    {
        Err(refusal) => {
            let mut res = rejection_response(&config, &refusal.rejection);
            if let Some(d) = &refusal.rate {
                config.rate_headers.write(res.headers_mut(), d);
            }
            record_on_span(refusal.record.as_deref(), Some(refusal.rejection.kind()));
            (res, refusal.record, Some(refusal.rejection.kind()))
        }
        Ok(admitted) => {
            let record = admitted.identity.as_ref().map(Identity::record_arc);
            record_on_span(record.as_deref(), None);
            if let Some(id) = admitted.identity {
                req.extensions_mut().insert(id);
            } else {
                // An optional layer let a request without a token through.
                req.extensions_mut().insert(Anonymous);
            }
            let mut res = inner.call(req).await?.map(ResponseBody::inner);
            if let Some(d) = &admitted.rate {
                config.rate_headers.write(res.headers_mut(), d);
            }
            // A permission check further in (`RequirePermissionLayer`, `Identity::require`)
            // leaves its `RejectionKind` on the response: the decision was a denial.
            let inner_denial = res.extensions().get::<RejectionKind>().copied();
            (res, record, inner_denial)
        }
    };
    // Metrics are unauthenticated: the outcome is the code the client itself received
    // (`invalid_token` for unknown, revoked, expired and wrong-kind tokens alike); the
    // precise reason goes only to the audit event.
    #[cfg(feature = "metrics")]
    if config.metrics {
        config
            .metric_handles
            .verification(denial, presented_kind, started.elapsed().as_secs_f64());
    }
    let reason = denial.map(RejectionKind::reason);
    if let (Some(audit), Some(parts)) = (&config.audit, parts)
        && (record.is_some() || reason.is_some())
    {
        audit.record_request_event(
            RequestEvent {
                timestamp: config.tokens.now(),
                record,
                parts,
                status_code: res.status().as_u16(),
                reason,
                // The client as resolved (never a header the peer was not trusted to send);
                // `None` when unknown.
                client_ip: addrs.client,
            },
            // Refusals are budgeted per address: the client, or the peer when unknown.
            addrs.failure_key(),
        );
    }
    Ok(res)
}

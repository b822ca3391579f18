//! [`AuthService`]: reads the header, runs the [`Verification`] steps (without a future
//! when none needs I/O), puts the identity into the request, and records the audit event
//! and the metrics.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, Entry};
use http::{HeaderValue, Method, Request, Response};
use tower::Service;

use super::body::ResponseBody;
use super::future::ResponseFuture;
use super::layer::Config;
use super::pipeline::{Refusal, Step, Verification};
use super::rejection::{Rejection, RejectionKind};
use crate::audit::{AuditEvent, Decision};
use crate::client_ip::Addresses;
use crate::header::{Credentials, MAX_HEADER_LEN, parse_authorization};
use crate::identity::Identity;
use crate::rate_limit::RateLimitDecision;
use crate::token::MAX_TOKEN_LEN;

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

/// The presented token: a cheap (reference-counted) clone of the header value and where
/// the token starts in it. No copy of the secret is made.
struct TokenRef {
    value: HeaderValue,
    start: usize,
}

impl TokenRef {
    fn as_str(&self) -> &str {
        // Only token68 bytes (ASCII) follow `start`, as checked by the parser.
        std::str::from_utf8(self.value.as_bytes().get(self.start..).unwrap_or_default())
            .unwrap_or_default()
    }
}

enum Presented {
    Token(TokenRef),
    Nothing,
}

/// Marks the `Authorization` value sensitive (so `Debug` and HTTP/2 header compression
/// leave it alone) and refuses a request with more than one.
fn mark_sensitive(headers: &mut http::HeaderMap) -> Result<(), Rejection> {
    let Entry::Occupied(mut entry) = headers.entry(AUTHORIZATION) else {
        return Ok(());
    };
    let mut count = 0;
    for v in entry.iter_mut() {
        v.set_sensitive(true);
        count += 1;
    }
    if count > 1 {
        return Err(Rejection::new(RejectionKind::InvalidRequest));
    }
    Ok(())
}

/// The bearer token of the (single) `Authorization` value, borrowed from the request;
/// `None` without one, or for another scheme.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, Rejection> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    match parse_authorization(value.as_bytes()) {
        Err(_) => Err(Rejection::new(RejectionKind::InvalidRequest)),
        Ok(Credentials::Other | Credentials::Basic(_)) => Ok(None),
        Ok(Credentials::Bearer(t)) if t.len() > MAX_TOKEN_LEN => {
            Err(Rejection::new(RejectionKind::MalformedToken))
        }
        Ok(Credentials::Bearer(t)) => Ok(Some(t)),
    }
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

/// An owned reference to the presented token, for a future that outlives the borrow: a
/// cheap (reference-counted) clone of the header value. No copy of the secret is made.
fn token_ref(headers: &http::HeaderMap, token: &str) -> TokenRef {
    let value = headers.get(AUTHORIZATION).cloned().unwrap_or_else(|| {
        // `token` was read from this header just before; an empty reference refuses.
        HeaderValue::from_static("")
    });
    TokenRef {
        start: value.as_bytes().len().saturating_sub(token.len()),
        value,
    }
}

/// [`mark_sensitive`] and [`bearer`], owned, for the path with policies.
fn extract<B>(req: &mut Request<B>) -> Result<Presented, Rejection> {
    mark_sensitive(req.headers_mut())?;
    Ok(match bearer(req.headers())? {
        Some(t) => Presented::Token(token_ref(req.headers(), t)),
        None => Presented::Nothing,
    })
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
            let presented = extract(&mut req);
            let config = self.config.clone();
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(Box::pin(with_policies(config, inner, req, presented)));
        }
        let config = &self.config;
        let presented = mark_sensitive(req.headers_mut()).and_then(|()| {
            match req.headers().get(AUTHORIZATION).and_then(bearer_unchecked) {
                Some(t) => Ok(Some(t)),
                None => bearer(req.headers()),
            }
        });
        let token = match presented {
            Ok(Some(t)) => t,
            Ok(None) if config.optional => {
                return ResponseFuture::inner(self.inner.call(req));
            }
            Ok(None) => {
                let r = Rejection::new(RejectionKind::MissingToken);
                return ResponseFuture::ready(rejection_response(config, &r));
            }
            Err(r) => return ResponseFuture::ready(rejection_response(config, &r)),
        };
        // The steps that need no I/O run here: with a store that answers from memory
        // (MemoryStore, a cache hit) and a token without a binding to settle, no future is
        // made at all, and the token is read in place. The client address is read only for
        // a token with an allow-list.
        let mut verification = Verification::new(config.tokens.now_nanos(), None);
        let ip = || config.client_ip.client_ip(req.extensions(), req.headers());
        match verification.run_now(config, req.method(), token, &ip, req.headers()) {
            Step::Admitted => {
                if let (Some(id), _) = verification.into_admitted() {
                    req.extensions_mut().insert(id);
                }
                return ResponseFuture::inner(self.inner.call(req));
            }
            // A refusal is answered here, before anything else is moved around.
            Step::Refused(mut refusal) => {
                refine(req.headers(), &mut refusal.rejection);
                return ResponseFuture::ready(rejection_response(config, &refusal.rejection));
            }
            Step::NeedsIo => {}
        }
        // A step needs the store: the same steps go on in a future.
        let token = token_ref(req.headers(), token);
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
                refine(req.headers(), &mut refusal.rejection);
                return Ok(rejection_response(&config, &refusal.rejection));
            }
            if let (Some(id), _) = verification.into_admitted() {
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

/// What an audit event needs from the request, taken before the request moves on.
struct AuditCtx {
    method: String,
    path: String,
    request_id: Option<String>,
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
    let ctx = config.audit.as_ref().map(|_| AuditCtx {
        method: req.method().to_string(),
        path: crate::audit::request_path(req.extensions(), req.uri()),
        request_id: crate::audit::request_id(req.headers()),
    });
    // The metrics' `kind` is the kind the presented prefix names (what the client sent),
    // never the stored record's: a label that appeared only for a token on record would
    // tell its holder that the token was real.
    #[cfg(feature = "metrics")]
    let presented_kind = match &presented {
        Ok(Presented::Token(t)) if config.metrics => {
            t.as_str().split_once('_').and_then(|(p, _)| {
                config
                    .tokens
                    .kinds()
                    .iter()
                    .find(|k| k.prefix() == p)
                    .map(crate::token::TokenKind::name)
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
            (res, refusal.record, Some(refusal.rejection.kind()))
        }
        Ok(admitted) => {
            let record = admitted.identity.as_ref().map(Identity::record_arc);
            if let Some(id) = admitted.identity {
                req.extensions_mut().insert(id);
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
        config.metric_handles.verification(
            denial.map_or("allow", RejectionKind::code),
            presented_kind,
            started.elapsed().as_secs_f64(),
        );
    }
    let reason = denial.map(RejectionKind::reason);
    if let (Some(audit), Some(ctx)) = (&config.audit, ctx)
        && (record.is_some() || reason.is_some())
    {
        audit.record_request(
            AuditEvent {
                timestamp: config.tokens.now(),
                event: "authenticate".into(),
                api_token_id: record.as_ref().map(|r| r.id),
                api_token_name: record.as_ref().map(|r| r.name.to_string()),
                owner: record.as_ref().map(|r| r.owner.to_string()),
                method: ctx.method,
                path: ctx.path,
                status_code: res.status().as_u16(),
                rbac_decision: if reason.is_some() {
                    Decision::Deny
                } else {
                    Decision::Allow
                },
                reason: reason.map(str::to_owned),
                // The client as resolved (never a header the peer was not trusted to send);
                // `None` when unknown.
                client_ip: addrs.client,
                request_id: ctx.request_id,
                details: None,
            },
            // Refusals are budgeted per address: the client, or the peer when unknown.
            addrs.failure_key(),
        );
    }
    Ok(res)
}

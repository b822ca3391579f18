use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, Entry};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::Service;

use super::layer::Config;
use super::rejection::{Rejection, RejectionKind};
use crate::audit::{AuditEvent, Decision};
use crate::client_ip::Addresses;
use crate::header::{Credentials, MAX_HEADER_LEN, parse_authorization};
use crate::identity::Identity;
use crate::rate_limit::{RateLimitDecision, ceil_secs};
use crate::store::TokenRecord;
use crate::token::MAX_TOKEN_LEN;

pin_project! {
    /// The response body of keygate's middleware: the inner service's body, or the body of
    /// a rejection.
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Inner { #[pin] body: B },
        Rejection { body: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: BodyKind::Inner { body },
        }
    }

    pub(crate) fn rejection(body: Bytes) -> Self {
        Self {
            kind: BodyKind::Rejection { body: Some(body) },
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner { body } => body.poll_frame(cx),
            BodyProj::Rejection { body } => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Rejection { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Rejection { body } => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

pub(crate) fn rejection_response<B>(config: &Config, r: &Rejection) -> Response<ResponseBody<B>> {
    config.reject(r).map(ResponseBody::rejection)
}

type BoxFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send>>;

pin_project! {
    /// The future of [`AuthService`]: ready at once for requests refused before any I/O, the
    /// inner service's own future when the store answered from memory, boxed otherwise.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: FutureState<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum FutureState<F, B, E> {
        Ready { response: Option<Response<ResponseBody<B>>> },
        Inner { #[pin] future: F },
        Boxed { future: BoxFuture<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn ready(response: Response<ResponseBody<B>>) -> Self {
        Self {
            state: FutureState::Ready {
                response: Some(response),
            },
        }
    }

    fn inner(future: F) -> Self {
        Self {
            state: FutureState::Inner { future },
        }
    }

    fn boxed(future: BoxFuture<B, E>) -> Self {
        Self {
            state: FutureState::Boxed { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(ResponseBody::inner))),
            StateProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
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
        // Stores that answer from memory (MemoryStore, a cache hit) need no future at all,
        // and the token is read in place.
        let now = config.tokens.now_nanos();
        if let Some(verified) = config
            .tokens
            .verify_now(token, config.accept.as_deref(), now)
        {
            // A refusal is answered here, before anything else is moved around: carried
            // through further `Result` combinators, the rejection and the response cost
            // about 15 ns of copies (and store-forwarding stalls) more than a success.
            let id = match verified {
                Ok(id) => id,
                Err(d) => {
                    let mut r = Rejection::from(d.denial);
                    refine(req.headers(), &mut r);
                    return ResponseFuture::ready(rejection_response(config, &r));
                }
            };
            // The policies kept on the record cost nothing for a token without them; the
            // client address is read only for a token with an allow-list.
            let ip = || config.client_ip.client_ip(req.extensions(), req.headers());
            let fingerprint = match config
                .tokens
                .record_policies_now(&id, ip, req.headers(), now)
                .map_err(Rejection::from)
            {
                Ok(None) => {
                    if let Err(r) = config.check_access(req.method(), &id) {
                        return ResponseFuture::ready(rejection_response(config, &r));
                    }
                    req.extensions_mut().insert(id);
                    return ResponseFuture::inner(self.inner.call(req));
                }
                Ok(Some(fingerprint)) => fingerprint.to_owned(),
                Err(r) => return ResponseFuture::ready(rejection_response(config, &r)),
            };
            // A binding to settle with the store (first use, or another fingerprint).
            let config = self.config.clone();
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture::boxed(Box::pin(async move {
                let settled = config
                    .tokens
                    .settle_binding(&id, &fingerprint)
                    .await
                    .map_err(Rejection::from);
                match settled.and_then(|()| config.check_access(req.method(), &id)) {
                    Ok(()) => {
                        req.extensions_mut().insert(id);
                    }
                    Err(r) => return Ok(rejection_response(&config, &r)),
                }
                let res = inner.call(req).await?;
                Ok(res.map(ResponseBody::inner))
            }));
        }
        let token = token_ref(req.headers(), token);
        let config = self.config.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::boxed(Box::pin(async move {
            let verified = config
                .tokens
                .verify_detailed(token.as_str(), config.accept.as_deref())
                .await
                .map_err(|d| {
                    let mut r = Rejection::from(d.denial);
                    refine(req.headers(), &mut r);
                    r
                });
            drop(token);
            let verified = match verified {
                Ok(id) => {
                    let ip = if id.record().allowed_ips.is_empty() {
                        None
                    } else {
                        config.client_ip.client_ip(req.extensions(), req.headers())
                    };
                    config
                        .tokens
                        .check_record_policies(&id, ip, req.headers())
                        .await
                        .map(|()| id)
                        .map_err(Rejection::from)
                }
                Err(r) => Err(r),
            };
            match verified.and_then(|id| config.check_access(req.method(), &id).map(|()| id)) {
                Ok(id) => {
                    req.extensions_mut().insert(id);
                }
                Err(r) => return Ok(rejection_response(&config, &r)),
            }
            let res = inner.call(req).await?;
            Ok(res.map(ResponseBody::inner))
        }))
    }
}

/// A request refused on the full path, with what the audit event and headers need.
struct Refusal {
    rejection: Rejection,
    record: Option<Arc<TokenRecord>>,
    rate: Option<RateLimitDecision>,
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

struct Admitted {
    identity: Option<Identity>,
    rate: Option<RateLimitDecision>,
}

/// Verification with every policy: failure limits per address, rate limits per token, the
/// access rule. The allow-list judges the client (unknown: refused); failures count against
/// the client, or the socket peer when the client is unknown.
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
    let failures = config.failures.as_ref().zip(addrs.failure_key());
    if let Some((f, ip)) = failures
        && let Some(wait) = f.blocked(ip)
    {
        return Err(Rejection::new(RejectionKind::RateLimited)
            .with_retry_after(ceil_secs(wait))
            .into());
    }
    let identity = match config
        .tokens
        .verify_detailed(token.as_str(), config.accept.as_deref())
        .await
    {
        Ok(id) => id,
        Err(denied) => {
            return Err(Refusal {
                rejection: count_failure(failures, denied.denial.into()),
                record: denied.record,
                rate: None,
            });
        }
    };
    drop(token);
    let refuse = |rejection: Rejection, identity: &Identity, rate| Refusal {
        rejection,
        record: Some(identity.record_arc()),
        rate,
    };
    // The policies kept on the token: allow-list, then binding (before the rate limit, so
    // requests from outside do not use up the token's budget). Their refusals count against
    // the client like an unknown token: a stolen token replayed from elsewhere is throttled,
    // and a blocked client is refused above, before the binding's store write.
    if let Err(r) = config
        .tokens
        .check_record_policies(&identity, addrs.client, headers)
        .await
    {
        return Err(refuse(count_failure(failures, r.into()), &identity, None));
    }
    let identity = match &config.resolver {
        None => identity,
        Some(resolver) => {
            let record = identity.record_arc();
            match crate::permissions::effective(&**resolver, identity).await {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!(%error, "owner permissions unavailable; refusing the request");
                    return Err(Refusal {
                        rejection: Rejection::new(RejectionKind::StoreUnavailable),
                        record: Some(record),
                        rate: None,
                    });
                }
            }
        }
    };
    let rate = match &config.rates {
        None => None,
        Some(limits) => match limits
            .check(
                crate::rate_limit::Lineage::of(identity.record()),
                identity.kind(),
                identity.record().rate_limit,
            )
            .await
        {
            Ok(decision) => decision,
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable; refusing the request");
                let r = Rejection::new(RejectionKind::StoreUnavailable);
                return Err(refuse(r, &identity, None));
            }
        },
    };
    if let Some(wait) = rate.and_then(|d| d.retry_after) {
        let r = Rejection::new(RejectionKind::RateLimited).with_retry_after(ceil_secs(wait));
        return Err(refuse(r, &identity, rate));
    }
    if let Err(r) = config.check_access(method, &identity) {
        return Err(refuse(r, &identity, rate));
    }
    Ok(Admitted {
        identity: Some(identity),
        rate,
    })
}

/// Counts `rejection` against the client when it is a failure
/// ([`FailureLimits::counts`](crate::rate_limit::FailureLimits::counts)); 429 with
/// `Retry-After` instead when the client is now over its budget.
fn count_failure(
    failures: Option<(&crate::rate_limit::FailureLimits, std::net::IpAddr)>,
    rejection: Rejection,
) -> Rejection {
    if crate::rate_limit::FailureLimits::counts(rejection.kind())
        && let Some((f, ip)) = failures
        && let Some(wait) = f.fail(ip)
    {
        return Rejection::new(RejectionKind::RateLimited).with_retry_after(ceil_secs(wait));
    }
    rejection
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

fn rate_headers(headers: &mut http::HeaderMap, d: &RateLimitDecision) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(ceil_secs(d.reset)));
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
                rate_headers(res.headers_mut(), d);
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
                rate_headers(res.headers_mut(), d);
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
        audit.record(AuditEvent {
            timestamp: config.tokens.now(),
            event: "authenticate".into(),
            api_token_id: record.as_ref().map(|r| r.id),
            api_token_name: record.as_ref().map(|r| r.name.clone()),
            owner: record.as_ref().map(|r| r.owner.clone()),
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
        });
    }
    Ok(res)
}

//! The verification path stage by stage, and the whole layer against a no-auth baseline in
//! the same run.
//!
//! ```sh
//! cargo bench --bench verify            # full run
//! cargo bench --bench verify -- --quick # a quick look
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response, header};
use http_body_util::Full;
use keygate::client_ip::ClientAddr;
use keygate::header::parse_authorization;
use keygate::rate_limit::{FailureLimits, Rate, RateLimits};
use keygate::store::TokenRecord;
use keygate::token::{TokenKind, parse};
use keygate::{
    AuthLayer, MemoryStore, NewToken, Permissions, TokenHash, TokenId, TokenStore, Tokens,
};
use tower::{Layer, Service, ServiceExt};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn synthetic(i: u64) -> TokenRecord {
    // Random-looking digests without hashing a million tokens.
    let mut b = [0u8; 32];
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for (k, chunk) in b.chunks_mut(8).enumerate() {
        let v = x
            .rotate_left(k as u32 * 13)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9 + k as u64);
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    TokenRecord::new(
        TokenId::random(),
        TokenHash::from_bytes(b),
        "pat",
        format!("owner-{}", i % 10_000),
        format!("t{i}"),
        time::OffsetDateTime::UNIX_EPOCH,
    )
    .with_permissions(Permissions::none())
    .with_hint("pat_00000000")
    .with_created_by("bench")
}

fn store_with(n: u64) -> MemoryStore {
    let store = MemoryStore::new();
    for i in 0..n {
        store.insert_unchecked(synthetic(i)).expect("unique");
    }
    store
}

/// A token that passes the checksum but whose secret differs from `valid` in one place.
fn wrong_secret(valid: &str) -> String {
    let body = &valid[..valid.len() - 6];
    let mut changed = body.to_owned();
    let c = if &changed[10..11] == "A" { "B" } else { "A" };
    changed.replace_range(10..11, c);
    let mut crc = crc32fast::hash(changed.as_bytes());
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = alphabet[(crc % 62) as usize];
        crc /= 62;
    }
    changed.push_str(std::str::from_utf8(&sum).expect("ascii"));
    assert!(keygate::token::looks_like_token(&changed));
    changed
}

fn stages(c: &mut Criterion) {
    let token = TokenKind::pat().generate();
    let header = format!("Bearer {}", token.expose_secret());
    let mut g = c.benchmark_group("stage");
    g.bench_function("header_parse", |b| {
        b.iter(|| parse_authorization(black_box(header.as_bytes())))
    });
    g.bench_function("token_parse_checksum", |b| {
        b.iter(|| parse(black_box(token.expose_secret())).map(|p| p.prefix().len()))
    });
    let stored = token.hash();
    g.bench_function("sha256_and_ct_compare", |b| {
        b.iter(|| TokenHash::of(black_box(token.expose_secret())).ct_eq(&stored))
    });
    g.finish();
}

/// A store of `n` synthetic records, built once per process and only when a benchmark that
/// needs it runs (so a filtered run does not pay for the others).
fn shared_store(n: u64) -> &'static MemoryStore {
    static SMALL: OnceLock<MemoryStore> = OnceLock::new();
    static LARGE: OnceLock<MemoryStore> = OnceLock::new();
    let cell = if n <= 1_000 { &SMALL } else { &LARGE };
    cell.get_or_init(|| store_with(n))
}

fn lookups(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("memory_store_lookup");
    for n in [1_000u64, 1_000_000] {
        let hit = synthetic(n / 2).hash;
        let miss = synthetic(n + 7).hash;
        g.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, h| {
            let store = shared_store(n);
            b.to_async(&rt).iter(|| store.find_by_hash(black_box(h)))
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, h| {
            let store = shared_store(n);
            b.to_async(&rt).iter(|| store.find_by_hash(black_box(h)))
        });
    }
    g.finish();

    // Read scaling: each iteration is 64 lookups per thread, on 1 and on 2 threads at
    // once. With perfect scaling both take the same time per iteration. The lookups use
    // the synchronous path the layer takes for MemoryStore; each thread looks up its own
    // 2048 records (as two clients with their own tokens would), spread over the store.
    let hashes: Arc<Vec<TokenHash>> =
        Arc::new((0..4096).map(|i| synthetic(i * 241).hash).collect());
    let mut g = c.benchmark_group("memory_store_threads_1m");
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(64 * threads as u64));
        g.bench_function(BenchmarkId::from_parameter(threads), |b| {
            let store = shared_store(1_000_000);
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let hashes = hashes.clone();
                        s.spawn(move || {
                            for i in 0..iters as usize * 64 {
                                let h = &hashes[t * 2048 + (i * 7) % 2048];
                                black_box(store.find_by_hash_now(h));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}

type Body = Full<Bytes>;

fn baseline() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|req: Request<Body>| async move {
        black_box(&req);
        Ok::<_, Infallible>(Response::new(Body::default()))
    })
}

fn request(auth: &str) -> Request<Body> {
    Request::get("/things")
        .header(header::AUTHORIZATION, auth)
        .body(Body::default())
        .expect("request")
}

struct LayerSetup {
    tokens: Tokens,
    valid: String,
    wrong: String,
    unknown: String,
    revoked: String,
}

/// Tokens issued into the shared store of `n` records, for an owner named after `n` and
/// `group` (each group issues its own).
fn layer_setup(rt: &tokio::runtime::Runtime, n: u64, group: &str) -> LayerSetup {
    let tokens = Tokens::builder(shared_store(n).clone())
        .build()
        .expect("tokens");
    let owner = format!("bench-{group}-{n}");
    let issued = rt
        .block_on(tokens.issue(NewToken::new(owner.clone(), "valid")))
        .expect("issue");
    let revoked = rt
        .block_on(tokens.issue(NewToken::new(owner.clone(), "revoked")))
        .expect("issue");
    rt.block_on(tokens.revoke(&owner, revoked.record.id))
        .expect("revoke");
    // Record a use so that the valid path skips the usage queue, as it does in a server
    // whose maintenance task flushes every few seconds.
    rt.block_on(tokens.authenticate(issued.token.expose_secret()))
        .expect("valid");
    rt.block_on(tokens.flush_usage()).expect("flush");
    LayerSetup {
        valid: format!("Bearer {}", issued.token.expose_secret()),
        wrong: format!("Bearer {}", wrong_secret(issued.token.expose_secret())),
        unknown: format!("Bearer {}", TokenKind::pat().generate().expose_secret()),
        revoked: format!("Bearer {}", revoked.token.expose_secret()),
        tokens,
    }
}

fn layer(c: &mut Criterion) {
    let rt = runtime();
    for n in [1_000u64, 1_000_000] {
        let setup: OnceLock<LayerSetup> = OnceLock::new();
        let get = || setup.get_or_init(|| layer_setup(&rt, n, "layer"));
        let plain = baseline();
        let mut g = c.benchmark_group(format!("layer_{n}"));
        g.bench_function("tower_http_bearer", |b| {
            // What people use today: one static token compared with `==` (deprecated in
            // tower-http for being too basic; here as the cost floor of a header check).
            let s = get();
            let secret = s.valid.trim_start_matches("Bearer ").to_owned();
            #[allow(deprecated)]
            let static_check =
                tower_http::validate_request::ValidateRequestHeaderLayer::bearer(&secret)
                    .layer(baseline());
            let auth = &s.valid;
            b.to_async(&rt).iter(|| {
                let mut svc = static_check.clone();
                let r = request(auth);
                async move { svc.call(r).await.map(|r| r.status()) }
            })
        });
        g.bench_function("no_auth_baseline", |b| {
            let auth = &get().valid;
            b.to_async(&rt).iter(|| {
                let mut svc = plain.clone();
                let r = request(auth);
                async move { svc.call(r).await }
            })
        });
        g.bench_function("valid_all_policies", |b| {
            // Rate limit (high enough never to refuse), failure limits, client address,
            // audit into a sink that drops events, metrics into the installed recorder.
            let s = get();
            let _ = metrics_recorder();
            let _guard = rt.enter();
            let audit = keygate::audit::AuditLog::spawn(NullSink, 1 << 16);
            let layer = AuthLayer::new(s.tokens.clone())
                .with_rate_limits(RateLimits::new(Rate::per_minute(u32::MAX).expect("rate")))
                .with_failure_limits(FailureLimits::new(Rate::per_minute(20).expect("rate")))
                .with_audit(audit)
                .with_metrics();
            let authed = layer.layer(baseline());
            let auth = &s.valid;
            b.to_async(&rt).iter(|| {
                let mut svc = authed.clone();
                let mut r = request(auth);
                r.extensions_mut()
                    .insert(ClientAddr("192.0.2.1:4000".parse().expect("addr")));
                async move { svc.call(r).await.map(|r| r.status()) }
            })
        });
        for name in ["valid", "wrong_secret", "unknown", "revoked"] {
            g.bench_function(name, |b| {
                let s = get();
                let auth = match name {
                    "valid" => &s.valid,
                    "wrong_secret" => &s.wrong,
                    "unknown" => &s.unknown,
                    _ => &s.revoked,
                };
                let authed = AuthLayer::new(s.tokens.clone()).layer(baseline());
                b.to_async(&rt).iter(|| {
                    let mut svc = authed.clone();
                    let r = request(auth);
                    async move { svc.call(r).await.map(|r| r.status()) }
                })
            });
        }
        g.finish();
    }
}

/// `n` requests through `svc`, one after another, timed together.
fn timed_batch<S>(rt: &tokio::runtime::Runtime, svc: &S, auth: &str, n: u64) -> Duration
where
    S: Service<Request<Body>> + Clone,
{
    timed_cycle(rt, svc, std::slice::from_ref(&auth), 0, n)
}

/// `n` requests through `svc`, one after another, timed together, their `Authorization`
/// headers taken in turn from `auths` starting at `from` (wrapping around).
fn timed_cycle<S, A>(
    rt: &tokio::runtime::Runtime,
    svc: &S,
    auths: &[A],
    from: usize,
    n: u64,
) -> Duration
where
    S: Service<Request<Body>> + Clone,
    A: AsRef<str>,
{
    rt.block_on(async {
        let start = Instant::now();
        let mut i = from;
        for _ in 0..n {
            let mut s = svc.clone();
            let r = request(auths[i].as_ref());
            i += 1;
            if i == auths.len() {
                i = 0;
            }
            let _ = black_box(s.call(r).await);
        }
        start.elapsed()
    })
}

/// The layer's overhead measured in pairs: batches of 32 requests through the plain service
/// and through the layered one alternate, and the figure is the layered time minus the
/// plain time. Drifts of the machine's speed (this VM's are ±10 % from one benchmark to the
/// next) hit both halves of a pair alike, so the difference is steadier than one total minus
/// another measured seconds apart.
fn overhead(c: &mut Criterion) {
    const BATCH: u64 = 32;
    let rt = runtime();
    let s = layer_setup(&rt, 1_000, "overhead");
    let plain = baseline();
    let mut g = c.benchmark_group("overhead_1000");
    let mut pair = |name: &str, auth: &str, layered: &dyn Fn(&str, u64) -> Duration| {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
                let mut done = 0;
                while done < iters {
                    let n = BATCH.min(iters - done);
                    without += timed_batch(&rt, &plain, auth, n);
                    with += layered(auth, n);
                    done += n;
                }
                with.saturating_sub(without)
            })
        });
    };
    #[allow(deprecated)]
    let static_check = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(
        s.valid.trim_start_matches("Bearer "),
    )
    .layer(baseline());
    pair("tower_http_bearer", &s.valid, &|auth, n| {
        timed_batch(&rt, &static_check, auth, n)
    });
    let authed = AuthLayer::new(s.tokens.clone()).layer(baseline());
    for (name, auth) in [
        ("valid", &s.valid),
        ("wrong_secret", &s.wrong),
        ("unknown", &s.unknown),
        ("revoked", &s.revoked),
    ] {
        pair(name, auth, &|auth, n| timed_batch(&rt, &authed, auth, n));
    }
    g.finish();
}

/// The medians of `layer_1000` again behind an inner service that sets a `Content-Type`: a
/// success then builds a response with headers (the handler's), as a refusal does (the
/// layer's), where the bare baseline answers with none.
fn layer_typed(c: &mut Criterion) {
    let rt = runtime();
    let s = layer_setup(&rt, 1_000, "typed");
    let mut g = c.benchmark_group("layer_1000_typed_handler");
    // The baseline's service, answering as a typical handler does: a body with a
    // `Content-Type` (what axum's `IntoResponse` for a `String` or `Json` sets), so its
    // response has a header map of its own, like a refusal's.
    let typed_handler = || {
        baseline().map_response(|mut res: Response<Body>| {
            *res.body_mut() = Body::new(Bytes::from_static(b"hello"));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            res
        })
    };
    let plain = typed_handler();
    g.bench_function("no_auth_baseline", |b| {
        let auth = &s.valid;
        b.to_async(&rt).iter(|| {
            let mut svc = plain.clone();
            let r = request(auth);
            async move { svc.call(r).await.map(|r| r.status()) }
        })
    });
    let authed = AuthLayer::new(s.tokens.clone()).layer(typed_handler());
    for (name, auth) in [
        ("valid", &s.valid),
        ("wrong_secret", &s.wrong),
        ("unknown", &s.unknown),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let mut svc = authed.clone();
                let r = request(auth);
                async move { svc.call(r).await.map(|r| r.status()) }
            })
        });
    }
    g.finish();
}

/// An audit sink that drops every event (the bench measures the layer, not a disk).
struct NullSink;

#[async_trait::async_trait]
impl keygate::audit::AuditSink for NullSink {
    async fn write(
        &self,
        events: &[keygate::audit::AuditEvent],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        black_box(events.len());
        Ok(())
    }
}

fn metrics_recorder() -> &'static Option<keygate::metrics::PrometheusHandle> {
    static HANDLE: OnceLock<Option<keygate::metrics::PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| keygate::metrics::install().ok())
}

/// The pepper's cost: one digest (SHA-256 against HMAC-SHA256) with its compare, then a
/// whole `Tokens::authenticate` on a 1 000-record store, of a valid and of an unknown token,
/// without a pepper and with one, two or three candidate digests (a pepper; a previous one;
/// unpeppered records allowed too). Every candidate is looked up for every token.
fn pepper(c: &mut Criterion) {
    use keygate::Pepper;
    let rt = runtime();
    let token = TokenKind::pat().generate();
    let secret = token.expose_secret();
    let current = Pepper::from_bytes([7u8; 32]).expect("32 bytes");
    let previous = Pepper::from_bytes([9u8; 32]).expect("32 bytes");
    let mut g = c.benchmark_group("pepper");
    let stored = TokenHash::of(secret);
    g.bench_function("digest_compare/sha256", |b| {
        b.iter(|| TokenHash::of(black_box(secret)).ct_eq(&stored))
    });
    let stored = current.digest(secret);
    g.bench_function("digest_compare/hmac_sha256", |b| {
        b.iter(|| current.digest(black_box(secret)).ct_eq(&stored))
    });
    // The previous peppers and whether unpeppered records are allowed; `None`: no pepper.
    type Setup = Option<(Vec<Pepper>, bool)>;
    let setups: [(&str, Setup); 4] = [
        ("none", None),
        ("one_candidate", Some((vec![], false))),
        ("two_candidates", Some((vec![previous.clone()], false))),
        ("three_candidates", Some((vec![previous.clone()], true))),
    ];
    for (name, setup) in setups {
        let mut builder = Tokens::builder(store_with(1_000)).max_tokens_per_owner(None);
        if let Some((older, unpeppered)) = setup {
            builder = builder
                .pepper(current.clone())
                .previous_peppers(older)
                .allow_unpeppered(unpeppered);
        }
        let tokens = builder.build().expect("valid");
        let issued = rt
            .block_on(tokens.issue(NewToken::new("bench", "pepper")))
            .expect("issue");
        let valid = issued.token.expose_secret().to_owned();
        let unknown = wrong_secret(&valid);
        g.bench_function(format!("authenticate_valid/{name}"), |b| {
            b.to_async(&rt)
                .iter(|| tokens.authenticate(black_box(valid.as_str())))
        });
        g.bench_function(format!("authenticate_unknown/{name}"), |b| {
            b.to_async(&rt)
                .iter(|| tokens.authenticate(black_box(unknown.as_str())))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Basic auth: a wrong password and an unknown email must cost the same (one argon2id
/// verification each, the second against a dummy hash).
fn basic_auth(c: &mut Criterion) {
    use keygate::accounts::{Account, hash_password, verify_password};
    let account = Account {
        email: "admin@example.com".into(),
        password_hash: hash_password("correct horse battery staple").expect("hash"),
        permissions: Permissions::none(),
        created_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    let mut g = c.benchmark_group("basic_auth");
    g.sample_size(20);
    g.bench_function("wrong_password", |b| {
        b.iter(|| verify_password(black_box("wrong"), Some(&account)))
    });
    g.bench_function("unknown_email", |b| {
        b.iter(|| verify_password(black_box("wrong"), None))
    });
    g.finish();
}

/// The floor: a hand-written bearer check doing only the work no such check can skip. It
/// reads `Authorization: Bearer <token>`, takes the token's SHA-256, looks the digest up in
/// one hash map (keyed, like keygate's, by the digest's first 8 bytes, which are uniform),
/// compares the stored digest in constant time, refuses a revoked entry, and inserts a
/// small value into the request's extensions; a refusal is a bare 401. No checksum, no
/// token kinds, no expiry, no usage, no `WWW-Authenticate`, no marking the header sensitive.
mod floor {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::future::{Ready, ready};
    use std::hash::{BuildHasherDefault, Hasher};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use futures_util::future::Either;
    use http::{Request, Response, StatusCode, header};
    use keygate::{TokenHash, TokenId};
    use tower::{Layer, Service};

    use super::Body;

    /// The map's hasher: the last `u64` written (a digest's first 8 bytes) is the hash.
    #[derive(Default)]
    pub struct PrefixHasher(u64);

    impl Hasher for PrefixHasher {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = n;
        }
    }

    /// One stored token.
    pub struct Entry {
        pub hash: TokenHash,
        pub id: TokenId,
        pub revoked: bool,
    }

    /// What a success puts into the request's extensions.
    #[derive(Clone, Copy)]
    pub struct Caller(#[allow(dead_code)] pub TokenId);

    pub type Map = HashMap<TokenHash, Entry, BuildHasherDefault<PrefixHasher>>;

    #[derive(Clone)]
    pub struct FloorLayer(pub Arc<Map>);

    impl<S> Layer<S> for FloorLayer {
        type Service = FloorService<S>;
        fn layer(&self, inner: S) -> Self::Service {
            FloorService {
                inner,
                map: self.0.clone(),
            }
        }
    }

    #[derive(Clone)]
    pub struct FloorService<S> {
        inner: S,
        map: Arc<Map>,
    }

    impl<S> Service<Request<Body>> for FloorService<S>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Either<S::Future, Ready<Result<Response<Body>, Infallible>>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, mut req: Request<Body>) -> Self::Future {
            let caller = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| {
                    let digest = TokenHash::of(t);
                    self.map
                        .get(&digest)
                        .filter(|e| e.hash.ct_eq(&digest) && !e.revoked)
                        .map(|e| Caller(e.id))
                });
            match caller {
                Some(caller) => {
                    req.extensions_mut().insert(caller);
                    Either::Left(self.inner.call(req))
                }
                None => {
                    let mut res = Response::new(Body::default());
                    *res.status_mut() = StatusCode::UNAUTHORIZED;
                    Either::Right(ready(Ok(res)))
                }
            }
        }
    }
}

/// Tokens cycled over by each outcome of [`floor`]: at most this many, spread over the store.
const CYCLED: usize = 4096;

/// `n` tokens issued through `Tokens::issue` into a `MemoryStore`, with the same digests in
/// the floor's map, and the `Authorization` headers of each outcome, each a list of distinct
/// tokens spread over the store (so a large store pays its cache misses).
struct FloorSetup {
    tokens: Tokens,
    map: Arc<floor::Map>,
    valid: Vec<String>,
    wrong: Vec<String>,
    unknown: Vec<String>,
    revoked: Vec<String>,
}

fn floor_setup(rt: &tokio::runtime::Runtime, n: usize) -> FloorSetup {
    let started = Instant::now();
    let tokens = Tokens::builder(MemoryStore::new())
        .max_tokens_per_owner(None)
        // Every valid token is verified once before the timing, so its use is recorded; an
        // hour keeps a long run from queueing uses again.
        .usage_granularity(Duration::from_secs(3600))
        .build()
        .expect("tokens");
    let per = CYCLED.min(n / 4);
    let step = n / (2 * per);
    let mut map = floor::Map::with_capacity_and_hasher(n, Default::default());
    let (mut valid, mut to_revoke) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..n {
            let owner = format!("owner-{}", i % 10_000);
            let issued = tokens
                .issue(NewToken::new(owner.clone(), format!("t{i}")))
                .await
                .expect("issue");
            map.insert(
                issued.record.hash,
                floor::Entry {
                    hash: issued.record.hash,
                    id: issued.record.id,
                    revoked: false,
                },
            );
            if i.is_multiple_of(step) && valid.len() + to_revoke.len() < 2 * per {
                // Alternate: even picks stay valid, odd ones are revoked below.
                if (i / step).is_multiple_of(2) {
                    valid.push(issued.token);
                } else {
                    to_revoke.push((owner, issued.record.id, issued.token));
                }
            }
        }
        for (owner, id, token) in &to_revoke {
            tokens.revoke(owner, *id).await.expect("revoke");
            map.get_mut(&token.hash()).expect("issued").revoked = true;
        }
        for token in &valid {
            tokens
                .authenticate(token.expose_secret())
                .await
                .expect("valid");
        }
        tokens.flush_usage().await.expect("flush");
    });
    let bearer = |t: &str| format!("Bearer {t}");
    let setup = FloorSetup {
        wrong: valid
            .iter()
            .map(|t| bearer(&wrong_secret(t.expose_secret())))
            .collect(),
        unknown: (0..valid.len())
            .map(|_| bearer(TokenKind::pat().generate().expose_secret()))
            .collect(),
        revoked: to_revoke
            .iter()
            .map(|(_, _, t)| bearer(t.expose_secret()))
            .collect(),
        valid: valid.iter().map(|t| bearer(t.expose_secret())).collect(),
        map: Arc::new(map),
        tokens,
    };
    eprintln!(
        "floor_{n}: {n} tokens issued in {:.1} s, {} per outcome",
        started.elapsed().as_secs_f64(),
        setup.valid.len()
    );
    setup
}

/// Goal: keygate's overhead within 1.2x the floor's. Paired like `overhead_1000`: batches
/// through the plain service and through the layered one alternate, and each figure is the
/// layered time minus the plain time, per request. Each outcome cycles over its own list of
/// distinct tokens (see [`FloorSetup`]), in the floor and in keygate alike:
///
/// - `floor/<outcome>`: the hand-written floor (module [`floor`]) over a map of `n` digests;
/// - `keygate/<outcome>`: `AuthLayer` over the `MemoryStore` of the same `n` tokens, issued
///   through `Tokens::issue`;
/// - `tower_http_bearer`: tower-http's static bearer check (one token, `==`), for scale.
///
/// ```sh
/// cargo bench --bench verify -- 'floor_1000/' --warm-up-time 1 --measurement-time 3
/// cargo bench --bench verify -- 'floor_1000000/'
/// ```
fn floor_groups(c: &mut Criterion) {
    const BATCH: u64 = 32;
    let rt = runtime();
    for n in [1_000usize, 1_000_000] {
        let setup: OnceLock<FloorSetup> = OnceLock::new();
        let get = || setup.get_or_init(|| floor_setup(&rt, n));
        let plain = baseline();
        let mut g = c.benchmark_group(format!("floor_{n}"));
        let paired = |b: &mut criterion::Bencher<'_>,
                      auths: &[String],
                      layered: &dyn Fn(usize, u64) -> Duration| {
            let mut at = 0;
            b.iter_custom(|iters| {
                let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
                let mut done = 0;
                while done < iters {
                    let k = BATCH.min(iters - done);
                    without += timed_cycle(&rt, &plain, auths, at, k);
                    with += layered(at, k);
                    at = (at + k as usize) % auths.len();
                    done += k;
                }
                // A preemption inside a plain batch (the machine is shared) can make one
                // sample's difference negative; criterion refuses a zero, so keep 1 ns.
                with.saturating_sub(without).max(Duration::from_nanos(1))
            })
        };
        for outcome in ["valid", "wrong_secret", "unknown", "revoked"] {
            g.bench_function(format!("floor/{outcome}"), |b| {
                let s = get();
                let svc = floor::FloorLayer(s.map.clone()).layer(baseline());
                let list = auths_of(s, outcome);
                paired(b, list, &|at, k| timed_cycle(&rt, &svc, list, at, k));
            });
            g.bench_function(format!("keygate/{outcome}"), |b| {
                let s = get();
                let svc = AuthLayer::new(s.tokens.clone()).layer(baseline());
                let list = auths_of(s, outcome);
                paired(b, list, &|at, k| timed_cycle(&rt, &svc, list, at, k));
            });
        }
        g.bench_function("tower_http_bearer", |b| {
            let s = get();
            #[allow(deprecated)]
            let svc = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(
                s.valid[0].trim_start_matches("Bearer "),
            )
            .layer(baseline());
            let one = &s.valid[..1];
            paired(b, one, &|at, k| timed_cycle(&rt, &svc, one, at, k));
        });
        g.finish();
    }
}

fn auths_of<'a>(s: &'a FloorSetup, outcome: &str) -> &'a [String] {
    match outcome {
        "valid" => &s.valid,
        "wrong_secret" => &s.wrong,
        "unknown" => &s.unknown,
        _ => &s.revoked,
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = stages, lookups, layer, layer_typed, overhead, floor_groups, basic_auth, pepper
}
criterion_main!(benches);

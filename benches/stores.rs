//! Token lookups per backend, and read scaling over threads. Every group runs in the same
//! process and the same run, so the figures compare with each other (and only roughly with
//! another run's).
//!
//! - `find_by_hash`: one `TokenStore::find_by_hash` of a known hash, per backend (see below).
//! - `authenticate`: the whole `Tokens::authenticate` of a valid token (parse, checksum,
//!   SHA-256, lookup, constant-time compare, expiry, usage bookkeeping), per backend. Usage
//!   is never flushed here, so every call also queues the token's use (one short lock).
//!
//!   Backends in both groups: `memory` (`MemoryStore`), `sqlite` (`SqliteStore` on a file in
//!   a temporary directory), `postgres` and `redis`, each direct, `+cache-hit` (a
//!   `CachedStore` in front, the token's record cached) and `+cache-miss` (a `CachedStore`
//!   that keeps nothing, so every lookup pays the cache's bookkeeping and the store).
//! - `verify_threads`: read scaling, in verifications per second (`Tokens::authenticate` of
//!   a valid token, as above) on 1 and on 2 OS threads at once:
//!   - `memory/N`: over a `MemoryStore`;
//!   - `postgres+cache-hit/N`: over a `CachedStore` in front of PostgreSQL, every lookup a
//!     hit (`sqlite+cache-hit/N`, in front of SQLite, when PostgreSQL is unreachable);
//!   - `ceiling-sha256/N`: the same harness doing only the SHA-256 of each token, which
//!     shares nothing between threads: its ratio is what the machine itself gives.
//!
//!   Each thread drives its own current-thread tokio runtime (built once, outside the
//!   timing) and cycles over its own 256 valid tokens, like a server with many clients: no
//!   two threads verify the same record. The tokens are brought to a server's steady state
//!   before the timing: verified once, usage flushed, cache emptied (it keeps its copies'
//!   old `last_used_at`), verified again, so each request finds its last use recorded and
//!   queues no write, and the cache holds every record. (The usage granularity is set to an
//!   hour and the cache's TTL too, so that a long run stays in that state.) One iteration is
//!   256 verifications per thread; the threads start together at a barrier and an
//!   iteration's time is the slowest thread's (thread start-up is not timed).
//!
//!   Read the `thrpt` line (elem/s: verifications per second, all threads together). The
//!   scaling ratio is `elem/s of N=2 / elem/s of N=1`: 2.0 is perfect scaling, and the
//!   project's goal is at least 1.8. Equivalently `2 × time(N=1) / time(N=2)`, since the
//!   time is per iteration and an iteration on 2 threads does twice the work. Compare with
//!   the ceiling's ratio: on a 2-core machine anything else running (another build or
//!   bench) takes the second core, and the ceiling then falls below 2 as well; only a
//!   verification ratio below a ceiling near 2.0 is the code's.
//!
//! - `cold_miss`: the latency of a cache miss that goes to the database, per backend
//!   (`sqlite+cache`, `postgres+cache`, `redis+cache`): `Tokens::authenticate` over a
//!   `CachedStore` that keeps nothing, each call timed alone over 1 000 tokens; the p50,
//!   p90, p99 and maximum of every call are printed after each backend
//!   (`cold_miss/postgres+cache: n=… p50=… p99=…`). Criterion's own figure is the mean.
//!
//! PostgreSQL (`KEYGATE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and Redis (`KEYGATE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) are skipped with a
//! message when unreachable; their bench schema and keys are dropped at the end.
//!
//! ```sh
//! cargo bench --bench stores                          # full run: about 4 minutes
//! cargo bench --bench stores -- --noplot              # the same without plots: 2½
//! cargo bench --bench stores -- --quick               # a quick look: under 2
//! cargo bench --bench stores -- verify_threads        # one group
//! cargo bench --bench stores -- cold_miss             # miss latency percentiles
//! cargo bench --bench stores -- 'postgres\+cache-hit'  # a filter is a regex: escape `+`
//! ```

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keygate::store::cached::CachedStore;
use keygate::store::postgres::{PostgresOptions, PostgresStore};
use keygate::store::redis::{RedisOptions, RedisStore};
use keygate::store::sqlite::SqliteStore;
use keygate::{MemoryStore, NewToken, RawToken, TokenHash, TokenStore, Tokens};
use tempfile::TempDir;

/// Valid tokens each thread of `verify_threads` cycles over; one iteration verifies each
/// once.
const PER_THREAD: usize = 256;
/// Thread counts of `verify_threads`.
const THREADS: [usize; 2] = [1, 2];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One backend under test: its name and store.
struct Backend {
    name: &'static str,
    store: Arc<dyn TokenStore>,
}

/// The backends, and what must live as long as they do or be cleaned up after them.
struct Backends {
    list: Vec<Backend>,
    pg: Option<PostgresStore>,
    redis: Option<RedisStore>,
    /// Holds the SQLite file; deleted on drop, after the benches.
    _sqlite_dir: TempDir,
}

impl Backends {
    fn get(&self, name: &str) -> Option<&Backend> {
        self.list.iter().find(|b| b.name == name)
    }
}

async fn backends() -> Backends {
    let mut list = vec![Backend {
        name: "memory",
        store: Arc::new(MemoryStore::new()),
    }];
    let sqlite_dir = tempfile::tempdir().expect("temp dir");
    let sqlite_path = sqlite_dir.path().join("bench.db");
    match SqliteStore::open(&sqlite_path).await {
        Ok(s) => list.push(Backend {
            name: "sqlite",
            store: Arc::new(s),
        }),
        Err(e) => eprintln!(
            "skipping SQLite: {} failed to open: {e}",
            sqlite_path.display()
        ),
    }
    let pg_url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("kg_bench_{}", uuid::Uuid::new_v4().simple());
    let pg = match PostgresOptions::new(&pg_url)
        .with_schema(&schema)
        .connect()
        .await
    {
        Ok(s) => {
            list.push(Backend {
                name: "postgres",
                store: Arc::new(s.clone()),
            });
            Some(s)
        }
        Err(e) => {
            eprintln!("skipping PostgreSQL: {pg_url} unreachable: {e}");
            None
        }
    };
    let redis_url = std::env::var("KEYGATE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("keygate-bench:{}:", uuid::Uuid::new_v4().simple());
    let redis = match RedisOptions::new(&redis_url)
        .with_prefix(prefix)
        .connect()
        .await
    {
        Ok(s) => {
            list.push(Backend {
                name: "redis",
                store: Arc::new(s.clone()),
            });
            Some(s)
        }
        Err(e) => {
            eprintln!("skipping Redis: {redis_url} unreachable: {e}");
            None
        }
    };
    Backends {
        list,
        pg,
        redis,
        _sqlite_dir: sqlite_dir,
    }
}

/// The variants of one backend: direct, cached (hits), cached with nothing kept (misses).
fn variants(b: &Backend) -> Vec<(String, Arc<dyn TokenStore>)> {
    let hit = CachedStore::new(b.store.clone());
    let miss = CachedStore::new(b.store.clone())
        .with_capacity(0)
        .with_negative_capacity(0);
    vec![
        (b.name.to_owned(), b.store.clone()),
        (format!("{}+cache-hit", b.name), Arc::new(hit)),
        (format!("{}+cache-miss", b.name), Arc::new(miss)),
    ]
}

fn stores(c: &mut Criterion) {
    let rt = runtime();
    let backends = rt.block_on(backends());

    let mut lookups = c.benchmark_group("find_by_hash");
    let mut fixtures: Vec<(String, Tokens, RawToken, TokenHash)> = Vec::new();
    for b in &backends.list {
        // A few records so the lookup is not into an empty table.
        let seed = Tokens::builder(b.store.clone())
            .max_tokens_per_owner(None)
            .build()
            .expect("manager");
        rt.block_on(async {
            for i in 0..200 {
                seed.issue(NewToken::new(format!("owner-{}", i % 20), format!("t{i}")))
                    .await
                    .expect("seed");
            }
        });
        for (name, store) in variants(b) {
            let tokens = Tokens::new(store.clone());
            let issued = rt
                .block_on(tokens.issue(NewToken::new("bench", name.clone())))
                .expect("issue");
            let hash = issued.token.hash();
            lookups.bench_function(&name, |bench| {
                bench.to_async(&rt).iter(|| async {
                    black_box(store.find_by_hash(black_box(&hash)).await.expect("lookup"))
                });
            });
            fixtures.push((name, tokens, issued.token, hash));
        }
    }
    lookups.finish();

    let mut auth = c.benchmark_group("authenticate");
    for (name, tokens, token, _) in &fixtures {
        auth.bench_function(name, |bench| {
            bench.to_async(&rt).iter(|| async {
                black_box(
                    tokens
                        .authenticate(black_box(token.expose_secret()))
                        .await
                        .expect("valid"),
                )
            });
        });
    }
    auth.finish();
    drop(fixtures);

    verify_threads(c, &rt, &backends);
    cold_miss(c, &rt, &backends);

    rt.block_on(async {
        if let Some(pg) = &backends.pg
            && let Some(schema) = pg.schema()
        {
            let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pg.pool())
                .await;
        }
        if let Some(redis) = &backends.redis
            && let Ok(mut conn) = redis.client().get_multiplexed_async_connection().await
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", redis.prefix()))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
        }
    });
}

/// Read scaling: whole verifications on 1 and 2 threads at once (see the module docs).
fn verify_threads(c: &mut Criterion, rt: &tokio::runtime::Runtime, backends: &Backends) {
    let threads_max = THREADS.iter().copied().max().unwrap_or(1);
    // One runtime per thread, built once: `block_on` takes `&self`, so each scoped thread
    // drives its own.
    let runtimes: Vec<tokio::runtime::Runtime> = (0..threads_max).map(|_| runtime()).collect();

    // Each case: its name, its store, and a cache to empty after flushing usage (a
    // `CachedStore` keeps its copies' `last_used_at` until they leave the cache).
    type Case = (
        String,
        Arc<dyn TokenStore>,
        Option<CachedStore<Arc<dyn TokenStore>>>,
    );
    let mut cases: Vec<Case> = vec![("memory".to_owned(), Arc::new(MemoryStore::new()), None)];
    match backends.get("postgres").or_else(|| backends.get("sqlite")) {
        Some(b) => {
            // A TTL longer than any run keeps every lookup a hit: a miss on a bench thread
            // would have to do I/O on a connection owned by the (then idle) main runtime.
            let cache = CachedStore::new(b.store.clone()).with_ttl(Duration::from_secs(3600));
            cases.push((
                format!("{}+cache-hit", b.name),
                Arc::new(cache.clone()),
                Some(cache),
            ));
        }
        None => eprintln!("skipping verify_threads over a cache: no PostgreSQL nor SQLite"),
    }

    let mut g = c.benchmark_group("verify_threads");
    // The ceiling: the same harness, SHA-256 of each token only (no shared state).
    let plain = Tokens::builder(MemoryStore::new())
        .max_tokens_per_owner(None)
        .build()
        .expect("manager");
    let sets = rt.block_on(issued_tokens(&plain, threads_max));
    for threads in THREADS {
        g.throughput(Throughput::Elements((PER_THREAD * threads) as u64));
        g.bench_function(BenchmarkId::new("ceiling-sha256", threads), |bench| {
            bench.iter_custom(|iters| on_threads(None, &sets[..threads], &runtimes, iters));
        });
    }
    drop(sets);

    for (name, store, cache) in cases {
        let tokens = Tokens::builder(store)
            .max_tokens_per_owner(None)
            // The layer records a token's use at most once per granularity (60 s by
            // default), so nearly every request finds it recorded; an hour keeps a long run
            // in that state.
            .usage_granularity(Duration::from_secs(3600))
            .build()
            .expect("manager");
        let sets = rt.block_on(warmed_tokens(&tokens, cache.as_ref(), threads_max));
        for threads in THREADS {
            g.throughput(Throughput::Elements((PER_THREAD * threads) as u64));
            g.bench_function(BenchmarkId::new(&name, threads), |bench| {
                bench.iter_custom(|iters| {
                    on_threads(Some(&tokens), &sets[..threads], &runtimes, iters)
                });
            });
        }
        let pending = tokens.pending_usage();
        if pending != 0 {
            eprintln!("verify_threads/{name}: {pending} uses were queued while timing");
        }
    }
    g.finish();
}

/// Issues `PER_THREAD` tokens per thread and brings them to the steady state: verified
/// once, usage flushed (and `cache` emptied of the records without it), verified again
/// (cached with their last use), with nothing left queued.
async fn warmed_tokens(
    tokens: &Tokens,
    cache: Option<&CachedStore<Arc<dyn TokenStore>>>,
    threads: usize,
) -> Vec<Vec<RawToken>> {
    let sets = issued_tokens(tokens, threads).await;
    let verify_all = || async {
        for token in sets.iter().flatten() {
            tokens
                .authenticate(token.expose_secret())
                .await
                .expect("valid");
        }
    };
    verify_all().await;
    tokens.flush_usage().await.expect("flush usage");
    if let Some(cache) = cache {
        cache.flush();
    }
    verify_all().await;
    assert_eq!(
        tokens.pending_usage(),
        0,
        "a verification after the flush queued a use"
    );
    if let Some(cache) = cache {
        assert_eq!(cache.len(), threads * PER_THREAD, "every record cached");
    }
    sets
}

/// `PER_THREAD` new tokens per thread, each thread's under its own owner.
async fn issued_tokens(tokens: &Tokens, threads: usize) -> Vec<Vec<RawToken>> {
    let mut sets = Vec::with_capacity(threads);
    for t in 0..threads {
        let mut set = Vec::with_capacity(PER_THREAD);
        for i in 0..PER_THREAD {
            let issued = tokens
                .issue(NewToken::new(format!("client-{t}"), format!("t{i}")))
                .await
                .expect("issue");
            set.push(issued.token);
        }
        sets.push(set);
    }
    sets
}

/// Runs `iters` passes over each set, one set per thread, all threads at once, verifying
/// each token with `tokens` (or, without, only hashing it); returns the slowest thread's
/// time from the common start.
fn on_threads(
    tokens: Option<&Tokens>,
    sets: &[Vec<RawToken>],
    runtimes: &[tokio::runtime::Runtime],
    iters: u64,
) -> Duration {
    let start = Barrier::new(sets.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = sets
            .iter()
            .zip(runtimes)
            .map(|(set, rt)| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let t0 = Instant::now();
                    rt.block_on(async {
                        for _ in 0..iters {
                            for token in set {
                                let token = black_box(token.expose_secret());
                                match tokens {
                                    Some(tokens) => {
                                        black_box(tokens.authenticate(token).await.expect("valid"));
                                    }
                                    None => {
                                        black_box(TokenHash::of(token));
                                    }
                                }
                            }
                        }
                    });
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

/// Tokens each backend of `cold_miss` cycles over.
const COLD_TOKENS: usize = 1_000;

/// The latency distribution of a cache miss that goes to the database: `Tokens::authenticate`
/// of a valid token over a `CachedStore` that keeps nothing (so every lookup misses, pays the
/// cache's bookkeeping and asks the store), one call timed at a time. Criterion reports the
/// mean; the percentiles of every timed call (warm-up included) are printed after each
/// backend's run, as `cold_miss/<backend>: n=… p50=… p90=… p99=… max=…`.
fn cold_miss(c: &mut Criterion, rt: &tokio::runtime::Runtime, backends: &Backends) {
    let mut g = c.benchmark_group("cold_miss");
    for b in &backends.list {
        if b.name == "memory" {
            continue;
        }
        let name = format!("{}+cache", b.name);
        let samples = std::cell::RefCell::new(Vec::<Duration>::new());
        // Criterion calls the closure more than once (warm-up, then measurement): the
        // tokens are issued on the first call only.
        let fixture = std::cell::OnceCell::new();
        let mut next = 0;
        g.bench_function(&name, |bench| {
            let (tokens, set) = fixture.get_or_init(|| cold_fixture(rt, b));
            bench.iter_custom(|iters| {
                let mut taken = Vec::with_capacity(iters as usize);
                rt.block_on(async {
                    for _ in 0..iters {
                        let token = set[next].expose_secret();
                        next = (next + 1) % set.len();
                        let t0 = Instant::now();
                        black_box(tokens.authenticate(token).await.expect("valid"));
                        taken.push(t0.elapsed());
                    }
                });
                let total = taken.iter().sum();
                samples.borrow_mut().extend(taken);
                total
            });
        });
        let mut samples = samples.into_inner();
        if samples.is_empty() {
            continue;
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        println!(
            "cold_miss/{name}: n={} p50={:.1?} p90={:.1?} p99={:.1?} max={:.1?}",
            samples.len(),
            at(0.50),
            at(0.90),
            at(0.99),
            at(1.0)
        );
    }
    g.finish();
}

/// `COLD_TOKENS` tokens issued through a `CachedStore` in front of `b` that keeps nothing,
/// each used once (its use recorded and flushed, so the timed calls queue none).
fn cold_fixture(rt: &tokio::runtime::Runtime, b: &Backend) -> (Tokens, Vec<RawToken>) {
    let miss = CachedStore::new(b.store.clone())
        .with_capacity(0)
        .with_negative_capacity(0);
    let tokens = Tokens::builder(Arc::new(miss) as Arc<dyn TokenStore>)
        .max_tokens_per_owner(None)
        .usage_granularity(Duration::from_secs(3600))
        .build()
        .expect("manager");
    let set: Vec<RawToken> = rt.block_on(async {
        let mut set = Vec::with_capacity(COLD_TOKENS);
        for i in 0..COLD_TOKENS {
            let issued = tokens
                .issue(NewToken::new(format!("cold-{}", i % 50), format!("c{i}")))
                .await
                .expect("issue");
            set.push(issued.token);
        }
        // Record each token's use once, so the timed calls queue none.
        for token in &set {
            tokens
                .authenticate(token.expose_secret())
                .await
                .expect("valid");
        }
        tokens.flush_usage().await.expect("flush usage");
        set
    });
    (tokens, set)
}

/// Shorter than criterion's defaults (3 s warm-up, 5 s measurement), for 30 benchmarks. On
/// the project's 2-core VM a full run takes about 4 minutes, 1½ of them drawing plots
/// (`--noplot` skips them), and a `--quick` one under 2.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = stores
}
criterion_main!(benches);

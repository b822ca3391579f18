//! Token lookups per backend: `find_by_hash` and the whole `Tokens::authenticate`, on
//! `MemoryStore`, PostgreSQL and Redis, with and without a `CachedStore` in front (hits and
//! misses), all in the same run so the figures compare.
//!
//! PostgreSQL (`KEYGATE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! and Redis (`KEYGATE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`) are skipped with a
//! message when unreachable.
//!
//! ```sh
//! cargo bench --bench stores            # full run
//! cargo bench --bench stores -- --quick # a quick look
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::store::cached::CachedStore;
use keygate::store::postgres::{PostgresOptions, PostgresStore};
use keygate::store::redis::{RedisOptions, RedisStore};
use keygate::{MemoryStore, NewToken, RawToken, TokenHash, TokenStore, Tokens};

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

async fn backends() -> (Vec<Backend>, Option<PostgresStore>, Option<RedisStore>) {
    let mut out = vec![Backend {
        name: "memory",
        store: Arc::new(MemoryStore::new()),
    }];
    let pg_url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("kg_bench_{}", uuid::Uuid::new_v4().simple());
    let pg = match PostgresOptions::new(&pg_url)
        .with_schema(&schema)
        .connect()
        .await
    {
        Ok(s) => {
            out.push(Backend {
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
            out.push(Backend {
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
    (out, pg, redis)
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
    let (backends, pg, redis) = rt.block_on(backends());

    let mut lookups = c.benchmark_group("find_by_hash");
    let mut fixtures: Vec<(String, Tokens, RawToken, TokenHash)> = Vec::new();
    for b in &backends {
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

    rt.block_on(async {
        if let Some(pg) = pg
            && let Some(schema) = pg.schema()
        {
            let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pg.pool())
                .await;
        }
        if let Some(redis) = redis
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

criterion_group!(benches, stores);
criterion_main!(benches);

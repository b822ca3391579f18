//! Two reference-server instances, each with its own app and TCP listener, sharing nothing
//! but PostgreSQL (tokens, revocations) and Redis (rate and failure limits): a token gets
//! one budget of 100 requests a minute across both, a guesser one failure budget across
//! both, and a token revoked on one is refused on the other. A Redis that cannot be reached
//! makes an instance not ready and its bearer requests 503.
//!
//! Needs PostgreSQL at `KEYGATE_TEST_POSTGRES_URL` and Redis at `KEYGATE_TEST_REDIS_URL`;
//! without them the tests print why and skip, unless `CI` is set, where they fail.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use keygate::server;
use keygate::store::redis::{RedisOptions, RedisStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "correct horse battery staple";

/// One HTTP/1.1 exchange over a fresh connection: status, lower-cased headers, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// `method path` on `addr`, from `client` (the address the trusted proxy forwards).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    client: &str,
    auth: &str,
    body: &str,
) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         X-Forwarded-For: {client}\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers.iter().any(|(k, _)| k == "transfer-encoding"),
        "a chunked answer: {head}"
    );
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Serves `app` on a port of its own, as `keygate::server::serve` does.
async fn listen(app: server::App) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router;
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

fn config(schema: &str, redis_prefix: &str) -> server::Config {
    server::Config {
        db: common::postgres_url().into(),
        db_schema: Some(schema.to_owned()),
        admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
        rate_limit: 100,
        failure_limit: 5,
        // The test talks to the servers from 127.0.0.1 and names the client it stands for.
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        redis_url: Some(common::redis_url()),
        redis_prefix: redis_prefix.to_owned(),
        // Behaviour, not the store bound, is under test.
        store_timeout: Duration::from_secs(30),
        ..server::Config::default()
    }
}

async fn redis(test: &str, prefix: &str) -> Option<RedisStore> {
    let url = common::redis_url();
    common::available(
        "Redis",
        &url,
        test,
        RedisOptions::new(url.clone())
            .with_prefix(prefix)
            .connect()
            .await,
    )
}

fn basic(password: &str) -> String {
    let pair = format!("admin@example.com:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_limits_through_redis_and_revocations_through_postgres() {
    let test = "two_instances_share_limits_through_redis_and_revocations_through_postgres";
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (schema, prefix) = (format!("kg_redis_{id}"), format!("keygate-test:srv:{id}:"));
    let Some(redis) = redis(test, &prefix).await else {
        return;
    };
    let Some(a) = common::available(
        "PostgreSQL",
        &common::postgres_url(),
        test,
        server::build_app(&config(&schema, &prefix)).await,
    ) else {
        return;
    };
    let b = server::build_app(&config(&schema, &prefix)).await.unwrap();
    for app in [&a, &b] {
        let listener = app.revocations.as_ref().expect("a listener on Postgres");
        assert!(listener.wait_connected(Duration::from_secs(5)).await);
    }
    let (a, b) = (listen(a).await, listen(b).await);
    let both = [a, b];
    for addr in both {
        let ready = call(addr, "GET", "/readyz", "198.51.100.1", "-", "").await;
        assert_eq!((ready.status, ready.body.trim()), (200, "ready"));
    }

    // A token created on A: 100 requests alternating between A and B are allowed, the
    // next is refused with Retry-After.
    let created = call(
        a,
        "POST",
        "/api/v1/tokens",
        "198.51.100.1",
        &basic(PASSWORD),
        r#"{"name":"shared","role":"viewer"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let bearer = format!("Bearer {}", created.json()["token"].as_str().unwrap());
    let token_id = created.json()["id"].as_str().unwrap().to_owned();
    // The first 100, ten at a time, so the budget has little time to refill.
    let started = Instant::now();
    for batch in 0..10 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..10 {
            let bearer = bearer.clone();
            let addr = both[(batch * 10 + i) % 2];
            set.spawn(
                async move { call(addr, "GET", "/api/v1/me", "198.51.100.1", &bearer, "").await },
            );
        }
        while let Some(res) = set.join_next().await {
            let res = res.unwrap();
            assert_eq!(res.status, 200, "{}", res.body);
            assert_eq!(res.header("ratelimit-limit"), Some("100"));
        }
    }
    let mut allowed = 100;
    let refused = loop {
        let res = call(
            both[allowed % 2],
            "GET",
            "/api/v1/me",
            "198.51.100.1",
            &bearer,
            "",
        )
        .await;
        if res.status != 200 {
            break res;
        }
        allowed += 1;
        assert!(allowed <= 200, "no limit across the instances");
    };
    let elapsed = started.elapsed();
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["code"], "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // GCRA gives one request back every 0.6 s: on a slow machine, the requests beyond 100
    // are exactly what came back while they were sent.
    let refilled = (elapsed.as_millis() / 600) as usize;
    println!("100/min across two instances: {allowed} allowed in {elapsed:?}, then 429");
    assert!(
        (100..=100 + refilled).contains(&allowed),
        "{allowed} allowed in {elapsed:?}"
    );
    // Still refused on the other instance.
    let other = both[(allowed + 1) % 2];
    let res = call(other, "GET", "/api/v1/me", "198.51.100.1", &bearer, "").await;
    assert_eq!(res.status, 429);

    // Failures count on both instances: three wrong passwords on A and two bad tokens on
    // B spend the budget of five of 203.0.113.9; the next request (even with the right
    // password) is refused on either instance, while other addresses are not affected.
    let guesser = "203.0.113.9";
    for _ in 0..3 {
        let res = call(a, "GET", "/api/v1/tokens", guesser, &basic("wrong"), "").await;
        assert_eq!(res.status, 401, "{}", res.body);
    }
    for _ in 0..2 {
        let guess = format!(
            "Bearer {}",
            keygate::TokenKind::pat().generate().expose_secret()
        );
        let res = call(b, "GET", "/api/v1/me", guesser, &guess, "").await;
        assert_eq!(res.status, 401, "{}", res.body);
    }
    for addr in both {
        let res = call(addr, "GET", "/api/v1/tokens", guesser, &basic(PASSWORD), "").await;
        assert_eq!(res.status, 429, "{}", res.body);
        assert!(res.header("retry-after").is_some());
    }
    let res = call(
        b,
        "GET",
        "/api/v1/tokens",
        "198.51.100.2",
        &basic(PASSWORD),
        "",
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);

    // Revoked on A, refused on B within a second (PostgreSQL LISTEN/NOTIFY).
    let second = call(
        a,
        "POST",
        "/api/v1/tokens",
        "198.51.100.3",
        &basic(PASSWORD),
        r#"{"name":"second","role":"viewer"}"#,
    )
    .await;
    assert_eq!(second.status, 201, "{}", second.body);
    let bearer = format!("Bearer {}", second.json()["token"].as_str().unwrap());
    let res = call(b, "GET", "/api/v1/me", "198.51.100.3", &bearer, "").await;
    assert_eq!(res.status, 200, "cached on B: {}", res.body);
    let path = format!("/api/v1/tokens/{}", second.json()["id"].as_str().unwrap());
    let res = call(a, "DELETE", &path, "198.51.100.3", &basic(PASSWORD), "").await;
    assert_eq!(res.status, 204, "{}", res.body);
    let revoked_at = Instant::now();
    loop {
        let res = call(b, "GET", "/api/v1/me", "198.51.100.3", &bearer, "").await;
        if res.status == 401 {
            break;
        }
        assert_eq!(res.status, 200, "{}", res.body);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "B still accepts the token a second after A revoked it"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "revoked on A, refused on B after {:?}",
        revoked_at.elapsed()
    );

    // The Redis keys: the token's lineage and the addresses, never a token or an email;
    // each expires by itself.
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.starts_with(&format!("{prefix}rl:"))),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("{prefix}fail:block:{guesser}")),
        "{keys:?}"
    );
    for k in &keys {
        assert!(
            !k.contains("pat_") && !k.contains("example.com") && !k.contains(&token_id),
            "{k}"
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{k} never expires");
    }
    common::redis_cleanup(&redis).await;
    drop_schema_named(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_redis_is_unreachable_is_not_ready_and_refuses_bearer_requests() {
    let test = "an_instance_whose_redis_is_unreachable_is_not_ready_and_refuses_bearer_requests";
    let id = uuid::Uuid::new_v4().simple().to_string();
    let schema = format!("kg_redis_down_{id}");
    let mut config = config(&schema, "keygate-test:down:");
    // Nothing listens on port 1.
    config.redis_url = Some("redis://:redis-secret@127.0.0.1:1".into());
    config.store_timeout = Duration::from_secs(2);
    assert!(!format!("{config:?}").contains("redis-secret"));
    let Some(app) = common::available(
        "PostgreSQL",
        &common::postgres_url(),
        test,
        server::build_app(&config).await,
    ) else {
        return;
    };
    let addr = listen(app).await;
    let ready = call(addr, "GET", "/readyz", "198.51.100.1", "-", "").await;
    assert_eq!((ready.status, ready.body.trim()), (503, "not ready"));
    // A bearer request and a sign-in are refused, not let through uncounted.
    let guess = format!(
        "Bearer {}",
        keygate::TokenKind::pat().generate().expose_secret()
    );
    let res = call(addr, "GET", "/api/v1/me", "198.51.100.1", &guess, "").await;
    assert_eq!(res.status, 503, "{}", res.body);
    assert_eq!(res.json()["code"], "store_unavailable");
    let res = call(
        addr,
        "GET",
        "/api/v1/tokens",
        "198.51.100.1",
        &basic(PASSWORD),
        "",
    )
    .await;
    assert_eq!(res.status, 503, "{}", res.body);
    drop_schema_named(&schema).await;
}

/// Drops the schema a test's servers kept their tables in.
async fn drop_schema_named(schema: &str) {
    let pool = sqlx::PgPool::connect(&common::postgres_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&pool)
    .await
    .unwrap();
}

/// A `keygate serve` process, killed when dropped.
struct Process {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// `keygate serve` on a free port with `env`, once `/readyz` answers 200.
    async fn serve(env: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KEYGATE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .env("KEYGATE_ADDR", format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut process = Self {
            child: cmd.spawn().expect("start keygate serve"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("keygate serve stopped: {status}");
            }
            if TcpStream::connect(process.addr).await.is_ok() {
                let ready = call(process.addr, "GET", "/readyz", "198.51.100.1", "-", "").await;
                if ready.status == 200 {
                    return process;
                }
            }
            assert!(Instant::now() < deadline, "keygate serve never got ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Two `keygate serve` processes on one PostgreSQL schema and one Redis: a token's 100
/// requests a minute are one budget across both, so the request past it (give or take what
/// refilled during the run) is refused with 429 and `Retry-After`, whichever instance it
/// reaches; with limits per instance, twice as many would pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keygate_serve_processes_give_a_token_one_budget_through_redis() {
    let test = "two_keygate_serve_processes_give_a_token_one_budget_through_redis";
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (schema, prefix) = (format!("kg_proc_{id}"), format!("keygate-test:proc:{id}:"));
    let Some(redis) = redis(test, &prefix).await else {
        return;
    };
    let probe = keygate::store::postgres::PostgresOptions::new(common::postgres_url())
        .with_schema(schema.clone())
        .connect()
        .await;
    let Some(probe) = common::available("PostgreSQL", &common::postgres_url(), test, probe) else {
        return;
    };
    drop(probe);
    let env = [
        ("KEYGATE_DB", common::postgres_url()),
        ("KEYGATE_DB_SCHEMA", schema.clone()),
        ("KEYGATE_ADMIN_PASSWORD", PASSWORD.to_owned()),
        ("KEYGATE_RATE_LIMIT", "100".to_owned()),
        ("KEYGATE_REDIS_URL", common::redis_url()),
        ("KEYGATE_REDIS_PREFIX", prefix.clone()),
        ("KEYGATE_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ("KEYGATE_STORE_TIMEOUT", "30".to_owned()),
    ];
    let a = Process::serve(&env).await;
    let b = Process::serve(&env).await;

    let created = call(
        a.addr,
        "POST",
        "/api/v1/tokens",
        "198.51.100.1",
        &basic(PASSWORD),
        r#"{"name":"across"}"#,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let bearer = format!("Bearer {}", created.json()["token"].as_str().unwrap());

    let started = Instant::now();
    let mut allowed = [0u32; 2];
    let refused = loop {
        let i = (allowed[0] + allowed[1]) as usize;
        let at = [a.addr, b.addr][i % 2];
        let answer = call(at, "GET", "/api/v1/me", "198.51.100.1", &bearer, "").await;
        match answer.status {
            200 => allowed[i % 2] += 1,
            429 => break answer,
            other => panic!("request {i}: {other} {}", answer.body),
        }
        assert!(
            allowed[0] + allowed[1] <= 200,
            "no 429 after 200 requests: each instance keeps its own budget"
        );
    };
    let elapsed = started.elapsed();
    let total = allowed[0] + allowed[1];
    // One request's budget comes back every 0.6 s.
    let refilled = u32::try_from(elapsed.as_millis() / 600).unwrap() + 1;
    assert!(
        (100..=100 + refilled).contains(&total),
        "{total} requests passed in {elapsed:?} before the 429 (A {}, B {})",
        allowed[0],
        allowed[1]
    );
    assert!(allowed[0] >= 50 && allowed[1] >= 49, "{allowed:?}");
    assert_eq!(refused.json()["code"], "rate_limited");
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // The other instance refuses the same token too: the budget is spent everywhere.
    let other = [a.addr, b.addr][(total as usize + 1) % 2];
    let again = call(other, "GET", "/api/v1/me", "198.51.100.1", &bearer, "").await;
    assert_eq!(again.status, 429, "{}", again.body);

    drop((a, b));
    common::redis_cleanup(&redis).await;
    drop_schema_named(&schema).await;
}

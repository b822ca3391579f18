//! TLS to the backends. PostgreSQL: the server at `KEYGATE_TEST_POSTGRES_URL` with SSL on
//! (Debian's snakeoil certificate, issued to `localhost`), reached with `sslmode=require`
//! and `verify-full`. Redis: a `redis-server` started here on a free loopback port with TLS
//! only and a certificate made here, reached with `rediss://` and that CA. Without the
//! services the tests skip with a message, or fail when `CI` is set.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keygate::store::cached::CachedStore;
use keygate::store::postgres::{PostgresOptions, PostgresStore};
use keygate::store::redis::{RedisOptions, RedisStore};
use keygate::{NewToken, StoreError, Tokens};

/// Debian's self-signed certificate, the one the test PostgreSQL serves.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The test database's URL with `host` (when given) and the query parameters `params`.
fn pg_url(host: Option<&str>, params: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&common::postgres_url()).unwrap();
    if let Some(host) = host {
        url.set_host(Some(host)).unwrap();
    }
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

fn pg_options(url: String, test: &str) -> PostgresOptions {
    let schema = format!("kg_tls_{test}_{}", uuid::Uuid::new_v4().simple());
    PostgresOptions::new(url)
        .with_schema(&schema[..schema.len().min(63)])
        .with_acquire_timeout(Duration::from_secs(5))
}

/// Whether the session of one pooled connection is encrypted, by PostgreSQL's own account.
async fn session_is_encrypted(store: &PostgresStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// A token issued, accepted, revoked and refused through `store`.
async fn round_trip<S: keygate::TokenStore>(store: S) {
    let tokens = Tokens::new(store);
    let issued = tokens
        .issue(NewToken::new("alice@example.com", "tls"))
        .await
        .unwrap();
    let secret = issued.token.expose_secret();
    let who = tokens.authenticate(secret).await.unwrap();
    assert_eq!(who.owner(), "alice@example.com");
    tokens
        .revoke("alice@example.com", issued.record.id)
        .await
        .unwrap();
    assert!(tokens.authenticate(secret).await.is_err(), "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_sslmode_require_talks_over_an_encrypted_session() {
    let url = pg_url(None, &[("sslmode", "require")]);
    let Some(store) = common::available(
        "PostgreSQL with SSL",
        &url,
        "sslmode_require",
        pg_options(url.clone(), "require").connect().await,
    ) else {
        return;
    };
    assert!(session_is_encrypted(&store).await, "pg_stat_ssl.ssl");
    round_trip(store.clone()).await;
    common::drop_schema(&store).await;

    // The same database without TLS, for contrast: PostgreSQL says so too.
    let plain = pg_options(pg_url(None, &[("sslmode", "disable")]), "plain")
        .connect()
        .await
        .unwrap();
    assert!(!session_is_encrypted(&plain).await);
    common::drop_schema(&plain).await;
}

/// The snakeoil certificate, when the test database is the local one that serves it.
fn snakeoil(test: &str) -> Option<&'static str> {
    let local = url::Url::parse(&common::postgres_url())
        .unwrap()
        .host_str()
        .is_some_and(|h| h == "127.0.0.1" || h == "localhost");
    let found = if !local {
        Err("the test database is not the local one")
    } else if Path::new(SNAKEOIL).exists() {
        Ok(SNAKEOIL)
    } else {
        Err("no snakeoil certificate")
    };
    common::available("PostgreSQL's snakeoil certificate", SNAKEOIL, test, found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_accepts_the_certificate_of_the_host_it_names() {
    let Some(ca) = snakeoil("verify_full_ok") else {
        return;
    };
    // The snakeoil certificate names `localhost` only.
    let url = pg_url(
        Some("localhost"),
        &[("sslmode", "verify-full"), ("sslrootcert", ca)],
    );
    let store = pg_options(url, "verify").connect().await.unwrap();
    assert!(session_is_encrypted(&store).await);
    round_trip(store.clone()).await;
    common::drop_schema(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_refuses_a_certificate_for_another_name() {
    let Some(ca) = snakeoil("verify_full_refused") else {
        return;
    };
    // Right CA, wrong name: the certificate is for `localhost`, not for 127.0.0.1.
    let wrong_name = pg_url(
        Some("127.0.0.1"),
        &[("sslmode", "verify-full"), ("sslrootcert", ca)],
    );
    let e = pg_options(wrong_name, "refused")
        .connect()
        .await
        .expect_err("the verification fails");
    assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    let text = chain(&e);
    assert!(
        text.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
        "{text}"
    );

    // A CA file that is not there is named in the error.
    let missing = pg_url(
        Some("localhost"),
        &[
            ("sslmode", "verify-full"),
            ("sslrootcert", "/nonexistent/keygate-ca.pem"),
        ],
    );
    let e = pg_options(missing, "missing_ca")
        .connect()
        .await
        .expect_err("no CA file");
    assert!(
        chain(&e).contains("/nonexistent/keygate-ca.pem"),
        "{}",
        chain(&e)
    );
}

/// A `redis-server` with TLS only, on a free loopback port; killed when dropped, so it
/// stops even when the test fails.
struct TlsRedis {
    child: Child,
    port: u16,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `contents` to `path`, readable by its owner only (it may be a private key).
fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .unwrap()
        .write_all(contents.as_bytes())
        .unwrap();
}

/// A CA, and a server certificate it signs for `localhost` and 127.0.0.1, as PEM files.
fn certificates(dir: &Path) -> (String, [PathBuf; 3]) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "keygate test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_issuer = rcgen::Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = server.signed_by(&key, &ca_issuer).unwrap();

    let paths = [
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    ];
    write_private(&paths[0], &ca_cert.pem());
    write_private(&paths[1], &cert.pem());
    write_private(&paths[2], &key.serialize_pem());
    (ca_cert.pem(), paths)
}

/// Starts the TLS Redis, or `None` (with the reason printed) when `redis-server` cannot run
/// and `CI` is unset.
fn tls_redis(test: &str) -> Option<TlsRedis> {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, [ca, cert, key]) = certificates(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spawned = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--tls-auth-clients", "no"])
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = common::available("redis-server", "PATH", test, spawned)?;
    let server = TlsRedis {
        child,
        port,
        ca_pem,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

impl TlsRedis {
    fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.port)
    }

    fn options(&self, host: &str) -> RedisOptions {
        RedisOptions::new(self.url(host))
            .with_prefix(format!("keygate-tls:{}:", uuid::Uuid::new_v4().simple()))
            .with_connection_timeout(Duration::from_secs(5))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca_round_trips_a_token_and_hears_revocations() {
    let Some(server) = tls_redis("redis_tls") else {
        return;
    };
    let store: RedisStore = server
        .options("localhost")
        .with_ca_certificate(server.ca_pem.clone())
        .connect()
        .await
        .unwrap();
    round_trip(store.clone()).await;

    // The revocation listener subscribes over TLS too: a cache elsewhere forgets a revoked
    // token.
    let cache = CachedStore::new(store.clone()).with_ttl(Duration::from_secs(300));
    let listener = cache.listen_redis(store.client().clone(), store.revocation_channel());
    assert!(listener.wait_connected(Duration::from_secs(5)).await);
    let writer = Tokens::new(store.clone());
    let reader = Tokens::new(cache);
    let issued = writer.issue(NewToken::new("bob", "cached")).await.unwrap();
    let secret = issued.token.expose_secret();
    reader.authenticate(secret).await.unwrap();
    writer.revoke("bob", issued.record.id).await.unwrap();
    let start = Instant::now();
    while reader.authenticate(secret).await.is_ok() {
        assert!(start.elapsed() < Duration::from_secs(5), "still cached");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // An IP address the certificate names is checked like a host name.
    let by_ip = server
        .options("127.0.0.1")
        .with_ca_certificate(server.ca_pem.clone())
        .connect()
        .await
        .unwrap();
    round_trip(by_ip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_refuses_a_server_whose_ca_it_was_not_given() {
    let Some(server) = tls_redis("redis_tls_refused") else {
        return;
    };
    // The system's store does not hold the CA made for this test.
    let e = server
        .options("localhost")
        .with_response_timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect_err("an unknown CA is refused");
    let text = chain(&e);
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );

    // Another CA than the server's: refused too.
    let dir = tempfile::tempdir().unwrap();
    let (other_ca, _) = certificates(dir.path());
    let e = server
        .options("localhost")
        .with_ca_certificate(other_ca)
        .connect()
        .await
        .expect_err("a certificate from another CA is refused");
    // (Both CAs bear the same name: the signature gives the impostor away.)
    assert!(
        chain(&e).contains("invalid peer certificate: BadSignature"),
        "{}",
        chain(&e)
    );
}

#[test]
fn a_redis_ca_certificate_is_checked_when_the_store_is_made() {
    let garbage = RedisOptions::new("rediss://localhost:6380")
        .with_ca_certificate("not a certificate")
        .connect_lazy()
        .expect_err("no PEM certificate");
    assert!(chain(&garbage).contains("no PEM CERTIFICATE"), "{garbage}");

    let plain = RedisOptions::new("redis://localhost:6379")
        .with_ca_certificate("PEM")
        .connect_lazy()
        .expect_err("a CA needs rediss://");
    assert!(chain(&plain).contains("rediss://"), "{}", chain(&plain));

    let shown = format!(
        "{:?}",
        RedisOptions::new("rediss://:hunter2@localhost:6380").with_ca_certificate("PEM")
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}

//! Invisible names, bounded waits, and secrets in configuration and files.

use http::{Method, StatusCode};
use keygate::{MemoryStore, NewToken, TokenError, Tokens};
use serde_json::json;

use crate::support::{Server, admin_basic, json_request, request};

/// Texts that look like something else on screen, or that rearrange what is around them:
/// a zero-width space, a right-to-left override, the line and paragraph separators, every
/// bidirectional control, a byte-order mark, a soft hyphen and a C0 control.
const INVISIBLE: &[&str] = &[
    "deploy\u{200b}",
    "\u{202e}gpj.exe",
    "line\u{2028}break",
    "para\u{2029}break",
    "\u{061c}arabic-mark",
    "ltr\u{200e}mark",
    "rtl\u{200f}mark",
    "\u{202a}embed",
    "\u{202b}embed",
    "\u{202c}pop",
    "\u{202d}override",
    "\u{2066}isolate",
    "\u{2067}isolate",
    "\u{2068}isolate",
    "\u{2069}pop",
    "\u{feff}bom",
    "soft\u{00ad}hyphen",
    "zero\u{200d}joiner",
    "bell\u{7}",
];

#[tokio::test]
async fn invisible_characters_in_a_name_or_description_are_refused_and_create_nothing() {
    let server = Server::start().await;
    for text in INVISIBLE {
        for body in [
            json!({ "name": text }),
            json!({ "name": "visible", "description": text }),
        ] {
            let a = server
                .send(json_request(
                    Method::POST,
                    "/api/v1/tokens",
                    &admin_basic(),
                    &body,
                ))
                .await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
            assert_eq!(a.code(), "invalid_request", "{body}");
            assert!(a.json().get("token").is_none());
        }
    }
    // Nothing was created: the list (and so the token page, which shows this list) is
    // as empty as before.
    let list = server
        .send(request(Method::GET, "/api/v1/tokens", &admin_basic()))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.json(), json!([]));
    // Visible text from any script is still welcome.
    server
        .create(json!({ "name": "déploiement-東京", "description": "مرحبا, שלום" }))
        .await;
}

#[tokio::test]
async fn the_library_refuses_invisible_names_descriptions_and_owners() {
    let tokens = Tokens::new(MemoryStore::new());
    for text in INVISIBLE {
        let name = tokens.issue(NewToken::new("alice", *text)).await;
        assert!(
            matches!(name, Err(TokenError::InvalidName(_))),
            "{text:?}: {name:?}"
        );
        let description = tokens
            .issue(NewToken::new("alice", "ok").description(*text))
            .await;
        assert!(
            matches!(description, Err(TokenError::InvalidDescription(_))),
            "{text:?}: {description:?}"
        );
        let owner = tokens.issue(NewToken::new(*text, "ok")).await;
        assert!(
            matches!(owner, Err(TokenError::InvalidOwner(_))),
            "{text:?}: {owner:?}"
        );
    }
    assert!(tokens.list("alice").await.unwrap().is_empty());
}

mod waits {
    //! A database that stops answering: every request that waits on it gets 503
    //! `store_unavailable` within the 2 s bound, on paused tokio time, and never a 200.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use http::{Method, Request, StatusCode, header};
    use keygate::accounts::{Account, AccountStore, MemoryAccounts};
    use keygate::audit::{AuditEvent, AuditFilter, AuditReader, AuditSink, MemoryAuditSink};
    use keygate::store::{
        InactiveOutcome, InsertRules, MemoryStore, ReleaseOutcome, RotateOutcome, StoreError,
        TokenId, TokenRecord, TokenStore,
    };
    use keygate::{NewToken, Permissions, TokenHash};
    use time::OffsetDateTime;
    use tower::ServiceExt;

    use crate::server;
    use crate::support::{ADMIN, Answer, PASSWORD, PEER, admin_basic, request};

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// Which calls never return.
    #[derive(Default)]
    struct Hangs {
        /// Token lookups by hash (the fast path too, so the lookup must wait).
        lookups: AtomicBool,
        /// Listing, reading and writing tokens.
        management: AtomicBool,
        /// Account lookups.
        accounts: AtomicBool,
        /// Audit reads.
        audit: AtomicBool,
    }

    /// A database in memory that can be wedged call by call: a wedged call waits forever,
    /// as a store behind a lost connection or a held lock does.
    #[derive(Clone, Default)]
    struct Wedged {
        tokens: MemoryStore,
        accounts: MemoryAccounts,
        audit: MemoryAuditSink,
        hangs: Arc<Hangs>,
    }

    impl Wedged {
        async fn gate(flag: &AtomicBool) {
            if flag.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }
        async fn lookup(&self) {
            Self::gate(&self.hangs.lookups).await;
        }
        async fn manage(&self) {
            Self::gate(&self.hangs.management).await;
        }
    }

    #[async_trait]
    impl TokenStore for Wedged {
        async fn insert(&self, record: TokenRecord, rules: InsertRules) -> Result<(), StoreError> {
            self.manage().await;
            self.tokens.insert(record, rules).await
        }
        async fn find_by_hash(
            &self,
            hash: &TokenHash,
        ) -> Result<Option<Arc<TokenRecord>>, StoreError> {
            self.lookup().await;
            self.tokens.find_by_hash(hash).await
        }
        fn find_by_hash_now(
            &self,
            hash: &TokenHash,
        ) -> Option<Result<Option<Arc<TokenRecord>>, StoreError>> {
            if self.hangs.lookups.load(Ordering::SeqCst) {
                None
            } else {
                self.tokens.find_by_hash_now(hash)
            }
        }
        async fn get(&self, id: &TokenId) -> Result<Option<TokenRecord>, StoreError> {
            self.manage().await;
            self.tokens.get(id).await
        }
        async fn list_by_owner(&self, owner: &str) -> Result<Vec<TokenRecord>, StoreError> {
            self.manage().await;
            self.tokens.list_by_owner(owner).await
        }
        async fn revoke(&self, id: &TokenId, at: OffsetDateTime) -> Result<bool, StoreError> {
            self.manage().await;
            self.tokens.revoke(id, at).await
        }
        async fn rotate(
            &self,
            old: &TokenId,
            new: TokenRecord,
            old_expires_at: OffsetDateTime,
            rules: InsertRules,
        ) -> Result<RotateOutcome, StoreError> {
            self.manage().await;
            self.tokens.rotate(old, new, old_expires_at, rules).await
        }
        async fn record_use(&self, uses: &[(TokenId, OffsetDateTime)]) -> Result<(), StoreError> {
            self.tokens.record_use(uses).await
        }
        async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
            self.tokens.purge_expired(now).await
        }
        async fn bind(
            &self,
            id: &TokenId,
            fingerprint: &str,
            now: OffsetDateTime,
        ) -> Result<Option<String>, StoreError> {
            self.lookup().await;
            self.tokens.bind(id, fingerprint, now).await
        }
        async fn release(
            &self,
            id: &TokenId,
            now: OffsetDateTime,
            min_interval: Duration,
        ) -> Result<ReleaseOutcome, StoreError> {
            self.manage().await;
            self.tokens.release(id, now, min_interval).await
        }
        async fn expire_inactive(
            &self,
            cutoff: OffsetDateTime,
            now: OffsetDateTime,
            kinds: &[String],
            release_kinds: &[String],
        ) -> Result<InactiveOutcome, StoreError> {
            self.tokens
                .expire_inactive(cutoff, now, kinds, release_kinds)
                .await
        }
    }

    #[async_trait]
    impl AccountStore for Wedged {
        async fn put_account(&self, account: Account) -> Result<(), StoreError> {
            Self::gate(&self.hangs.accounts).await;
            self.accounts.put_account(account).await
        }
        async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
            Self::gate(&self.hangs.accounts).await;
            self.accounts.find_account(email).await
        }
    }

    #[async_trait]
    impl AuditSink for Wedged {
        async fn write(&self, events: &[AuditEvent]) -> Result<(), BoxError> {
            self.audit.write(events).await
        }
    }

    #[async_trait]
    impl AuditReader for Wedged {
        async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
            Self::gate(&self.hangs.audit).await;
            self.audit.list_audit(filter).await
        }
    }

    /// The reference server's routes over a wedgeable database, with an admin token
    /// holding every permission.
    async fn start() -> (server::App, Wedged, String) {
        let db = Wedged::default();
        let config = server::Config {
            admin_email: ADMIN.into(),
            admin_password: Some(zeroize::Zeroizing::new(PASSWORD.to_owned())),
            metrics: false,
            demo: true,
            ..server::Config::default()
        };
        let app = server::assemble(&config, db.clone(), db.clone())
            .await
            .unwrap();
        let issued = app
            .tokens
            .issue(NewToken::new(ADMIN, "wedge").permissions(Permissions::parse(["*"]).unwrap()))
            .await
            .unwrap();
        let bearer = format!("Bearer {}", issued.token.expose_secret());
        (app, db, bearer)
    }

    /// Sends `req` on paused time; the answer and how much (paused) time it took. A request
    /// still waiting after a minute fails the test instead of hanging it.
    async fn send(app: &server::App, mut req: Request<Body>) -> (Answer, Duration) {
        req.extensions_mut()
            .insert(ConnectInfo(PEER.parse::<std::net::SocketAddr>().unwrap()));
        let started = tokio::time::Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(60), app.router.clone().oneshot(req))
            .await
            .expect("the request hung past a minute")
            .unwrap();
        let took = started.elapsed();
        (Answer::read(res).await, took)
    }

    fn assert_unavailable_within_the_bound(what: &str, (a, took): (Answer, Duration)) {
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            a.text
        );
        assert_eq!(a.code(), "store_unavailable", "{what}");
        assert!(
            took <= Duration::from_secs(3),
            "{what}: answered after {took:?}, past the 2 s bound"
        );
    }

    #[tokio::test]
    async fn a_wedged_token_lookup_answers_503_within_the_bound() {
        let (app, db, bearer) = start().await;
        let (ok, _) = send(&app, request(Method::GET, "/api/v1/me", &bearer)).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        tokio::time::pause();
        db.hangs.lookups.store(true, Ordering::SeqCst);
        for path in ["/api/v1/me", "/api/v1/apps"] {
            let answer = send(&app, request(Method::GET, path, &bearer)).await;
            assert_unavailable_within_the_bound(path, answer);
        }
    }

    #[tokio::test]
    async fn readiness_fails_within_the_bound_when_the_database_is_wedged_and_liveness_holds() {
        let (app, db, _) = start().await;
        let probe = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
        let (live, _) = send(&app, probe("/healthz")).await;
        assert_eq!(live.status, StatusCode::OK, "{}", live.text);
        let (ready, _) = send(&app, probe("/readyz")).await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
        assert_eq!(ready.text.trim(), "ready");

        tokio::time::pause();
        db.hangs.accounts.store(true, Ordering::SeqCst);
        let (ready, took) = send(&app, probe("/readyz")).await;
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            ready.text
        );
        // Unauthenticated: the answer says nothing about which part failed, or why.
        assert_eq!(ready.text.trim(), "not ready");
        assert!(took <= Duration::from_secs(3), "answered after {took:?}");
        // The process is alive all the same: an orchestrator must not restart it for a
        // database outage.
        let (live, _) = send(&app, probe("/healthz")).await;
        assert_eq!(live.status, StatusCode::OK);

        db.hangs.accounts.store(false, Ordering::SeqCst);
        let (ready, _) = send(&app, probe("/readyz")).await;
        assert_eq!(
            ready.status,
            StatusCode::OK,
            "ready again once the database answers"
        );
    }

    #[tokio::test]
    async fn a_wedged_account_store_answers_basic_sign_in_503_within_the_bound() {
        let (app, db, _) = start().await;
        tokio::time::pause();
        db.hangs.accounts.store(true, Ordering::SeqCst);
        let answer = send(&app, request(Method::GET, "/api/v1/tokens", &admin_basic())).await;
        assert_unavailable_within_the_bound("Basic sign-in", answer);
    }

    #[tokio::test]
    async fn a_wedged_permission_lookup_answers_503_within_the_bound() {
        let (app, db, bearer) = start().await;
        tokio::time::pause();
        // The token is found; its owner's current permissions cannot be.
        db.hangs.accounts.store(true, Ordering::SeqCst);
        for path in ["/api/v1/apps", "/api/v1/tokens", "/api/v1/me"] {
            let answer = send(&app, request(Method::GET, path, &bearer)).await;
            assert_unavailable_within_the_bound(path, answer);
        }
    }

    #[tokio::test]
    async fn wedged_management_reads_and_writes_answer_503_within_the_bound() {
        let (app, db, bearer) = start().await;
        // Resolve the owner's permissions once, so only the management calls wait.
        let (ok, _) = send(&app, request(Method::GET, "/api/v1/tokens", &bearer)).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        let id = ok.json()[0]["id"].as_str().unwrap().to_owned();
        tokio::time::pause();
        db.hangs.management.store(true, Ordering::SeqCst);
        db.hangs.audit.store(true, Ordering::SeqCst);
        let rotate = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/tokens/{id}/rotate"))
            .header(header::AUTHORIZATION, &bearer)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let cases = [
            ("list", request(Method::GET, "/api/v1/tokens", &bearer)),
            (
                "revoke",
                request(Method::DELETE, &format!("/api/v1/tokens/{id}"), &bearer),
            ),
            ("rotate", rotate),
            ("audit", request(Method::GET, "/api/v1/audit", &bearer)),
        ];
        for (what, req) in cases {
            let answer = send(&app, req).await;
            assert_unavailable_within_the_bound(what, answer);
        }
    }
}

mod secrets {
    //! Database passwords never show in `Debug`, the start banner or connection errors,
    //! and the files that hold password hashes and audit events are private.

    use std::time::Duration;

    use keygate::store::postgres::PostgresOptions;
    use keygate::store::redis::RedisOptions;

    use crate::server;

    /// URLs with a password in every place one can go, and the password each one holds.
    const URLS: &[(&str, &str)] = &[
        (
            "postgres://keygate:pw-userinfo@db.internal:5432/keygate",
            "pw-userinfo",
        ),
        (
            "postgresql://keygate:p%40ss-encoded@db.internal/keygate",
            "p%40ss-encoded",
        ),
        (
            "postgres://keygate@db.internal/keygate?password=pw-query",
            "pw-query",
        ),
        (
            "postgres://keygate@db.internal/keygate?sslmode=require&sslpassword=pw-ssl",
            "pw-ssl",
        ),
        (
            "postgres://keygate:pw-both@db.internal/keygate?password=pw-both-q",
            "pw-both",
        ),
        ("redis://:pw-redis@127.0.0.1:6379/0", "pw-redis"),
        ("redis://default:pw-acl@127.0.0.1:6379/0", "pw-acl"),
        (
            "redis+unix:///run/redis.sock?db=1&pass=pw-socket",
            "pw-socket",
        ),
    ];

    fn assert_hidden(shown: &str, url: &str, secret: &str) {
        assert!(
            !shown.contains(secret),
            "{url}: the password shows in {shown}"
        );
        // The query's own password too, when there are two.
        assert!(!shown.contains("pw-both-q"), "{url}: {shown}");
    }

    #[test]
    fn debug_of_database_options_never_shows_the_password() {
        for (url, secret) in URLS {
            let pg = format!("{:?}", PostgresOptions::new(*url).with_schema("s1"));
            assert_hidden(&pg, url, secret);
            assert!(pg.contains("***") && pg.contains("s1"), "{pg}");
            let redis = format!("{:?}", RedisOptions::new(*url));
            assert_hidden(&redis, url, secret);
            assert!(redis.contains("***"), "{redis}");
        }
    }

    #[test]
    fn the_start_banner_never_shows_the_database_password() {
        for (url, secret) in URLS.iter().filter(|(u, _)| u.starts_with("postgres")) {
            let config = server::Config {
                db: (*url).into(),
                ..server::Config::default()
            };
            let shown = config.describe_db();
            assert_hidden(&shown, url, secret);
            assert!(shown.contains("db.internal"), "the host stays: {shown}");
        }
    }

    /// Attack on the operator's logs: a `KEYGATE_DB` pasted with a stray leading space (an
    /// env file, a YAML value) must still be read as a PostgreSQL URL, whose password never
    /// shows: not as a SQLite path printed in full by `Config`'s `Debug`, the start banner and
    /// the error of a failed start.
    #[tokio::test]
    async fn a_database_url_with_stray_whitespace_never_shows_its_password() {
        for url in [
            " postgres://keygate:pw-space@127.0.0.1:1/keygate",
            "\tPostgreSQL://keygate:pw-space@127.0.0.1:1/keygate \n",
        ] {
            let config = server::Config {
                db: url.into(),
                ..server::Config::default()
            };
            assert!(
                !config.describe_db().contains("pw-space"),
                "{url:?}: {}",
                config.describe_db()
            );
            assert!(!format!("{config:?}").contains("pw-space"), "{config:?}");
            let Err(e) = server::build_app(&config).await else {
                panic!("{url:?}: nothing listens on port 1");
            };
            let shown = chain(e.as_ref());
            assert!(!shown.contains("pw-space"), "{url:?}: {shown}");
        }
    }

    /// The whole chain of an error, `Display` and `Debug`.
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        let mut out = format!("{e} {e:?}");
        let mut source = e.source();
        while let Some(s) = source {
            out.push_str(&format!(" / {s} {s:?}"));
            source = s.source();
        }
        out
    }

    #[tokio::test]
    async fn connection_errors_never_show_the_password() {
        let pg = PostgresOptions::new("postgres://keygate:pw-unreachable@127.0.0.1:1/keygate")
            .with_acquire_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap_err();
        assert!(!chain(&pg).contains("pw-unreachable"), "{}", chain(&pg));
        let bad = PostgresOptions::new("postgres://keygate:pw-bad@[::1/keygate")
            .connect()
            .await
            .unwrap_err();
        assert!(!chain(&bad).contains("pw-bad"), "{}", chain(&bad));
        let redis = RedisOptions::new("redis://:pw-unreachable@127.0.0.1:1/0")
            .with_connection_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap_err();
        assert!(
            !chain(&redis).contains("pw-unreachable"),
            "{}",
            chain(&redis)
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_database_and_audit_files_are_private_after_a_start() {
        use std::os::unix::fs::PermissionsExt;

        use http::Method;
        use serde_json::json;

        use crate::support::{Server, admin_basic, request};

        let server = Server::with(|c| c.audit_log = Some(c.db.with_file_name("audit.jsonl"))).await;
        // A write and a read, so the journal files exist and an event is written.
        server.create(json!({ "name": "files" })).await;
        server
            .send(request(Method::GET, "/api/v1/tokens", &admin_basic()))
            .await;
        let db = server.config.db.clone();
        let mut files = vec![db.clone(), server.config.audit_log.clone().unwrap()];
        for suffix in ["-wal", "-shm"] {
            let mut side = db.clone().into_os_string();
            side.push(suffix);
            files.push(side.into());
        }
        for file in files {
            let mode = std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o777,
                0o600,
                "{} is {:o}",
                file.display(),
                mode & 0o777
            );
        }
    }
}

//! Attacks on a deployed reference server through its configuration and its edges: a
//! mistyped database setting, the forwarding headers a proxy passes on, the limits shared
//! by several instances.

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

mod database_setting {
    use keygate::server::{Config, Database};

    /// Database settings an operator can mistype, each holding the password `pw-typo`: a
    /// misspelled or foreign scheme, `postgres:` without the slashes, a JDBC URL, a libpq
    /// keyword/value string.
    const NOT_A_DATABASE: &[&str] = &[
        "postgress://keygate:pw-typo@db.internal/keygate",
        "mysql://keygate:pw-typo@db.internal/keygate",
        "redis://:pw-typo@db.internal:6379/0",
        "postgres:keygate:pw-typo@db.internal/keygate",
        "PostgreSQL:keygate:pw-typo@db.internal/keygate",
        "jdbc:postgresql://db.internal/keygate?user=keygate&password=pw-typo",
        "host=db.internal user=keygate password=pw-typo dbname=keygate",
        "dbname=keygate password=pw-typo",
    ];

    /// Attack on the operator's logs and on the deployment: a `KEYGATE_DB` meant as a
    /// PostgreSQL connection, but mistyped, used to be taken for a SQLite file path. The
    /// server then printed it in full (password included) in its start banner, `Debug` of
    /// its configuration and the error of a failed start, and where the path could be
    /// created, silently ran on a fresh local SQLite file instead of the shared database:
    /// each instance with its own tokens and its own revocations. It is now refused, and the
    /// refusal never quotes it.
    #[test]
    fn a_mistyped_database_url_is_refused_without_showing_its_password() {
        for value in NOT_A_DATABASE {
            let parsed = Database::parse(value);
            let Err(e) = parsed else {
                panic!("{value:?} was taken for {parsed:?}");
            };
            assert!(e.is_usage(), "{value:?}: a usage error, not a store error");
            let shown = super::chain(&e);
            assert!(!shown.contains("pw-typo"), "{value:?}: {shown}");

            let loaded = Config::loader()
                .with_file(None)
                .with_env([("KEYGATE_DB", *value)])
                .load();
            let Err(e) = loaded else {
                panic!("{value:?} was accepted as a database");
            };
            let shown = format!("{e} {e:?}");
            assert!(shown.contains("KEYGATE_DB"), "{value:?}: {shown}");
            assert!(!shown.contains("pw-typo"), "{value:?}: {shown}");

            let config = Config {
                db: (*value).into(),
                ..Config::default()
            };
            assert!(
                !config.describe_db().contains("pw-typo"),
                "{value:?}: {}",
                config.describe_db()
            );
            assert!(!format!("{config:?}").contains("pw-typo"), "{config:?}");
        }
    }

    #[test]
    fn sqlite_files_and_postgres_urls_are_still_databases() {
        for (value, sqlite) in [
            ("keygate.db", true),
            ("sqlite://data/keygate.db", true),
            ("sqlite:keygate.db", true),
            ("/var/lib/keygate/keygate.db", true),
            ("./my db.sqlite", true),
            ("postgres://keygate@db.internal/keygate", false),
            ("postgresql://keygate@db.internal/keygate", false),
        ] {
            let db = Database::parse(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(matches!(db, Database::Sqlite(_)), sqlite, "{value:?}");
        }
    }
}

mod forward_auth {
    use axum::body::Body;
    use http::{Method, Request, StatusCode, header};
    use keygate::forward_auth::OriginalRequest;
    use serde_json::json;

    use crate::support::Server;

    /// What an attacker sends through Envoy: a `DELETE` (which Envoy passes on to the
    /// check as the check's own method and path), with `X-Original-*` headers of its own
    /// describing a harmless read. Envoy forwards them when its `allowed_headers` were
    /// widened (to pass `X-Forwarded-For`, say).
    fn disguised_delete(bearer: &str) -> Request<Body> {
        Request::builder()
            .method(Method::DELETE)
            .uri("/api/v1/verify/things/1")
            .header(header::AUTHORIZATION, bearer)
            .header("x-original-method", "GET")
            .header("x-original-uri", "/things/1")
            .body(Body::empty())
            .unwrap()
    }

    /// Attack on the write rule behind Envoy: the reference server read whichever header
    /// pair a request carried, so a read-only token got a read's verdict for a `DELETE`
    /// whose check carried forged `X-Original-Method: GET` / `X-Original-URI`. With
    /// `KEYGATE_VERIFY_SOURCE=direct` the check's own method is judged, and the forged
    /// headers are ignored: 403.
    #[tokio::test]
    async fn forged_original_headers_behind_envoy_do_not_turn_a_write_into_a_read() {
        let server = Server::with(|c| {
            c.verify_write_permission = Some("api:write".into());
            c.verify_source = OriginalRequest::Direct;
        })
        .await;
        let reader = server
            .create(json!({ "name": "reader", "permissions": ["apps:read"] }))
            .await;
        let res = server.send(disguised_delete(&reader.bearer())).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text);
        assert_eq!(res.code(), "insufficient_scope");
        let read = Request::get("/api/v1/verify/things/1")
            .header(header::AUTHORIZATION, reader.bearer())
            .body(Body::empty())
            .unwrap();
        let res = server.send(read).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        let writer = server
            .create(json!({ "name": "writer", "permissions": ["api:write"] }))
            .await;
        let res = server.send(disguised_delete(&writer.bearer())).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    }

    #[test]
    fn the_verify_source_is_a_setting() {
        let load = |v: &str| {
            keygate::server::Config::loader()
                .with_file(None)
                .with_env([("KEYGATE_VERIFY_SOURCE", v)])
                .load()
        };
        for (value, source) in [
            ("detect", OriginalRequest::Detect),
            ("nginx", OriginalRequest::Nginx),
            ("Traefik", OriginalRequest::Traefik),
            ("direct", OriginalRequest::Direct),
            ("envoy", OriginalRequest::Direct),
        ] {
            assert_eq!(load(value).unwrap().verify_source, source, "{value}");
        }
        let e = load("haproxy").unwrap_err();
        assert!(e.to_string().contains("KEYGATE_VERIFY_SOURCE"), "{e}");
        assert_eq!(
            keygate::server::Config::default().verify_source,
            OriginalRequest::Detect
        );
    }
}

mod request_ids {
    use axum::body::Body;
    use http::{Request, StatusCode, header};
    use serde_json::json;

    use crate::support::Server;

    /// Attack on the log: a client sends its own token as its `X-Request-Id` (whole, or
    /// inside a longer id), and the request log, the echoed header and the audit trail
    /// would keep it in clear. The id is refused and a new one given instead.
    #[tokio::test]
    async fn a_token_sent_as_the_request_id_reaches_neither_the_log_nor_the_audit_trail() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let server = Server::with(|c| c.audit_log = Some(audit.clone())).await;
        let caller = server.create(json!({ "name": "caller" })).await;
        for id in [caller.token.clone(), format!("req-{}", caller.token)] {
            let req = Request::get("/api/v1/me")
                .header(header::AUTHORIZATION, caller.bearer())
                .header("x-request-id", &id)
                .body(Body::empty())
                .unwrap();
            let res = server.send(req).await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text);
            let echoed = res.headers["x-request-id"].to_str().unwrap();
            assert!(!echoed.contains(&caller.token), "echoed: {echoed}");
            assert_eq!(echoed.len(), 36, "a new id: {echoed}");
        }
        server.app.audit.shutdown().await;
        let trail = std::fs::read_to_string(&audit).unwrap();
        assert!(trail.contains("/api/v1/me"), "the requests were audited");
        assert!(
            !trail.contains(&caller.token),
            "the token is in the audit trail"
        );
    }
}

mod request_paths {
    use axum::body::Body;
    use http::{Method, Request, StatusCode, header};
    use serde_json::json;

    use crate::common::Capture;
    use crate::support::{Server, admin_basic, request};

    /// Attack on the log by a careless client (or a page that makes one): a token sent in
    /// the request *path* — pasted instead of an id into `DELETE /tokens/{id}`, put into a
    /// webhook URL behind the forward-auth check, or requested as a page — would be written
    /// in clear into the request log, the audit trail and the answers of `GET /audit`. The
    /// query string was never kept; a token in the path is replaced as well.
    #[tokio::test]
    async fn a_token_in_the_request_path_reaches_neither_the_log_nor_the_audit_trail() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(capture.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let _every = crate::common::ask_every_dispatcher();

        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let server = Server::with(|c| c.audit_log = Some(audit.clone())).await;
        let leaked = server.create(json!({ "name": "leaked" })).await;
        let caller = server.create(json!({ "name": "caller" })).await;

        // The token pasted where its id belongs.
        let path = format!("/api/v1/tokens/{}", leaked.token);
        let res = server
            .send(request(Method::DELETE, &path, &admin_basic()))
            .await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text);
        let path = format!("/api/v1/tokens/{}/rotate", leaked.token);
        let res = server
            .send(request(Method::POST, &path, &admin_basic()))
            .await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.text);
        // A webhook URL carrying a token, judged by the forward-auth check.
        let req = Request::get("/api/v1/verify")
            .header(header::AUTHORIZATION, caller.bearer())
            .header("x-original-method", "GET")
            .header(
                "x-original-uri",
                format!("/hooks/{}.json?x=1", leaked.token),
            )
            .body(Body::empty())
            .unwrap();
        let res = server.send(req).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        // A token requested as a page, and inside a longer path segment.
        for path in [
            format!("/{}", leaked.token),
            format!("/api/v1/apps/x-{}", leaked.token),
        ] {
            let res = server
                .send(request(Method::GET, &path, &caller.bearer()))
                .await;
            assert!(res.status.is_client_error(), "{path}: {}", res.status);
        }

        let read = server
            .send(request(
                Method::GET,
                "/api/v1/audit?limit=1000",
                &admin_basic(),
            ))
            .await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        server.app.audit.shutdown().await;
        let trail = std::fs::read_to_string(&audit).unwrap();
        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(trail.contains("/hooks/"), "the check was audited: {trail}");
        assert!(
            log.contains("status=404"),
            "the requests were logged: {log}"
        );
        for (what, text) in [
            ("audit file", &trail),
            ("GET /audit", &read.text),
            ("log", &log),
        ] {
            assert!(
                !text.contains(&leaked.token),
                "the token is in the {what}: {text}"
            );
            // Not a recognisable part of it either: its secret past the display hint.
            assert!(
                !text.contains(&leaked.token[12..40]),
                "part of the token is in the {what}"
            );
        }
    }
}

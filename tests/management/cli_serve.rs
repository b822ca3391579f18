//! The installed `keygate` binary as an operator runs it: `keygate serve` with its settings
//! from flags, the environment, a TOML file and `*_FILE` secrets; the token commands'
//! `--kind` and `--json` on the same configuration; PostgreSQL schemas shared with a server.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use keygate::server;
use serde_json::Value;

use crate::common;

/// A command for the binary with no `KEYGATE_*` of the test's own environment.
fn keygate(dir: &Path) -> Command {
    common::keygate(dir)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run keygate")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "keygate failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `keygate serve`, stopped when dropped.
struct Server(common::Served);

impl Server {
    /// Starts `cmd` (a `keygate serve`) on a port it picks, its logs discarded.
    fn start(mut cmd: Command) -> Self {
        cmd.stderr(Stdio::null());
        Self(common::Served::start(cmd))
    }

    fn get(&self, path: &str, auth: Option<&str>) -> (u16, String) {
        common::http_raw(&self.0.addr, "GET", path, auth, None).expect("an answer")
    }
}

#[test]
fn version_and_help_list_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let version = stdout_of(&run(keygate(dir.path()).arg("--version")));
    assert_eq!(
        version.trim(),
        format!("keygate {}", env!("CARGO_PKG_VERSION"))
    );

    let help = stdout_of(&run(keygate(dir.path()).args(["serve", "--help"])));
    let mut variables = vec!["KEYGATE_CONFIG"];
    for s in server::Config::settings() {
        variables.push(s.env());
        variables.extend(s.file_env());
        assert!(
            help.contains(&format!("--{} ", s.flag())),
            "--{} missing from:\n{help}",
            s.flag()
        );
        assert!(
            help.contains(&format!("[default: {}]", s.default_value())),
            "{}'s default missing",
            s.key()
        );
    }
    for v in &variables {
        assert!(
            help.contains(&format!("[env: {v}]")),
            "{v} missing:\n{help}"
        );
    }
    assert!(variables.len() >= 16, "{variables:?}");

    let bare = run(&mut keygate(dir.path()));
    assert_eq!(bare.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&bare.stderr);
    assert!(
        shown.contains("Usage: keygate") && shown.contains("serve"),
        "no subcommand prints the help: {shown}"
    );
}

#[test]
fn serve_answers_its_probes_with_the_demo_api_off_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "admin-password", "a password from a file\n");
    let mut cmd = keygate(dir.path());
    cmd.arg("serve")
        .env("KEYGATE_DB", dir.path().join("serve.db"))
        .env("KEYGATE_ADMIN_PASSWORD_FILE", &secret);
    let server = Server::start(cmd);
    assert_eq!(server.get("/healthz", None).0, 200);
    assert_eq!(server.get("/readyz", None), (200, "ready\n".to_owned()));
    assert_eq!(
        server.get("/api/v1/apps", None).0,
        404,
        "no demo API by default"
    );
    let (_, index) = server.get("/", None);
    assert!(
        index.contains("/api/v1/tokens") && !index.contains("/apps"),
        "the index advertises no demo route: {index}"
    );
    // The password came from the file, its line break removed.
    let basic = common::basic("admin@example.com", "a password from a file");
    assert_eq!(server.get("/api/v1/tokens", Some(&basic)).0, 200);
    drop(server);

    let mut cmd = keygate(dir.path());
    cmd.args(["serve", "--demo", "on"])
        .env("KEYGATE_DB", dir.path().join("serve.db"));
    let demo = Server::start(cmd);
    assert_eq!(
        demo.get("/api/v1/apps", None).0,
        401,
        "mounted: it asks for a token"
    );
    assert!(demo.get("/", None).1.contains("/api/v1/apps"));
    drop(demo);

    let mut cmd = keygate(dir.path());
    cmd.arg("serve")
        .env("KEYGATE_DB", dir.path().join("serve.db"))
        .env("KEYGATE_DEMO", "1");
    let demo = Server::start(cmd);
    assert_eq!(demo.get("/api/v1/apps", None).0, 401, "KEYGATE_DEMO=1");
}

#[test]
fn every_bad_setting_is_one_line_and_no_secret_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "keygate.toml",
        "rate_limit = \"lots\"\nadmin_password = \"toml-secret-1\"\n",
    );
    let out = run(keygate(dir.path())
        .args(["serve", "--config"])
        .arg(&file)
        .env("KEYGATE_FAILURE_LIMIT", "zero")
        .env("KEYGATE_DB", "postgres://keygate:url-secret-2@[::1/keygate"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with("keygate: error: KEYGATE_DB: "),
        "{stderr}"
    );
    assert!(
        lines[1]
            .contains("keygate.toml: rate_limit: must be a positive whole number, not \"lots\""),
        "{stderr}"
    );
    assert!(
        lines[2].contains("KEYGATE_FAILURE_LIMIT: must be a positive whole number, not \"zero\""),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
    assert!(
        !dir.path().join("keygate.db").exists(),
        "nothing was opened"
    );

    // A secret and its file at once; a secret file that is missing; an unknown key.
    let both = run(keygate(dir.path())
        .args(["token", "list", "--owner", "a@example.com"])
        .env("KEYGATE_DB", dir.path().join("x.db"))
        .env("KEYGATE_DB_FILE", dir.path().join("db-url")));
    assert_eq!(both.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(
        stderr.contains("KEYGATE_DB and KEYGATE_DB_FILE: give the value or the file"),
        "{stderr}"
    );
    let unknown = write(dir.path(), "unknown.toml", "rate_limt = 5\n");
    let out = run(keygate(dir.path())
        .args(["serve", "--admin-password-file", "/nonexistent/keygate"])
        .env("KEYGATE_CONFIG", &unknown));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown.toml: rate_limt: unknown key")
            && stderr.contains("--admin-password-file: cannot read /nonexistent/keygate"),
        "{stderr}"
    );
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout_of(out)).unwrap()
}

#[test]
fn token_commands_take_the_file_s_kinds_and_roles_and_print_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "keygate.toml",
        "db = \"cli.db\"\n[roles]\nreader = [\"apps:read\"]\nowner = [\"*\"]\n\
         [kinds.pat]\nprefix = \"pat\"\n[kinds.service]\nprefix = \"svc\"\n",
    );
    let cli = |args: &[&str]| {
        let mut cmd = keygate(dir.path());
        cmd.arg("--config").arg(&file).args(args);
        cmd
    };
    let added = json(&run(&mut cli(&[
        "user",
        "add",
        "ann@example.com",
        "--role",
        "owner",
        "--json",
    ])));
    assert_eq!(added["account"], "ann@example.com");
    assert_eq!(added["permissions"], serde_json::json!(["*"]));
    assert_eq!(added["password"].as_str().unwrap().len(), 24);

    let created = json(&run(&mut cli(&[
        "token",
        "create",
        "--owner",
        "ann@example.com",
        "--name",
        "worker",
        "--kind",
        "service",
        "--role",
        "reader",
        "--json",
    ])));
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("svc_"), "{created}");
    assert_eq!(created["kind"], "service");
    assert_eq!(created["role"], "reader");
    assert_eq!(created["permissions"], serde_json::json!(["apps:read"]));
    assert!(token.starts_with(created["hint"].as_str().unwrap()));
    assert!(created.get("hash").is_none() && created.get("secret_hash").is_none());
    assert!(dir.path().join("cli.db").exists(), "the file's database");

    let list = json(&run(&mut cli(&[
        "token",
        "list",
        "--owner",
        "ann@example.com",
        "--json",
    ])));
    let listed = list.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "active");
    let text = list.to_string();
    assert!(!text.contains(&token) && !text.contains(&keygate::TokenHash::of(&token).to_hex()));

    let rotated = json(&run(&mut cli(&[
        "token",
        "rotate",
        "--owner",
        "ann@example.com",
        &id,
        "--json",
    ])));
    assert!(rotated["token"].as_str().unwrap().starts_with("svc_"));
    assert_eq!(rotated["replaces"]["id"], id.as_str());
    let new_id = rotated["id"].as_str().unwrap();
    let revoked = json(&run(&mut cli(&[
        "token",
        "revoke",
        "--owner",
        "ann@example.com",
        new_id,
        "--json",
    ])));
    assert_eq!(revoked["revoked"], new_id);

    let plain = json(&run(&mut cli(&[
        "token",
        "create",
        "--owner",
        "ann@example.com",
        "--name",
        "laptop",
        "--json",
    ])));
    assert_eq!(plain["kind"], "pat", "the first kind is the default");

    let unknown = run(&mut cli(&[
        "token",
        "create",
        "--owner",
        "ann@example.com",
        "--name",
        "x",
        "--kind",
        "dtk",
    ]));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("unknown token kind \"dtk\"; known kinds: pat, service")
    );
    let no_role = run(&mut cli(&[
        "user",
        "add",
        "bo@example.com",
        "--role",
        "cicd",
    ]));
    assert_eq!(
        no_role.status.code(),
        Some(1),
        "the file's roles replace the default ones"
    );
}

/// A token created by the CLI in schema X is seen by a server on schema X, and only there.
#[tokio::test]
async fn the_cli_and_a_server_share_a_postgres_schema() {
    use keygate::store::postgres::PostgresOptions;
    use tower::ServiceExt;

    let url = common::postgres_url();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (x, y) = (format!("kg_cli_x_{id}"), format!("kg_cli_y_{id}"));
    let Some(store_x) = common::available(
        "PostgreSQL",
        &url,
        "the_cli_and_a_server_share_a_postgres_schema",
        PostgresOptions::new(&url).with_schema(&x).connect().await,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db_file = write(dir.path(), "db-url", &format!("{url}\n"));
    let cli = |args: &[&str]| {
        let mut cmd = keygate(dir.path());
        cmd.args(args)
            .env("KEYGATE_DB_FILE", &db_file)
            .env("KEYGATE_DB_SCHEMA", &x);
        run(&mut cmd)
    };
    stdout_of(&cli(&["user", "add", "pg@example.com", "--role", "ops"]));
    let created = json(&cli(&[
        "token",
        "create",
        "--owner",
        "pg@example.com",
        "--name",
        "pager",
        "--json",
    ]));
    let bearer = format!("Bearer {}", created["token"].as_str().unwrap());

    let me =
        |schema: &str| {
            let config = server::Config {
                db: url.clone().into(),
                db_schema: Some(schema.to_owned()),
                store_timeout: Duration::from_secs(30),
                ..server::Config::default()
            };
            let bearer = bearer.clone();
            async move {
                let app = server::build_app(&config).await.unwrap();
                let mut req = http::Request::get("/api/v1/me")
                    .header("authorization", bearer)
                    .body(axum::body::Body::empty())
                    .unwrap();
                req.extensions_mut().insert(axum::extract::ConnectInfo(
                    std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
                ));
                let status = app.router.oneshot(req).await.unwrap().status();
                app.audit.shutdown().await;
                status
            }
        };
    assert_eq!(me(&x).await, 200, "the server on schema X sees the token");
    assert_eq!(me(&y).await, 401, "a server on schema Y does not");
    common::drop_schema(&store_x).await;
    let store_y = PostgresOptions::new(&url)
        .with_schema(&y)
        .connect()
        .await
        .unwrap();
    common::drop_schema(&store_y).await;
}

/// `KEYGATE_LOG_FORMAT=json`: every line `keygate serve` writes, on either stream, is one
/// JSON object — the start, the requests, the shutdown and a refused configuration alike —
/// and none holds the generated password or a token.
#[test]
fn json_logs_from_start_to_stop_are_json_lines_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut cmd = keygate(dir.path());
    cmd.arg("serve")
        .env("KEYGATE_LOG_FORMAT", "json")
        .env("KEYGATE_DB", dir.path().join("json.db"))
        .stderr(err);
    let mut server = common::Served::start(cmd);
    // The generated password is in a file of its own, never in the log.
    let password = std::fs::read_to_string(dir.path().join(server::PASSWORD_FILE)).unwrap();
    let password = password.trim().to_owned();
    assert!(password.len() >= 16, "a generated password");
    let basic = common::basic("admin@example.com", &password);
    let (status, created) = common::http_json(
        &server.addr,
        "POST",
        "/api/v1/tokens",
        Some(&basic),
        Some("description=json%20log"),
    )
    .unwrap();
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let me = |auth: &str| {
        common::http_raw(&server.addr, "GET", "/api/v1/me", Some(auth), None)
            .unwrap()
            .0
    };
    assert_eq!(me(&format!("Bearer {token}")), 200);
    assert_eq!(me("Bearer pat_nope"), 401);
    // SIGTERM: the shutdown lines too.
    server.terminate();
    assert!(
        server.wait_exit(Duration::from_secs(30)).is_some(),
        "keygate serve did not stop"
    );
    let mut lines = 0;
    for (stream, text) in [
        ("stdout", server.output()),
        (
            "stderr",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap(),
        ),
    ] {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            lines += 1;
            let parsed: Result<Value, _> = serde_json::from_str(line);
            assert!(
                parsed.is_ok_and(|v| v.is_object()),
                "{stream}: not a JSON object: {line}"
            );
            assert!(!line.contains(&password), "{stream}: the password: {line}");
            assert!(!line.contains(&token), "{stream}: the token: {line}");
        }
    }
    assert!(
        lines >= 5,
        "start, requests and stop were logged ({lines} lines)"
    );

    // A refused configuration is reported in JSON as well, one object a problem.
    let refused = run(keygate(dir.path())
        .arg("serve")
        .env("KEYGATE_LOG_FORMAT", "json")
        .env("KEYGATE_RATE_LIMIT", "zero")
        .env("KEYGATE_DRAIN_TIMEOUT", "soon"));
    assert_eq!(refused.status.code(), Some(1));
    let text = String::from_utf8_lossy(&refused.stderr);
    let problems: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert_eq!(problems.len(), 2, "{text}");
}

#[test]
fn a_peppered_server_and_the_token_commands_digest_alike_and_never_print_the_pepper() {
    let dir = tempfile::tempdir().unwrap();
    let pepper = "cGVwcGVyLWZyb20tYS1maWxlLXBlcHBlci1mcm9tLWEtZmlsZQ==";
    let previous = "b2xkLXBlcHBlci1vbGQtcGVwcGVyLW9sZC1wZXBwZXItb2xkLXg=";
    let pepper_file = write(dir.path(), "pepper", &format!("{pepper}\n"));
    let with_pepper = |cmd: &mut Command| {
        cmd.env("KEYGATE_DB", dir.path().join("pepper.db"))
            .env("KEYGATE_ADMIN_PASSWORD", "a password")
            .env("KEYGATE_PEPPER_FILE", &pepper_file)
            .env("KEYGATE_PREVIOUS_PEPPERS", previous);
    };
    let log = dir.path().join("stderr.log");
    let mut cmd = keygate(dir.path());
    cmd.arg("serve")
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap());
    with_pepper(&mut cmd);
    let mut served = common::Served::start(cmd);
    // A token made with the command-line tool (the server made the admin account), then
    // used against the server.
    let mut create = keygate(dir.path());
    create.args([
        "token",
        "create",
        "--owner",
        "admin@example.com",
        "--name",
        "cli",
        "--json",
    ]);
    with_pepper(&mut create);
    let created = json(&run(&mut create));
    let token = created["token"].as_str().unwrap().to_owned();

    let (status, body) = common::http_raw(
        &served.addr,
        "GET",
        "/api/v1/me",
        Some(&format!("Bearer {token}")),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let banner = served.output();
    assert!(
        banner.contains("HMAC-SHA256 under the pepper (1 previous"),
        "the banner says a pepper is on: {banner}"
    );
    served.terminate();
    served.wait_exit(Duration::from_secs(30));
    let logs = std::fs::read_to_string(&log).unwrap();
    for shown in [&banner, &logs] {
        assert!(
            !shown.contains(&pepper[..16]) && !shown.contains(&previous[..16]),
            "a pepper was printed: {shown}"
        );
    }

    // A pepper too short is refused at start, without being repeated.
    let mut bad = keygate(dir.path());
    bad.args(["token", "list", "--owner", "admin@example.com"])
        .env("KEYGATE_DB", dir.path().join("pepper.db"))
        .env("KEYGATE_PEPPER", "c2hvcnQtcGVwcGVy");
    let out = run(&mut bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("KEYGATE_PEPPER: a pepper must be 32") && !stderr.contains("c2hvcnQ"),
        "{stderr}"
    );
}

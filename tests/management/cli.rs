//! The `keygate` binary, driven as a user would, on a temporary database.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use keygate::store::sqlite::SqliteStore;
use keygate::{RejectionKind, TokenHash, Tokens};

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn db() -> Db {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cli.db");
    Db { _dir: dir, path }
}

fn keygate(db: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .env("KEYGATE_DB", db)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keygate");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait for keygate")
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = keygate(db, args, None);
    assert!(
        out.status.success(),
        "keygate {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The value of the `key:` line of `keygate` output.
fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key:?} line in {out:?}"))
        .trim()
        .to_owned()
}

async fn tokens(db: &Path) -> Tokens {
    Tokens::new(
        SqliteStore::open(db)
            .await
            .expect("open the CLI's database"),
    )
}

#[tokio::test]
async fn a_token_created_by_the_cli_authenticates_and_is_listed_by_hint_only() {
    let db = db();
    let added = ok(
        &db.path,
        &["user", "add", "Alice@Example.com", "--role", "admin"],
    );
    assert_eq!(field(&added, "account"), "alice@example.com");
    assert_eq!(
        field(&added, "password").len(),
        24,
        "a generated password is printed once"
    );

    let created = ok(
        &db.path,
        &[
            "token",
            "create",
            "--owner",
            "alice@example.com",
            "--name",
            "ci-deploy",
            "--description",
            "GitHub Actions",
            "--role",
            "cicd",
            "--expires-in",
            "3600",
        ],
    );
    let token = field(&created, "token");
    let id = field(&created, "id");
    let hint = field(&created, "hint");
    assert!(token.starts_with("pat_"), "{created}");
    assert!(token.starts_with(&hint) && hint.len() == 12);

    let identity = tokens(&db.path)
        .await
        .authenticate(&token)
        .await
        .expect("the CLI's token authenticates through Tokens on the same file");
    assert_eq!(identity.owner(), "alice@example.com");
    assert_eq!(identity.token_name(), "ci-deploy");
    assert!(identity.can("builds:create"));
    assert!(!identity.can("env:write"), "cicd holds no env:write");

    let list = ok(&db.path, &["token", "list", "--owner", "alice@example.com"]);
    assert!(list.lines().next().expect("header").starts_with("ID"));
    assert!(list.contains(&id) && list.contains(&hint) && list.contains("ci-deploy"));
    assert!(list.contains("active"));
    assert!(!list.contains(&token), "list never shows the token");
    assert!(
        !list.contains(&TokenHash::of(&token).to_hex()),
        "list never shows the hash"
    );
}

#[tokio::test]
async fn rotate_and_revoke_take_effect_for_the_library() {
    let db = db();
    let out = keygate(
        &db.path,
        &[
            "user",
            "add",
            "bob@example.com",
            "--password-stdin",
            "--role",
            "admin",
        ],
        Some("a long enough password\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("password:"),
        "a password from stdin is never echoed"
    );
    let created = ok(
        &db.path,
        &[
            "token",
            "create",
            "--owner",
            "bob@example.com",
            "--name",
            "ops",
        ],
    );
    let (old_token, old_id) = (field(&created, "token"), field(&created, "id"));

    // Rotation with a grace period: both work, the successor keeps the name.
    let rotated = ok(
        &db.path,
        &[
            "token",
            "rotate",
            "--owner",
            "bob@example.com",
            &old_id,
            "--grace-seconds",
            "600",
        ],
    );
    let (new_token, new_id) = (field(&rotated, "token"), field(&rotated, "id"));
    assert_ne!(new_token, old_token);
    assert_eq!(field(&rotated, "name"), "ops");
    let t = tokens(&db.path).await;
    t.authenticate(&old_token)
        .await
        .expect("the old token works during the grace period");
    let identity = t
        .authenticate(&new_token)
        .await
        .expect("the new token works");
    assert!(identity.can("anything:at-all"), "admin tokens hold `*`");
    let list = ok(&db.path, &["token", "list", "--owner", "bob@example.com"]);
    assert!(list.contains("rotated") && list.contains(&new_id));

    // A second rotation without grace ends the previous token at once.
    let again = ok(
        &db.path,
        &["token", "rotate", "--owner", "bob@example.com", &new_id],
    );
    let newest = field(&again, "token");
    assert_eq!(
        RejectionKind::from(t.authenticate(&new_token).await.expect_err("ended")),
        RejectionKind::Expired
    );

    // Revocation.
    let newest_id = field(&again, "id");
    let revoked = ok(
        &db.path,
        &["token", "revoke", "--owner", "bob@example.com", &newest_id],
    );
    assert!(revoked.contains(&newest_id));
    assert_eq!(
        RejectionKind::from(t.authenticate(&newest).await.expect_err("revoked")),
        RejectionKind::Revoked
    );
    let again = keygate(
        &db.path,
        &["token", "revoke", "--owner", "bob@example.com", &newest_id],
        None,
    );
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second revoke finds nothing"
    );
}

#[test]
fn errors_have_clear_messages_and_exit_codes() {
    let db = db();
    ok(&db.path, &["user", "add", "carol@example.com"]);

    let unknown = keygate(
        &db.path,
        &[
            "token",
            "revoke",
            "--owner",
            "carol@example.com",
            "0b7c2f8e-4f7a-4e53-9d8e-0c3c6a1f2b9d",
        ],
        None,
    );
    assert_eq!(unknown.status.code(), Some(2), "unknown id: not found");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains(
            "no live token 0b7c2f8e-4f7a-4e53-9d8e-0c3c6a1f2b9d owned by carol@example.com"
        ),
        "{stderr}"
    );

    let malformed = keygate(
        &db.path,
        &["token", "revoke", "--owner", "carol@example.com", "nope"],
        None,
    );
    assert_eq!(malformed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("is not a token id"));

    let no_account = keygate(
        &db.path,
        &[
            "token",
            "create",
            "--owner",
            "dave@example.com",
            "--name",
            "x",
        ],
        None,
    );
    assert_eq!(no_account.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_account.stderr).contains("no account dave@example.com"));

    ok(
        &db.path,
        &[
            "token",
            "create",
            "--owner",
            "carol@example.com",
            "--name",
            "x",
        ],
    );
    let taken = keygate(
        &db.path,
        &[
            "token",
            "create",
            "--owner",
            "carol@example.com",
            "--name",
            "x",
        ],
        None,
    );
    assert_eq!(taken.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already has a live token"));

    let beyond = keygate(
        &db.path,
        &[
            "token",
            "create",
            "--owner",
            "carol@example.com",
            "--name",
            "y",
            "--role",
            "admin",
        ],
        None,
    );
    assert_eq!(
        beyond.status.code(),
        Some(1),
        "a viewer cannot mint admin tokens"
    );
    assert!(String::from_utf8_lossy(&beyond.stderr).contains("go beyond"));

    let exists = keygate(&db.path, &["user", "add", "carol@example.com"], None);
    assert_eq!(exists.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&exists.stderr).contains("already exists"));

    let usage = keygate(&db.path, &["token", "create", "--name", "x"], None);
    assert_eq!(usage.status.code(), Some(1), "a clap usage error exits 1");

    let help = keygate(&db.path, &["--help"], None);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Exit status") && help.contains("2  not found"));
}

#[test]
fn an_unreachable_postgres_url_is_a_store_error_that_hides_the_password() {
    let out = keygate(
        Path::new("postgres://keygate:s3cret-pw@127.0.0.1:1/keygate"),
        &["token", "list", "--owner", "a@example.com"],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot open the PostgreSQL database"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret-pw"),
        "the URL's password leaked: {stderr}"
    );
}

/// The PostgreSQL at `KEYGATE_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`), as a URL whose connections work in a fresh
/// schema; `None` when unreachable and `CI` is unset.
async fn postgres_url() -> Option<String> {
    use keygate::store::postgres::PostgresOptions;

    let url = std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("kg_cli_{}", uuid::Uuid::new_v4().simple());
    match PostgresOptions::new(&url)
        .with_schema(&schema)
        .with_acquire_timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
    {
        Ok(_) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipping: PostgreSQL at {url} unreachable: {e:?}");
            None
        }
        Err(e) => panic!("PostgreSQL at {url} unreachable and CI is set: {e:?}"),
    }
}

#[tokio::test]
async fn a_postgres_url_is_managed_like_a_file() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let db = Path::new(&url);
    ok(db, &["user", "add", "erin@example.com", "--role", "ops"]);
    let created = ok(
        db,
        &[
            "token",
            "create",
            "--owner",
            "erin@example.com",
            "--name",
            "pager",
        ],
    );
    let (token, id) = (field(&created, "token"), field(&created, "id"));
    let store = keygate::store::postgres::PostgresStore::connect(&url)
        .await
        .expect("connect");
    let t = Tokens::new(store);
    let identity = t.authenticate(&token).await.expect("the CLI's token works");
    assert!(
        identity.can("processes:restart"),
        "the account's permissions by default"
    );
    let list = ok(db, &["token", "list", "--owner", "erin@example.com"]);
    assert!(list.contains(&id) && !list.contains(&token));
    ok(db, &["token", "revoke", "--owner", "erin@example.com", &id]);
    assert_eq!(
        RejectionKind::from(t.authenticate(&token).await.expect_err("revoked")),
        RejectionKind::Revoked
    );
}

#[tokio::test]
async fn token_import_reads_json_lines_and_the_imported_tokens_authenticate() {
    use keygate::token::{LegacyAlphabet, LegacyFormat};
    let db = db();
    let dir = db.path.parent().unwrap().to_owned();
    let config = dir.join("keygate.toml");
    std::fs::write(
        &config,
        "[kinds.pat]\nprefix = \"pat\"\n\n[kinds.dtk]\nprefix = \"dtk\"\nlegacy_length = 40\nlegacy_alphabet = \"hex\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    // A token the old system issued (`dtk_` + 40 hex, no checksum) and a keygate one.
    let legacy = format!("dtk_{}", "3f9a0c".repeat(7).get(..40).unwrap());
    let keygate_token = keygate::TokenKind::pat().generate();
    let lines = [
        serde_json::json!({ "owner": "erin@example.com", "name": "ci", "hash": TokenHash::of(&legacy).to_hex(), "kind": "dtk", "role": "viewer" }),
        serde_json::json!({ "owner": "erin@example.com", "name": "laptop", "hash": keygate_token.hash().to_hex(), "expires_at": "2099-01-01T00:00:00Z" }),
        serde_json::json!({ "owner": "erin@example.com", "name": "broken", "hash": "not hex" }),
    ];
    let file = dir.join("tokens.jsonl");
    std::fs::write(
        &file,
        lines
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = keygate(
        &db.path,
        &[
            "--config",
            config,
            "token",
            "import",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "one entry failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), 3, "{stdout}");
    assert!(printed[0].starts_with("line 1: imported "), "{stdout}");
    assert!(printed[0].ends_with("(erin@example.com/ci)"), "{stdout}");
    assert!(printed[1].starts_with("line 2: imported "), "{stdout}");
    assert!(
        printed[2].starts_with("line 3: error: invalid hash"),
        "{stdout}"
    );
    assert!(!stdout.contains(&TokenHash::of(&legacy).to_hex()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 imported, 1 failed"), "{stderr}");

    // The same hash again, from standard input: refused, never overwritten.
    let out = keygate(
        &db.path,
        &["--config", config, "token", "import", "-", "--json"],
        Some(&format!(
            "{}\n",
            serde_json::json!({ "owner": "erin@example.com", "name": "ci-again", "hash": TokenHash::of(&legacy).to_hex(), "kind": "dtk" })
        )),
    );
    assert_eq!(out.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["failed"], 1);
    assert_eq!(answer["results"][0]["code"], "duplicate");
    assert_eq!(answer["results"][0]["index"], 1);

    // Both imported tokens authenticate with a manager configured like the file.
    let dtk = keygate::TokenKind::new("dtk", "dtk")
        .unwrap()
        .with_legacy_format(LegacyFormat {
            len: 40,
            alphabet: LegacyAlphabet::Hex,
        })
        .unwrap();
    let tokens = Tokens::builder(SqliteStore::open(&db.path).await.unwrap())
        .kind(keygate::TokenKind::pat())
        .kind(dtk)
        .build()
        .unwrap();
    let id = tokens.authenticate(&legacy).await.unwrap();
    assert_eq!(id.owner(), "erin@example.com");
    assert_eq!(id.kind(), "dtk");
    assert!(
        tokens
            .authenticate(keygate_token.expose_secret())
            .await
            .is_ok()
    );
    let listed = ok(
        &db.path,
        &[
            "--config",
            config,
            "token",
            "list",
            "--owner",
            "erin@example.com",
        ],
    );
    assert!(listed.contains("dtk_…"), "{listed}");
    assert!(!listed.contains(&legacy));
}

#[test]
fn token_lookup_finds_the_owner_from_stdin_and_never_takes_the_token_as_an_argument() {
    let db = db();
    ok(
        &db.path,
        &["user", "add", "carol@example.com", "--role", "admin"],
    );
    let created = ok(
        &db.path,
        &[
            "token",
            "create",
            "--owner",
            "carol@example.com",
            "--name",
            "found-in-a-log",
        ],
    );
    let token = field(&created, "token");
    let id = field(&created, "id");

    let out = keygate(&db.path, &["token", "lookup"], Some(&format!("{token}\n")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert_eq!(field(&shown, "id"), id);
    assert_eq!(field(&shown, "owner"), "carol@example.com");
    assert_eq!(field(&shown, "name"), "found-in-a-log");
    assert_eq!(field(&shown, "kind"), "pat");
    assert_eq!(field(&shown, "status"), "active");
    assert_eq!(field(&shown, "last used"), "never");
    assert!(!shown.contains(&token), "lookup never prints the token");
    assert!(!shown.contains(&TokenHash::of(&token).to_hex()));

    let json = keygate(&db.path, &["token", "lookup", "--json"], Some(&token));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["owner"], "carol@example.com");
    assert!(v.get("token").is_none_or(serde_json::Value::is_null));

    // Revoked: still found, and says so.
    ok(
        &db.path,
        &["token", "revoke", "--owner", "carol@example.com", &id],
    );
    let out = keygate(&db.path, &["token", "lookup"], Some(&token));
    assert_eq!(
        field(&String::from_utf8(out.stdout).unwrap(), "status"),
        "revoked"
    );

    // Unknown or garbage: not found (exit 2, as every other "no such token").
    let unknown = keygate::TokenKind::pat().generate();
    let out = keygate(
        &db.path,
        &["token", "lookup"],
        Some(unknown.expose_secret()),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token has this value"));
    let out = keygate(&db.path, &["token", "lookup"], Some("garbage"));
    assert_eq!(out.status.code(), Some(2));

    // On the command line: refused before anything is looked up, and not echoed.
    let out = keygate(&db.path, &["token", "lookup", &token], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("standard input"), "{err}");
    assert!(!err.contains(&token), "the refusal echoes the token: {err}");
    let out = keygate(&db.path, &["token", "lookup"], Some(""));
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn the_admin_listing_spans_owners_and_an_update_applies_to_the_library() {
    let db = db();
    for owner in ["alice@example.com", "bob@example.com"] {
        ok(&db.path, &["user", "add", owner, "--role", "admin"]);
        ok(
            &db.path,
            &[
                "token", "create", "--owner", owner, "--name", "ci", "--role", "deployer",
            ],
        );
    }
    let all = ok(&db.path, &["token", "list", "--all"]);
    assert!(all.contains("alice@example.com / ci"), "{all}");
    assert!(all.contains("bob@example.com / ci"), "{all}");
    let json = ok(
        &db.path,
        &[
            "token",
            "list",
            "--all",
            "--owner",
            "bob@example.com",
            "--json",
        ],
    );
    let list: serde_json::Value = serde_json::from_str(&json).expect("json");
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 1, "{json}");
    assert_eq!(list[0]["owner"], "bob@example.com");
    let id = list[0]["id"].as_str().expect("id").to_owned();
    // --status needs --all.
    let out = keygate(
        &db.path,
        &[
            "token",
            "list",
            "--owner",
            "bob@example.com",
            "--status",
            "active",
        ],
        None,
    );
    assert!(!out.status.success());

    let updated = ok(
        &db.path,
        &[
            "token",
            "update",
            &id,
            "--owner",
            "bob@example.com",
            "--name",
            "ci-main",
            "--permissions",
            "apps:read",
            "--metadata",
            r#"{"team":"ops"}"#,
        ],
    );
    assert_eq!(field(&updated, "name"), "ci-main");
    let record = tokens(&db.path)
        .await
        .get("bob@example.com", id.parse().expect("uuid"))
        .await
        .expect("the record");
    assert_eq!(record.name, "ci-main");
    assert_eq!(
        record
            .permissions
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>(),
        ["apps:read"]
    );
    assert_eq!(record.extras().metadata.to_json(), r#"{"team":"ops"}"#);
    // Widening is refused, with a clear message.
    let out = keygate(
        &db.path,
        &[
            "token",
            "update",
            &id,
            "--owner",
            "bob@example.com",
            "--permissions",
            "apps:read,env:write",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permissions"));
}

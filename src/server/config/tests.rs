use std::io::Write;

use super::*;

fn env(vars: &[(&str, &str)]) -> ConfigLoader {
    Config::loader()
        .with_file(None)
        .with_env(vars.iter().map(|(k, v)| (*k, *v)))
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn sources(e: &InvalidConfig) -> Vec<String> {
    e.problems().iter().map(|p| p.source.clone()).collect()
}

#[test]
fn debug_hides_the_passwords() {
    let config = Config {
        db: "postgres://keygate:db-secret@127.0.0.1/keygate".into(),
        admin_password: Some(Zeroizing::new("admin-secret".into())),
        ..Config::default()
    };
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("db-secret") && !shown.contains("admin-secret"),
        "{shown}"
    );
}

#[test]
fn defaults_without_any_setting() {
    let config = env(&[]).load().expect("defaults");
    assert_eq!(config.addr, "127.0.0.1:8080");
    assert_eq!(config.rate_limit, 100);
    assert_eq!(config.audit_denial_limit, 60);
    assert!(!config.demo, "the demo API is off unless asked for");
    assert!(config.metrics);
    assert!(config.roles.get("viewer").is_some());
    assert_eq!(config.kinds.len(), 1);
    assert_eq!(config.kinds[0].prefix(), "pat");
}

#[test]
fn flag_over_environment_over_file_over_default() {
    let f = toml_file(
        "rate_limit = 7\nfailure_limit = 8\nstore_timeout = 9\naudit_denial_limit = 10\n",
    );
    let config = env(&[
        ("KEYGATE_RATE_LIMIT", "70"),
        ("KEYGATE_FAILURE_LIMIT", "80"),
    ])
    .with_file(Some(f.path().to_owned()))
    .with_flag("rate_limit", "700")
    .load()
    .expect("valid");
    assert_eq!(config.rate_limit, 700, "the flag wins");
    assert_eq!(config.failure_limit, 80, "then the environment");
    assert_eq!(config.audit_denial_limit, 10, "the file");
    assert_eq!(
        config.store_timeout,
        Duration::from_secs(9),
        "then the file"
    );
    assert_eq!(
        config.metrics,
        Config::default().metrics,
        "then the default"
    );
}

#[test]
fn every_bad_value_is_reported_once_without_secrets() {
    let f = toml_file("rate_limit = \"lots\"\nmetrics = \"maybe\"\nrate_limt = 3\n");
    let err = env(&[
        ("KEYGATE_FAILURE_LIMIT", "-1"),
        ("KEYGATE_ADDR", "8080"),
        ("KEYGATE_TRUSTED_PROXIES", "10.0.0.0/8,nope"),
        ("KEYGATE_ADMIN_PASSWORD", "pw-secret-1"),
        ("KEYGATE_ADMIN_PASSWORD_FILE", "/nonexistent"),
        ("KEYGATE_DB", "postgres://u:db-secret-2@[::1/db"),
    ])
    .with_file(Some(f.path().to_owned()))
    .load()
    .expect_err("invalid");
    let shown = err.to_string();
    let file = f.path().display().to_string();
    assert_eq!(
        sources(&err),
        [
            format!("{file}: rate_limt"),
            "KEYGATE_DB".to_owned(),
            "KEYGATE_ADDR".to_owned(),
            "KEYGATE_ADMIN_PASSWORD and KEYGATE_ADMIN_PASSWORD_FILE".to_owned(),
            format!("{file}: rate_limit"),
            "KEYGATE_FAILURE_LIMIT".to_owned(),
            "KEYGATE_TRUSTED_PROXIES".to_owned(),
            format!("{file}: metrics"),
        ],
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 8, "{shown}");
    assert!(shown.contains("\"lots\"") && shown.contains("\"nope\"") && shown.contains("\"-1\""));
    assert!(
        !shown.contains("secret"),
        "a secret's value is never shown: {shown}"
    );
}

#[test]
fn secrets_from_files_lose_their_trailing_line_break() {
    let password = toml_file("correct horse battery\n");
    let db = toml_file("postgres://keygate:pw@db.internal/keygate\r\n");
    let config = env(&[
        (
            "KEYGATE_ADMIN_PASSWORD_FILE",
            password.path().to_str().expect("utf-8"),
        ),
        ("KEYGATE_DB_FILE", db.path().to_str().expect("utf-8")),
    ])
    .load()
    .expect("valid");
    assert_eq!(
        config.admin_password.as_deref().map(String::as_str),
        Some("correct horse battery")
    );
    assert_eq!(
        config.db,
        PathBuf::from("postgres://keygate:pw@db.internal/keygate")
    );

    let empty = toml_file("\n");
    let err = env(&[(
        "KEYGATE_ADMIN_PASSWORD_FILE",
        empty.path().to_str().expect("utf-8"),
    )])
    .load()
    .expect_err("an empty secret file");
    assert_eq!(sources(&err), ["KEYGATE_ADMIN_PASSWORD_FILE"]);
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn a_higher_level_replaces_a_secret_given_as_a_file_below() {
    let password = toml_file("from-the-file\n");
    let f = toml_file(&format!(
        "admin_password_file = {:?}\n",
        password.path().display().to_string()
    ));
    let config = env(&[("KEYGATE_ADMIN_PASSWORD", "from-the-environment")])
        .with_file(Some(f.path().to_owned()))
        .load()
        .expect("valid");
    assert_eq!(
        config.admin_password.as_deref().map(String::as_str),
        Some("from-the-environment")
    );
}

#[test]
fn roles_and_kinds_from_the_file() {
    let f = toml_file(
        "demo = true\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.1\"]\n\
         [roles]\nreader = [\"apps:read\"]\nwriter = [\"apps:read\", \"apps:write\"]\n\
         [kinds.svc]\nprefix = \"svc\"\nmax_live_per_owner = \"unlimited\"\n\
         [kinds.pat]\nmax_lifetime = 86400\n\
         [kinds.seat]\nbinding_header = \"x-machine-id\"\ninactivity_expiry = 1209600\n",
    );
    let config = env(&[])
        .with_file(Some(f.path().to_owned()))
        .load()
        .expect("valid");
    assert!(config.demo);
    assert_eq!(config.trusted_proxies.len(), 2);
    assert_eq!(
        config.roles.names().collect::<Vec<_>>(),
        ["reader", "writer"]
    );
    let kinds: Vec<_> = config.kinds.iter().map(TokenKind::prefix).collect();
    assert_eq!(
        kinds,
        ["svc", "pat", "seat"],
        "the file's order: svc is the default"
    );
    assert_eq!(
        config.kinds[2].inactivity_expiry(),
        Some(Some(Duration::from_secs(1_209_600)))
    );
    assert_eq!(config.kinds[0].inactivity_expiry(), None);
    assert_eq!(config.kinds[0].max_live_per_owner(), Some(None));
    assert_eq!(
        config.kinds[1].max_lifetime(),
        Some(Duration::from_secs(86_400))
    );
}

#[test]
fn bad_roles_and_kinds_name_their_table() {
    let f = toml_file(
        "[roles]\nok = [\"apps:read\"]\nbad = [\"Apps Read\"]\n\
         [kinds.a]\nprefix = \"xa\"\n[kinds.b]\nprefix = \"xa\"\n\
         [kinds.c]\nprefx = \"c\"\n[kinds.d]\nprefix = \"D!\"\n",
    );
    let err = env(&[])
        .with_file(Some(f.path().to_owned()))
        .load()
        .expect_err("invalid");
    let file = f.path().display().to_string();
    assert_eq!(
        sources(&err),
        [
            format!("{file}: roles.bad"),
            format!("{file}: kinds.b"),
            format!("{file}: kinds.c"),
            format!("{file}: kinds.d"),
        ],
        "{err}"
    );
    assert!(err.to_string().contains("prefx"), "{err}");
}

#[test]
fn a_syntax_error_gives_the_place_not_the_line() {
    let f = toml_file("addr = \"0.0.0.0:80\"\nadmin_password = \"hunter2-secret\n");
    let err = env(&[])
        .with_file(Some(f.path().to_owned()))
        .load()
        .expect_err("not TOML");
    let shown = err.to_string();
    assert!(shown.contains("line 2"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn unknown_flags_and_both_forms_on_the_command_line() {
    let err = env(&[])
        .with_flag("ratelimit", "3")
        .with_flag("db", "a.db")
        .with_flag("db_file", "/run/secrets/db")
        .load()
        .expect_err("invalid");
    assert_eq!(sources(&err), ["--db and --db-file", "--ratelimit"]);
}

#[test]
fn every_setting_has_its_variable_and_flag() {
    for s in Config::settings() {
        assert_eq!(s.env(), format!("KEYGATE_{}", s.key().to_uppercase()));
        if let Some(f) = s.file_env() {
            assert_eq!(f, format!("{}_FILE", s.env()));
        }
        assert!(!s.help().is_empty() && !s.default_value().is_empty());
    }
}

#[test]
fn the_example_file_holds_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/keygate.example.toml");
    let config = env(&[])
        .with_file(Some(path.into()))
        .load()
        .expect("the example file is valid");
    let d = Config::default();
    assert_eq!(format!("{config:?}"), format!("{d:?}"));
    for name in d.roles.names() {
        assert_eq!(config.roles.get(name), d.roles.get(name), "role {name}");
    }
    assert_eq!(config.roles.names().count(), d.roles.names().count());
}

#[test]
fn a_kind_takes_a_legacy_format_from_the_file() {
    use crate::token::{LegacyAlphabet, LegacyFormat};
    let f = toml_file(
        "[kinds.rgw]\nlegacy_length = 43\nlegacy_alphabet = \"base64url\"\n\
         [kinds.dtk]\nlegacy_length = 40\nlegacy_alphabet = \"hex\"\n",
    );
    let config = env(&[])
        .with_file(Some(f.path().to_owned()))
        .load()
        .expect("valid");
    assert_eq!(
        config.kinds[0].legacy_format(),
        Some(LegacyFormat {
            len: 43,
            alphabet: LegacyAlphabet::Base64Url
        })
    );
    assert!(config.kinds[1].accepts_legacy(&format!("dtk_{}", "a1".repeat(20))));

    let f = toml_file(
        "[kinds.aa]\nlegacy_length = 40\n\
         [kinds.bb]\nlegacy_length = 40\nlegacy_alphabet = \"base32\"\n\
         [kinds.cc]\nlegacy_length = 8\nlegacy_alphabet = \"hex\"\n",
    );
    let err = env(&[])
        .with_file(Some(f.path().to_owned()))
        .load()
        .expect_err("invalid");
    let file = f.path().display().to_string();
    assert_eq!(
        sources(&err),
        [
            format!("{file}: kinds.aa"),
            format!("{file}: kinds.bb"),
            format!("{file}: kinds.cc"),
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("go together") && text.contains("base32") && text.contains("128 bits"),
        "{text}"
    );
}

#[test]
fn peppers_from_the_environment_a_file_and_a_list_never_shown() {
    let current = "cGVwcGVyLXNlY3JldC0xLXBlcHBlci1zZWNyZXQtMS14eHg=";
    let old_hex = "7365637265742d6f6c642d70657070657273656372657420676f657320686572652121";
    let file = toml_file(&format!("{current}\n"));
    let config = env(&[
        ("KEYGATE_PEPPER_FILE", file.path().to_str().expect("utf-8")),
        ("KEYGATE_PREVIOUS_PEPPERS", &format!(" {old_hex} ,")),
        ("KEYGATE_ALLOW_UNPEPPERED", "off"),
    ])
    .load()
    .expect("valid");
    let pepper = config.pepper.as_ref().expect("a pepper");
    assert!(pepper.same_as(&Pepper::parse(current).expect("valid")));
    assert_eq!(config.previous_peppers.len(), 1);
    assert!(config.previous_peppers[0].same_as(&Pepper::from_hex(old_hex).expect("valid")));
    assert!(!config.allow_unpeppered);
    let shown = format!("{config:?}");
    assert!(
        !shown.contains(current) && !shown.contains(old_hex) && !shown.contains("cGVwc"),
        "{shown}"
    );
    assert!(Config::default().allow_unpeppered, "on by default");

    let err = env(&[
        ("KEYGATE_PEPPER", "c2hvcnQtc2VjcmV0"),
        (
            "KEYGATE_PREVIOUS_PEPPERS",
            &format!("{old_hex},not-a-secret!"),
        ),
    ])
    .load()
    .expect_err("a short pepper, a garbled previous one");
    assert_eq!(
        sources(&err),
        ["KEYGATE_PEPPER", "KEYGATE_PREVIOUS_PEPPERS"],
        "{err}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("32") && shown.contains("entry 2 of 2"),
        "{shown}"
    );
    assert!(
        !shown.contains("c2hvcnQ") && !shown.contains(old_hex) && !shown.contains("not-a-secret"),
        "a pepper is never shown: {shown}"
    );
}

#[test]
fn a_webhook_urls_query_is_never_shown() {
    let config = env(&[
        (
            "KEYGATE_EXPIRY_WEBHOOK_URL",
            "http://hooks.example/in?key=s3cret-value",
        ),
        ("KEYGATE_EXPIRY_WEBHOOK_SECRET", "0123456789abcdef0123"),
    ])
    .load()
    .expect("valid");
    let shown = format!("{config:?}");
    assert!(shown.contains("http://hooks.example/in?***"), "{shown}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
}

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

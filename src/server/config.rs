//! The server's settings: [`Config`], read from command-line flags, the environment and a
//! TOML file by [`ConfigLoader`] (or [`Config::from_env`]), over its defaults.
//!
//! Precedence: a flag, then the environment, then the file, then the default. Each secret
//! (the admin password, the database and Redis URLs, the peppers) may instead name a file
//! that holds it (`KEYGATE_ADMIN_PASSWORD_FILE`, `KEYGATE_DB_FILE`, `KEYGATE_PEPPER_FILE`,
//! …; `admin_password_file`, `db_file`, `pepper_file`, … in the file); giving a secret and its file at the same level is an error. Every bad value
//! is reported, each on its own line, never with a secret's value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::LogFormat;
use super::db::{Database, OpenError};
use crate::client_ip::ClientIpHeader;
use crate::forward_auth::OriginalRequest;
use crate::identity::Roles;
use crate::store::timeout::DEFAULT_STORE_TIMEOUT;
use crate::token::{Pepper, TokenKind};
use crate::tokens::TokensBuilder;

mod file;
mod settings;

use settings::SETTINGS;
pub use settings::Setting;

/// The server's settings; every field has the default of the [module docs](super)'s
/// table. Read them with [`Config::from_env`], [`Config::load`] or [`Config::loader`].
#[derive(Clone)]
pub struct Config {
    /// The SQLite file, or a `postgres://` URL.
    pub db: PathBuf,
    /// With PostgreSQL: the schema for keygate's tables (default `public`).
    pub db_schema: Option<String>,
    /// Where to listen.
    pub addr: String,
    /// The admin account's email.
    pub admin_email: String,
    /// The admin's password; `None`: keep the existing one, or generate one.
    pub admin_password: Option<Zeroizing<String>>,
    /// Requests a minute per token.
    pub rate_limit: u32,
    /// Requests a minute per owner, shared by all of the owner's tokens; `None`: no
    /// per-owner limit.
    pub owner_rate_limit: Option<u32>,
    /// Failed authentications a minute per client address.
    pub failure_limit: u32,
    /// Refused requests a minute per client address written to the audit trail (the rest
    /// are shed and counted).
    pub audit_denial_limit: u32,
    /// Proxies whose client-address header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The one header the trusted proxies put the client's address in.
    pub client_ip_header: ClientIpHeader,
    /// The JSON Lines audit file, if any.
    pub audit_log: Option<PathBuf>,
    /// Serve `GET /metrics`.
    pub metrics: bool,
    /// The longest any store call a request waits on may take (then 503).
    pub store_timeout: Duration,
    /// Mount the demo API (`/api/v1/apps...`); off by default.
    pub demo: bool,
    /// Reserve creating, editing, rotating, revoking and releasing tokens to administrators
    /// (`tokens:admin`, which the `admin` role holds); off by default (setting
    /// `token_management = "admin_only"`).
    pub admin_only_token_management: bool,
    /// The roles tokens and accounts may be given (default
    /// [`Roles::deployment_platform`]).
    pub roles: Roles,
    /// The token kinds; the first is the default for tokens naming none (default: the
    /// single kind [`TokenKind::pat`]).
    pub kinds: Vec<TokenKind>,
    /// The Redis that shares rate limits and failure limits between instances, if any
    /// (it may hold a password: never printed).
    pub redis_url: Option<String>,
    /// The prefix of every Redis key (default `keygate:`).
    pub redis_prefix: String,
    /// How the log lines (and the start banner) are written.
    pub log_format: LogFormat,
    /// On shutdown, how long the requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// Serve `GET /metrics` on this address only (not on `addr`).
    pub metrics_addr: Option<String>,
    /// How long audit events are kept in the database; `None`: forever.
    pub audit_retention: Option<Duration>,
    /// `GET /api/v1/verify`: the permission a write (not GET, HEAD, OPTIONS) needs; `None`:
    /// any valid token passes.
    pub verify_write_permission: Option<String>,
    /// `GET /api/v1/verify`: where the original request's method and URI are read
    /// (default [`OriginalRequest::Detect`]); name the proxy in front so a client can
    /// never supply another proxy's headers (behind Envoy: [`OriginalRequest::Direct`]).
    pub verify_source: OriginalRequest,
    /// The PEM file of the CA a `rediss://` Redis's certificate is checked against, instead
    /// of the system's certificate store.
    pub redis_ca_file: Option<PathBuf>,
    /// Run keygate's migrations on start (`false`: the tables must already be there).
    pub migrate: bool,
    /// The key leak reporters send in `X-Keygate-Reporter-Key` to `POST /api/v1/leaks`
    /// (with [`leak_signing_secret`](Self::leak_signing_secret) unset too, the route is
    /// not served).
    pub leak_reporter_key: Option<Zeroizing<String>>,
    /// The HMAC-SHA256 secret leak reporters sign `POST /api/v1/leaks` bodies with.
    pub leak_signing_secret: Option<Zeroizing<String>>,
    /// How many days before a token expires its `token.expiring` event is written (and
    /// sent to the webhook); 0: no warnings.
    pub expiry_warning_days: u32,
    /// Where expiry warnings are POSTed (`http://` only), if anywhere.
    pub expiry_webhook_url: Option<String>,
    /// The HMAC-SHA256 secret expiry warnings are signed with.
    pub expiry_webhook_secret: Option<Zeroizing<String>>,
    /// The server secret tokens are digested with (HMAC-SHA256); `None`: plain SHA-256.
    /// Never printed.
    pub pepper: Option<Pepper>,
    /// Peppers used before `pepper`, newest first: their tokens keep working and are
    /// re-hashed on use. Never printed.
    pub previous_peppers: Vec<Pepper>,
    /// With a pepper: whether tokens stored under the plain SHA-256 (issued before the
    /// pepper, or imported) are still accepted, and re-hashed on use (default `true`).
    pub allow_unpeppered: bool,
}

impl std::fmt::Debug for Config {
    /// Never the admin password, the database URL's, nor a pepper.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("db", &self.describe_db())
            .field("db_schema", &self.db_schema)
            .field("addr", &self.addr)
            .field("admin_email", &self.admin_email)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "***"),
            )
            .field("rate_limit", &self.rate_limit)
            .field("owner_rate_limit", &self.owner_rate_limit)
            .field("failure_limit", &self.failure_limit)
            .field("audit_denial_limit", &self.audit_denial_limit)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("client_ip_header", &self.client_ip_header)
            .field("audit_log", &self.audit_log)
            .field("metrics", &self.metrics)
            .field("store_timeout", &self.store_timeout)
            .field("demo", &self.demo)
            .field(
                "admin_only_token_management",
                &self.admin_only_token_management,
            )
            .field("roles", &self.roles)
            .field("kinds", &self.kinds)
            .field(
                "redis_url",
                &self.redis_url.as_deref().map(super::app::redact_redis_url),
            )
            .field("redis_prefix", &self.redis_prefix)
            .field("log_format", &self.log_format)
            .field("drain_timeout", &self.drain_timeout)
            .field("metrics_addr", &self.metrics_addr)
            .field("audit_retention", &self.audit_retention)
            .field("verify_write_permission", &self.verify_write_permission)
            .field("verify_source", &self.verify_source)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("migrate", &self.migrate)
            .field(
                "leak_reporter_key",
                &self.leak_reporter_key.as_ref().map(|_| "***"),
            )
            .field(
                "leak_signing_secret",
                &self.leak_signing_secret.as_ref().map(|_| "***"),
            )
            .field("expiry_warning_days", &self.expiry_warning_days)
            // A query string may carry a receiver's secret: only what comes before it.
            .field(
                "expiry_webhook_url",
                &self.expiry_webhook_url.as_deref().map(|u| {
                    u.split_once('?')
                        .map_or(u.to_owned(), |(a, _)| format!("{a}?***"))
                }),
            )
            .field(
                "expiry_webhook_secret",
                &self.expiry_webhook_secret.as_ref().map(|_| "***"),
            )
            .field("pepper", &self.pepper.as_ref().map(|_| "***"))
            .field("previous_peppers", &self.previous_peppers.len())
            .field("allow_unpeppered", &self.allow_unpeppered)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            db: "keygate.db".into(),
            db_schema: None,
            addr: "127.0.0.1:8080".into(),
            admin_email: "admin@example.com".into(),
            admin_password: None,
            rate_limit: 100,
            owner_rate_limit: None,
            failure_limit: 20,
            audit_denial_limit: crate::rate_limit::DEFAULT_AUDIT_BUDGET,
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            audit_log: None,
            metrics: true,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            demo: false,
            admin_only_token_management: false,
            roles: Roles::deployment_platform(),
            kinds: vec![TokenKind::pat()],
            redis_url: None,
            redis_prefix: "keygate:".into(),
            log_format: LogFormat::Text,
            drain_timeout: Duration::from_secs(30),
            metrics_addr: None,
            audit_retention: Some(super::DEFAULT_AUDIT_RETENTION),
            verify_write_permission: None,
            verify_source: OriginalRequest::Detect,
            redis_ca_file: None,
            migrate: true,
            leak_reporter_key: None,
            leak_signing_secret: None,
            expiry_warning_days: 7,
            expiry_webhook_url: None,
            expiry_webhook_secret: None,
            pepper: None,
            previous_peppers: Vec::new(),
            allow_unpeppered: true,
        }
    }
}

/// One bad setting: where it was given and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where: a variable (`KEYGATE_RATE_LIMIT`), a flag (`--rate-limit`) or a file and key
    /// (`keygate.toml: rate_limit`).
    pub source: String,
    /// What is wrong, with the value given unless it is a secret.
    pub message: String,
}

impl ConfigProblem {
    fn new(source: String, message: String) -> Self {
        Self { source, message }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

/// The settings could not be read: every problem found, one a line when displayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidConfig {
    problems: Vec<ConfigProblem>,
}

impl InvalidConfig {
    /// Each bad setting, in the order of the settings table.
    #[must_use]
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidConfig {}

/// The values one level (flags, environment or file) gives: key (a setting's, or a secret's
/// `<key>_file`), text, and where it was given.
#[derive(Default)]
struct Layer {
    values: Vec<(String, String, String)>,
}

impl Layer {
    /// Records `key = value`; an empty (or blank) value is no value.
    fn push(&mut self, key: &str, value: String, source: String) {
        if !value.trim().is_empty() {
            self.values.push((key.to_owned(), value, source));
        }
    }

    fn get(&self, key: &str) -> Option<(&str, &str)> {
        self.values
            .iter()
            .rev()
            .find(|(k, ..)| k == key)
            .map(|(_, v, s)| (v.as_str(), s.as_str()))
    }
}

/// Where the configuration file comes from.
#[derive(Clone, Debug)]
enum FileChoice {
    /// The file `KEYGATE_CONFIG` names, if set.
    FromEnv,
    /// This file, or none.
    Given(Option<PathBuf>),
    /// This text, read as a file named `name`.
    Text { name: String, text: String },
}

/// Reads a [`Config`]: command-line flags over the environment over a TOML file over the
/// defaults. Every problem is collected; [`load`](Self::load) reports them all at once.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigLoader {
    base: Config,
    file: FileChoice,
    env: Option<Vec<(String, String)>>,
    flags: Vec<(String, String)>,
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self {
            base: Config::default(),
            file: FileChoice::FromEnv,
            env: None,
            flags: Vec::new(),
        }
    }
}

impl ConfigLoader {
    /// Starts from `base` instead of [`Config::default`]: its values are the defaults
    /// (e.g. a program that wants the demo API unless told otherwise).
    pub fn with_defaults(mut self, base: Config) -> Self {
        self.base = base;
        self
    }

    /// Reads this TOML file (`None`: no file), instead of the one `KEYGATE_CONFIG` names.
    pub fn with_file(mut self, path: Option<PathBuf>) -> Self {
        self.file = FileChoice::Given(path);
        self
    }

    /// Reads this TOML text as the configuration file, instead of the one `KEYGATE_CONFIG`
    /// names: for a file the program has already read, or a configuration it embeds.
    /// `name` stands for the file in each problem (`name: rate_limit`).
    ///
    /// ```
    /// use keygate::server::Config;
    ///
    /// let config = Config::loader()
    ///     .with_env([("KEYGATE_RATE_LIMIT", "50")])
    ///     .with_file_text("keygate.toml", "rate_limit = 10\nmetrics = false\n")
    ///     .load()
    ///     .unwrap();
    /// assert_eq!(config.rate_limit, 50, "the environment wins over the file");
    /// assert!(!config.metrics);
    ///
    /// let err = Config::loader()
    ///     .with_env(Vec::<(String, String)>::new())
    ///     .with_file_text("keygate.toml", "rate_limit = 0\ncolour = \"blue\"\n")
    ///     .load()
    ///     .unwrap_err();
    /// assert_eq!(err.problems().len(), 2);
    /// ```
    pub fn with_file_text(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.file = FileChoice::Text {
            name: name.into(),
            text: text.into(),
        };
        self
    }

    /// Reads these variables instead of the process's environment.
    pub fn with_env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// A command-line value for the setting `key` (e.g. `rate_limit`, or `db_file` for the
    /// file holding a secret): it wins over the environment and the file.
    pub fn with_flag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.flags.push((key.into(), value.into()));
        self
    }

    /// Reads every level and checks every value.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`], listing every bad value: one that does not parse, an unknown key
    /// in the file, a secret and its file both given at one level, a secret's file that
    /// cannot be read or is empty, a file that cannot be read or is not TOML.
    pub fn load(self) -> Result<Config, InvalidConfig> {
        let mut problems = Vec::new();
        let env = self.env.unwrap_or_else(|| {
            std::env::vars_os()
                .filter_map(|(k, v)| {
                    let k = k.into_string().ok()?;
                    if !k.starts_with("KEYGATE_") {
                        return None;
                    }
                    match v.into_string() {
                        Ok(v) => Some((k, v)),
                        Err(_) => {
                            problems.push(ConfigProblem::new(k, "is not UTF-8".to_owned()));
                            None
                        }
                    }
                })
                .collect()
        });
        let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);

        let mut flags = Layer::default();
        for (key, value) in self.flags {
            let flag = format!("--{}", key.replace('_', "-"));
            flags.push(&key, value, flag);
        }
        let mut environment = Layer::default();
        for s in SETTINGS {
            if let Some(v) = lookup(s.env()) {
                environment.push(s.key(), v.clone(), s.env().to_owned());
            }
            if let Some(name) = s.file_env()
                && let Some(v) = lookup(name)
            {
                environment.push(&format!("{}_file", s.key()), v.clone(), name.to_owned());
            }
        }
        let file = match self.file {
            FileChoice::Given(Some(path)) => file::read(&path, &mut problems),
            FileChoice::Given(None) => file::FileValues::default(),
            FileChoice::FromEnv => {
                match lookup("KEYGATE_CONFIG").filter(|p| !p.trim().is_empty()) {
                    Some(path) => file::read(Path::new(path), &mut problems),
                    None => file::FileValues::default(),
                }
            }
            FileChoice::Text { name, text } => file::read_text(name, &text, &mut problems),
        };

        let mut config = self.base;
        for s in SETTINGS {
            let file_key = format!("{}_file", s.key());
            let given = [&flags, &environment, &file.layer]
                .into_iter()
                .find_map(|layer| {
                    let plain = layer.get(s.key());
                    let from_file = s.is_secret().then(|| layer.get(&file_key)).flatten();
                    (plain.is_some() || from_file.is_some()).then_some((plain, from_file))
                });
            let result = match given {
                None => continue,
                Some((Some((_, a)), Some((_, b)))) => Err((
                    format!("{a} and {b}"),
                    "give the value or the file that holds it, not both".to_owned(),
                )),
                Some((Some((value, source)), None)) => s
                    .apply(&mut config, value)
                    .map_err(|m| (source.to_owned(), m)),
                Some((None, Some((path, source)))) => read_secret(Path::new(path.trim()))
                    .and_then(|value| s.apply(&mut config, &value))
                    .map_err(|m| (source.to_owned(), m)),
                Some((None, None)) => continue,
            };
            if let Err((source, message)) = result {
                problems.push(ConfigProblem::new(source, message));
            }
        }
        for (key, _, source) in &flags.values {
            let known = SETTINGS.iter().any(|s| {
                s.key() == key || (s.is_secret() && key.strip_suffix("_file") == Some(s.key()))
            });
            if !known {
                problems.push(ConfigProblem::new(source.clone(), "unknown setting".into()));
            }
        }
        if let Some(roles) = file.roles {
            config.roles = roles;
        }
        if let Some(kinds) = file.kinds {
            config.kinds = kinds;
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(InvalidConfig { problems })
        }
    }
}

/// A secret's file: its text without the trailing line break.
fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.trim().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value.to_owned())
}

impl Config {
    /// `builder` with the pepper settings: the current pepper, the previous ones and
    /// whether unpeppered records are accepted. What the server and the `keygate token`
    /// commands build their manager with, so that both digest tokens alike.
    pub fn with_pepper(&self, builder: TokensBuilder) -> TokensBuilder {
        match &self.pepper {
            Some(pepper) => builder
                .pepper(pepper.clone())
                .previous_peppers(self.previous_peppers.iter().cloned())
                .allow_unpeppered(self.allow_unpeppered),
            None => builder,
        }
    }

    /// The environment over the file `KEYGATE_CONFIG` names (if any) over the defaults:
    /// `KEYGATE_DB` (or `KEYGATE_DB_FILE`), `KEYGATE_DB_SCHEMA`, `KEYGATE_ADDR`,
    /// `KEYGATE_ADMIN_EMAIL`, `KEYGATE_ADMIN_PASSWORD` (or `KEYGATE_ADMIN_PASSWORD_FILE`),
    /// `KEYGATE_RATE_LIMIT`, `KEYGATE_FAILURE_LIMIT`, `KEYGATE_TRUSTED_PROXIES`,
    /// `KEYGATE_CLIENT_IP_HEADER`, `KEYGATE_AUDIT_LOG`, `KEYGATE_METRICS`,
    /// `KEYGATE_STORE_TIMEOUT`, `KEYGATE_DEMO` ([`Config::settings`] lists them).
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`], listing every bad value.
    pub fn from_env() -> Result<Self, InvalidConfig> {
        Self::loader().load()
    }

    /// The environment over the TOML file `file` (`None`: the one `KEYGATE_CONFIG` names,
    /// if any) over the defaults.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`], listing every bad value.
    pub fn load(file: Option<&Path>) -> Result<Self, InvalidConfig> {
        match file {
            Some(path) => Self::loader().with_file(Some(path.to_owned())).load(),
            None => Self::loader().load(),
        }
    }

    /// A [`ConfigLoader`] for the process's environment and `KEYGATE_CONFIG`, to add flags,
    /// another file or other defaults to.
    pub fn loader() -> ConfigLoader {
        ConfigLoader::default()
    }

    /// Every single-valued setting: key, variable, flag, default and meaning.
    #[must_use]
    pub fn settings() -> &'static [Setting] {
        SETTINGS
    }

    /// The database `db` names: a SQLite file, or a PostgreSQL URL.
    ///
    /// # Errors
    ///
    /// An empty path.
    pub fn database(&self) -> Result<Database, OpenError> {
        Database::from_path(&self.db)
    }

    /// The database for people to read: a file path, or a PostgreSQL URL with its
    /// password (user information or `password=`-like query parameters) replaced by `***`.
    /// A value that names no database is not shown (it may hold a password).
    pub fn describe_db(&self) -> String {
        match self.database() {
            Ok(db) => db.describe(),
            Err(_) => "(not a database)".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;

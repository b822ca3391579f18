//! The server's settings: [`Config::from_env`] and its defaults.

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use super::BoxError;
use super::db::{Database, OpenError};
use crate::client_ip::ClientIpHeader;
use crate::store::timeout::DEFAULT_STORE_TIMEOUT;

/// The server's settings, read from the environment by [`Config::from_env`]; every field
/// has the default of the [module docs](super)'s environment table.
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
    /// Failed authentications a minute per client address.
    pub failure_limit: u32,
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
    /// The PEM file of the CA a `rediss://` Redis's certificate is checked against, instead
    /// of the system's certificate store.
    pub redis_ca_file: Option<PathBuf>,
    /// Run keygate's migrations on start (`false`: the tables must already be there).
    pub migrate: bool,
}

impl std::fmt::Debug for Config {
    /// Never the admin password, nor the database URL's.
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
            .field("failure_limit", &self.failure_limit)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("client_ip_header", &self.client_ip_header)
            .field("audit_log", &self.audit_log)
            .field("metrics", &self.metrics)
            .field("store_timeout", &self.store_timeout)
            .field("redis_ca_file", &self.redis_ca_file)
            .field("migrate", &self.migrate)
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
            failure_limit: 20,
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            audit_log: None,
            metrics: true,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            redis_ca_file: None,
            migrate: true,
        }
    }
}

impl Config {
    /// `KEYGATE_DB`, `KEYGATE_ADDR`, `KEYGATE_ADMIN_EMAIL`, `KEYGATE_ADMIN_PASSWORD`,
    /// `KEYGATE_RATE_LIMIT`, `KEYGATE_FAILURE_LIMIT`, `KEYGATE_TRUSTED_PROXIES`,
    /// `KEYGATE_CLIENT_IP_HEADER`, `KEYGATE_AUDIT_LOG`, `KEYGATE_METRICS`, `KEYGATE_STORE_TIMEOUT`,
    /// `KEYGATE_REDIS_CA_FILE`, `KEYGATE_MIGRATE`.
    ///
    /// # Errors
    ///
    /// A limit that is not a positive whole number, a proxy that is not a CIDR, a
    /// client-address header that is not a header name, or `KEYGATE_MIGRATE` neither `on`
    /// nor `off`.
    pub fn from_env() -> Result<Self, BoxError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let d = Self::default();
        let count = |k: &str, default: u32| -> Result<u32, BoxError> {
            match var(k) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{k} must be a positive whole number, not {v:?}").into()),
                },
            }
        };
        let trusted_proxies = var("KEYGATE_TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("KEYGATE_TRUSTED_PROXIES: {s:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client_ip_header = match var("KEYGATE_CLIENT_IP_HEADER") {
            None => d.client_ip_header,
            Some(v) => ClientIpHeader::parse(&v)
                .map_err(|_| format!("KEYGATE_CLIENT_IP_HEADER: {v:?} is not a header name"))?,
        };
        Ok(Self {
            db: var("KEYGATE_DB").map_or(d.db, Into::into),
            db_schema: var("KEYGATE_DB_SCHEMA"),
            addr: var("KEYGATE_ADDR").unwrap_or(d.addr),
            admin_email: var("KEYGATE_ADMIN_EMAIL").unwrap_or(d.admin_email),
            admin_password: var("KEYGATE_ADMIN_PASSWORD").map(Zeroizing::new),
            rate_limit: count("KEYGATE_RATE_LIMIT", d.rate_limit)?,
            failure_limit: count("KEYGATE_FAILURE_LIMIT", d.failure_limit)?,
            trusted_proxies,
            client_ip_header,
            audit_log: var("KEYGATE_AUDIT_LOG").map(Into::into),
            metrics: !var("KEYGATE_METRICS").is_some_and(|v| v.eq_ignore_ascii_case("off")),
            store_timeout: Duration::from_secs(count("KEYGATE_STORE_TIMEOUT", 2)?.into()),
            redis_ca_file: var("KEYGATE_REDIS_CA_FILE").map(Into::into),
            migrate: match var("KEYGATE_MIGRATE").map(|v| v.trim().to_ascii_lowercase()) {
                None => d.migrate,
                Some(v) if v == "on" => true,
                Some(v) if v == "off" => false,
                Some(v) => {
                    return Err(format!("KEYGATE_MIGRATE must be on or off, not {v:?}").into());
                }
            },
        })
    }
}

impl Config {
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
    pub fn describe_db(&self) -> String {
        match self.database() {
            Ok(db) => db.describe(),
            Err(_) => self.db.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

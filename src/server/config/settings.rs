//! Every single-valued setting, once: its key, its variable, its default and how its text
//! is read. A new setting is a field of [`Config`] and one entry of [`SETTINGS`].

use std::time::Duration;

use zeroize::Zeroizing;

use super::Config;
use crate::client_ip::ClientIpHeader;
use crate::forward_auth::OriginalRequest;
use crate::server::bootstrap::normalise_email;
use crate::server::db::Database;
use crate::token::Pepper;

/// One setting of the reference server: the key in the configuration file, the variable
/// in the environment, the command-line flag, its default and its meaning.
///
/// [`Config::settings`] lists them all; the `keygate serve` flags are built from them.
#[derive(Clone, Copy)]
pub struct Setting {
    key: &'static str,
    env: &'static str,
    file_env: Option<&'static str>,
    default: &'static str,
    help: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("key", &self.key)
            .field("env", &self.env)
            .field("file_env", &self.file_env)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl Setting {
    /// The key in the configuration file, e.g. `rate_limit`.
    #[must_use]
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The environment variable, e.g. `KEYGATE_RATE_LIMIT`.
    #[must_use]
    pub fn env(&self) -> &'static str {
        self.env
    }

    /// The command-line flag's name without its dashes, e.g. `rate-limit`.
    #[must_use]
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// For a secret: the variable naming a file that holds it, e.g.
    /// `KEYGATE_ADMIN_PASSWORD_FILE` (the file's key and flag end in `_file` / `-file`).
    #[must_use]
    pub fn file_env(&self) -> Option<&'static str> {
        self.file_env
    }

    /// Whether the value is a secret: never printed, and also read from a file.
    #[must_use]
    pub fn is_secret(&self) -> bool {
        self.file_env.is_some()
    }

    /// The default, as people read it.
    #[must_use]
    pub fn default_value(&self) -> &'static str {
        self.default
    }

    /// What the setting does, in one line.
    #[must_use]
    pub fn help(&self) -> &'static str {
        self.help
    }

    /// Reads `value` into `config`; the error names the problem (never a secret's value).
    pub(super) fn apply(&self, config: &mut Config, value: &str) -> Result<(), String> {
        (self.apply)(config, value)
    }
}

/// Every single-valued setting, in the order of the documentation. (The roles and token
/// kinds are tables of the configuration file, read apart.)
pub(super) static SETTINGS: &[Setting] = &[
    Setting {
        key: "db",
        env: "KEYGATE_DB",
        file_env: Some("KEYGATE_DB_FILE"),
        default: "keygate.db",
        help: "the SQLite file (created 0600), or a postgres:// URL shared by several instances",
        apply: |c, v| {
            let db = Database::parse(v).map_err(|e| e.to_string())?;
            if let Database::Postgres(url) = &db
                && let Err(e) = url::Url::parse(url)
            {
                return Err(format!("is not a valid PostgreSQL URL ({e})"));
            }
            c.db = v.trim().into();
            Ok(())
        },
    },
    Setting {
        key: "db_schema",
        env: "KEYGATE_DB_SCHEMA",
        file_env: None,
        default: "public",
        help: "with PostgreSQL: the schema keygate's tables are kept in",
        apply: |c, v| {
            let v = v.trim();
            let valid = v.len() <= 63
                && v.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
                && v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !valid {
                return Err(format!(
                    "must be 1-63 letters, digits or _ starting with a letter or _, not {v:?}"
                ));
            }
            c.db_schema = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "migrate",
        env: "KEYGATE_MIGRATE",
        file_env: None,
        default: "on",
        help: "create and upgrade keygate's tables at start; off: check they exist (apply migrations/ yourself)",
        apply: |c, v| {
            c.migrate = switch(v)?;
            Ok(())
        },
    },
    Setting {
        key: "addr",
        env: "KEYGATE_ADDR",
        file_env: None,
        default: "127.0.0.1:8080",
        help: "where to listen: host:port",
        apply: |c, v| {
            let v = v.trim();
            let port = v
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(_))) if !host.is_empty() => {
                    c.addr = v.to_owned();
                    Ok(())
                }
                _ => Err(format!(
                    "must be host:port (e.g. 127.0.0.1:8080 or 0.0.0.0:8080), not {v:?}"
                )),
            }
        },
    },
    Setting {
        key: "admin_email",
        env: "KEYGATE_ADMIN_EMAIL",
        file_env: None,
        default: "admin@example.com",
        help: "the admin account (every permission)",
        apply: |c, v| {
            c.admin_email = normalise_email(v).map_err(|e| format!("{e}"))?;
            Ok(())
        },
    },
    Setting {
        key: "admin_password",
        env: "KEYGATE_ADMIN_PASSWORD",
        file_env: Some("KEYGATE_ADMIN_PASSWORD_FILE"),
        default: "generated and printed once when the admin is created",
        help: "the admin's password (an existing admin's is replaced by it)",
        apply: |c, v| {
            c.admin_password = Some(Zeroizing::new(v.to_owned()));
            Ok(())
        },
    },
    Setting {
        key: "pepper",
        env: "KEYGATE_PEPPER",
        file_env: Some("KEYGATE_PEPPER_FILE"),
        default: "none (plain SHA-256)",
        help: "a server secret of at least 32 bytes, hex or base64 (e.g. openssl rand -base64 32): tokens are stored as HMAC-SHA256 under it, so a database copy alone cannot confirm a guess",
        apply: |c, v| {
            // The value is a secret: the error names the problem, never the value.
            c.pepper = Some(Pepper::parse(v).map_err(|e| e.to_string())?);
            Ok(())
        },
    },
    Setting {
        key: "previous_peppers",
        env: "KEYGATE_PREVIOUS_PEPPERS",
        file_env: Some("KEYGATE_PREVIOUS_PEPPERS_FILE"),
        default: "none",
        help: "comma-separated peppers used before the current one, newest first: their tokens keep working and are re-hashed to the current pepper on use",
        apply: |c, v| {
            let entries: Vec<&str> = v
                .split([',', '\n'])
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            let mut peppers = Vec::with_capacity(entries.len());
            for (i, entry) in entries.iter().enumerate() {
                let pepper = Pepper::parse(entry)
                    .map_err(|e| format!("entry {} of {}: {e}", i + 1, entries.len()))?;
                peppers.push(pepper);
            }
            c.previous_peppers = peppers;
            Ok(())
        },
    },
    Setting {
        key: "allow_unpeppered",
        env: "KEYGATE_ALLOW_UNPEPPERED",
        file_env: None,
        default: "on",
        help: "with a pepper: still accept tokens stored under the plain SHA-256 (issued before the pepper, or imported), re-hashing each on use; off once they are all re-hashed",
        apply: |c, v| {
            c.allow_unpeppered = switch(v)?;
            Ok(())
        },
    },
    Setting {
        key: "rate_limit",
        env: "KEYGATE_RATE_LIMIT",
        file_env: None,
        default: "100",
        help: "requests a minute per token (429 past it)",
        apply: |c, v| {
            c.rate_limit = positive(v)?;
            Ok(())
        },
    },
    Setting {
        key: "owner_rate_limit",
        env: "KEYGATE_OWNER_RATE_LIMIT",
        file_env: None,
        default: "off",
        help: "requests a minute per account, shared by all of its tokens (429 past it), or off",
        apply: |c, v| {
            c.owner_rate_limit = match v.trim() {
                t if t.eq_ignore_ascii_case("off") => None,
                _ => Some(positive(v).map_err(|e| format!("{e} (or off)"))?),
            };
            Ok(())
        },
    },
    Setting {
        key: "failure_limit",
        env: "KEYGATE_FAILURE_LIMIT",
        file_env: None,
        default: "20",
        help: "failed authentications a minute per client address (and per account)",
        apply: |c, v| {
            c.failure_limit = positive(v)?;
            Ok(())
        },
    },
    Setting {
        key: "audit_denial_limit",
        env: "KEYGATE_AUDIT_DENIAL_LIMIT",
        file_env: None,
        default: "60",
        help: "refused requests a minute per client address written to the audit trail (the rest are shed and counted)",
        apply: |c, v| {
            c.audit_denial_limit = positive(v)?;
            Ok(())
        },
    },
    Setting {
        key: "trusted_proxies",
        env: "KEYGATE_TRUSTED_PROXIES",
        file_env: None,
        default: "none",
        help: "comma-separated CIDRs of the proxies whose client-address header is believed",
        apply: |c, v| {
            let mut nets = Vec::new();
            let mut bad = Vec::new();
            for s in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match s
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                {
                    Ok(net) => nets.push(net),
                    Err(_) => bad.push(format!("{s:?}")),
                }
            }
            if !bad.is_empty() {
                return Err(format!(
                    "{} not a CIDR (e.g. 10.0.0.0/8)",
                    if bad.len() == 1 {
                        format!("{} is", bad[0])
                    } else {
                        format!("{} are", bad.join(", "))
                    }
                ));
            }
            c.trusted_proxies = nets;
            Ok(())
        },
    },
    Setting {
        key: "client_ip_header",
        env: "KEYGATE_CLIENT_IP_HEADER",
        file_env: None,
        default: "x-forwarded-for",
        help: "the one header the trusted proxies put the client's address in",
        apply: |c, v| {
            c.client_ip_header = ClientIpHeader::parse(v)
                .map_err(|_| format!("{:?} is not a header name", v.trim()))?;
            Ok(())
        },
    },
    Setting {
        key: "audit_log",
        env: "KEYGATE_AUDIT_LOG",
        file_env: None,
        default: "none",
        help: "append audit events to this file as JSON Lines (created 0600)",
        apply: |c, v| {
            c.audit_log = Some(v.trim().into());
            Ok(())
        },
    },
    Setting {
        key: "metrics",
        env: "KEYGATE_METRICS",
        file_env: None,
        default: "on",
        help: "serve GET /metrics: on or off",
        apply: |c, v| {
            c.metrics = switch(v)?;
            Ok(())
        },
    },
    Setting {
        key: "store_timeout",
        env: "KEYGATE_STORE_TIMEOUT",
        file_env: None,
        default: "2",
        help: "seconds any store call a request waits on may take (then 503)",
        apply: |c, v| {
            c.store_timeout = Duration::from_secs(positive(v)?.into());
            Ok(())
        },
    },
    Setting {
        key: "redis_url",
        env: "KEYGATE_REDIS_URL",
        file_env: Some("KEYGATE_REDIS_URL_FILE"),
        default: "none",
        help: "a redis:// (or rediss://) URL: rate and failure limits shared by every instance",
        apply: |c, v| {
            let v = v.trim();
            let scheme = v.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
                // The URL may hold a password: never repeated.
                return Err("must be a redis:// or rediss:// URL".to_owned());
            }
            c.redis_url = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "redis_ca_file",
        env: "KEYGATE_REDIS_CA_FILE",
        file_env: None,
        default: "the system's certificates",
        help: "a PEM file of the CA a rediss:// server's certificate must chain to (instead of the system's)",
        apply: |c, v| {
            let v = v.trim();
            if v.is_empty() {
                return Err("must name a file".to_owned());
            }
            c.redis_ca_file = Some(v.into());
            Ok(())
        },
    },
    Setting {
        key: "redis_prefix",
        env: "KEYGATE_REDIS_PREFIX",
        file_env: None,
        default: "keygate:",
        help: "the prefix of every Redis key (several deployments can share one Redis)",
        apply: |c, v| {
            let v = v.trim();
            if v.is_empty() || v.len() > 64 || v.chars().any(|ch| ch.is_control() || ch == ' ') {
                return Err(format!(
                    "must be 1-64 characters without spaces or control characters, not {v:?}"
                ));
            }
            c.redis_prefix = v.to_owned();
            Ok(())
        },
    },
    Setting {
        key: "log_format",
        env: "KEYGATE_LOG_FORMAT",
        file_env: None,
        default: "text",
        help: "text, or json: every log line (the start banner included) one JSON object",
        apply: |c, v| {
            c.log_format = v
                .parse()
                .map_err(|_| format!("must be text or json, not {:?}", v.trim()))?;
            Ok(())
        },
    },
    Setting {
        key: "drain_timeout",
        env: "KEYGATE_DRAIN_TIMEOUT",
        file_env: None,
        default: "30",
        help: "seconds the requests in flight may take to finish on shutdown",
        apply: |c, v| {
            c.drain_timeout = Duration::from_secs(positive(v)?.into());
            Ok(())
        },
    },
    Setting {
        key: "metrics_addr",
        env: "KEYGATE_METRICS_ADDR",
        file_env: None,
        default: "none",
        help: "serve GET /metrics on this host:port only, not on addr",
        apply: |c, v| {
            let v = v.trim();
            match v
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()))
            {
                Some((host, Ok(_))) if !host.is_empty() => {
                    c.metrics_addr = Some(v.to_owned());
                    Ok(())
                }
                _ => Err(format!(
                    "must be host:port (e.g. 127.0.0.1:9090), not {v:?}"
                )),
            }
        },
    },
    Setting {
        key: "audit_retention",
        env: "KEYGATE_AUDIT_RETENTION",
        file_env: None,
        default: "90d",
        help: "how long audit events are kept in the database: 90d, 12h, 30m, seconds, or off",
        apply: |c, v| {
            c.audit_retention = crate::server::parse_retention(v).map_err(|_| {
                format!(
                    "must be off or a positive number of seconds, or of minutes, hours or days \
                     with m, h or d (e.g. 90d), not {:?}",
                    v.trim()
                )
            })?;
            Ok(())
        },
    },
    Setting {
        key: "verify_write_permission",
        env: "KEYGATE_VERIFY_WRITE_PERMISSION",
        file_env: None,
        default: "none",
        help: "GET /api/v1/verify (forward auth): the permission a write needs (none: any token)",
        apply: |c, v| {
            let v = v.trim();
            crate::Permission::new(v).map_err(|e| format!("is not a permission ({e}): {v:?}"))?;
            c.verify_write_permission = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "verify_source",
        env: "KEYGATE_VERIFY_SOURCE",
        file_env: None,
        default: "detect",
        help: "GET /api/v1/verify: where the original method and URI are read: nginx, traefik, direct (envoy) or detect (whichever pair is sent)",
        apply: |c, v| {
            c.verify_source = match v.trim().to_ascii_lowercase().as_str() {
                "detect" => OriginalRequest::Detect,
                "nginx" => OriginalRequest::Nginx,
                "traefik" => OriginalRequest::Traefik,
                "direct" | "envoy" => OriginalRequest::Direct,
                _ => {
                    return Err(format!(
                        "must be nginx, traefik, direct (or envoy) or detect, not {:?}",
                        v.trim()
                    ));
                }
            };
            Ok(())
        },
    },
    Setting {
        key: "leak_reporter_key",
        env: "KEYGATE_LEAK_REPORTER_KEY",
        file_env: Some("KEYGATE_LEAK_REPORTER_KEY_FILE"),
        default: "none (with no signing secret either, POST /api/v1/leaks is not served)",
        help: "the key leak reporters send in X-Keygate-Reporter-Key to POST /api/v1/leaks (at least 16 visible ASCII characters)",
        apply: |c, v| {
            let v = v.trim();
            if v.len() < 16 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("must be at least 16 visible ASCII characters".to_owned());
            }
            c.leak_reporter_key = Some(Zeroizing::new(v.to_owned()));
            Ok(())
        },
    },
    Setting {
        key: "leak_signing_secret",
        env: "KEYGATE_LEAK_SIGNING_SECRET",
        file_env: Some("KEYGATE_LEAK_SIGNING_SECRET_FILE"),
        default: "none",
        help: "the HMAC-SHA256 secret leak reporters sign POST /api/v1/leaks bodies with (X-Keygate-Signature: sha256=<hex>; at least 16 bytes)",
        apply: |c, v| {
            let v = v.trim();
            if v.len() < 16 {
                return Err("must be at least 16 bytes".to_owned());
            }
            c.leak_signing_secret = Some(Zeroizing::new(v.to_owned()));
            Ok(())
        },
    },
    Setting {
        key: "expiry_warning_days",
        env: "KEYGATE_EXPIRY_WARNING_DAYS",
        file_env: None,
        default: "7",
        help: "days before a token expires that a token.expiring audit event (and webhook call) warns of it; 0: never",
        apply: |c, v| {
            c.expiry_warning_days = match v.trim().parse::<u32>() {
                Ok(n) if n <= 3650 => n,
                _ => {
                    return Err(format!(
                        "must be a whole number of days from 0 to 3650, not {:?}",
                        v.trim()
                    ));
                }
            };
            Ok(())
        },
    },
    Setting {
        key: "token_management",
        env: "KEYGATE_TOKEN_MANAGEMENT",
        file_env: None,
        default: "owners",
        help: "who creates, edits, rotates, revokes and releases tokens: owners (each account its own) or admin_only (tokens:admin)",
        apply: |c, v| {
            c.admin_only_token_management = match v.trim().to_ascii_lowercase().as_str() {
                "owners" => false,
                "admin_only" | "admin-only" => true,
                _ => {
                    return Err(format!("must be owners or admin_only, not {:?}", v.trim()));
                }
            };
            Ok(())
        },
    },
    Setting {
        key: "expiry_webhook_url",
        env: "KEYGATE_EXPIRY_WEBHOOK_URL",
        file_env: None,
        default: "none",
        help: "where token.expiring events are POSTed, signed with expiry_webhook_secret (http:// only: put a TLS-terminating proxy in front for https)",
        apply: |c, v| {
            let v = v.trim();
            crate::tokens::ExpiryWebhook::check_url(v).map_err(|e| format!("{e}: {v:?}"))?;
            c.expiry_webhook_url = Some(v.to_owned());
            Ok(())
        },
    },
    Setting {
        key: "expiry_webhook_secret",
        env: "KEYGATE_EXPIRY_WEBHOOK_SECRET",
        file_env: Some("KEYGATE_EXPIRY_WEBHOOK_SECRET_FILE"),
        default: "none (required with expiry_webhook_url)",
        help: "the HMAC-SHA256 secret expiry webhook calls are signed with (X-Keygate-Signature; at least 16 bytes)",
        apply: |c, v| {
            let v = v.trim();
            if v.len() < 16 {
                return Err("must be at least 16 bytes".to_owned());
            }
            c.expiry_webhook_secret = Some(Zeroizing::new(v.to_owned()));
            Ok(())
        },
    },
    Setting {
        key: "demo",
        env: "KEYGATE_DEMO",
        file_env: None,
        default: "off",
        help: "mount the demo API under /api/v1/apps: on or off",
        apply: |c, v| {
            c.demo = switch(v)?;
            Ok(())
        },
    },
];

/// A whole number above zero.
fn positive(v: &str) -> Result<u32, String> {
    match v.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "must be a positive whole number, not {:?}",
            v.trim()
        )),
    }
}

/// `on`/`off`, `true`/`false`, `yes`/`no` or `1`/`0`, in any case.
fn switch(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("must be on or off, not {:?}", v.trim())),
    }
}

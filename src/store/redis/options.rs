//! [`RedisOptions`]: how to connect a [`RedisStore`].
//!
//! # TLS
//!
//! A `rediss://` URL connects over TLS (rustls). The server's certificate is checked against
//! the operating system's certificate store and the URL's host name, or, after
//! [`RedisOptions::with_ca_certificate`], against that CA alone (a private CA, such as one a
//! managed Redis hands out). The redis crate takes rustls' process-wide crypto provider:
//! when the program has installed none, making a `rediss://` store installs ring's; a
//! program with a provider of its own installs it before.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keygate::store::redis::RedisOptions;
//!
//! let ca = std::fs::read("/etc/keygate/redis-ca.pem")?;
//! let store = RedisOptions::new("rediss://redis.internal:6380")
//!     .with_ca_certificate(ca)
//!     .connect()
//!     .await?;
//! # let _ = store;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{Client, ConnectionAddr, IntoConnectionInfo, TlsCertificates};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{Inner, RedisStore, redis_err};
use crate::error::StoreError;

/// How to connect a [`RedisStore`]. Its `Debug` shows the URL with its password replaced
/// ([`redact_url`](crate::store::redact_url)).
#[derive(Clone)]
#[must_use]
pub struct RedisOptions {
    url: String,
    prefix: String,
    connection_timeout: Duration,
    response_timeout: Duration,
    retention: Duration,
    ca_certificate: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &crate::store::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("retention", &self.retention)
            .field(
                "ca_certificate",
                &self.ca_certificate.as_ref().map(|_| "PEM"),
            )
            .finish()
    }
}

impl RedisOptions {
    /// Options for the Redis at `url` (`redis://host:port/db`), prefix `keygate:`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "keygate:".into(),
            connection_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            retention: Duration::from_secs(7 * 24 * 3600),
            ca_certificate: None,
        }
    }

    /// Trusts the CA certificate(s) in `pem` (PEM text, one or more `CERTIFICATE` blocks)
    /// for a `rediss://` URL, instead of the operating system's certificate store. The
    /// server's certificate must still name the URL's host. The PEM is checked when the
    /// store is made ([`connect_lazy`](Self::connect_lazy)).
    pub fn with_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// Starts every key (and the revocation channel) with `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long connecting may take (default 2 s).
    pub fn with_connection_timeout(mut self, d: Duration) -> Self {
        self.connection_timeout = d;
        self
    }

    /// How long one command may take (default 2 s); then [`StoreError::Timeout`].
    pub fn with_response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// How long an expired record stays in Redis when nobody purges it (default 7 days):
    /// its TTL is its expiry plus this.
    pub fn with_expired_retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// A store that connects on first use (and reconnects by itself): no I/O here.
    ///
    /// # Errors
    ///
    /// An invalid URL, or a CA certificate ([`with_ca_certificate`](Self::with_ca_certificate))
    /// that holds no PEM certificate or comes with a URL that is not `rediss://`.
    pub fn connect_lazy(self) -> Result<RedisStore, StoreError> {
        let client = self.client()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(RedisStore {
            inner: Arc::new(Inner {
                channel: format!("{}revocations", self.prefix),
                prefix: self.prefix,
                client,
                config,
                retention_ms: i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX / 2),
                conn: tokio::sync::OnceCell::new(),
            }),
        })
    }

    fn client(&self) -> Result<Client, StoreError> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(redis_err)?;
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        if tls {
            install_crypto_provider();
        }
        let Some(pem) = &self.ca_certificate else {
            return Client::open(info).map_err(redis_err);
        };
        if !tls {
            return Err(invalid(
                "a CA certificate for Redis needs a rediss:// URL (TLS)",
            ));
        }
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&format!("the Redis CA certificate is not valid PEM: {e}")))?;
        if certificates.is_empty() {
            return Err(invalid(
                "the Redis CA certificate holds no PEM CERTIFICATE block",
            ));
        }
        Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        )
        .map_err(redis_err)
    }

    /// Connects now.
    ///
    /// # Errors
    ///
    /// An invalid URL or an unreachable server.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let store = self.connect_lazy()?;
        store.conn().await?;
        Ok(store)
    }
}

fn invalid(message: &str) -> StoreError {
    StoreError::backend(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        message.to_owned(),
    ))
}

/// Makes ring rustls' process-wide default provider unless the program chose one: the
/// redis crate builds its TLS configuration from that default, and rustls refuses to pick
/// one by itself when both ring and aws-lc-rs are compiled in. A provider the program
/// installed first is kept; one it installs later is refused by rustls (`install_default`
/// answers `Err`), so a program with a provider of its own installs it before it makes a
/// `rediss://` store.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

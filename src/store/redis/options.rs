//! [`RedisOptions`]: how to connect a [`RedisStore`].

use std::sync::Arc;
use std::time::Duration;

use redis::Client;
use redis::aio::ConnectionManagerConfig;

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
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &crate::store::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("retention", &self.retention)
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
        }
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
    /// An invalid URL.
    pub fn connect_lazy(self) -> Result<RedisStore, StoreError> {
        let client = Client::open(self.url.as_str()).map_err(redis_err)?;
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

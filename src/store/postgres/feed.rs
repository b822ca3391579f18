//! [`PostgresFeed`]: the revocation feed of the PostgreSQL store, on `LISTEN`/`NOTIFY`.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgListener;

use super::{REVOCATION_CHANNEL, pg_err};
use crate::error::StoreError;
use crate::store::cached::{Notice, RevocationFeed};

const HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(15);

/// The [`RevocationFeed`] of a [`PostgresStore`](super::PostgresStore): `LISTEN` on
/// [`REVOCATION_CHANNEL`] on a connection of its own from the store's
/// [`pool`](super::PostgresStore::pool). A heartbeat (`NOTIFY` on a channel of this feed's
/// own every 5 s) detects a silently dead connection within 15 s.
///
/// [`CachedStore::listen_postgres`](crate::store::cached::CachedStore::listen_postgres)
/// attaches one.
pub struct PostgresFeed {
    pool: sqlx::PgPool,
    /// Heartbeats go to a channel of this feed's own, so instances do not wake each other up.
    heartbeat: String,
    listener: Option<PgListener>,
    beat: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PostgresFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresFeed")
            .field("subscribed", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl PostgresFeed {
    /// A feed on connections from `pool`.
    #[must_use]
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self {
            pool,
            heartbeat: format!("keygate_hb_{}", uuid::Uuid::new_v4().simple()),
            listener: None,
            beat: None,
        }
    }

    fn close(&mut self) {
        self.listener = None;
        if let Some(beat) = self.beat.take() {
            beat.abort();
        }
    }
}

impl Drop for PostgresFeed {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait]
impl RevocationFeed for PostgresFeed {
    async fn subscribe(&mut self) -> Result<(), StoreError> {
        self.close();
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(pg_err)?;
        listener.eager_reconnect(false);
        listener.listen(REVOCATION_CHANNEL).await.map_err(pg_err)?;
        listener.listen(&self.heartbeat).await.map_err(pg_err)?;
        self.listener = Some(listener);
        self.beat = Some(tokio::spawn(beat(
            self.pool.clone(),
            self.heartbeat.clone(),
        )));
        Ok(())
    }

    async fn next(&mut self) -> Option<Notice> {
        let listener = self.listener.as_mut()?;
        // Ends on a lost connection, an error, or silence past the deadline (the heartbeat
        // arrives every 5 s on a live connection).
        while let Ok(Ok(Some(n))) =
            tokio::time::timeout(HEARTBEAT_DEADLINE, listener.try_recv()).await
        {
            if n.channel() == REVOCATION_CHANNEL {
                return Some(Notice::from_hex(n.payload()));
            }
        }
        self.close();
        None
    }
}

async fn beat(pool: sqlx::PgPool, channel: String) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let _ = tokio::time::timeout(
            HEARTBEAT,
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(&channel)
                .execute(&pool),
        )
        .await;
    }
}

//! [`RedisFeed`]: the revocation feed of the Redis store, on pub/sub.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};

use super::redis_err;
use crate::error::StoreError;
use crate::store::cached::{Notice, RevocationFeed};

const HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(15);

/// The [`RevocationFeed`] of a [`RedisStore`](super::RedisStore): a subscription to its
/// [`revocation_channel`](super::RedisStore::revocation_channel) on a connection of its own.
/// A `PING` every 5 s on that connection detects a silently dead one within 15 s.
///
/// [`CachedStore::listen_redis`](crate::store::cached::CachedStore::listen_redis) attaches
/// one.
pub struct RedisFeed {
    client: redis::Client,
    channel: String,
    subscription: Option<(PubSubSink, PubSubStream, tokio::time::Interval)>,
}

impl std::fmt::Debug for RedisFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFeed")
            .field("channel", &self.channel)
            .field("subscribed", &self.subscription.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisFeed {
    /// A feed on the pub/sub `channel`, with connections from `client`.
    #[must_use]
    pub fn new(client: redis::Client, channel: impl Into<String>) -> Self {
        Self {
            client,
            channel: channel.into(),
            subscription: None,
        }
    }
}

#[async_trait]
impl RevocationFeed for RedisFeed {
    async fn subscribe(&mut self) -> Result<(), StoreError> {
        self.subscription = None;
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok(pubsub)
        };
        let pubsub = tokio::time::timeout(HEARTBEAT_DEADLINE, connect)
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "timed out subscribing",
                )))
            })
            .map_err(redis_err)?;
        let (sink, stream) = pubsub.split();
        self.subscription = Some((sink, stream, tokio::time::interval(HEARTBEAT)));
        Ok(())
    }

    async fn next(&mut self) -> Option<Notice> {
        let (sink, stream, tick) = self.subscription.as_mut()?;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        return Some(
                            msg.get_payload::<String>()
                                .map_or(Notice::Flush, |payload| Notice::from_hex(&payload)),
                        );
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    let ping =
                        tokio::time::timeout(HEARTBEAT_DEADLINE, sink.ping::<redis::Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        self.subscription = None;
        None
    }
}

//! [`TokenStore::record_usage`](crate::store::TokenStore::record_usage) for PostgreSQL:
//! one statement per batch.

use std::collections::HashMap;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{PostgresStore, pg_err};
use crate::store::{StoreError, TokenUse};

impl PostgresStore {
    /// One row per id (its latest use, with that use's details), so the `UPDATE … FROM`
    /// matches each row once; a row changes only when the use is later than its
    /// `last_used_at`.
    pub(super) async fn update_usage(&self, uses: &[TokenUse]) -> Result<(), StoreError> {
        let mut latest: HashMap<Uuid, &TokenUse> = HashMap::with_capacity(uses.len());
        for u in uses {
            latest
                .entry(u.id.0)
                .and_modify(|cur| {
                    if u.at > cur.at {
                        *cur = u;
                    }
                })
                .or_insert(u);
        }
        let n = latest.len();
        let (mut ids, mut times, mut ips, mut agents) = (
            Vec::<Uuid>::with_capacity(n),
            Vec::<OffsetDateTime>::with_capacity(n),
            Vec::<Option<String>>::with_capacity(n),
            Vec::<Option<String>>::with_capacity(n),
        );
        for (id, u) in latest {
            ids.push(id);
            times.push(u.at);
            ips.push(u.client_ip.map(|ip| ip.to_string()));
            agents.push(u.user_agent.clone());
        }
        sqlx::query(
            "UPDATE keygate_tokens t \
             SET last_used_at = u.at, last_used_ip = u.ip, last_used_agent = u.agent \
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) \
                  AS u(id, at, ip, agent) \
             WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)",
        )
        .bind(ids)
        .bind(times)
        .bind(ips)
        .bind(agents)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}

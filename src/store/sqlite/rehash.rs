//! Re-hashing a record to the current pepper's digest: a compare-and-set on `hash`.

use super::{SqliteStore, StoreError};
use crate::store::TokenId;
use crate::token::TokenHash;

impl SqliteStore {
    /// [`TokenStore::rehash`](crate::TokenStore::rehash): one `UPDATE … WHERE hash = from`,
    /// under the write queue. The unique index on `hash` refuses a `to` held by another
    /// record ([`StoreError::Duplicate`]).
    pub(super) async fn try_rehash(
        &self,
        id: &TokenId,
        from: &TokenHash,
        to: &TokenHash,
    ) -> Result<bool, StoreError> {
        let id = &id.to_string();
        let pool = &self.pool;
        self.write(|| async move {
            let done = sqlx::query("UPDATE tokens SET hash = ? WHERE id = ? AND hash = ?")
                .bind(&to.as_bytes()[..])
                .bind(id)
                .bind(&from.as_bytes()[..])
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }
}

//! Accounts in the `accounts` table of the same SQLite file.

use async_trait::async_trait;

use super::codec::{from_micros, get, micros, permissions_from_json, permissions_json};
use super::{SqliteStore, sql_error};
use crate::accounts::{Account, AccountStore};
use crate::store::StoreError;

/// Accounts live in the `accounts` table of the same file; emails are kept lower-cased.
#[async_trait]
impl AccountStore for SqliteStore {
    async fn put_account(&self, account: Account) -> Result<(), StoreError> {
        let email = &account.email.to_lowercase();
        let password_hash = &account.password_hash;
        let permissions = &permissions_json(&account.permissions)?;
        let created_at = micros(account.created_at)?;
        let pool = &self.pool;
        self.write(|| async move {
            sqlx::query(
                "INSERT INTO accounts (email, password_hash, permissions, created_at) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (email) DO UPDATE SET password_hash = ?2, permissions = ?3, \
                 created_at = ?4",
            )
            .bind(email)
            .bind(password_hash)
            .bind(permissions)
            .bind(created_at)
            .execute(pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn find_account(&self, email: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(
            "SELECT email, password_hash, permissions, created_at FROM accounts \
             WHERE email = ?",
        )
        .bind(email.to_lowercase())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.map(|row| {
            Ok(Account {
                email: get(&row, "email")?,
                password_hash: get(&row, "password_hash")?,
                permissions: permissions_from_json(&get::<String>(&row, "permissions")?)?,
                created_at: from_micros(get(&row, "created_at")?, "created_at")?,
            })
        })
        .transpose()
    }
}

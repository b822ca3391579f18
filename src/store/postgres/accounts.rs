//! Accounts in the `keygate_accounts` table of the same database.

use async_trait::async_trait;
use sqlx::Row as _;

use super::{PostgresStore, pg_err};
use crate::error::StoreError;
use crate::identity::Permissions;

#[async_trait]
impl crate::accounts::AccountStore for PostgresStore {
    async fn put_account(&self, account: crate::accounts::Account) -> Result<(), StoreError> {
        self.ready().await?;
        let permissions: Vec<&str> = account.permissions.iter().map(|p| p.as_str()).collect();
        sqlx::query(
            "INSERT INTO keygate_accounts (email, password_hash, permissions, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO UPDATE SET \
             password_hash = EXCLUDED.password_hash, permissions = EXCLUDED.permissions, \
             created_at = EXCLUDED.created_at",
        )
        .bind(account.email.to_lowercase())
        .bind(&account.password_hash)
        .bind(permissions)
        .bind(account.created_at)
        .execute(&self.pool)
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn find_account(
        &self,
        email: &str,
    ) -> Result<Option<crate::accounts::Account>, StoreError> {
        self.ready().await?;
        let row = sqlx::query(
            "SELECT email, password_hash, permissions, created_at FROM keygate_accounts \
             WHERE email = $1",
        )
        .bind(email.to_lowercase())
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_err)?;
        let Some(row) = row else { return Ok(None) };
        let permissions: Vec<String> = row.try_get("permissions").map_err(pg_err)?;
        Ok(Some(crate::accounts::Account {
            email: row.try_get("email").map_err(pg_err)?,
            password_hash: row.try_get("password_hash").map_err(pg_err)?,
            permissions: Permissions::parse(permissions).map_err(StoreError::backend)?,
            created_at: row.try_get("created_at").map_err(pg_err)?,
        }))
    }
}

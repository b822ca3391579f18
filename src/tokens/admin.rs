//! The admin view across owners: [`Tokens::list_all`] and [`Tokens::revoke_any`].

use crate::store::{TokenId, TokenQuery, TokenRecord};

use super::{TokenError, Tokens};

impl Tokens {
    /// A page of every owner's tokens that `query` selects, in `(created_at, id)` order
    /// (see [`TokenStore::list_tokens`](crate::store::TokenStore::list_tokens)): revoked
    /// tokens stay listed, with status `revoked`, until purged. Build the query at
    /// [`now`](Self::now). For administrators only: the caller checks the permission
    /// ([`TOKENS_ADMIN`](crate::permissions::TOKENS_ADMIN) in the management API).
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`] (a store without the admin view answers
    /// [`StoreError::Unsupported`](crate::StoreError::Unsupported)).
    pub async fn list_all(&self, query: &TokenQuery) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.inner.store.list_tokens(query).await?)
    }

    /// Revokes token `id` whoever owns it, with its successors, as
    /// [`revoke_with_successors`](Self::revoke_with_successors) does for its owner. Returns
    /// the revoked record as it was before (its owner, name and `created_by`, for the
    /// audit). For administrators only: the caller checks the permission.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when there is no such token, or it and every successor are
    /// already revoked; [`TokenError::Store`].
    pub async fn revoke_any(&self, id: TokenId) -> Result<TokenRecord, TokenError> {
        let record = self
            .inner
            .store
            .get(&id)
            .await?
            .ok_or(TokenError::NotFound)?;
        self.revoke_with_successors(&record.owner, id).await?;
        Ok(record)
    }
}

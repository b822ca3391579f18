//! Reading, rotating and revoking an owner's tokens.

use std::time::Duration;

use crate::audit::Decision;
use crate::store::{TokenId, TokenRecord, TokenStore};

use super::{IssuedToken, MAX_EXPIRES_IN, MAX_SUCCESSORS, TokenError, Tokens, maintenance_event};

/// The expiry a rotation gives the new token.
#[derive(Clone, Copy)]
pub(super) enum Expiry {
    /// The old token's lifetime, from now, at most the longest a new token of its kind may
    /// have.
    SameLifetime,
    /// The old token's expiry.
    Same,
}

impl Tokens {
    /// The owner's tokens in every state (active, expired, replaced, revoked until purged),
    /// oldest first. Use [`TokenRecord::is_valid_at`] with [`Tokens::now`] to tell them
    /// apart.
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`].
    pub async fn list(&self, owner: &str) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.inner.store.list_by_owner(owner).await?)
    }

    /// The owner's token `id`, in any state.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when there is none or it belongs to someone else.
    pub async fn get(&self, owner: &str, id: TokenId) -> Result<TokenRecord, TokenError> {
        match self.inner.store.get(&id).await? {
            Some(r) if r.owner == owner => Ok(r),
            _ => Err(TokenError::NotFound),
        }
    }

    /// Revokes the owner's token `id` and, when it was replaced by a rotation, its
    /// successors (see [`revoke_with_successors`](Self::revoke_with_successors)). Takes
    /// effect on the next request.
    ///
    /// # Errors
    ///
    /// As [`revoke_with_successors`](Self::revoke_with_successors).
    pub async fn revoke(&self, owner: &str, id: TokenId) -> Result<(), TokenError> {
        self.revoke_with_successors(owner, id).await.map(drop)
    }

    /// Revokes the owner's token `id` and every token that replaced it, rotation after
    /// rotation (the whole chain forward): whoever held the old token may hold the new one,
    /// so revoking a leaked token also stops someone who rotated it first. Returns the
    /// successors revoked (without `id`); each gets an audit event (`token.revoke`, reason
    /// `successor`) when the manager has an [`audit`](super::TokensBuilder::audit) log. Takes
    /// effect on the next request.
    ///
    /// Each token is revoked before its successor is looked up, so a rotation racing the
    /// revocation either is seen and its new token revoked, or fails (the token it rotates
    /// is no longer live). An `id` that is already revoked still has its chain revoked (a
    /// retry after a store failure finishes the work). To end a rotation's grace early
    /// without touching the new token, use
    /// [`revoke_keeping_successors`](Self::revoke_keeping_successors).
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when there is no such token of this owner, or it and every
    /// successor are already revoked (the same answer as for someone else's token);
    /// [`TokenError::Store`], possibly after part of the chain was revoked.
    pub async fn revoke_with_successors(
        &self,
        owner: &str,
        id: TokenId,
    ) -> Result<Vec<TokenId>, TokenError> {
        let rec = self.get(owner, id).await?;
        let now = self.now();
        let mut any = false;
        // Asked even when `rec` is already revoked: a revocation made elsewhere may not
        // have reached a verification cache in front of the store yet, and the store's
        // revoke is what clears it (it changes nothing else on a revoked token). Without
        // it, a caller whose revoke answered Ok could still be let in by the cache.
        if self.inner.store.revoke(&id, now).await? && rec.extras().revoked_at.is_none() {
            tracing::debug!(token_id = %id, "token revoked");
            any = true;
        }
        let mut revoked = Vec::new();
        let mut current = id;
        // A chain is as long as the rotations since its oldest record was purged; the bound
        // only guards against a store that returns a cycle.
        for _ in 0..MAX_SUCCESSORS {
            // Read after `current` was revoked: see above.
            let Some(record) = self.inner.store.get(&current).await? else {
                break;
            };
            let Some(next) = record.extras().replaced_by else {
                break;
            };
            if self.inner.store.revoke(&next, now).await? {
                let successor = self.inner.store.get(&next).await.ok().flatten();
                tracing::info!(token_id = %next, predecessor = %current, "successor of a revoked token revoked");
                if let Some(audit) = &self.inner.audit {
                    audit.record(maintenance_event(
                        now,
                        "token.revoke",
                        next,
                        successor.as_ref(),
                        Decision::Allow,
                        "successor",
                    ));
                }
                revoked.push(next);
            }
            current = next;
        }
        if any || !revoked.is_empty() {
            Ok(revoked)
        } else {
            Err(TokenError::NotFound)
        }
    }

    /// Revokes the owner's token `id` only, leaving the tokens that replaced it alone: ends
    /// a rotation's grace early, once every client uses the new token. Do not use it for a
    /// leaked token (whoever rotated it holds the successor): use
    /// [`revoke`](Self::revoke).
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when there is no such token of this owner or it is already
    /// revoked (the same answer as for someone else's token).
    pub async fn revoke_keeping_successors(
        &self,
        owner: &str,
        id: TokenId,
    ) -> Result<(), TokenError> {
        let rec = self.get(owner, id).await?;
        if rec.extras().revoked_at.is_some() {
            return Err(TokenError::NotFound);
        }
        if self.inner.store.revoke(&id, self.now()).await? {
            tracing::debug!(token_id = %id, "token revoked, successors kept");
            Ok(())
        } else {
            Err(TokenError::NotFound)
        }
    }

    /// Replaces the owner's live token `id` by a new one with the same name, kind, role,
    /// permissions and description. The old token keeps working for `grace` and then dies;
    /// without grace it dies at once. A new expiry, if the old token had one, keeps the
    /// original lifetime, counted from the rotation and at most the longest lifetime of its
    /// kind (and 100 years), as for [`issue`](Self::issue) (for an owner renewing a token; see
    /// [`rotate_keeping_expiry`](Self::rotate_keeping_expiry) for a rotation that never
    /// extends it). The allow-list, the rate and the binding carry over (a seat stays
    /// on its machine: rotating is not a way around the once-a-day release), as does the
    /// time of the last release.
    ///
    /// Rotation never multiplies tokens: `grace` is at most
    /// [`max_rotation_grace`](super::TokensBuilder::max_rotation_grace) (default 24 h); a lineage
    /// keeps at most one old token in grace (rotating the successor of a token in grace
    /// ends that grace at once); and a token in grace counts against the owner's limit (and
    /// its kind's), so a rotation with grace needs a free place under it. A rotation
    /// without grace never changes the count and is always allowed.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when the token is unknown, someone else's, or no longer live;
    /// [`TokenError::GraceTooLong`]; [`TokenError::LimitReached`] for a grace at the limit.
    pub async fn rotate(
        &self,
        owner: &str,
        id: TokenId,
        grace: Option<Duration>,
    ) -> Result<IssuedToken, TokenError> {
        self.rotate_with(owner, id, grace, Expiry::SameLifetime)
            .await
    }

    /// [`rotate`](Self::rotate), except that the new token expires when the old one would
    /// have (if it had an expiry), instead of a full lifetime after the rotation: a
    /// rotation never extends the life of the lineage. The management API rotates this way
    /// for bearer tokens, so that a token cannot keep itself (or a sibling) alive for ever by
    /// rotating it.
    ///
    /// # Errors
    ///
    /// As [`rotate`](Self::rotate).
    pub async fn rotate_keeping_expiry(
        &self,
        owner: &str,
        id: TokenId,
        grace: Option<Duration>,
    ) -> Result<IssuedToken, TokenError> {
        self.rotate_with(owner, id, grace, Expiry::Same).await
    }

    pub(super) async fn rotate_with(
        &self,
        owner: &str,
        id: TokenId,
        grace: Option<Duration>,
        expiry: Expiry,
    ) -> Result<IssuedToken, TokenError> {
        let old = self.get(owner, id).await?;
        let now = self.now();
        if !old.is_live_at(now) {
            return Err(TokenError::NotFound);
        }
        let kind = self
            .kind(&old.kind)
            .ok_or_else(|| TokenError::UnknownKind(old.kind.to_string()))?
            .clone();
        let grace = grace.unwrap_or_default();
        if grace > self.inner.max_grace {
            return Err(TokenError::GraceTooLong {
                max_seconds: self.inner.max_grace.as_secs(),
            });
        }
        let rules = self.limit_rules(&kind, now);
        let token = kind.generate();
        let expires_at = match expiry {
            // The lifetime is capped as an issue's: an imported token's `created_at` may be
            // years back, and an expiry extended by an update makes the lifetime longer than
            // the kind allows (and unbounded: each round would lengthen the next).
            Expiry::SameLifetime => old.expires_at.map(|e| {
                let cap = kind
                    .max_lifetime()
                    .map_or(MAX_EXPIRES_IN, |max| max.min(MAX_EXPIRES_IN));
                let cap = time::Duration::try_from(cap).unwrap_or(time::Duration::MAX);
                now + (e - old.created_at).min(cap)
            }),
            Expiry::Same => old.expires_at,
        };
        let mut record = old;
        record.id = TokenId::random();
        record.hash = self.inner.hasher.stored(token.expose_secret());
        record.hint = token.hint().into();
        record.created_at = now;
        record.expires_at = expires_at;
        record.last_used_at = None;
        let extras = record.extras_mut();
        extras.last_used_ip = None;
        extras.last_used_agent = None;
        extras.expiry_warned_at = None;
        extras.revoked_at = None;
        extras.replaced_by = None;
        let outcome = self
            .inner
            .store
            .rotate(&id, record.clone(), now + grace, rules)
            .await?;
        for ended in &outcome.ended {
            tracing::debug!(token_id = %ended, "grace of an earlier rotation ended");
        }
        tracing::debug!(old = %id, new = %record.id, "token rotated");
        Ok(IssuedToken { token, record })
    }
}

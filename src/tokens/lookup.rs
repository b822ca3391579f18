//! What a leak report does: [`Tokens::revoke_leaked`] (the token is found with
//! [`Tokens::find_by_token`], which digests it as verification does).

use time::OffsetDateTime;

use super::{TokenError, Tokens, maintenance_event};
use crate::audit::Decision;
use crate::store::{TokenId, TokenRecord};

/// What [`Tokens::revoke_leaked`] found and did. Non-exhaustive.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LeakOutcome {
    /// The token's record as it was before the report, whatever its state; `None` when no
    /// token has this value (or the value is not a well-formed token).
    pub record: Option<TokenRecord>,
    /// Whether the report revoked anything: the token (it still authenticated) and the
    /// tokens that replaced it by rotation.
    pub revoked: bool,
    /// The successors revoked with it.
    pub successors: Vec<TokenId>,
}

impl Tokens {
    /// Handles a report that `token` leaked (e.g. from a secret-scanning partner): when it
    /// still authenticates (live, or replaced and in its rotation grace), revokes it at once
    /// with the tokens that replaced it by rotation (whoever found it may have rotated it
    /// first, as [`revoke_with_successors`](Self::revoke_with_successors) explains). An
    /// expired, revoked or replaced token whose grace is over is left as it is: it no
    /// longer grants anything, and its successors were made by someone who held it before
    /// it ended.
    ///
    /// Each revoked successor gets a `token.revoke` audit event (reason `successor`) when
    /// the manager has an [`audit`](super::TokensBuilder::audit) log; the report itself is
    /// recorded by the caller with [`leak_event`](Self::leak_event) (the management route
    /// `POST /leaks` writes it before answering).
    ///
    /// # Errors
    ///
    /// [`TokenError::Store`], possibly after part of a chain was revoked (a retry finishes
    /// it).
    pub async fn revoke_leaked(&self, token: &str) -> Result<LeakOutcome, TokenError> {
        let Some(record) = self.find_by_token(token).await? else {
            return Ok(LeakOutcome {
                record: None,
                revoked: false,
                successors: Vec::new(),
            });
        };
        let now = self.now();
        if !record.is_valid_at(now) {
            return Ok(LeakOutcome {
                record: Some(record),
                revoked: false,
                successors: Vec::new(),
            });
        }
        let (revoked, successors) =
            match self.revoke_with_successors(&record.owner, record.id).await {
                Ok(successors) => (true, successors),
                // Revoked by someone else in between: nothing left to do.
                Err(TokenError::NotFound) => (false, Vec::new()),
                Err(e) => return Err(e),
            };
        tracing::warn!(token_id = %record.id, owner = %record.owner, revoked, "leaked token reported");
        Ok(LeakOutcome {
            record: Some(record),
            revoked,
            successors,
        })
    }

    /// The `token.leaked` audit event of a report that `token` (whose record is `record`)
    /// leaked (see [`revoke_leaked`](Self::revoke_leaked)), with the reported `url` and
    /// `source` in its `details`. The token never appears in the event: where `url` or
    /// `source` hold it (a URL with the token in its query string), it is replaced by
    /// `[token]`.
    #[must_use]
    pub fn leak_event(
        &self,
        token: &str,
        record: &TokenRecord,
        revoked: bool,
        url: &str,
        source: &str,
    ) -> crate::audit::AuditEvent {
        let scrub = |text: &str| {
            if token.is_empty() {
                text.to_owned()
            } else {
                text.replace(token, "[token]")
            }
        };
        leak_event(self.now(), record, revoked, &scrub(url), &scrub(source))
    }
}

pub(crate) fn leak_event(
    now: OffsetDateTime,
    record: &TokenRecord,
    revoked: bool,
    url: &str,
    source: &str,
) -> crate::audit::AuditEvent {
    let (decision, reason) = if revoked {
        (Decision::Allow, "leaked")
    } else {
        (Decision::Deny, "not_live")
    };
    let mut e = maintenance_event(
        now,
        "token.leaked",
        record.id,
        Some(record),
        decision,
        reason,
    );
    e.details = Some(
        [("url", url), ("source", source)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    );
    e
}

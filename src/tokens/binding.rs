//! The policies kept on a token record that a request must meet (allow-list, binding to a
//! client fingerprint), and releasing a binding by hand.

use std::net::IpAddr;

use http::HeaderMap;

use crate::audit::Decision;
use crate::denial::Denial;
use crate::identity::Identity;
use crate::store::{ReleaseOutcome, TokenId, TokenStore};
use crate::token::TokenKind;

use super::usage::Client;
use super::{MAX_FINGERPRINT_LEN, RELEASE_INTERVAL, TokenError, Tokens, maintenance_event};

/// Who makes the request, for the record of its use: the client address and the
/// `User-Agent` header (never another header).
pub(crate) fn client<'h>(
    client_ip: &(impl Fn() -> Option<IpAddr> + ?Sized),
    headers: &'h HeaderMap,
) -> Client<'h> {
    Client {
        ip: client_ip(),
        agent: headers.get(http::header::USER_AGENT),
    }
}

/// A client fingerprint: 1–128 visible ASCII characters.
pub(super) fn valid_fingerprint(f: &str) -> bool {
    !f.is_empty() && f.len() <= MAX_FINGERPRINT_LEN && f.bytes().all(|b| b.is_ascii_graphic())
}

impl Tokens {
    /// The policies kept on the record that can be judged without the store: the
    /// allow-list (the client address is asked for only when the list is not empty) and
    /// the presence of a binding kind's fingerprint. `Ok(None)`: admitted (and the use
    /// recorded, with the client address and `User-Agent`, both read only when the use is
    /// not coalesced); `Ok(Some(fingerprint))`: the binding must be settled with
    /// [`settle_binding`](Self::settle_binding).
    /// `now` is [`now_nanos`](Self::now_nanos), read once for the request.
    pub(crate) fn record_policies_now<'h>(
        &self,
        identity: &Identity,
        client_ip: impl Fn() -> Option<IpAddr>,
        headers: &'h HeaderMap,
        now: i128,
    ) -> Result<Option<&'h str>, Denial> {
        let record = identity.record();
        if !record.extras().allowed_ips.is_empty() {
            // Fail closed: an unknown address is outside every list.
            let allowed = client_ip()
                .map(crate::client_ip::canonical)
                .is_some_and(|ip| record.extras().allowed_ips.iter().any(|n| n.contains(&ip)));
            if !allowed {
                return Err(Denial::IpNotAllowed);
            }
        }
        let binding = if self.inner.bindings {
            self.kind(&record.kind).and_then(TokenKind::binding_header)
        } else {
            None
        };
        let Some(header) = binding else {
            self.touch_usage(
                record,
                now,
                || self.now().unix_timestamp_nanos(),
                || client(&client_ip, headers),
            );
            return Ok(None);
        };
        let fingerprint = headers
            .get(header)
            .and_then(|v| v.to_str().ok())
            .filter(|f| valid_fingerprint(f))
            .ok_or(Denial::BindingRequired)?;
        if record.extras().bound_to.as_deref() == Some(fingerprint) {
            self.touch_usage(
                record,
                now,
                || self.now().unix_timestamp_nanos(),
                || client(&client_ip, headers),
            );
            return Ok(None);
        }
        Ok(Some(fingerprint))
    }

    /// Binds the token to `fingerprint` if it is free (atomically in the store) and admits
    /// the request if it is bound to it. The store is asked whenever the record at hand
    /// does not show this fingerprint, so a stale cached copy never decides.
    pub(crate) async fn settle_binding(
        &self,
        identity: &Identity,
        fingerprint: &str,
        client: Client<'_>,
    ) -> Result<(), Denial> {
        let record = identity.record();
        let now = self.now();
        match self.inner.store.bind(&record.id, fingerprint, now).await {
            Ok(Some(bound)) if bound == fingerprint => {
                if record.extras().bound_to.is_none() {
                    tracing::debug!(token_id = %record.id, "token bound on first use");
                }
                let now = now.unix_timestamp_nanos();
                self.touch_usage(record, now, || now, || client);
                Ok(())
            }
            Ok(Some(_)) => Err(Denial::BoundElsewhere),
            // Purged meanwhile.
            Ok(None) => Err(Denial::Unknown),
            Err(error) => {
                tracing::warn!(%error, "token store failed to bind; refusing the request");
                Err(Denial::StoreUnavailable)
            }
        }
    }

    /// Every policy kept on the record (allow-list, binding), then the use is recorded.
    pub(crate) async fn check_record_policies(
        &self,
        identity: &Identity,
        client_ip: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<(), Denial> {
        let now = self.now_nanos();
        if let Some(fingerprint) = self.record_policies_now(identity, || client_ip, headers, now)? {
            let who = client(&|| client_ip, headers);
            self.settle_binding(identity, fingerprint, who).await?;
        }
        Ok(())
    }

    /// Releases the binding of the owner's token `id`, so the next machine that uses it
    /// takes the seat. At most once every 24 hours per token; automatic
    /// releases for inactivity do not count.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] for an unknown, someone else's or revoked token;
    /// [`TokenError::NotBindable`] for a kind without a binding;
    /// [`TokenError::ReleaseTooSoon`] within 24 hours of the last release.
    pub async fn release_binding(&self, owner: &str, id: TokenId) -> Result<(), TokenError> {
        let rec = self.get(owner, id).await?;
        let now = self.now();
        if !rec.is_valid_at(now) {
            return Err(TokenError::NotFound);
        }
        if self
            .kind(&rec.kind)
            .and_then(TokenKind::binding_header)
            .is_none()
        {
            return Err(TokenError::NotBindable);
        }
        match self.inner.store.release(&id, now, RELEASE_INTERVAL).await? {
            ReleaseOutcome::Released => {
                tracing::debug!(token_id = %id, "binding released");
                if let Some(audit) = &self.inner.audit {
                    audit.record(maintenance_event(
                        now,
                        "token.release",
                        id,
                        Some(&rec),
                        Decision::Allow,
                        "owner",
                    ));
                }
                Ok(())
            }
            // Nothing to release: the seat is already free.
            ReleaseOutcome::NotBound => Ok(()),
            ReleaseOutcome::TooSoon { next_allowed_at } => {
                Err(TokenError::ReleaseTooSoon { next_allowed_at })
            }
        }
    }
}

//! Editing a token in place: [`TokenChanges`] and [`Tokens::update`].

use std::time::Duration;

use ipnet::IpNet;
use time::OffsetDateTime;

use crate::identity::Permissions;
use crate::record::Metadata;
use crate::store::{TokenId, TokenRecord, TokenUpdate};

use super::issue::{check_text, normalise_nets};
use super::{MAX_EXPIRES_IN, TokenError, Tokens};

/// What to change on a token ([`Tokens::update`]); a field left unset is kept.
///
/// ```
/// use keygate::tokens::TokenChanges;
/// use keygate::Permissions;
///
/// let changes = TokenChanges::new()
///     .name("deploy-main")
///     .description(None)
///     .permissions(Permissions::parse(["builds:read"]).unwrap());
/// assert_eq!(changes.fields(), ["name", "description", "permissions"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenChanges {
    name: Option<String>,
    description: Option<Option<String>>,
    expiry: Option<Expiry>,
    allowed_ips: Option<Vec<IpNet>>,
    metadata: Option<Metadata>,
    permissions: Option<Permissions>,
}

/// A new expiry: absolute, relative to the edit, or none.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expiry {
    At(Option<OffsetDateTime>),
    In(Duration),
}

impl TokenChanges {
    /// No change.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A new name: 1–100 visible characters, unique among the owner's live tokens.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A new description (`None` clears it).
    #[must_use]
    pub fn description(mut self, description: Option<String>) -> Self {
        self.description = Some(description);
        self
    }

    /// A new absolute expiry (`None`: the token no longer expires, unless its kind requires
    /// an expiry). At most the kind's longest lifetime from now; a time at or before now
    /// ends the token at once (it stays listed, expired).
    #[must_use]
    pub fn expires_at(mut self, at: Option<OffsetDateTime>) -> Self {
        self.expiry = Some(Expiry::At(at));
        self
    }

    /// A new expiry this long after the edit.
    #[must_use]
    pub fn expires_in(mut self, d: Duration) -> Self {
        self.expiry = Some(Expiry::In(d));
        self
    }

    /// A new allow-list (empty: any address), normalised as at issue.
    #[must_use]
    pub fn allowed_ips(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.allowed_ips = Some(nets.into_iter().collect());
        self
    }

    /// New metadata, replacing the old as a whole.
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// New permissions: only narrower ones (a subset of the token's current permissions).
    #[must_use]
    pub fn permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = Some(permissions);
        self
    }

    /// The names of the fields set, in the API's spelling (`expires_at` for either expiry).
    #[must_use]
    pub fn fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, name) in [
            (self.name.is_some(), "name"),
            (self.description.is_some(), "description"),
            (self.expiry.is_some(), "expires_at"),
            (self.allowed_ips.is_some(), "allowed_ips"),
            (self.metadata.is_some(), "metadata"),
            (self.permissions.is_some(), "permissions"),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }

    /// The new permissions asked for, if any.
    #[must_use]
    pub fn new_permissions(&self) -> Option<&Permissions> {
        self.permissions.as_ref()
    }

    /// The new allow-list asked for, if any.
    #[must_use]
    pub fn new_allowed_ips(&self) -> Option<&[IpNet]> {
        self.allowed_ips.as_deref()
    }

    /// The new expiry asked for, if any, resolved at `now` (`Some(None)`: cleared).
    #[must_use]
    pub fn new_expiry(&self, now: OffsetDateTime) -> Option<Option<OffsetDateTime>> {
        match self.expiry? {
            Expiry::At(at) => Some(at),
            Expiry::In(d) => Some(now.checked_add(time::Duration::try_from(d).ok()?)),
        }
    }
}

impl Tokens {
    /// Edits the owner's live token `id` in place and returns it as it is afterwards.
    ///
    /// Rules: a new name or description follows the rules of [`issue`](Self::issue) (a
    /// taken name is [`TokenError::NameTaken`]; the old name is free at once); new
    /// permissions must be a subset of the token's current ones
    /// ([`TokenError::PermissionsWiden`]: an edit never widens a token); a new expiry must
    /// be within the kind's longest lifetime counted from now, and a kind that requires an
    /// expiry cannot lose it ([`TokenError::InvalidExpiry`]); an expiry at or before now
    /// ends the token at once (it stays listed as expired, and can no longer be edited); an
    /// allow-list is checked and normalised as at issue. The change applies from the next
    /// request (a [`CachedStore`](crate::store::cached::CachedStore) drops the old record).
    ///
    /// What a caller other than the owner's password may change (a bearer token may only
    /// narrow) is the management API's business; see [`crate::axum::management`].
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] when the token is unknown, someone else's or not live; the
    /// validation errors above; [`TokenError::Store`].
    pub async fn update(
        &self,
        owner: &str,
        id: TokenId,
        changes: TokenChanges,
    ) -> Result<TokenRecord, TokenError> {
        let current = self.get(owner, id).await?;
        let now = self.now();
        if !current.is_live_at(now) {
            return Err(TokenError::NotFound);
        }
        let update = self.check_changes(&current, &changes, now)?;
        if update.is_empty() {
            return Ok(current);
        }
        let record = self.inner.store.update(&id, &update, now).await?;
        tracing::debug!(token_id = %id, fields = ?update.changed_fields(), "token updated");
        Ok(record)
    }

    /// The store update `changes` make to `current` at `now`, after every check.
    fn check_changes(
        &self,
        current: &TokenRecord,
        changes: &TokenChanges,
        now: OffsetDateTime,
    ) -> Result<TokenUpdate, TokenError> {
        let mut update = TokenUpdate::new();
        if let Some(name) = &changes.name {
            check_text(name).map_err(TokenError::InvalidName)?;
            update = update.with_name(name.clone());
        }
        if let Some(d) = &changes.description {
            if let Some(d) = d {
                check_text(d).map_err(TokenError::InvalidDescription)?;
            }
            update = update.with_description(d.clone());
        }
        if let Some(p) = &changes.permissions {
            if !p.is_subset_of(&current.permissions) {
                return Err(TokenError::PermissionsWiden);
            }
            update = update.with_permissions(p.clone());
        }
        if changes.expiry.is_some() {
            let kind = self
                .kind(&current.kind)
                .ok_or_else(|| TokenError::UnknownKind(current.kind.to_string()))?;
            let at = changes
                .new_expiry(now)
                .ok_or(TokenError::InvalidExpiry("must be at most 100 years"))?;
            match at {
                None if kind.max_lifetime().is_some() => {
                    return Err(TokenError::InvalidExpiry(
                        "this kind of token requires an expiry",
                    ));
                }
                None => {}
                // An expiry at or before now ends the token now: it stays listed, expired.
                Some(at) if at <= now => {}
                Some(at) => {
                    let life = at - now;
                    if life > MAX_EXPIRES_IN {
                        return Err(TokenError::InvalidExpiry("must be at most 100 years"));
                    }
                    if kind.max_lifetime().is_some_and(|max| life > max) {
                        return Err(TokenError::InvalidExpiry(
                            "longer than this kind of token may live",
                        ));
                    }
                }
            }
            // Kept at microsecond precision, as every time the manager writes; not before now.
            let at = at.map(|t| {
                let t = t.max(now);
                t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000)
                    .unwrap_or(t)
            });
            update = update.with_expires_at(at);
        }
        if let Some(nets) = &changes.allowed_ips {
            update = update.with_allowed_ips(normalise_nets(nets)?);
        }
        if let Some(m) = &changes.metadata {
            update = update.with_metadata(m.clone());
        }
        Ok(update)
    }
}

//! [`TokenRecordBuilder`]: a [`TokenRecord`] field by field, for a store's decoder or a test.

use std::net::IpAddr;

use ipnet::IpNet;
use time::OffsetDateTime;

use super::{Metadata, SharedStr, ShortStr, TokenId, TokenRecord};
use crate::permissions::Permissions;
use crate::token::TokenHash;

impl TokenRecord {
    /// A builder of a record with the fields every record has; each optional field has a
    /// setter of its own name, and [`build`](TokenRecordBuilder::build) makes the record.
    /// A store's decoder sets every field it read without knowing which ones are kept apart
    /// (see [`extras`](Self::extras)): the optional ones take a value or an `Option`, so a
    /// column that may be empty is passed as it is.
    ///
    /// ```
    /// use keygate::{TokenHash, TokenId, TokenRecord};
    /// use time::macros::datetime;
    ///
    /// let t = datetime!(2026-01-01 00:00 UTC);
    /// let revoked_at = None; // e.g. a nullable column, read as it is
    /// let record = TokenRecord::builder(
    ///     TokenId::random(),
    ///     TokenHash::of("kg_example"),
    ///     "pat",
    ///     "alice",
    ///     "ci",
    ///     t,
    /// )
    /// .hint("kg_example")
    /// .description("deploys")
    /// .expires_at(datetime!(2027-01-01 00:00 UTC))
    /// .revoked_at(revoked_at)
    /// .rate_limit(60)
    /// .build();
    /// assert_eq!(record.extras().description.as_deref(), Some("deploys"));
    /// assert_eq!(record.extras().rate_limit, Some(60));
    /// assert_eq!(record.created_by, "alice", "created by its owner unless set");
    /// assert!(record.is_live_at(datetime!(2026-06-01 00:00 UTC)));
    /// ```
    pub fn builder(
        id: TokenId,
        hash: TokenHash,
        kind: impl Into<SharedStr>,
        owner: impl Into<SharedStr>,
        name: impl Into<ShortStr>,
        created_at: OffsetDateTime,
    ) -> TokenRecordBuilder {
        TokenRecordBuilder(Self::new(id, hash, kind, owner, name, created_at))
    }
}

/// A [`TokenRecord`] being built (see [`TokenRecord::builder`]): one setter per optional
/// field, named after it; a field not set is left unset (or empty).
#[derive(Debug, Clone)]
#[must_use]
pub struct TokenRecordBuilder(TokenRecord);

/// Setters of the fields kept in the record itself.
macro_rules! field {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<$ty>) -> Self {
            self.0.$name = value.into();
            self
        }
    };
}

/// Setters of the fields kept apart, in [`TokenExtras`](super::TokenExtras).
macro_rules! extra {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<$ty>) -> Self {
            self.0.extras_mut().$name = value.into();
            self
        }
    };
}

/// Setters of the optional text fields kept apart: `"text"`, a `String`, or an
/// `Option` of either.
macro_rules! extra_text {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub fn $name<S: Into<String>>(mut self, value: impl Into<Option<S>>) -> Self {
            self.0.extras_mut().$name = value.into().map(Into::into);
            self
        }
    };
}

impl TokenRecordBuilder {
    field!(
        /// Sets [`permissions`](TokenRecord::permissions) (by default none).
        permissions: Permissions
    );
    field!(
        /// Sets [`hint`](TokenRecord::hint) (by default empty).
        hint: ShortStr
    );
    field!(
        /// Sets [`created_by`](TokenRecord::created_by) (by default the owner).
        created_by: SharedStr
    );
    field!(
        /// Sets [`expires_at`](TokenRecord::expires_at).
        expires_at: Option<OffsetDateTime>
    );
    field!(
        /// Sets [`last_used_at`](TokenRecord::last_used_at).
        last_used_at: Option<OffsetDateTime>
    );
    extra_text!(
        /// Sets [`description`](super::TokenExtras::description).
        description
    );
    extra_text!(
        /// Sets [`role`](super::TokenExtras::role).
        role
    );
    extra!(
        /// Sets [`revoked_at`](super::TokenExtras::revoked_at).
        revoked_at: Option<OffsetDateTime>
    );
    extra!(
        /// Sets [`replaced_by`](super::TokenExtras::replaced_by).
        replaced_by: Option<TokenId>
    );
    extra!(
        /// Sets [`allowed_ips`](super::TokenExtras::allowed_ips) (by default empty: any address).
        allowed_ips: Vec<IpNet>
    );
    extra!(
        /// Sets [`rate_limit`](super::TokenExtras::rate_limit), in requests per minute.
        rate_limit: Option<u32>
    );
    extra_text!(
        /// Sets [`bound_to`](super::TokenExtras::bound_to).
        bound_to
    );
    extra!(
        /// Sets [`bound_at`](super::TokenExtras::bound_at).
        bound_at: Option<OffsetDateTime>
    );
    extra!(
        /// Sets [`released_at`](super::TokenExtras::released_at).
        released_at: Option<OffsetDateTime>
    );
    extra!(
        /// Sets [`metadata`](super::TokenExtras::metadata) (by default the empty object).
        metadata: Metadata
    );
    extra!(
        /// Sets [`last_used_ip`](super::TokenExtras::last_used_ip).
        last_used_ip: Option<IpAddr>
    );
    extra_text!(
        /// Sets [`last_used_agent`](super::TokenExtras::last_used_agent).
        last_used_agent
    );
    extra!(
        /// Sets [`expiry_warned_at`](super::TokenExtras::expiry_warned_at).
        expiry_warned_at: Option<OffsetDateTime>
    );

    /// The record, taking no more memory than one built with [`TokenRecord::new`] when no
    /// optional field kept apart is set.
    #[must_use]
    pub fn build(self) -> TokenRecord {
        let mut record = self.0;
        record.compact();
        record
    }
}

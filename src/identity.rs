//! What a handler receives: [`Identity`], the authenticated caller.
//!
//! The permission model ([`Permission`], [`Permissions`], [`Roles`]) lives in
//! [`permissions`](crate::permissions); it is re-exported here.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;

pub use crate::permissions::{Permission, Permissions, Roles};
use crate::record::{TokenId, TokenRecord};

/// How a request proved its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// An API token, from the layer's token source (`Authorization: Bearer …` unless
    /// [`AuthLayer::token_sources`](crate::AuthLayer::token_sources) names others).
    Bearer,
}

/// The authenticated caller, put into the request's extensions by
/// [`AuthLayer`](crate::AuthLayer). Cheap to clone.
///
/// It tells what a handler needs (token id, owner, token name, kind, permissions, how the
/// caller authenticated, creation and expiry) and nothing that reveals the stored token
/// (no hash). It shares the verified record with the store's copy rather than copying its
/// fields, so the clone made per request is one reference-count increment.
///
/// With the `axum` feature it is also an extractor: a handler that takes `Identity` answers
/// 401 when the request carries none (an [optional](crate::AuthLayer::optional) layer saw no
/// token), and 500 `auth_layer_missing` when no [`AuthLayer`](crate::AuthLayer) covers the
/// route at all — a forgotten `.layer(...)` is named, not mistaken for a bad token.
#[derive(Clone)]
pub struct Identity {
    record: Arc<TokenRecord>,
    /// Effective permissions other than the record's own; `None`: the record's.
    narrowed: Option<Permissions>,
    method: AuthMethod,
}

impl Identity {
    /// An identity for a verified token record; its permissions are the token's own.
    #[must_use]
    pub fn new(record: Arc<TokenRecord>, method: AuthMethod) -> Self {
        Self {
            record,
            narrowed: None,
            method,
        }
    }

    /// Replaces the effective permissions (e.g. narrowed by the owner's current rights).
    #[must_use]
    pub fn with_permissions(mut self, permissions: Permissions) -> Self {
        self.narrowed = Some(permissions);
        self
    }

    /// The token's id.
    #[must_use]
    pub fn token_id(&self) -> TokenId {
        self.record.id
    }

    /// The token's owner.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.record.owner
    }

    /// The token's name.
    #[must_use]
    pub fn token_name(&self) -> &str {
        &self.record.name
    }

    /// The token's kind name.
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.record.kind
    }

    /// The effective permissions of this request.
    #[must_use]
    pub fn permissions(&self) -> &Permissions {
        self.narrowed.as_ref().unwrap_or(&self.record.permissions)
    }

    /// True when the identity holds `permission`.
    #[must_use]
    pub fn can(&self, permission: &str) -> bool {
        self.permissions().allows(permission)
    }

    /// How the caller authenticated.
    #[must_use]
    pub fn auth_method(&self) -> AuthMethod {
        self.method
    }

    /// When the token was created.
    #[must_use]
    pub fn created_at(&self) -> OffsetDateTime {
        self.record.created_at
    }

    /// When the token stops working, if ever (for a rotated token, the end of its grace).
    #[must_use]
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.record.expires_at
    }

    /// The token's metadata (the empty object when it has none).
    #[must_use]
    pub fn metadata(&self) -> &crate::record::Metadata {
        &self.record.extras().metadata
    }

    pub(crate) fn record_arc(&self) -> Arc<TokenRecord> {
        self.record.clone()
    }

    /// The verified record (for the crate only: it holds the token's hash).
    pub(crate) fn record(&self) -> &TokenRecord {
        &self.record
    }

    /// `Ok` when the identity holds `permission`, else the 403 `insufficient_scope` rejection
    /// naming it, ready to return from a handler.
    ///
    /// # Errors
    ///
    /// [`Rejection`](crate::Rejection) of kind
    /// [`InsufficientScope`](crate::RejectionKind::InsufficientScope).
    pub fn require(&self, permission: &str) -> Result<(), crate::Rejection> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(crate::Rejection::insufficient_scope(permission))
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("token_id", &self.record.id)
            .field("owner", &self.record.owner)
            .field("token_name", &self.record.name)
            .field("kind", &self.record.kind)
            .field("permissions", self.permissions())
            .field("method", &self.method)
            .finish()
    }
}

impl Serialize for Identity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Identity", 7)?;
        st.serialize_field("token_id", &self.record.id)?;
        st.serialize_field("owner", &self.record.owner)?;
        st.serialize_field("token_name", &self.record.name)?;
        st.serialize_field("kind", &self.record.kind)?;
        st.serialize_field("permissions", self.permissions())?;
        st.serialize_field("auth_method", &self.method)?;
        st.serialize_field("metadata", &self.record.extras().metadata)?;
        st.end()
    }
}

/// Put into a request's extensions by an [optional](crate::AuthLayer::optional) layer that
/// let a request without credentials through: authentication ran, and found no one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Anonymous;

/// The identity of a request as the layer left it: `Ok(Some)` when a token was verified,
/// `Ok(None)` when an optional layer saw no token, and 500 `auth_layer_missing` when no
/// layer ran at all (logged once per process, naming the route's path).
pub(crate) fn identity_of<'a>(
    extensions: &'a http::Extensions,
    path: &str,
) -> Result<Option<&'a Identity>, crate::Rejection> {
    if let Some(id) = extensions.get::<Identity>() {
        return Ok(Some(id));
    }
    if extensions.get::<Anonymous>().is_some() {
        return Ok(None);
    }
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(
            path,
            "an Identity was asked for on a route that keygate's AuthLayer does not cover: \
             add `.layer(AuthLayer::new(tokens))` (or `.route_layer`) to the router that \
             serves it; answering 500 (logged once)"
        );
    }
    Err(crate::Rejection::new(crate::RejectionKind::MissingLayer))
}

//! [`TokenKind`]: a type of token, its prefix and its policies.

use std::fmt;
use std::sync::Arc;

use rand::TryRngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::error::ConfigError;

use super::{
    BASE62, CHECKSUM_LEN, LegacyFormat, ParsedToken, RawToken, SECRET_LEN, encode_checksum,
    valid_prefix,
};

/// A type of token with its own prefix, e.g. personal access tokens (`pat`) or licence
/// tokens (`lic`). Kinds are not interchangeable: a layer accepts only the kinds it is
/// configured with, and every other kind is refused as `invalid_token`.
///
/// Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenKind {
    inner: Arc<KindInner>,
}

#[derive(PartialEq, Eq, Hash)]
struct KindInner {
    name: crate::record::SharedStr,
    prefix: String,
    max_live_per_owner: Option<Option<u32>>,
    max_lifetime: Option<std::time::Duration>,
    binding: Option<http::HeaderName>,
    inactivity: Option<Option<std::time::Duration>>,
    resolver_may_widen: bool,
    legacy: Option<LegacyFormat>,
}

impl TokenKind {
    /// A kind named `name` whose tokens start with `<prefix>_`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPrefix`] unless `prefix` is 2–16 characters of `[a-z0-9]`
    /// starting with a letter; [`ConfigError::InvalidName`] if `name` is empty, longer than
    /// 64 bytes or not printable ASCII.
    pub fn new(name: impl Into<String>, prefix: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        let prefix = prefix.into();
        if !valid_prefix(prefix.as_bytes()) {
            return Err(ConfigError::InvalidPrefix(prefix));
        }
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::InvalidName(name));
        }
        Ok(Self {
            inner: Arc::new(KindInner {
                name: name.into(),
                prefix,
                max_live_per_owner: None,
                max_lifetime: None,
                binding: None,
                inactivity: None,
                resolver_may_widen: false,
                legacy: None,
            }),
        })
    }

    /// The default personal-access-token kind: name `pat`, prefix `pat`.
    #[must_use]
    pub fn pat() -> Self {
        Self::new("pat", "pat").expect("static kind is valid")
    }

    /// Caps the number of live tokens of this kind per owner (`None`: unlimited). Without
    /// this call the manager's per-owner limit applies, counted across all kinds that have no
    /// cap of their own.
    #[must_use]
    pub fn with_max_live_per_owner(self, max: Option<u32>) -> Self {
        self.map(|k| k.max_live_per_owner = Some(max))
    }

    /// Requires every token of this kind to expire within `max` of its creation; a request
    /// for a longer or unlimited lifetime is refused.
    #[must_use]
    pub fn with_max_lifetime(self, max: std::time::Duration) -> Self {
        self.map(|k| k.max_lifetime = Some(max))
    }

    /// Binds each token of this kind to one client on first use (a seat): the
    /// client sends its fingerprint (e.g. a machine id) in the header `header_name`. The
    /// first request binds the token to that fingerprint; later requests with another
    /// fingerprint get 403 `bound_elsewhere`, and requests without the header 403
    /// `binding_required`. The owner frees the seat with
    /// [`Tokens::release_binding`](crate::Tokens::release_binding) (once per 24 h); with
    /// inactivity expiry ([`with_inactivity_expiry`](Self::with_inactivity_expiry) or
    /// [`TokensBuilder::revoke_after_inactivity`](crate::tokens::TokensBuilder::revoke_after_inactivity))
    /// an idle seat is released (not revoked). A fingerprint is 1–128 visible ASCII
    /// characters; it is not a secret and is stored as sent.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHeader`] for a name that is not a valid HTTP header name.
    pub fn with_binding(self, header_name: &str) -> Result<Self, ConfigError> {
        let name = http::HeaderName::from_bytes(header_name.as_bytes())
            .map_err(|_| ConfigError::InvalidHeader(header_name.to_owned()))?;
        Ok(self.map(|k| k.binding = Some(name)))
    }

    /// Inactivity expiry for this kind, overriding the manager's
    /// [`revoke_after_inactivity`](crate::tokens::TokensBuilder::revoke_after_inactivity):
    /// `Some(after)` revokes the tokens of this kind silent for longer than `after` (for a
    /// kind with a [binding](Self::with_binding), releases their seat instead); `None`
    /// exempts the kind (its tokens never expire for inactivity, whatever the manager's
    /// setting). Without this call the manager's setting applies. One manager can so hold
    /// API tokens revoked after 90 days idle and seats released after 24 hours.
    #[must_use]
    pub fn with_inactivity_expiry(self, after: Option<std::time::Duration>) -> Self {
        self.map(|k| k.inactivity = Some(after))
    }

    /// The inactivity expiry set with
    /// [`with_inactivity_expiry`](Self::with_inactivity_expiry): `None` when the kind
    /// follows the manager, `Some(None)` when it is exempt.
    #[must_use]
    pub fn inactivity_expiry(&self) -> Option<Option<std::time::Duration>> {
        self.inner.inactivity
    }

    /// Lets a [`PermissionResolver`](crate::permissions::PermissionResolver) widen the
    /// tokens of this kind: the owner's current permissions *replace* the token's own
    /// instead of being intersected with them, so a token gains what its owner gains (a plan
    /// upgrade reaches the tokens already issued) as well as losing what the owner loses.
    /// Off by default.
    ///
    /// # Security
    ///
    /// A token of such a kind is worth everything its owner holds, now and later: the
    /// permissions chosen at creation no longer narrow it. Use it only for kinds whose
    /// tokens are meant to act as the account (e.g. one plan's API access), never for
    /// narrowly scoped tokens handed to third parties. Without a resolver the flag changes
    /// nothing. See the [`permissions`](crate::permissions) module.
    #[must_use]
    pub fn with_resolver_may_widen(self) -> Self {
        self.map(|k| k.resolver_may_widen = true)
    }

    /// Whether a resolver's answer replaces (and so may widen) the permissions of this
    /// kind's tokens; see [`with_resolver_may_widen`](Self::with_resolver_may_widen).
    #[must_use]
    pub fn resolver_may_widen(&self) -> bool {
        self.inner.resolver_may_widen
    }

    /// Also accepts tokens another system issued in `format`: `<prefix>_` followed by
    /// exactly `format.len` characters of `format.alphabet`, without keygate's checksum, so
    /// that tokens imported with [`Tokens::import`](crate::Tokens::import) keep working.
    /// They are verified like keygate's own: SHA-256, lookup by hash, constant-time
    /// compare. Anything else that is not a well-formed keygate token (another length, a
    /// character outside the alphabet, another prefix) is still refused without a store
    /// lookup. Tokens this kind generates keep keygate's format and checksum.
    ///
    /// # Security
    ///
    /// A legacy token has no checksum: every string of the right shape costs a store lookup,
    /// and secret scanners cannot confirm a match offline (see [`LegacyFormat::regex`]).
    /// Accept a legacy format only while such tokens are in use.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidLegacyFormat`] when the format holds fewer than
    /// [`MIN_LEGACY_BITS`](super::MIN_LEGACY_BITS) bits, or the token would be longer than
    /// [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN).
    pub fn with_legacy_format(self, format: LegacyFormat) -> Result<Self, ConfigError> {
        format
            .check(self.prefix())
            .map_err(ConfigError::InvalidLegacyFormat)?;
        Ok(self.map(|k| k.legacy = Some(format)))
    }

    /// The legacy format this kind accepts, if any.
    #[must_use]
    pub fn legacy_format(&self) -> Option<LegacyFormat> {
        self.inner.legacy
    }

    /// Whether `token` has this kind's [legacy format](Self::with_legacy_format) (false
    /// for a kind without one). Never panics, whatever the input.
    #[must_use]
    pub fn accepts_legacy(&self, token: &str) -> bool {
        self.inner
            .legacy
            .is_some_and(|f| f.matches(self.prefix(), token))
    }

    /// `token` as a legacy token of this kind, if it has the kind's legacy format.
    pub(crate) fn parse_legacy<'a>(&self, token: &'a str) -> Option<ParsedToken<'a>> {
        self.accepts_legacy(token).then_some(ParsedToken {
            full: token,
            prefix_len: self.prefix().len(),
        })
    }

    /// The header carrying the client fingerprint, for kinds with a binding.
    #[must_use]
    pub fn binding_header(&self) -> Option<&http::HeaderName> {
        self.inner.binding.as_ref()
    }

    fn map(self, f: impl FnOnce(&mut KindInner)) -> Self {
        let mut inner = KindInner {
            name: self.inner.name.clone(),
            prefix: self.inner.prefix.clone(),
            max_live_per_owner: self.inner.max_live_per_owner,
            max_lifetime: self.inner.max_lifetime,
            binding: self.inner.binding.clone(),
            inactivity: self.inner.inactivity,
            resolver_may_widen: self.inner.resolver_may_widen,
            legacy: self.inner.legacy,
        };
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The kind's name, as stored with each token.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The kind's name as a [`SharedStr`](crate::record::SharedStr): a record issued for
    /// this kind holds this very allocation, so checking a record's kind is an address
    /// compare.
    #[must_use]
    pub fn shared_name(&self) -> &crate::record::SharedStr {
        &self.inner.name
    }

    /// The kind's prefix (without the `_`).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The per-owner cap set with [`with_max_live_per_owner`](Self::with_max_live_per_owner):
    /// `None` when the kind has no cap of its own, `Some(None)` when it is unlimited.
    #[must_use]
    pub fn max_live_per_owner(&self) -> Option<Option<u32>> {
        self.inner.max_live_per_owner
    }

    /// The longest lifetime a token of this kind may have, if limited.
    #[must_use]
    pub fn max_lifetime(&self) -> Option<std::time::Duration> {
        self.inner.max_lifetime
    }

    /// Generates a new token of this kind from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes (keygate never falls back to a
    /// weaker source).
    #[must_use]
    pub fn generate(&self) -> RawToken {
        let prefix = self.prefix();
        let mut s = Zeroizing::new(String::with_capacity(
            prefix.len() + 1 + SECRET_LEN + CHECKSUM_LEN,
        ));
        s.push_str(prefix);
        s.push('_');
        let mut filled = 0;
        let mut buf = Zeroizing::new([0u8; 64]);
        while filled < SECRET_LEN {
            OsRng
                .try_fill_bytes(&mut buf[..])
                .expect("the operating system's random number generator failed");
            for &b in buf.iter() {
                // Rejection sampling: 248 = 4 * 62, so `b % 62` is uniform below it.
                if b < 248 && filled < SECRET_LEN {
                    s.push(BASE62[usize::from(b % 62)] as char);
                    filled += 1;
                }
            }
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&encode_checksum(crc));
        RawToken { value: s }
    }
}

impl fmt::Debug for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKind")
            .field("name", &self.inner.name)
            .field("prefix", &self.inner.prefix)
            .field("legacy_format", &self.inner.legacy)
            .finish_non_exhaustive()
    }
}

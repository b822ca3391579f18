//! The permission model ([`Permission`], [`Permissions`], [`Roles`]) and effective
//! permissions.
//!
//! Every token carries explicit permissions. A role is only a named set of permissions used
//! as a shortcut when a token is created; changing a role later does not change tokens that
//! were created with it.
//!
//! A permission is a string such as `things:read`. A held permission `*` grants everything,
//! and `things:*` grants every permission that starts with `things:`.
//!
//! Effective permissions: what a token may do is its own permissions **and** what its owner
//! may do right now.
//!
//! A token keeps the permissions it was created with. When its owner is later demoted (or
//! removed), a [`PermissionResolver`] lets the layer cut the token down at once: on every
//! request the [`Identity`](crate::Identity) carries the token's permissions intersected
//! with the owner's current ones. An owner the resolver does not know has no permissions,
//! so the token can authenticate but passes no permission check; a resolver that fails
//! makes the request fail closed with 503 `store_unavailable`.
//!
//! **Widening, per kind, off by default.** A resolver only ever narrows a token, unless the
//! token's kind opts in with
//! [`TokenKind::with_resolver_may_widen`](crate::TokenKind::with_resolver_may_widen): then
//! the owner's current permissions *replace* the token's own, so a plan upgrade reaches the
//! tokens already issued (Tokencraft: moving from FREE to PRO gives every existing token
//! write access). The trade-off: such a token is no longer bounded by what it was created
//! with. It is worth all its owner holds, today and after every later grant, so a leaked
//! token of that kind grows with the account; permissions asked for at creation only hold
//! until the next request. Keep widening for kinds that stand for the account itself, and
//! narrow tokens (CI, third parties) in kinds without it. A downgrade and an unknown owner
//! still cut the token down at once.
//!
//! [`AccountPermissions`] resolves owners through any
//! [`AccountStore`](crate::accounts::AccountStore) (feature `management`)
//! and keeps each answer for a short time (default 5 s), so the account store is not hit on
//! every request: a demotion takes effect within that time on every instance. Its account
//! lookups are bounded (default 2 s, then 503); wrap any other resolver in
//! [`TimeoutResolver`](crate::store::timeout::TimeoutResolver) for the same bound.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use keygate::accounts::MemoryAccounts;
//! use keygate::permissions::AccountPermissions;
//! use keygate::{AuthLayer, MemoryStore, Tokens};
//!
//! let accounts = MemoryAccounts::new();
//! let resolver = AccountPermissions::new(accounts).with_ttl(Duration::from_secs(2));
//! let layer = AuthLayer::new(Tokens::new(MemoryStore::new())).with_permission_resolver(resolver);
//! # let _ = layer;
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ConfigError;

/// One permission, e.g. `tokens:write`. 1–64 characters of `[a-z0-9_.:*-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission(Arc<str>);

impl Permission {
    /// Validates and wraps a permission string.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPermission`] on an empty, over-long or out-of-alphabet string.
    pub fn new(s: &str) -> Result<Self, ConfigError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'.' | b':' | b'*' | b'-')
            });
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(ConfigError::InvalidPermission(s.to_owned()))
        }
    }

    /// The permission as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when holding `self` grants `wanted` (exact match, `*`, or a `prefix:*` wildcard).
    #[must_use]
    pub fn grants(&self, wanted: &str) -> bool {
        let held = self.as_str();
        if held == wanted || held == "*" {
            return true;
        }
        match held.strip_suffix('*') {
            Some(stem) if stem.ends_with(':') => wanted.starts_with(stem),
            _ => false,
        }
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Permission {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A sorted, de-duplicated set of permissions. Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Permissions(Arc<[Permission]>);

impl Permissions {
    /// The empty set.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Builds a set from strings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPermission`] on the first invalid entry.
    pub fn parse<I, S>(items: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let v = items
            .into_iter()
            .map(|s| Permission::new(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_iter(v))
    }

    /// True when the set grants `wanted` (see [`Permission::grants`]).
    #[must_use]
    pub fn allows(&self, wanted: &str) -> bool {
        self.0.iter().any(|p| p.grants(wanted))
    }

    /// The permissions, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.0.iter()
    }

    /// Number of permissions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The permissions of `self` that `other` also grants: a token's effective permissions
    /// under an owner's current ones.
    #[must_use]
    pub fn intersect(&self, other: &Permissions) -> Permissions {
        let mut out: Vec<Permission> = self
            .iter()
            .filter(|p| other.allows(p.as_str()))
            .cloned()
            .collect();
        out.extend(other.iter().filter(|p| self.allows(p.as_str())).cloned());
        Self::from_iter(out)
    }

    /// True when every permission in `self` is granted by `other`.
    #[must_use]
    pub fn is_subset_of(&self, other: &Permissions) -> bool {
        self.iter().all(|p| other.allows(p.as_str()))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<T: IntoIterator<Item = Permission>>(iter: T) -> Self {
        let mut v: Vec<Permission> = iter.into_iter().collect();
        v.sort();
        v.dedup();
        Self(v.into())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl Serialize for Permissions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Permission>::deserialize(d)?;
        Ok(Self::from_iter(v))
    }
}

/// Named sets of permissions, used as shortcuts when creating tokens.
///
/// [`Roles::deployment_platform`] is a ready default with five roles; build any other
/// set with [`Roles::new`] and [`with_role`](Roles::with_role).
#[derive(Clone, Default, Debug)]
pub struct Roles {
    roles: BTreeMap<String, Permissions>,
}

impl Roles {
    /// No roles.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the role `name` granting `permissions`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidName`] or [`ConfigError::InvalidPermission`].
    pub fn with_role<I, S>(mut self, name: &str, permissions: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::InvalidName(name.to_owned()));
        }
        self.roles
            .insert(name.to_owned(), Permissions::parse(permissions)?);
        Ok(self)
    }

    /// The roles of a deployment platform (apps, processes, builds, releases), each
    /// resolving to explicit permissions:
    ///
    /// | role | permissions |
    /// | --- | --- |
    /// | `viewer` | `apps:read`, `processes:read`, `builds:read`, `releases:read`, `logs:read`, `tokens:read` |
    /// | `ops` | viewer + `processes:restart`, `processes:exec`, `env:read` |
    /// | `deployer` | ops + `builds:create`, `releases:create`, `releases:promote`, `env:write`, `apps:write` |
    /// | `cicd` | `apps:read`, `builds:read`, `releases:read`, `builds:create`, `releases:create`, `releases:promote`, `approvals:request` |
    /// | `admin` | `*` (all, including `tokens:write`) |
    #[must_use]
    pub fn deployment_platform() -> Self {
        const VIEWER: &[&str] = &[
            "apps:read",
            "processes:read",
            "builds:read",
            "releases:read",
            "logs:read",
            "tokens:read",
        ];
        const OPS: &[&str] = &["processes:restart", "processes:exec", "env:read"];
        const DEPLOY: &[&str] = &[
            "builds:create",
            "releases:create",
            "releases:promote",
            "env:write",
            "apps:write",
        ];
        let ops: Vec<&str> = VIEWER.iter().chain(OPS).copied().collect();
        let deployer: Vec<&str> = ops.iter().chain(DEPLOY).copied().collect();
        let cicd = [
            "apps:read",
            "builds:read",
            "releases:read",
            "builds:create",
            "releases:create",
            "releases:promote",
            "approvals:request",
        ];
        Self::new()
            .with_role("viewer", VIEWER)
            .and_then(|r| r.with_role("ops", ops))
            .and_then(|r| r.with_role("deployer", deployer))
            .and_then(|r| r.with_role("cicd", cicd))
            .and_then(|r| r.with_role("admin", ["*"]))
            .expect("static roles are valid")
    }

    /// The permissions of role `name`, if defined.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Permissions> {
        self.roles.get(name)
    }

    /// The role names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }
}

/// The permission that makes a caller an administrator of every owner's tokens: the admin
/// view across owners, revoking any owner's token, importing tokens. `tokens:*` and `*`
/// hold it.
pub const TOKENS_ADMIN: &str = "tokens:admin";

mod resolver;

#[cfg(feature = "management")]
pub use resolver::AccountPermissions;
pub use resolver::{PermissionResolver, effective, effective_for};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_grant_what_they_say() {
        let p = Permissions::parse(["things:*", "tokens:read"]).unwrap();
        assert!(p.allows("things:write"));
        assert!(p.allows("tokens:read"));
        assert!(!p.allows("tokens:write"));
        assert!(!p.allows("thingsx:read"));
        assert!(Permissions::parse(["*"]).unwrap().allows("anything:at_all"));
        assert!(!Permissions::none().allows("a"));
    }

    #[test]
    fn invalid_permissions_are_refused() {
        for s in ["", "Things:read", "a b", "x\n", &"a".repeat(65)] {
            assert!(Permission::new(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn rack_gateway_roles() {
        let r = Roles::deployment_platform();
        assert_eq!(
            r.names().collect::<Vec<_>>(),
            ["admin", "cicd", "deployer", "ops", "viewer"]
        );
        let viewer = r.get("viewer").unwrap();
        assert!(viewer.allows("tokens:read"));
        assert!(!viewer.allows("tokens:write"));
        assert!(r.get("admin").unwrap().allows("tokens:write"));
        assert!(r.get("ops").unwrap().allows("processes:restart"));
        assert!(!r.get("ops").unwrap().allows("builds:create"));
        assert!(r.get("deployer").unwrap().allows("builds:create"));
    }

    #[test]
    fn intersection_narrows() {
        let token = Permissions::parse(["things:*", "tokens:read"]).unwrap();
        let owner = Permissions::parse(["things:read"]).unwrap();
        let eff = token.intersect(&owner);
        assert!(eff.allows("things:read"));
        assert!(!eff.allows("things:write"));
        assert!(!eff.allows("tokens:read"));
    }
}

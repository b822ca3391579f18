//! Verifying a presented token: format, hash, lookup, constant-time compare, kind, state.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use crate::denial::Denial;
use crate::identity::{AuthMethod, Identity};
use crate::record::SharedStr;
use crate::store::{StoreError, TokenRecord, TokenStore};
use crate::token::{self, TokenHash, TokenKind};

use super::{Digests, Tokens};

/// A refusal with the record of the token, when one was found.
pub(crate) struct Denied {
    pub(crate) denial: Denial,
    pub(crate) record: Option<Arc<TokenRecord>>,
}

/// What [`Tokens::lookup_now`] reached.
pub(crate) enum Lookup {
    /// Decided without I/O.
    Decided(Result<Identity, Denied>),
    /// The store must be asked ([`Tokens::fetch`]): the kind the prefix names, and the
    /// digests to look up.
    Fetch(TokenKind, Digests),
}

impl Denied {
    pub(super) fn new(denial: Denial) -> Self {
        Self {
            denial,
            record: None,
        }
    }
}

impl Tokens {
    /// Verifies a presented token and returns its [`Identity`]. This is the check the layer
    /// runs; call it directly to authenticate outside HTTP.
    ///
    /// # Errors
    ///
    /// The [`Denial`]: [`Malformed`](Denial::Malformed), [`Unknown`](Denial::Unknown),
    /// [`Revoked`](Denial::Revoked), [`Expired`](Denial::Expired) or
    /// [`StoreUnavailable`](Denial::StoreUnavailable). It is the domain reason, not an HTTP
    /// answer: `RejectionKind::from(denial)` (or `Rejection::from(denial)`) gives the
    /// middleware's answer for it. (A breaking change: this method used to answer with the
    /// middleware's [`Rejection`](crate::Rejection).)
    ///
    /// A token with an allow-list or of a binding kind is refused here (no client address,
    /// no fingerprint): use [`authenticate_request`](Self::authenticate_request).
    pub async fn authenticate(&self, token: &str) -> Result<Identity, Denial> {
        self.verify(token, None).await
    }

    /// [`authenticate`](Self::authenticate) with what the policies kept on the token need:
    /// the client address (for its allow-list) and the request headers (for the fingerprint
    /// of a binding kind).
    ///
    /// # Errors
    ///
    /// As [`authenticate`](Self::authenticate), plus
    /// [`IpNotAllowed`](Denial::IpNotAllowed), [`BindingRequired`](Denial::BindingRequired)
    /// and [`BoundElsewhere`](Denial::BoundElsewhere).
    pub async fn authenticate_request(
        &self,
        token: &str,
        client_ip: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<Identity, Denial> {
        let id = self
            .verify_detailed(token, None)
            .await
            .map_err(|d| d.denial)?;
        self.check_record_policies(&id, client_ip, headers).await?;
        Ok(id)
    }

    /// The verification path: format and checksum (no store hit for garbage), SHA-256,
    /// lookup by hash, constant-time compare, kind, revocation, expiry; then the use is
    /// queued for the batched `last_used_at` update.
    ///
    /// Every refusal of a well-formed token (unknown, revoked, expired, wrong kind) walks
    /// the same path: the hash and the lookup happen before any of them is decided.
    pub(crate) async fn verify(
        &self,
        token: &str,
        accept: Option<&[String]>,
    ) -> Result<Identity, Denial> {
        let id = self
            .verify_detailed(token, accept)
            .await
            .map_err(|d| d.denial)?;
        self.check_record_policies(&id, None, &HeaderMap::new())
            .await?;
        Ok(id)
    }

    /// [`verify`](Self::verify) without the policies kept on the record (the caller runs
    /// [`check_record_policies`](Self::check_record_policies), which records the use),
    /// keeping the record of a refused well-formed token for the audit event.
    pub(crate) async fn verify_detailed(
        &self,
        token: &str,
        accept: Option<&[String]>,
    ) -> Result<Identity, Denied> {
        let (kind, digests) = self.prepare(token)?;
        if !digests.rest.is_empty() {
            let found = self.find_all(&digests).await;
            return self.decide_any(kind, &digests, found, accept, self.now_nanos());
        }
        let hash = digests.first;
        let found = match self.inner.store.find_by_hash_now(&hash) {
            Some(answer) => answer,
            None => self.inner.store.find_by_hash(&hash).await,
        };
        self.decide(kind, &hash, found, accept, self.now_nanos())
    }

    /// The verification as far as it goes without I/O: format, checksum, SHA-256, and,
    /// when the store can answer from memory (see [`TokenStore::find_by_hash_now`]), the
    /// decision. Otherwise the kind and the hash, for [`fetch`](Self::fetch). Like
    /// [`verify_detailed`](Self::verify_detailed), without the record's policies.
    /// `now` is [`now_nanos`](Self::now_nanos), read once for the request.
    pub(crate) fn lookup_now(&self, token: &str, accept: Option<&[String]>, now: i128) -> Lookup {
        let (kind, digests) = match self.prepare(token) {
            Ok(prepared) => prepared,
            Err(denied) => return Lookup::Decided(Err(denied)),
        };
        if !digests.rest.is_empty() {
            return match self.find_all_now(&digests) {
                Some(found) => Lookup::Decided(self.decide_any(kind, &digests, found, accept, now)),
                None => Lookup::Fetch(kind.clone(), digests),
            };
        }
        match self.inner.store.find_by_hash_now(&digests.first) {
            Some(found) => Lookup::Decided(self.decide(kind, &digests.first, found, accept, now)),
            None => Lookup::Fetch(kind.clone(), digests),
        }
    }

    /// The rest of [`lookup_now`](Self::lookup_now) when the store must be asked.
    pub(crate) async fn fetch(
        &self,
        kind: &TokenKind,
        digests: &Digests,
        accept: Option<&[String]>,
    ) -> Result<Identity, Denied> {
        if !digests.rest.is_empty() {
            let found = self.find_all(digests).await;
            return self.decide_any(kind, digests, found, accept, self.now_nanos());
        }
        let found = self.inner.store.find_by_hash(&digests.first).await;
        self.decide(kind, &digests.first, found, accept, self.now_nanos())
    }

    /// Format, checksum and kind (no store hit for garbage), then the digests: the SHA-256
    /// alone without a pepper, else every candidate (see [`Digests`]). A token that is not
    /// in keygate's format may still be in a kind's legacy format (exact prefix, length and
    /// alphabet); that is looked at only after keygate's format failed, so keygate's own
    /// tokens pay nothing for it.
    pub(super) fn prepare(&self, token: &str) -> Result<(&TokenKind, Digests), Denied> {
        let parsed = match token::parse(token) {
            Ok(parsed) => parsed,
            Err(_) => self
                .inner
                .kinds
                .iter()
                .find_map(|k| k.parse_legacy(token))
                .ok_or(Denied::new(Denial::Malformed))?,
        };
        let kind = self
            .kind_by_prefix(parsed.prefix())
            .ok_or(Denied::new(Denial::Malformed))?;
        Ok((kind, self.inner.hasher.digests(token)))
    }

    /// [`decide`](Self::decide) over the lookups of several digests (with a pepper): the
    /// record found under the first matching digest decides, and when that digest is not
    /// the current one an admitted token is queued for re-hashing. Every digest was looked
    /// up before this runs, whichever matched, so the refusals of well-formed tokens take
    /// the same time (SECURITY.md, *Constant-time verification*).
    fn decide_any(
        &self,
        kind: &TokenKind,
        digests: &Digests,
        found: super::pepper::Found,
        accept: Option<&[String]>,
        now: i128,
    ) -> Result<Identity, Denied> {
        let (index, found) = match found {
            Ok(Some((i, record))) => (i, Ok(Some(record))),
            Ok(None) => (0, Ok(None)),
            Err(e) => (0, Err(e)),
        };
        let hash = digests.get(index).unwrap_or(&digests.first);
        let identity = self.decide(kind, hash, found, accept, now)?;
        self.queue_rehash(identity.record(), digests, index);
        Ok(identity)
    }

    /// Everything after the lookup: constant-time compare, kind, revocation, expiry.
    pub(super) fn decide(
        &self,
        kind: &TokenKind,
        hash: &TokenHash,
        found: Result<Option<Arc<TokenRecord>>, StoreError>,
        accept: Option<&[String]>,
        now: i128,
    ) -> Result<Identity, Denied> {
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "token store lookup failed; refusing the request");
                return Err(Denied::new(Denial::StoreUnavailable));
            }
        };
        let Some(record) = found else {
            return Err(Denied::new(Denial::Unknown));
        };
        // The store found the record by its hash; the core still checks the digest itself,
        // in constant time, so a backend bug cannot let a different token through.
        let same = record.hash.ct_eq(hash);
        // A record issued for this kind holds the kind's own name: an address compare, with
        // the string compare only for a record built otherwise (or of another kind).
        let kind_ok = (SharedStr::ptr_eq(&record.kind, kind.shared_name())
            || record.kind == kind.name())
            && accept.is_none_or(|names| names.iter().any(|n| *n == record.kind));
        let refused = if !same {
            Some(Denial::Unknown)
        } else if !kind_ok {
            Some(Denial::WrongKind)
        } else if record.extras().revoked_at.is_some() {
            Some(Denial::Revoked)
        } else if record.expires_at.is_some_and(|e| self.expired(e, now)) {
            Some(Denial::Expired)
        } else {
            None
        };
        if let Some(kind) = refused {
            return Err(Denied {
                denial: kind,
                record: same.then_some(record),
            });
        }
        Ok(Identity::new(record, AuthMethod::Bearer))
    }
}

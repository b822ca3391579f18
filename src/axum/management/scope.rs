//! Which of the owner's tokens a caller may manage.

use super::Shared;
use super::auth::Caller;
use super::error::ApiError;
use crate::identity::Permissions;
use crate::store::{TokenId, TokenRecord};

/// Every permission of `wanted` must be held by the caller (403 otherwise).
fn within(wanted: &Permissions, held: &Permissions, who: &str) -> Result<(), ApiError> {
    match wanted.iter().find(|p| !held.allows(p.as_str())) {
        None => Ok(()),
        Some(p) => Err(ApiError::insufficient_scope(format!(
            "Missing permission: {p} (a token cannot hold more than {who})"
        ))),
    }
}

/// A bearer caller may only manage (revoke, rotate, release) the owner's tokens that are at
/// least as restricted as itself, so that no token can hand on, or keep alive, a credential
/// it could not be: every permission of the target held by the caller; the same kind (and,
/// for a kind with a binding, the same machine); an allow-list within the caller's (a
/// caller without one is unrestricted); an expiry no later than the caller's (a caller
/// without one is unrestricted); and a rate of its own no higher than the caller's (a
/// caller without one is unrestricted). 403 `insufficient_scope` otherwise. An account
/// signed in with its password manages all its tokens. Returns the target's record.
pub(super) async fn may_manage(
    s: &Shared,
    caller: &Caller,
    id: TokenId,
) -> Result<TokenRecord, ApiError> {
    let target = s.tokens.get(caller.owner(), id).await?;
    match caller {
        Caller::Account(account) => {
            within(&target.permissions, &account.permissions, "its account")?
        }
        Caller::Bearer(identity) => {
            within(
                &target.permissions,
                identity.permissions(),
                "the token that asks",
            )?;
            as_restricted(s, &target, identity.record()).map_err(|what| {
                ApiError::insufficient_scope(format!(
                    "The token to manage is less restricted than the token that asks: {what}"
                ))
            })?;
        }
    }
    Ok(target)
}

/// Rotation hands the caller a new secret, so it asks more than [`may_manage`]: a bearer
/// caller may rotate only a token of its own lineage (itself, or a token it replaced or
/// that replaced it: the same owner and name), never a sibling, so that whoever holds a
/// leaked token cannot turn it into a credential outside its lineage, which revoking the
/// leaked token (successors included) would not reach. Rotating another token needs the
/// account: its password, or the host application's session. 403 `insufficient_scope`
/// otherwise. Returns the target's record.
pub(super) async fn may_rotate(
    s: &Shared,
    caller: &Caller,
    id: TokenId,
) -> Result<TokenRecord, ApiError> {
    let target = may_manage(s, caller, id).await?;
    if let Caller::Bearer(identity) = caller
        && !same_lineage(&target, identity.record())
    {
        return Err(ApiError::insufficient_scope(
            "A bearer token may rotate only itself; rotating another token needs the \
             account's password or session"
                .to_owned(),
        ));
    }
    Ok(target)
}

/// Whether `a` and `b` are of one lineage: a rotation keeps the owner and the name, and an
/// owner's live tokens have distinct names.
fn same_lineage(a: &TokenRecord, b: &TokenRecord) -> bool {
    a.id == b.id || (a.owner == b.owner && a.name == b.name)
}

/// Whether `target` is at least as restricted as `caller` in everything but permissions;
/// the first way it is not, otherwise.
fn as_restricted(
    s: &Shared,
    target: &TokenRecord,
    caller: &TokenRecord,
) -> Result<(), &'static str> {
    if target.kind != caller.kind {
        return Err("it is of another kind");
    }
    let binds = s
        .tokens
        .kind(&caller.kind)
        .and_then(crate::TokenKind::binding_header)
        .is_some();
    if binds && target.extras().bound_to != caller.extras().bound_to {
        return Err("it is not bound to the same machine");
    }
    if !caller.extras().allowed_ips.is_empty()
        && (target.extras().allowed_ips.is_empty()
            || !target
                .extras()
                .allowed_ips
                .iter()
                .all(|t| caller.extras().allowed_ips.iter().any(|c| c.contains(t))))
    {
        return Err("its allowed_ips are not within the caller's");
    }
    if let Some(limit) = caller.expires_at
        && target.expires_at.is_none_or(|e| e > limit)
    {
        return Err("it expires later than the caller");
    }
    if let Some(rate) = caller.extras().rate_limit
        && target.extras().rate_limit.is_none_or(|r| r > rate)
    {
        return Err("its rate_limit is higher than the caller's");
    }
    Ok(())
}

//! [`TokenUse`]: one recorded use of a token, with the client it came from, as the manager
//! hands it to [`TokenStore::record_usage`](super::TokenStore::record_usage).

use std::net::IpAddr;

use time::OffsetDateTime;

use crate::record::{MAX_USER_AGENT, TokenId};

/// One use of a token, batched by the manager: when, and from which client.
///
/// Non-exhaustive: build it with [`new`](Self::new). The agent is cleaned on the way in
/// (see [`clean_user_agent`]), so a store keeps only what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenUse {
    /// The token.
    pub id: TokenId,
    /// When it was used.
    pub at: OffsetDateTime,
    /// The client address, as the layer resolved it (never a forwarding header the peer
    /// was not trusted to send); `None` when unknown.
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent`, cleaned; `None` when not sent (or nothing was left).
    pub user_agent: Option<String>,
}

impl TokenUse {
    /// A use of `id` at `at` from `client_ip` with `user_agent` (cleaned with
    /// [`clean_user_agent`]).
    #[must_use]
    pub fn new(
        id: TokenId,
        at: OffsetDateTime,
        client_ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Self {
        Self {
            id,
            at,
            client_ip,
            user_agent: user_agent.and_then(|a| clean_user_agent(a.as_bytes())),
        }
    }

    /// A use without client details (a check outside HTTP).
    #[must_use]
    pub fn bare(id: TokenId, at: OffsetDateTime) -> Self {
        Self::new(id, at, None, None)
    }
}

/// A `User-Agent` as keygate keeps it: bytes that are not UTF-8 become U+FFFD; control,
/// format and bidirectional characters and line separators are dropped (the agent is shown
/// in lists and on the token page); the rest is cut to [`MAX_USER_AGENT`] bytes on a
/// character boundary. `None` when nothing is left.
///
/// ```
/// use keygate::store::clean_user_agent;
///
/// assert_eq!(clean_user_agent(b"ci-runner/1.0").as_deref(), Some("ci-runner/1.0"));
/// assert_eq!(clean_user_agent(b"a\tb\x7fc").as_deref(), Some("abc"));
/// assert_eq!(clean_user_agent("\u{202e}x".as_bytes()).as_deref(), Some("x"));
/// assert_eq!(clean_user_agent("é".repeat(200).as_bytes()).map(|a| a.len()), Some(256));
/// assert_eq!(clean_user_agent(b"\t"), None);
/// ```
#[must_use]
pub fn clean_user_agent(raw: &[u8]) -> Option<String> {
    let out: String = cleaned(raw).collect();
    (!out.trim().is_empty()).then_some(out)
}

/// The characters [`clean_user_agent`] keeps, without allocating.
pub(crate) fn cleaned(raw: &[u8]) -> impl Iterator<Item = char> + '_ {
    let mut len = 0;
    raw.utf8_chunks()
        .flat_map(|chunk| {
            let bad = (!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER);
            chunk.valid().chars().chain(bad)
        })
        .filter(|c| !crate::tokens::is_hidden(*c))
        .take_while(move |c| {
            len += c.len_utf8();
            len <= MAX_USER_AGENT
        })
}

/// Whether `kept` (an agent already cleaned) is what [`clean_user_agent`] makes of `raw`.
pub(crate) fn same_agent(kept: Option<&str>, raw: Option<&[u8]>) -> bool {
    match (kept, raw) {
        (None, None) => true,
        (Some(kept), Some(raw)) => kept.chars().eq(cleaned(raw)),
        (None, Some(raw)) => cleaned(raw).all(char::is_whitespace),
        (Some(_), None) => false,
    }
}

//! [`TokenStore::record_usage`]: the last use's address and agent move with its time.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{now, owner, record, rules};
use crate::store::{TokenId, TokenStore, TokenUse};

/// Whether the store must keep the details, or may be on the trait's default.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Details {
    Required,
    Optional,
}

pub(super) async fn record_usage_moves_details_with_the_time(
    s: &Arc<dyn TokenStore>,
    details: Details,
) {
    let t = now();
    let o = owner("usage");
    let a = record(&o, "a", t);
    let b = record(&o, "b", t);
    s.insert(a.clone(), rules(t, None)).await.expect("insert");
    s.insert(b.clone(), rules(t, None)).await.expect("insert");
    let v4: IpAddr = "192.0.2.7".parse().expect("valid");
    let v6: IpAddr = "2001:db8::1".parse().expect("valid");
    let later = t + Duration::from_secs(30);
    let agent = "ci-runner/1.0 «ü» (x86_64)";
    s.record_usage(&[
        TokenUse::new(a.id, t, Some(v4), Some("first/1.0")),
        // The latest use of a batch wins, whatever its place.
        TokenUse::new(a.id, later, Some(v6), Some(agent)),
        TokenUse::new(
            a.id,
            t + Duration::from_secs(10),
            Some(v4),
            Some("middle/1.0"),
        ),
        TokenUse::new(b.id, t, Some(v4), None),
        TokenUse::new(TokenId::random(), t, Some(v4), Some("nobody")),
    ])
    .await
    .expect("record_usage ignores unknown ids");
    let got = s.get(&a.id).await.expect("get").expect("a");
    assert_eq!(got.last_used_at, Some(later), "the latest use of the batch");
    if details == Details::Optional
        && got.extras().last_used_ip.is_none()
        && got.extras().last_used_agent.is_none()
    {
        // The trait's default: the times only (a store written before `record_usage`).
        details_not_kept(s, &a.id, later).await;
        return;
    }
    assert_eq!(
        got.extras().last_used_ip,
        Some(v6),
        "the address of the latest use"
    );
    assert_eq!(
        got.extras().last_used_agent.as_deref(),
        Some(agent),
        "the agent of the latest use, as given"
    );
    let got = s.get(&b.id).await.expect("get").expect("b");
    assert_eq!(
        (
            got.last_used_at,
            got.extras().last_used_ip,
            got.extras().last_used_agent.as_deref()
        ),
        (Some(t), Some(v4), None)
    );

    // An earlier (or equal) use changes nothing: not the time, not the details.
    s.record_usage(&[
        TokenUse::new(a.id, t, Some(v4), Some("old/1.0")),
        TokenUse::new(a.id, later, Some(v4), Some("same-time/1.0")),
    ])
    .await
    .expect("record_usage");
    let got = s.get(&a.id).await.expect("get").expect("a");
    assert_eq!(
        (
            got.last_used_at,
            got.extras().last_used_ip,
            got.extras().last_used_agent.as_deref()
        ),
        (Some(later), Some(v6), Some(agent)),
        "a use that is not later leaves the details of the last one"
    );

    // A later use without details clears them: they always describe the last use.
    let latest = later + Duration::from_secs(30);
    s.record_usage(&[TokenUse::bare(a.id, latest)])
        .await
        .expect("record_usage");
    let got = s.get(&a.id).await.expect("get").expect("a");
    assert_eq!(
        (
            got.last_used_at,
            got.extras().last_used_ip,
            got.extras().last_used_agent.as_deref()
        ),
        (Some(latest), None, None)
    );
    // `record_use` and `record_usage` share the rule: an older time is ignored by either.
    s.record_use(&[(a.id, later)]).await.expect("record_use");
    assert_eq!(
        s.get(&a.id).await.expect("get").expect("a").last_used_at,
        Some(latest)
    );
    // The details show on the record the verification path reads, too.
    let found = s.find_by_hash(&b.hash).await.expect("find").expect("b");
    assert_eq!(found.extras().last_used_ip, Some(v4));
    s.record_usage(&[]).await.expect("an empty batch is fine");
}

/// A store on the trait's default `record_usage`: the times follow `record_use`'s rule, and
/// no details ever show.
async fn details_not_kept(s: &Arc<dyn TokenStore>, id: &TokenId, last: time::OffsetDateTime) {
    let v4: IpAddr = "192.0.2.7".parse().expect("valid");
    s.record_usage(&[TokenUse::new(
        *id,
        last - Duration::from_secs(5),
        Some(v4),
        Some("old"),
    )])
    .await
    .expect("record_usage");
    let later = last + Duration::from_secs(5);
    s.record_usage(&[TokenUse::new(*id, later, Some(v4), Some("new"))])
        .await
        .expect("record_usage");
    let got = s.get(id).await.expect("get").expect("record");
    assert_eq!(
        got.last_used_at,
        Some(later),
        "last_used_at only moves forward"
    );
    assert_eq!(
        (
            got.extras().last_used_ip,
            got.extras().last_used_agent.as_deref()
        ),
        (None, None)
    );
}

//! Unit tests of [`RateLimits`](super::RateLimits), kept beside `limits.rs`.

use super::*;

#[tokio::test]
async fn the_101st_request_in_a_minute_is_refused_and_headers_count_down() {
    let limits = RateLimits::new(Rate::per_minute(100).unwrap());
    let id = Lineage::new("alice", "bot");
    for i in 0..100u32 {
        let d = limits.check(id, "pat", None).await.unwrap().unwrap();
        assert!(d.allowed(), "request {i}");
        assert_eq!(d.limit, 100);
        assert_eq!(d.remaining, 99 - i);
    }
    let d = limits.check(id, "pat", None).await.unwrap().unwrap();
    assert!(!d.allowed());
    let wait = d.retry_after.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(600),
        "{wait:?}"
    );
    // Other tokens are not affected.
    assert!(
        limits
            .check(Lineage::new("alice", "other"), "pat", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
}

#[tokio::test]
async fn a_lineage_keeps_its_budget_and_other_lineages_have_their_own() {
    let limits = RateLimits::new(Rate::per_minute(2).unwrap());
    // The same owner and name (what a rotation keeps), from distinct strings.
    let (owner, name) = (String::from("alice"), String::from("bot"));
    for _ in 0..2 {
        let d = limits.check(Lineage::new(&owner, &name), "pat", None);
        assert!(d.await.unwrap().unwrap().allowed());
    }
    let d = limits.check(Lineage::new("alice", "bot"), "pat", None);
    assert!(!d.await.unwrap().unwrap().allowed(), "the same lineage");
    for other in [
        ("alice", "bot2"),
        ("alicebot", ""),
        ("alic", "ebot"),
        ("bob", "bot"),
    ] {
        let d = limits.check(Lineage::new(other.0, other.1), "pat", None);
        assert!(d.await.unwrap().unwrap().allowed(), "{other:?}");
    }
    assert_ne!(
        Lineage::new("alic", "ebot").shared_key(),
        Lineage::new("alice", "bot").shared_key()
    );
    assert_eq!(
        Lineage::new(&owner, &name).shared_key(),
        Lineage::new("alice", "bot").shared_key()
    );
}

#[tokio::test]
async fn kinds_can_have_their_own_rate_or_none() {
    let limits = RateLimits::new(Rate::per_minute(2).unwrap())
        .with_kind("bulk", None)
        .with_kind("seat", Some(Rate::per_minute(1).unwrap()));
    let id = Lineage::new("alice", "bot");
    assert!(limits.check(id, "bulk", None).await.unwrap().is_none());
    assert!(
        limits
            .check(id, "seat", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
    assert!(
        !limits
            .check(id, "seat", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
}

#[tokio::test]
async fn a_token_rate_overrides_its_kind() {
    let limits = RateLimits::new(Rate::per_minute(100).unwrap()).with_kind("bulk", None);
    let id = Lineage::new("alice", "bot");
    for _ in 0..3 {
        assert!(
            limits
                .check(id, "pat", Some(3))
                .await
                .unwrap()
                .unwrap()
                .allowed()
        );
    }
    let d = limits.check(id, "pat", Some(3)).await.unwrap().unwrap();
    assert!(!d.allowed());
    assert_eq!(d.limit, 3);
    // An unlimited kind is limited by the token's own rate, and a rate equal to a
    // kind's shares its limiter.
    let other = Lineage::new("alice", "other");
    assert_eq!(
        limits
            .check(other, "bulk", Some(100))
            .await
            .unwrap()
            .unwrap()
            .limit,
        100
    );
    assert!(limits.check(other, "bulk", None).await.unwrap().is_none());
}

#[tokio::test]
async fn a_token_cannot_raise_its_own_rate_above_the_servers() {
    let limits = RateLimits::new(Rate::per_minute(100).unwrap());
    let id = Lineage::new("alice", "bot");
    for i in 0..100u32 {
        let d = limits
            .check(id, "pat", Some(u32::MAX))
            .await
            .unwrap()
            .unwrap();
        assert!(d.allowed(), "request {i}");
        assert_eq!(d.limit, 100, "the server's rate, not the token's");
    }
    let d = limits
        .check(id, "pat", Some(u32::MAX))
        .await
        .unwrap()
        .unwrap();
    assert!(!d.allowed(), "the 101st request is refused");
    // A lower rate of its own still applies.
    assert_eq!(
        limits.effective_rate("pat", Some(7)),
        Some(Rate::per_minute(7).unwrap())
    );
}

#[tokio::test]
async fn hostile_distinct_rates_do_not_grow_the_limiters() {
    // Under an unlimited kind a token's own rate applies as it is: the worst case.
    let limits = RateLimits::new(Rate::per_minute(100).unwrap()).with_kind("bulk", None);
    for n in 1..=10_000u32 {
        for own in [n, u32::MAX - n, n.wrapping_mul(2_654_435_761)] {
            let own = own.max(1);
            let name = format!("t{n}-{own}");
            let d = limits
                .check(Lineage::new("alice", &name), "bulk", Some(own))
                .await
                .unwrap()
                .unwrap();
            assert!(d.limit <= own, "{own} rounded up to {}", d.limit);
            assert!(
                u64::from(d.limit) * 4 >= u64::from(own) * 3,
                "{own} -> {}: rounded down by a quarter at most",
                d.limit
            );
        }
    }
    let made = limits.token_rate_limiters();
    assert!(
        made <= MAX_TOKEN_RATE_LIMITERS,
        "{made} limiters for 30 000 distinct rates"
    );
}

#[tokio::test]
async fn an_owners_tokens_share_the_owners_budget() {
    let limits = RateLimits::new(Rate::per_minute(100).unwrap())
        .per_owner(Some(Rate::per_minute(3).unwrap()));
    let (a, b) = (Lineage::new("alice", "ci"), Lineage::new("alice", "laptop"));
    let d = limits.check(a, "pat", None).await.unwrap().unwrap();
    assert!(d.allowed());
    assert_eq!(
        (d.limit, d.remaining),
        (3, 2),
        "the tighter budget is reported"
    );
    assert!(
        limits
            .check(b, "pat", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
    assert!(
        limits
            .check(a, "pat", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
    let d = limits.check(b, "pat", None).await.unwrap().unwrap();
    assert!(!d.allowed(), "the owner's fourth request");
    assert!(d.retry_after.is_some());
    let other = Lineage::new("bob", "ci");
    assert!(
        limits
            .check(other, "pat", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
    // Under an unlimited kind the owner's budget still applies.
    let limits = RateLimits::new(Rate::per_minute(100).unwrap())
        .with_kind("bulk", None)
        .per_owner(Some(Rate::per_minute(1).unwrap()));
    assert!(
        limits
            .check(a, "bulk", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
    assert!(
        !limits
            .check(b, "bulk", None)
            .await
            .unwrap()
            .unwrap()
            .allowed()
    );
    assert_ne!(a.owner_shared_key(), a.shared_key());
    assert_eq!(a.owner_shared_key(), b.owner_shared_key());
    assert_ne!(a.owner_shared_key(), other.owner_shared_key());
}

#[test]
fn the_series_never_rounds_up_and_has_at_most_the_cap() {
    let mut seen = std::collections::HashSet::new();
    let samples = (1..=100_000u32)
        .chain((0..32).map(|b| 1u32 << b))
        .chain((0..32).map(|b| (1u32 << b).wrapping_sub(1).max(1)))
        .chain([u32::MAX, 4_000_000_000, 999_999_999]);
    for n in samples {
        let r = series_floor(Rate::per_minute(n).unwrap()).requests();
        assert!(r <= n && r >= 1, "{n} -> {r}");
        seen.insert(r);
    }
    assert!(seen.len() <= MAX_TOKEN_RATE_LIMITERS, "{}", seen.len());
}

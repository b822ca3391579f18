//! The checks of the optional methods (bindings and inactivity expiry), and of a store that
//! answers [`StoreError::Unsupported`] for them: the requests it leads to fail closed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use time::OffsetDateTime;
use tower::{Layer, Service};

use super::{now, owner, record, rules};
use crate::middleware::AuthLayer;
use crate::rate_limit::{Rate, RateLimits};
use crate::store::{ReleaseOutcome, StoreError, TokenId, TokenStore};
use crate::token::TokenKind;
use crate::tokens::{NewToken, Tokens};

/// Which optional methods a store implements. Each is probed with a call that changes
/// nothing; a store that does not implement one must answer [`StoreError::Unsupported`].
pub(super) struct Supported {
    pub(super) bind: bool,
    pub(super) release: bool,
    pub(super) expire_inactive: bool,
}

fn unsupported<T>(answer: &Result<T, StoreError>) -> bool {
    matches!(answer, Err(StoreError::Unsupported(_)))
}

pub(super) async fn probe(s: &Arc<dyn TokenStore>) -> Supported {
    let t = now();
    let bind = s.bind(&TokenId::random(), "probe", t).await;
    assert!(
        unsupported(&bind) || matches!(bind, Ok(None)),
        "binding an unknown id answers None (or Unsupported when bindings are not implemented)"
    );
    let release = s.release(&TokenId::random(), t, Duration::ZERO).await;
    assert!(
        unsupported(&release) || matches!(release, Err(StoreError::NotFound)),
        "releasing an unknown id is NotFound (or Unsupported when releases are not implemented)"
    );
    // Nothing was active before 1970: a pass with that cutoff changes nothing.
    let expire = s
        .expire_inactive(OffsetDateTime::UNIX_EPOCH, t, &["pat".to_owned()], &[])
        .await;
    assert!(
        unsupported(&expire) || expire.is_ok(),
        "expire_inactive answers, or is Unsupported"
    );
    Supported {
        bind: !unsupported(&bind),
        release: !unsupported(&release),
        expire_inactive: !unsupported(&expire),
    }
}

/// The service behind the layer: answers 200 to whatever gets through.
#[derive(Clone)]
struct Echo;

impl<B> Service<http::Request<B>> for Echo {
    type Response = http::Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(Empty::new())))
    }
}

/// A store without bindings fails closed: a token of a binding kind is refused with 503
/// `store_unavailable` on both verification paths (without and with policies), and stays
/// unbound.
pub(super) async fn unsupported_bindings_fail_closed(s: &Arc<dyn TokenStore>) {
    let seat = TokenKind::new("seat", "seat")
        .and_then(|k| k.with_binding("X-Machine-Id"))
        .expect("a valid kind");
    let tokens = Tokens::builder(s.clone())
        .kind(TokenKind::pat())
        .kind(seat)
        .build()
        .expect("a valid manager");
    let o = owner("unsupported-bind");
    let issued = tokens
        .issue(NewToken::new(&o, "seat").kind("seat"))
        .await
        .expect("issue a token of a binding kind");
    let layers = [
        AuthLayer::new(tokens.clone()),
        AuthLayer::new(tokens.clone()).with_rate_limits(RateLimits::new(
            Rate::per_minute(1000).expect("a valid rate"),
        )),
    ];
    for layer in layers {
        let mut svc = layer.layer(Echo);
        let req = http::Request::builder()
            .uri("/")
            .header(
                "authorization",
                format!("Bearer {}", issued.token.expose_secret()),
            )
            .header("x-machine-id", "machine-a")
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        std::future::poll_fn(|cx| Service::<http::Request<Empty<Bytes>>>::poll_ready(&mut svc, cx))
            .await
            .expect("ready");
        let res = svc.call(req).await.expect("a response");
        assert_eq!(
            res.status(),
            http::StatusCode::SERVICE_UNAVAILABLE,
            "a store without bindings must refuse tokens of binding kinds with 503"
        );
        let body = res
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("\"store_unavailable\""),
            "the 503 of a store without bindings is `store_unavailable`: {body}"
        );
    }
    let got = s
        .get(&issued.record.id)
        .await
        .expect("get")
        .expect("present");
    assert!(
        got.extras().bound_to.is_none(),
        "a refused first use binds nothing"
    );
}

pub(super) async fn bind_sets_once(s: &Arc<dyn TokenStore>) {
    let t = now();
    let r = record(&owner("bind"), "seat", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    assert_eq!(
        s.bind(&r.id, "machine-a", t)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-a"),
        "the first bind binds"
    );
    let later = t + Duration::from_secs(5);
    assert_eq!(
        s.bind(&r.id, "machine-b", later)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-a"),
        "a bound token stays bound and reports its binding"
    );
    assert_eq!(
        s.bind(&r.id, "machine-a", later)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-a")
    );
    let got = s.get(&r.id).await.expect("get").expect("present");
    assert_eq!(got.extras().bound_to.as_deref(), Some("machine-a"));
    assert_eq!(
        got.extras().bound_at,
        Some(t),
        "bound_at is the time of the first bind"
    );
    let found = s
        .find_by_hash(&r.hash)
        .await
        .expect("find")
        .expect("present");
    assert_eq!(
        found.extras().bound_to.as_deref(),
        Some("machine-a"),
        "lookups see the binding"
    );
    assert!(
        s.bind(&TokenId::random(), "machine-a", t)
            .await
            .expect("bind unknown")
            .is_none(),
        "binding an unknown id answers None"
    );
}

pub(super) async fn concurrent_first_uses_bind_one(s: &Arc<dyn TokenStore>) {
    let t = now();
    let r = record(&owner("bind-race"), "seat", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            let id = r.id;
            tokio::spawn(async move {
                let fp = format!("machine-{i}");
                let bound = s.bind(&id, &fp, t).await;
                (fp, bound)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut answers = std::collections::HashSet::new();
    for task in tasks {
        let (fp, bound) = task.await.expect("task");
        let bound = bound.expect("bind in the race").expect("the record exists");
        if bound == fp {
            winners.push(fp);
        }
        answers.insert(bound);
    }
    assert_eq!(
        winners.len(),
        1,
        "20 concurrent first uses with different fingerprints must bind exactly one"
    );
    assert_eq!(answers.len(), 1, "every caller must learn the same binding");
    let got = s.get(&r.id).await.expect("get").expect("present");
    assert_eq!(got.extras().bound_to.as_ref(), Some(&winners[0]));
}

pub(super) async fn release_respects_its_interval(s: &Arc<dyn TokenStore>) {
    let t = now();
    let day = Duration::from_secs(24 * 3600);
    let r = record(&owner("release"), "seat", t);
    s.insert(r.clone(), rules(t, None)).await.expect("insert");
    assert_eq!(
        s.release(&r.id, t, day).await.expect("release"),
        ReleaseOutcome::NotBound,
        "an unbound token has nothing to release"
    );
    s.bind(&r.id, "machine-a", t).await.expect("bind");
    assert_eq!(
        s.release(&r.id, t, day).await.expect("release"),
        ReleaseOutcome::Released
    );
    let got = s.get(&r.id).await.expect("get").expect("present");
    assert_eq!(
        (
            got.extras().bound_to.as_deref(),
            got.extras().bound_at,
            got.extras().released_at
        ),
        (None, None, Some(t)),
        "a release clears the binding and records when"
    );
    let t2 = t + Duration::from_secs(60);
    assert_eq!(
        s.bind(&r.id, "machine-b", t2)
            .await
            .expect("bind")
            .as_deref(),
        Some("machine-b"),
        "after a release the next first use binds"
    );
    let t3 = t + Duration::from_secs(3600);
    assert_eq!(
        s.release(&r.id, t3, day).await.expect("release"),
        ReleaseOutcome::TooSoon {
            next_allowed_at: t + day
        },
        "a second release within the interval is refused with the next allowed time"
    );
    assert_eq!(
        s.get(&r.id)
            .await
            .expect("get")
            .expect("present")
            .extras()
            .bound_to
            .as_deref(),
        Some("machine-b"),
        "a refused release changes nothing"
    );
    assert_eq!(
        s.release(&r.id, t + day, day).await.expect("release"),
        ReleaseOutcome::Released,
        "a release is allowed again once the interval is over"
    );
    assert!(
        matches!(
            s.release(&TokenId::random(), t, day).await,
            Err(StoreError::NotFound)
        ),
        "releasing an unknown id is NotFound"
    );
}

pub(super) async fn inactive_tokens_expire(s: &Arc<dyn TokenStore>) {
    let t = now();
    let weeks = Duration::from_secs(14 * 24 * 3600);
    let long_ago = t - weeks - Duration::from_secs(3600);
    let cutoff = t - weeks;
    let o = owner("inactive");
    let idle = record(&o, "idle", long_ago);
    let mut used = record(&o, "used", long_ago);
    used.last_used_at = Some(t - Duration::from_secs(60));
    let fresh = record(&o, "fresh", t - Duration::from_secs(60));
    let mut seat = record(&o, "seat", long_ago);
    seat.kind = "seat".into();
    seat.extras_mut().bound_to = Some("machine-a".into());
    seat.extras_mut().bound_at = Some(long_ago);
    seat.extras_mut().released_at = Some(long_ago);
    let mut unbound_seat = record(&o, "unbound-seat", long_ago);
    unbound_seat.kind = "seat".into();
    let mut expired = record(&o, "expired", long_ago);
    expired.expires_at = Some(t - Duration::from_secs(1));
    let mut other_kind = record(&o, "other-kind", long_ago);
    other_kind.kind = "other".into();
    let mut other_seat = record(&o, "other-seat", long_ago);
    other_seat.kind = "other-seat".into();
    other_seat.extras_mut().bound_to = Some("machine-b".into());
    other_seat.extras_mut().bound_at = Some(long_ago);
    for r in [
        &idle,
        &used,
        &fresh,
        &seat,
        &unbound_seat,
        &expired,
        &other_kind,
        &other_seat,
    ] {
        s.insert((*r).clone(), rules(long_ago, None))
            .await
            .expect("insert");
    }
    let kinds = ["pat".to_owned(), "seat".to_owned()];
    let release = ["seat".to_owned(), "other-seat".to_owned()];
    let out = s
        .expire_inactive(cutoff, t, &kinds, &release)
        .await
        .expect("expire_inactive");
    assert!(
        out.revoked.contains(&idle.id),
        "a token silent since before the cutoff is revoked"
    );
    assert!(
        out.released.contains(&seat.id),
        "an idle token of a release kind loses its binding"
    );
    for kept in [&used, &fresh, &seat, &unbound_seat, &expired] {
        assert!(
            !out.revoked.contains(&kept.id),
            "{} must not be revoked",
            kept.name
        );
    }
    assert!(!out.released.contains(&unbound_seat.id));
    assert!(
        !out.revoked.contains(&other_kind.id) && !out.released.contains(&other_seat.id),
        "records of kinds the call does not name are left alone"
    );
    let other_now = s.get(&other_kind.id).await.expect("get").expect("present");
    assert!(
        other_now.extras().revoked_at.is_none(),
        "another kind's idle token stays valid"
    );
    let other_seat_now = s.get(&other_seat.id).await.expect("get").expect("present");
    assert_eq!(
        other_seat_now.extras().bound_to.as_deref(),
        Some("machine-b"),
        "another kind's idle seat stays bound"
    );
    let idle_now = s.get(&idle.id).await.expect("get").expect("present");
    assert_eq!(idle_now.extras().revoked_at, Some(t), "revoked at `now`");
    let seat_now = s.get(&seat.id).await.expect("get").expect("present");
    assert_eq!(
        (
            seat_now.extras().revoked_at,
            seat_now.extras().bound_to.as_deref(),
            seat_now.extras().released_at
        ),
        (None, None, Some(long_ago)),
        "an automatic release keeps the token and the time of the last manual release"
    );
    for kept in [&used, &fresh, &unbound_seat] {
        let r = s.get(&kept.id).await.expect("get").expect("present");
        assert!(
            r.extras().revoked_at.is_none(),
            "{} must stay valid",
            kept.name
        );
    }
    let again = s
        .expire_inactive(cutoff, t, &kinds, &release)
        .await
        .expect("expire_inactive");
    assert!(
        !again.revoked.contains(&idle.id) && !again.released.contains(&seat.id),
        "a second pass changes nothing more"
    );
}

//! Attack pass 22b: records read back from documents (feature `serde`) and the lifetime a
//! renewal by rotation gives.

use std::time::Duration;

use keygate::store::TokenRecord;
use keygate::token::TokenKind;
use keygate::tokens::ImportToken;
use keygate::{MemoryStore, TokenHash, Tokens};
use time::OffsetDateTime;
use time::macros::datetime;

const DAY: Duration = Duration::from_secs(86_400);

/// A manager with `pat` and a `lic` kind whose tokens live at most 90 days.
fn manager() -> Tokens {
    Tokens::builder(MemoryStore::new())
        .kind(TokenKind::pat())
        .kind(
            TokenKind::new("licence", "lic")
                .unwrap()
                .with_max_lifetime(90 * DAY),
        )
        .build()
        .unwrap()
}

/// Imports a token of `kind` for alice, created at `created_at`, expiring in 30 days.
async fn import(tokens: &Tokens, kind: &str, created_at: OffsetDateTime) -> TokenRecord {
    let expires_at = OffsetDateTime::now_utc() + 30 * DAY;
    let name = format!("imported {created_at}");
    let req = ImportToken::new(
        "alice",
        name,
        TokenHash::of(&format!("{kind}_{created_at}")),
    )
    .kind(kind)
    .created_at(created_at)
    .expires_at(expires_at);
    tokens.import(req).await.expect("the import is valid")
}

#[tokio::test]
async fn renewing_an_imported_token_by_rotation_gives_no_more_than_its_kinds_lifetime() {
    // A token imported from another system, made three years ago, expiring in 30 days
    // (within the kind's 90). Its owner rotates it: the new token used to get the old one's
    // whole lifetime, three years and a month from now, past the kind's 90-day maximum.
    let tokens = manager();
    let old = import(&tokens, "licence", datetime!(2023-01-01 00:00 UTC)).await;
    let before = OffsetDateTime::now_utc();
    let new = tokens.rotate("alice", old.id, None).await.expect("rotated");
    let life = new.record.expires_at.expect("it keeps an expiry") - before;
    assert!(
        life <= 90 * DAY + Duration::from_secs(60),
        "the new licence lives {life} from now"
    );
    assert!(
        life >= 89 * DAY,
        "it still gets the kind's lifetime: {life}"
    );
}

#[tokio::test]
async fn renewing_a_token_imported_with_an_ancient_creation_date_neither_panics_nor_outlives_a_century()
 {
    let tokens = manager();
    // The zero time of some languages' date types (year 1) gives a lifetime of two
    // thousand years; a token of a kind without a maximum gets at most the 100 years an
    // issue may give.
    let old = import(&tokens, "pat", datetime!(0001-01-01 00:00 UTC)).await;
    let new = tokens.rotate("alice", old.id, None).await.expect("rotated");
    let life = new.record.expires_at.expect("it keeps an expiry") - OffsetDateTime::now_utc();
    assert!(
        life <= 100 * 366 * DAY,
        "the new token lives {life} from now"
    );
    // The earliest date there is: now plus that lifetime overflowed the date type, a
    // panic in the request's task.
    let old = import(&tokens, "pat", time::Date::MIN.midnight().assume_utc()).await;
    let new = tokens.rotate("alice", old.id, None).await.expect("rotated");
    let life = new.record.expires_at.expect("it keeps an expiry") - OffsetDateTime::now_utc();
    assert!(
        life <= 100 * 366 * DAY,
        "the new token lives {life} from now"
    );
}

#[test]
fn a_document_that_names_a_field_twice_is_refused_not_read_as_the_last_or_first() {
    // A revoked, expiring, restricted record. A document that repeats a field (a revocation
    // followed by `null`, a second `extras`, a second permission list) could otherwise read
    // back live, without expiry or with other permissions, depending on which copy wins.
    let t = datetime!(2026-01-01 00:00 UTC);
    let record = TokenRecord::builder(
        keygate::store::TokenId::random(),
        TokenHash::of("pat_x"),
        "pat",
        "alice",
        "ci",
        t,
    )
    .permissions(keygate::Permissions::parse(["things:read"]).unwrap())
    .expires_at(t + time::Duration::days(1))
    .revoked_at(t)
    .build();
    let text = serde_json::to_string(&record).unwrap();
    let back: TokenRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back, record, "the document as written reads back");
    let close = text.len() - 1;
    let revoked = r#""revoked_at":"2026-01-01T00:00:00Z""#;
    assert!(text.contains(revoked), "{text}");
    for (what, doc) in [
        (
            "revocation then null",
            text.replace(revoked, &format!(r#"{revoked},"revoked_at":null"#)),
        ),
        (
            "a second extras",
            format!(r#"{},"extras":null}}"#, &text[..close]),
        ),
        (
            "a second expiry",
            format!(r#"{},"expires_at":null}}"#, &text[..close]),
        ),
        (
            "a second permission list",
            format!(r#"{},"permissions":["*"]}}"#, &text[..close]),
        ),
        (
            "an escaped spelling of the same name",
            format!(r#"{},"expires\u005fat":null}}"#, &text[..close]),
        ),
    ] {
        let err = serde_json::from_str::<TokenRecord>(&doc).expect_err(what);
        assert!(err.to_string().contains("duplicate field"), "{what}: {err}");
    }
}

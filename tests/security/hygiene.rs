//! Invisible names, bounded waits, and secrets in configuration and files.

use http::{Method, StatusCode};
use keygate::{MemoryStore, NewToken, TokenError, Tokens};
use serde_json::json;

use crate::support::{Server, admin_basic, json_request, request};

/// Texts that look like something else on screen, or that rearrange what is around them:
/// a zero-width space, a right-to-left override, the line and paragraph separators, every
/// bidirectional control, a byte-order mark, a soft hyphen and a C0 control.
const INVISIBLE: &[&str] = &[
    "deploy\u{200b}",
    "\u{202e}gpj.exe",
    "line\u{2028}break",
    "para\u{2029}break",
    "\u{061c}arabic-mark",
    "ltr\u{200e}mark",
    "rtl\u{200f}mark",
    "\u{202a}embed",
    "\u{202b}embed",
    "\u{202c}pop",
    "\u{202d}override",
    "\u{2066}isolate",
    "\u{2067}isolate",
    "\u{2068}isolate",
    "\u{2069}pop",
    "\u{feff}bom",
    "soft\u{00ad}hyphen",
    "zero\u{200d}joiner",
    "bell\u{7}",
];

#[tokio::test]
async fn invisible_characters_in_a_name_or_description_are_refused_and_create_nothing() {
    let server = Server::start().await;
    for text in INVISIBLE {
        for body in [
            json!({ "name": text }),
            json!({ "name": "visible", "description": text }),
        ] {
            let a = server
                .send(json_request(
                    Method::POST,
                    "/api/v1/tokens",
                    &admin_basic(),
                    &body,
                ))
                .await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text);
            assert_eq!(a.code(), "invalid_request", "{body}");
            assert!(a.json().get("token").is_none());
        }
    }
    // Nothing was created: the list (and so the token page, which shows this list) is
    // as empty as before.
    let list = server
        .send(request(Method::GET, "/api/v1/tokens", &admin_basic()))
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.json(), json!([]));
    // Visible text from any script is still welcome.
    server
        .create(json!({ "name": "déploiement-東京", "description": "مرحبا, שלום" }))
        .await;
}

#[tokio::test]
async fn the_library_refuses_invisible_names_descriptions_and_owners() {
    let tokens = Tokens::new(MemoryStore::new());
    for text in INVISIBLE {
        let name = tokens.issue(NewToken::new("alice", *text)).await;
        assert!(
            matches!(name, Err(TokenError::InvalidName(_))),
            "{text:?}: {name:?}"
        );
        let description = tokens
            .issue(NewToken::new("alice", "ok").description(*text))
            .await;
        assert!(
            matches!(description, Err(TokenError::InvalidDescription(_))),
            "{text:?}: {description:?}"
        );
        let owner = tokens.issue(NewToken::new(*text, "ok")).await;
        assert!(
            matches!(owner, Err(TokenError::InvalidOwner(_))),
            "{text:?}: {owner:?}"
        );
    }
    assert!(tokens.list("alice").await.unwrap().is_empty());
}

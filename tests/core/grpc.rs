//! `examples/grpc.rs` driven by a real tonic client over a loopback TCP connection:
//! refusals arrive as gRPC statuses (16 without a token or with a bad one, 7 without the
//! method's permission), a valid token sent as `authorization: Bearer …` metadata gets OK.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../examples/grpc.rs"]
mod recipe;

use http::uri::PathAndQuery;
use keygate::{MemoryStore, NewToken, Permissions, Tokens};
use recipe::{Empty, PURGE, Reply, WHOAMI};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// Serves the example's service on a free loopback port and connects a channel to it.
async fn start(tokens: Tokens) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(recipe::serve(recipe::app(tokens), listener));
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Calls `method` with one metadata entry written out here, so the test pins what goes on
/// the wire.
async fn call(
    channel: &Channel,
    method: &'static str,
    metadata: Option<(&'static str, String)>,
) -> Result<String, Status> {
    let mut req = tonic::Request::new(Empty {});
    if let Some((key, value)) = metadata {
        req.metadata_mut().insert(key, value.parse().unwrap());
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let res = grpc
        .unary(
            req,
            PathAndQuery::from_static(method),
            ProstCodec::<Empty, Reply>::default(),
        )
        .await?;
    Ok(res.into_inner().text)
}

fn bearer(token: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {token}")))
}

#[tokio::test]
async fn grpc_refusals_are_grpc_statuses_and_a_valid_bearer_token_gets_through() {
    let tokens = Tokens::new(MemoryStore::new());
    let reader = tokens
        .issue(
            NewToken::new("reader@example.com", "laptop")
                .permissions(Permissions::parse(["notes:read"]).unwrap()),
        )
        .await
        .unwrap();
    let purger = tokens
        .issue(
            NewToken::new("ops@example.com", "cron")
                .permissions(Permissions::parse(["notes:purge"]).unwrap()),
        )
        .await
        .unwrap();
    let revoked = tokens
        .issue(NewToken::new("reader@example.com", "old"))
        .await
        .unwrap();
    tokens
        .revoke("reader@example.com", revoked.record.id)
        .await
        .unwrap();
    let reader_token = reader.token.expose_secret().to_owned();
    let channel = start(tokens).await;

    // No token: 16 UNAUTHENTICATED, and so is a token sent under another metadata key.
    let s = call(&channel, WHOAMI, None).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert_eq!(s.message(), "Missing API token");
    let s = call(&channel, WHOAMI, Some(("x-api-key", reader_token.clone())))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);

    // A bad token and a revoked one: 16, with one message that does not tell them apart.
    let bad = call(&channel, WHOAMI, bearer("pat_not-a-real-token"))
        .await
        .unwrap_err();
    let gone = call(&channel, WHOAMI, bearer(revoked.token.expose_secret()))
        .await
        .unwrap_err();
    for s in [&bad, &gone] {
        assert_eq!(s.code(), Code::Unauthenticated);
        assert_eq!(s.message(), "Invalid API token");
    }

    // A valid token: OK, and the handler sees whose it is.
    let text = call(&channel, WHOAMI, bearer(&reader_token)).await.unwrap();
    assert!(text.contains("reader@example.com"), "{text}");
    // The example's own client sends it the same way.
    let text = recipe::call(channel.clone(), WHOAMI, Some(&reader_token))
        .await
        .unwrap();
    assert!(text.contains("reader@example.com"), "{text}");

    // Purge needs notes:purge: 7 PERMISSION_DENIED naming it, OK for a token that has it.
    let s = call(&channel, PURGE, bearer(&reader_token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert_eq!(s.message(), "Missing permission: notes:purge");
    let s = call(&channel, PURGE, None).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let text = call(&channel, PURGE, bearer(purger.token.expose_secret()))
        .await
        .unwrap();
    assert_eq!(text, "all notes purged");
}

//! The OpenAPI 3.1 document of the management API: the paths of the route table
//! ([`Routes`]), generated from the handlers, with the API's info, schemas and security
//! schemes.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Routes;
use super::error::ErrorBody;
use super::types::{CreateToken, IdentityView, RotateToken, TokenStatus, TokenView};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate management API",
        description = "Create, list, rotate and revoke API tokens. Creating needs HTTP Basic \
                       authentication (email and password); the other routes also take a \
                       bearer token with `tokens:read` / `tokens:write`.",
    ),
    components(schemas(CreateToken, RotateToken, TokenView, TokenStatus, IdentityView, ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "tokens", description = "Personal access tokens"),
        (name = "identity", description = "Who is calling"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI 3.1 document of the management routes (paths relative to where the router is
/// mounted), as served at `GET /openapi.json`.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(Routes::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

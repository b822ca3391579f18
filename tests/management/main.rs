//! The management API, the `keygate` command-line tool, the token page, the recipes in
//! `examples/` and the reference server: one test binary, a module per surface.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod cli_serve;
mod crash_safety;
mod edit_and_admin;
mod expiry;
mod forward_auth;
mod host_sign_in;
mod import;
mod leaks;
mod management_api;
mod openapi_addon;
mod owner_rate_limit;
mod recipe_iggy;
mod recipe_rack_gateway;
mod recipe_rapidpipeline;
mod recipe_recurse_center;
mod recipe_tokencraft;
mod recipes_doc;
mod reference_server;
mod secret_hygiene_server;
mod server_ops;
mod server_postgres;
mod server_redis;
mod token_details;
mod ui;

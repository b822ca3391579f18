//! Attack tests: each one performs an attack on the crate or on the reference server, as
//! someone with network access, a leaked token or a co-tenant account would, and asserts
//! that it fails. SECURITY.md names the test behind each promise.
//!
//! The server is driven through `oneshot` on `build_app`'s router; a `ConnectInfo`
//! extension stands in for the socket peer.

#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod hygiene;
use keygate::server;
#[allow(dead_code)]
mod support;

mod attacks_20;
mod attacks_21;
mod attacks_22;
mod attacks_22b;
mod audit_and_cache;
mod client_address;
mod deployment;
mod last_use;
mod leaks;
mod lineage;
mod pepper;
mod pipeline;
mod sign_in;
mod surface;
mod tokens;

//! The store backends (SQLite, PostgreSQL, Redis), the cache and timeout wrappers, the
//! shared rate limiter and the SQL audit sinks: one test binary, a module per backend.
//! PostgreSQL and Redis tests skip without their service, or fail when `CI` is set.

#[path = "../common/mod.rs"]
mod common;

mod audit_stores;
mod cached_store;
mod migrations;
mod postgres_store;
mod redis_failure_limit;
mod redis_rate_limit;
mod redis_store;
mod sqlite_store;
mod tls;

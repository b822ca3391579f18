//! The layer, the extractors, the policies and the parsers through the public API, on the
//! in-memory store unless a test says otherwise: one test binary, a module per concern.

#[path = "../common/mod.rs"]
mod common;

mod axum_extractors;
mod defaults;
mod fuzz_corpus;
mod grpc;
mod hostile_input;
mod layer;
mod memory_store;
mod parser_properties;
mod policies;
mod races;
mod secret_hygiene;
mod span_fields;
mod token_policies;
mod token_sources;

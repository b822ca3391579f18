//! The conformance suite on `MemoryStore`.

#![allow(clippy::unwrap_used)]

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_conformance_suite() {
    keygate::store::conformance::run(keygate::MemoryStore::new()).await;
    keygate::store::conformance::usage_details_are_kept(keygate::MemoryStore::new()).await;
}

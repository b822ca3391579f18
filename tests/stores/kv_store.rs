//! `examples/kv_store.rs`, a store of one's own over a plain key-value table: it passes the
//! core conformance suite, and its `main` issues and verifies a token.

#[allow(dead_code)]
#[path = "../../examples/kv_store.rs"]
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_store_example_passes_the_core_suite() {
    keygate::store::conformance::run_core(example::KvStore::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_store_example_passes_the_whole_suite_failing_closed_without_optional_methods() {
    // It implements no optional method: `run` checks that they fail closed (a token of a
    // binding kind is refused with 503) and that everything else still holds.
    keygate::store::conformance::run(example::KvStore::default()).await;
}

#[test]
fn kv_store_example_main_issues_and_verifies_a_token() {
    example::main().expect("the example runs");
}

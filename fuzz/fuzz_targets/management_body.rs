//! Fuzz target: `management_body` (see `keygate_fuzz::ManagementHarness`).
#![no_main]

use std::sync::OnceLock;

static HARNESS: OnceLock<keygate_fuzz::ManagementHarness> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS
        .get_or_init(keygate_fuzz::ManagementHarness::new)
        .body(data);
});

//! Fuzz target: `basic` (see `keygate_fuzz::basic`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::basic(data));

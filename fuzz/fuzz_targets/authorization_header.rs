//! Fuzz target: `authorization_header` (see `keygate_fuzz::authorization_header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::authorization_header(data));

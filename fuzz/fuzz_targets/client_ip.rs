//! Fuzz target: `client_ip` (see `keygate_fuzz::client_ip`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keygate_fuzz::client_ip(data));

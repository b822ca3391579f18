//! Replays every file of `fuzz/corpus/<target>/` through the same checks as the cargo-fuzz
//! targets (`fuzz/src/lib.rs`), as an ordinary test: no parser panics, the management API
//! never answers 5xx to any of the bodies, the client address is never one a trusted-proxy
//! rule says not to believe, and a configuration error never shows a secret. No fuzzing happens here; run the fuzzers with
//! `cargo fuzz run <target>` from `fuzz/`.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: the seed corpus is missing",
        dir.display()
    );
    files
}

/// Runs `check` on every file, naming the file that failed.
fn replay(target: &str, check: impl Fn(&[u8])) {
    for (path, data) in corpus(target) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(result.is_ok(), "{target}: {} failed", path.display());
    }
}

#[test]
fn authorization_header_corpus() {
    replay("authorization_header", checks::authorization_header);
}

#[test]
fn token_corpus() {
    replay("token", checks::token);
}

#[test]
fn basic_corpus() {
    replay("basic", checks::basic);
}

#[test]
fn management_body_corpus() {
    let harness = checks::ManagementHarness::new();
    replay("management_body", |data| harness.body(data));
}

#[test]
fn client_ip_corpus() {
    replay("client_ip", checks::client_ip);
}

#[test]
fn config_corpus() {
    replay("config", checks::config);
}

/// Every corpus directory belongs to a target this file replays, so none is forgotten.
#[test]
fn every_corpus_directory_is_replayed() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "authorization_header",
            "basic",
            "client_ip",
            "config",
            "management_body",
            "token"
        ]
    );
}

//! The `keygate` command-line tool (feature `cli`).
fn main() {}

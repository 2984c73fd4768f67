//! The `ovasabi` binary.
fn main() {}

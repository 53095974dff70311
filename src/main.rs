//! provd binary.
fn main() {}

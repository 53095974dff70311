//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The directory of the shared real test vectors.
///
/// It is `../../shared/vectors` from this crate, or `$PROVD_VECTORS_DIR` when set. A missing
/// directory fails the test: silently skipping would let the vectors rot unnoticed.
pub fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("PROVD_VECTORS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
    };
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: check out the shared vectors there or set PROVD_VECTORS_DIR",
        dir.display()
    );
    dir
}

//! Fuzz the air-gap proof bundle reader and its offline checks: they must never panic.
#![no_main]

use actors::domain::bundle::{BundleLimits, verify_bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = BundleLimits {
        max_bundle_bytes: 1 << 20,
        max_chunks: 1000,
    };
    let _ = verify_bundle(data, &limits, None);
});

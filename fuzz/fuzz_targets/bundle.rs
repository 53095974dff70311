//! Fuzz the Sigstore bundle, trusted-root and receipt parsers: they must never panic.
#![no_main]

use actors::domain::receipt::{Receipt, parse_v1_response};
use actors::domain::sigstore::{Bundle, TrustedRoot, verify_bundle_tlog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_v1_response(data);
    let _ = TrustedRoot::from_json(data);
    if let Ok(bundle) = Bundle::from_json(data) {
        for tle in &bundle.tlog_entries {
            if let Ok(receipt) = Receipt::from_tle(tle) {
                let _ = receipt.verify_inclusion_proof();
                let _ = receipt.to_v1();
            }
        }
        let _ = verify_bundle_tlog(&bundle, &TrustedRoot { tlogs: vec![] });
    }
});

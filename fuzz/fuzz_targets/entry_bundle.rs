//! Entry-bundle decoding must never panic, and whatever it accepts must re-encode to the same
//! bytes.
#![no_main]

use actors::domain::tiles::{decode_entry_bundle, encode_entry_bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_entry_bundle(data) {
        let encoded = encode_entry_bundle(&entries).expect("decoded entries re-encode");
        assert_eq!(encoded, data);
    }
});

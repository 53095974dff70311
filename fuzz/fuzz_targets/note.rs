//! Fuzz the signed-note and checkpoint parsers: they must never panic.
#![no_main]

use actors::domain::note::{self, Checkpoint, Note, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Note::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse(text);
        let _ = Verifier::from_vkey(text);
    }
    let _ = note::verify_checkpoint(data, &[], None);
});

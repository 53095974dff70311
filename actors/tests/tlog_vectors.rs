//! The transparency-log domain code against real, public test vectors in `shared/vectors`.

use std::path::{Path, PathBuf};

use actors::domain::note::{
    self, Checkpoint, Note, NoteError, Signer, Verifier, open, verify_checkpoint,
};

/// The vectors directory: `$PROVD_VECTORS_DIR`, or `../../shared/vectors` from this crate.
/// A missing directory fails the test rather than skipping it.
fn vectors() -> PathBuf {
    let dir = std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: set PROVD_VECTORS_DIR to the shared/vectors directory",
        dir.display()
    );
    dir
}

fn read(rel: &str) -> Vec<u8> {
    let path = vectors().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_str(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap()
}

#[test]
fn golang_mod_note_signing_is_byte_exact() {
    let signer = Signer::from_skey(&read_str("golang-mod-note/peter.skey.txt")).unwrap();
    let text = read_str("golang-mod-note/note_text.txt");
    let signed = note::sign_note(&text, &[&signer]).unwrap();
    assert_eq!(signed, read_str("golang-mod-note/signed_note_peter.txt"));
    let peter = Verifier::from_vkey(&read_str("golang-mod-note/peter.vkey.txt")).unwrap();
    assert_eq!(signer.verifier(), &peter);
}

#[test]
fn golang_mod_two_signature_note_with_one_key() {
    let peter = Verifier::from_vkey(&read_str("golang-mod-note/peter.vkey.txt")).unwrap();
    let enoch = Verifier::from_vkey(&read_str("golang-mod-note/enoch.vkey.txt")).unwrap();
    let two = read("golang-mod-note/signed_note_peter_enoch.txt");
    let opened = open(&two, std::slice::from_ref(&peter)).unwrap();
    assert_eq!(opened.verified.len(), 1);
    assert_eq!(opened.verified[0].name, "PeterNeumann");
    assert_eq!(opened.unverified.len(), 1);
    assert_eq!(opened.unverified[0].name, "EnochRoot");
    // Both keys: both verify, whichever order the verifiers come in.
    let opened = open(&two, &[enoch.clone(), peter.clone()]).unwrap();
    assert_eq!(opened.verified.len(), 2);
    // Enoch alone on the one-signature note: nothing trusted.
    let one = read("golang-mod-note/signed_note_peter.txt");
    assert!(matches!(
        open(&one, &[enoch]),
        Err(NoteError::NoTrustedSignature(_))
    ));
}

#[test]
fn c2sp_example_verifies() {
    let v = Verifier::from_vkey(&read_str("c2sp/signed-note-example.vkey.txt")).unwrap();
    let opened = open(&read("c2sp/signed-note-example.txt"), &[v]).unwrap();
    assert_eq!(opened.note.text(), "This is an example message.\n");
    assert_eq!(opened.verified.len(), 1);
}

#[test]
fn tessera_checkpoints_verify() {
    let v = Verifier::from_vkey(&read_str("tessera-testdata-log/log.vkey.txt")).unwrap();
    for n in 0..=15 {
        let cp = verify_checkpoint(
            &read(&format!("tessera-testdata-log/checkpoint.{n}")),
            std::slice::from_ref(&v),
            Some("example.com/log/testdata"),
        )
        .unwrap_or_else(|e| panic!("checkpoint.{n}: {e}"));
        assert_eq!(cp.size, n);
        // Formatting the parsed checkpoint gives back the signed text.
        let raw = read(&format!("tessera-testdata-log/checkpoint.{n}"));
        let parsed = Note::parse(&raw).unwrap();
        assert_eq!(cp.to_text(), parsed.text());
        assert_eq!(Checkpoint::parse(parsed.text()).unwrap(), cp);
    }
}

const PROD_CHECKPOINT: &str =
    "rekor-prod-keys/prod_v1_checkpoint_tree2605736670972794746_size79317123.txt";

#[test]
fn rekor_prod_v1_checkpoint_verifies_with_pem_key() {
    let pem = read_str("rekor-prod-keys/rekor.sigstore.dev.pub.pem");
    let v = Verifier::from_pem("rekor.sigstore.dev", &pem).unwrap();
    assert_eq!(v.key_hint(), 0xc0d23d6a);
    let raw = read(PROD_CHECKPOINT);
    let cp = verify_checkpoint(
        &raw,
        std::slice::from_ref(&v),
        Some("rekor.sigstore.dev - 2605736670972794746"),
    )
    .unwrap();
    assert_eq!(cp.size, 79317123);
    // The same key as a vkey string (transparency-dev/formats' example) verifies too.
    let vkey = Verifier::from_vkey(
        "rekor.sigstore.dev+c0d23d6a+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNhtmPtrWm3U1eQXBogSMdGvXwBcK5AW5i0hrZLOC96l+smGNM7nwZ4QvFK/4sueRoVj//QP22Ni4Qt9DPfkWLc=",
    )
    .unwrap();
    assert_eq!(vkey, v);
    // Changing any single byte of the text or the signature makes it fail.
    let sig_start = raw.windows(2).rposition(|w| w == b"\n\n").unwrap() + 2;
    for i in (0..raw.len() - 1).step_by(7) {
        let mut bad = raw.clone();
        bad[i] ^= if i < sig_start { 0x01 } else { 0x02 };
        assert!(
            verify_checkpoint(&bad, std::slice::from_ref(&v), None).is_err(),
            "byte {i} changed and it still verified"
        );
    }
}

#[test]
fn rekor_v2_prod_key_pem_and_vkey_agree() {
    let pem = read_str("rekor-prod-keys/log2025-1.rekor.sigstore.dev.pub.pem");
    let from_pem = Verifier::from_pem("log2025-1.rekor.sigstore.dev", &pem).unwrap();
    let from_vkey = Verifier::from_vkey(&read_str(
        "rekor-prod-keys/log2025-1.rekor.sigstore.dev.vkey.txt",
    ))
    .unwrap();
    assert_eq!(from_pem, from_vkey);
    assert_eq!(from_pem.key_hint(), 0xcf119915);
}

#[test]
fn valid_signature_under_wrong_hint_is_rejected() {
    let pem = read_str("rekor-prod-keys/rekor.sigstore.dev.pub.pem");
    let v = Verifier::from_pem("rekor.sigstore.dev", &pem).unwrap();
    let note = Note::parse(&read(PROD_CHECKPOINT)).unwrap();
    let mut sig = note.signatures()[0].clone();
    sig.key_hint ^= 1;
    let moved = Note::new(note.text(), vec![sig]).unwrap().to_text();
    assert!(matches!(
        verify_checkpoint(moved.as_bytes(), &[v], None),
        Err(NoteError::NoTrustedSignature(_))
    ));
}

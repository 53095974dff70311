//! The transparency-log domain code against real, public test vectors in `shared/vectors`.

use std::path::PathBuf;

use actors::domain::sigstore::{Bundle, SigstoreError, TrustedRoot, verify_bundle_tlog};

use actors::domain::note::{
    self, Checkpoint, Note, NoteError, Signer, Verifier, open, verify_checkpoint,
};

mod common;

/// The vectors directory (see `common::vectors_dir`); a missing directory fails the test.
fn vectors() -> PathBuf {
    common::vectors_dir()
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

/// The trusted root the vectors README names for a conformance case: its own, or the
/// production root.
fn root_for(case: &str) -> String {
    let own = format!("sigstore-conformance/{case}/trusted_root.json");
    if vectors().join(&own).is_file() {
        own
    } else {
        "sigstore-python/prod_trusted_root.json".into()
    }
}

fn verify_bundle_file(bundle: &str, root: &str) -> Result<usize, SigstoreError> {
    let root = TrustedRoot::from_json(&read(root))?;
    let bundle = Bundle::from_json(&read(bundle))?;
    verify_bundle_tlog(&bundle, &root).map(|v| v.len())
}

#[test]
fn sigstore_conformance_cases() {
    let dir = vectors().join("sigstore-conformance");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("bundle.sigstore.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 14,
        "only {} conformance cases found",
        cases.len()
    );
    for case in &cases {
        let result = verify_bundle_file(
            &format!("sigstore-conformance/{case}/bundle.sigstore.json"),
            &root_for(case),
        );
        // The log check alone rejects only the `_fail` cases whose fault is in the log entry
        // or the bundle's shape (tests/sigstore_verify.rs holds it to complete verification);
        // what it rejects, it names.
        if case.ends_with("_fail") {
            if let Err(err) = result {
                let msg = err.to_string();
                assert!(
                    msg.contains("check failed") || msg.contains("malformed"),
                    "{case}: {msg}"
                );
                eprintln!("{case}: rejected: {msg}");
            }
        } else {
            let n = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert!(n >= 1);
        }
    }
}

#[test]
fn conformance_failures_name_the_right_check() {
    let expect = [
        ("bundle-from-wrong-instance_fail", "trusted log check"),
        (
            "checkpoint-wrong-roothash_fail",
            "checkpoint/proof consistency check",
        ),
        (
            "invalid-checkpoint-signature_fail",
            "checkpoint check failed",
        ),
        ("invalid-inclusion-proof_fail", "inclusion proof check"),
        (
            "rekor2-checkpoint-missing-log-signature_fail",
            "checkpoint check failed",
        ),
        (
            "rekor2-checkpoint-missing-origin_fail",
            "checkpoint check failed",
        ),
        (
            "rekor2-checkpoint-missing-root-hash_fail",
            "checkpoint check failed",
        ),
        ("rekor2-no-inclusion-proof_fail", "inclusion proof check"),
    ];
    for (case, check) in expect {
        let err = verify_bundle_file(
            &format!("sigstore-conformance/{case}/bundle.sigstore.json"),
            &root_for(case),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(check), "{case}: {err}");
    }
}

#[test]
fn staging_rekor_v2_bundle_verifies() {
    let n = verify_bundle_file(
        "sigstore-python/staging-rekor-v2.txt.sigstore.json",
        "sigstore-python/staging_trusted_root.json",
    )
    .unwrap();
    assert_eq!(n, 1);
    // Production does not trust the staging log.
    assert!(matches!(
        verify_bundle_file(
            "sigstore-python/staging-rekor-v2.txt.sigstore.json",
            "sigstore-python/prod_trusted_root.json",
        ),
        Err(SigstoreError::UnknownLog { .. })
    ));
}

#[test]
fn v1_bundle_entry_converts_to_rest_form_and_back() {
    use actors::domain::receipt::{Receipt, parse_v1_response};
    let bundle = Bundle::from_json(&read(
        "sigstore-conformance/happy-path-v0.3/bundle.sigstore.json",
    ))
    .unwrap();
    let receipt = Receipt::from_tle(&bundle.tlog_entries[0]).unwrap();
    assert_eq!(receipt.log_index, 79571823);
    assert_eq!(
        receipt.inclusion_proof.as_ref().unwrap().log_index,
        75408392
    );
    assert_eq!(receipt.tree_id, Some(2605736670972794746));
    let (id, entry) = receipt.to_v1();
    assert!(id.starts_with("24296fb24b8ad77a"), "{id}");
    assert_eq!(
        entry.log_id,
        "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"
    );
    let json = serde_json::json!({ id.clone(): entry }).to_string();
    let (id2, entry2) = parse_v1_response(json.as_bytes()).unwrap().remove(0);
    assert_eq!(id2, id);
    let back = Receipt::from_v1(&id2, &entry2).unwrap();
    assert_eq!(back, receipt);
    assert_eq!(back.to_tle(), bundle.tlog_entries[0]);
}

//! Random and mutated inputs never make the note, checkpoint, vkey, bundle or trusted-root
//! parsers (or the verifiers behind them) panic.

use actors::domain::note::{self, Checkpoint, Note, Verifier};
use actors::domain::receipt::{Receipt, parse_v1_response};
use actors::domain::sigstore::{Bundle, TrustedRoot, verify_bundle_tlog};
use proptest::prelude::*;

mod common;

fn seed(rel: &str) -> Vec<u8> {
    let path = common::vectors_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Seeds for mutation: real notes, checkpoints, bundles and trusted roots.
fn seeds() -> Vec<Vec<u8>> {
    [
        "golang-mod-note/signed_note_peter_enoch.txt",
        "rekor-prod-keys/prod_v1_checkpoint_tree2605736670972794746_size79317123.txt",
        "tessera-testdata-log/checkpoint.15",
        "sigstore-conformance/rekor2-checkpoint-multiple-cosigs/bundle.sigstore.json",
        "sigstore-conformance/happy-path-v0.3/bundle.sigstore.json",
        "sigstore-python/staging_trusted_root.json",
    ]
    .iter()
    .map(|s| seed(s))
    .collect()
}

/// A mutation: overwrite, insert or delete bytes at positions scaled to the input.
#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        any::<u8>(),
        Just(b'\n'),
        Just(b' '),
        Just(b'+'),
        Just(b'"'),
        Just(b'0'),
        Just(0xe2),
        Just(0x94),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), interesting).prop_map(|(i, b)| Mutation::Set(i, b)),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                Just("\u{2014} ".as_bytes().to_vec()),
                Just(b"\n\n".to_vec()),
                Just(b"-1".to_vec()),
                Just(b"99999999999999999999999".to_vec()),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<prop::sample::Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len().max(1);
        match m {
            Mutation::Set(i, b) => {
                if !data.is_empty() {
                    let i = i.index(len);
                    data[i] = *b;
                }
            }
            Mutation::Insert(i, bytes) => {
                let i = i.index(len + 1).min(data.len());
                data.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                if !data.is_empty() {
                    let i = i.index(len);
                    let end = (i + n).min(data.len());
                    data.drain(i..end);
                }
            }
            Mutation::Truncate(i) => data.truncate(i.index(len + 1)),
        }
    }
    data
}

/// Runs every parser (and the verifiers) over `data`; only panics matter here.
fn exercise(data: &[u8], verifiers: &[Verifier], roots: &[TrustedRoot]) {
    let _ = Note::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse(text);
        let _ = Verifier::from_vkey(text);
        let _ = note::Signer::from_skey(text);
    }
    let _ = note::open(data, verifiers);
    let _ = note::verify_checkpoint(data, verifiers, Some("example.com/log/testdata"));
    let _ = parse_v1_response(data);
    if let Ok(bundle) = Bundle::from_json(data) {
        for tle in &bundle.tlog_entries {
            if let Ok(r) = Receipt::from_tle(tle) {
                let _ = r.to_v1();
                let _ = r.set_payload();
            }
        }
        for root in roots {
            let _ = verify_bundle_tlog(&bundle, root);
        }
    }
    let _ = TrustedRoot::from_json(data);
}

fn fixtures() -> (Vec<Verifier>, Vec<TrustedRoot>) {
    let verifiers = vec![
        Verifier::from_vkey(
            std::str::from_utf8(&seed("tessera-testdata-log/log.vkey.txt")).unwrap(),
        )
        .unwrap(),
        Verifier::from_vkey(std::str::from_utf8(&seed("golang-mod-note/peter.vkey.txt")).unwrap())
            .unwrap(),
        Verifier::from_pem(
            "rekor.sigstore.dev",
            std::str::from_utf8(&seed("rekor-prod-keys/rekor.sigstore.dev.pub.pem")).unwrap(),
        )
        .unwrap(),
    ];
    let roots = vec![
        TrustedRoot::from_json(&seed("sigstore-python/prod_trusted_root.json")).unwrap(),
        TrustedRoot::from_json(&seed(
            "sigstore-conformance/rekor2-happy-path/trusted_root.json",
        ))
        .unwrap(),
    ];
    (verifiers, roots)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let (verifiers, roots) = fixtures();
        exercise(&data, &verifiers, &roots);
    }

    #[test]
    fn random_text_never_panics(text in "(\\PC|\n|\u{2014} |\\+){0,200}") {
        let (verifiers, roots) = fixtures();
        exercise(text.as_bytes(), &verifiers, &roots);
    }

    #[test]
    fn mutated_real_inputs_never_panic(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let data = apply(seeds[which.index(seeds.len())].clone(), &mutations);
        let (verifiers, roots) = fixtures();
        exercise(&data, &verifiers, &roots);
    }
}

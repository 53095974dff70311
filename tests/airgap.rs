//! Air gap, end to end with two provd nodes: A (connected, holds the evidence) and B
//! ("air-gapped", its own database). Bundles go from A to B at each density; lite and
//! standard ones are completed by lazy fetching from A over HTTP and from a chunks
//! directory; tampered, wrongly signed, oversize bundles and escaping chunk paths are
//! refused with nothing stored; a signed bundle verifies with `provd verify` and with an
//! independent check that follows `docs/bundle-format.md` literally.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually, fresh_veri_key};
use serde_json::{Value, json};

/// Evidence size: 21 chunks of 1024 bytes (the last one shorter).
const EVIDENCE_BYTES: usize = 20 * 1024 + 500;

fn provd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_provd"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PROVD_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out: Output = cmd.output().expect("provd runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn start_node() -> Option<TestApp> {
    TestApp::start_with(|c| c.provcache.chunk_size = 1024).await
}

/// Uploads evidence and an entry pointing at it to node A; returns (VeriKey, proof root).
async fn seed(a: &TestApp) -> (String, String) {
    let evidence: Vec<u8> = (0..EVIDENCE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let resp = a
        .http
        .post(a.url("/api/v1/proofs"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/spdx+json")
        .body(evidence)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 201);
    let manifest: Value = resp.json().await.expect("manifest");
    let root = manifest["proof_root"].as_str().expect("root").to_owned();
    assert_eq!(manifest["total_chunks"], 21);
    let veri_key = fresh_veri_key();
    let resp = a
        .http
        .post(a.url("/api/v1/provcache/entries"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "veri_key": veri_key,
            "verdict": {"decision": "pass", "findings": 3, "note": "überprüft ✓", "ok": true},
            "trust_score": 85,
            "proof_root": root,
            "policy_hash": "sha256:policy-1",
            "signer_set_hash": "sha256:signers-1",
            "signer_key_ids": ["key-a"],
            "feed_epoch": "2026.11.22",
        }))
        .send()
        .await
        .expect("put entry");
    assert!(resp.status().is_success(), "{}", resp.status());
    (veri_key, root)
}

async fn export(a: &TestApp, veri_key: &str, density: &str) -> Vec<u8> {
    let resp = a
        .http
        .get(a.url(&format!(
            "/api/v1/provcache/entries/{veri_key}/bundle?density={density}"
        )))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("export");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    resp.bytes().await.expect("bundle").to_vec()
}

async fn import(b: &TestApp, bundle: &[u8]) -> (u16, Value) {
    let resp = b
        .http
        .post(b.url("/api/v1/provcache/import"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(bundle.to_vec())
        .send()
        .await
        .expect("import");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get_json(node: &TestApp, path: &str) -> (u16, Value) {
    let resp = node
        .http
        .get(node.url(path))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Asserts B holds exactly A's evidence: same manifest, same bytes, and B's verification
/// recomputes A's root.
async fn assert_same_evidence(a: &TestApp, b: &TestApp, root: &str) {
    let (_, ma) = get_json(a, &format!("/api/v1/proofs/{root}/manifest")).await;
    let (sb, mb) = get_json(b, &format!("/api/v1/proofs/{root}/manifest")).await;
    assert_eq!(sb, 200);
    assert_eq!(ma, mb);
    for i in 0..ma["total_chunks"].as_u64().expect("total") {
        let path = format!("/api/v1/proofs/{root}/chunks/{i}");
        let ca = a
            .http
            .get(a.url(&path))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("a");
        let cb = b
            .http
            .get(b.url(&path))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("b");
        assert_eq!(cb.status(), 200, "chunk {i} on B");
        assert_eq!(
            ca.bytes().await.expect("a"),
            cb.bytes().await.expect("b"),
            "chunk {i}"
        );
    }
    let report: Value = b
        .http
        .post(b.url(&format!("/api/v1/proofs/{root}/verify")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("report");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["computed_root"], root);
}

/// Nothing of the bundle reached B: no entry, no manifest, no chunk rows.
async fn assert_nothing_stored(b: &TestApp, veri_key: &str, root: &str) {
    let (s, _) = get_json(b, &format!("/api/v1/provcache/entries/{veri_key}")).await;
    assert_eq!(s, 404, "entry stored");
    let (s, _) = get_json(b, &format!("/api/v1/proofs/{root}/manifest")).await;
    assert_eq!(s, 404, "manifest stored");
    // Roots are `sha256:` and hex, safe to write into the query.
    assert!(root.bytes().all(|c| c.is_ascii_alphanumeric() || c == b':'));
    let n = b
        .query_i64(&format!(
            "SELECT count(*) FROM provcache.prov_evidence_chunks WHERE proof_root = '{root}'"
        ))
        .await;
    assert_eq!(n, 0, "chunks stored");
}

both_modes! {
async fn strict_bundle_is_complete_on_import() {
    let Some(a) = start_node().await else { return };
    let Some(b) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;
    let bundle = export(&a, &veri_key, "strict").await;
    let (status, outcome) = import(&b, &bundle).await;
    assert_eq!(status, 201, "{outcome}");
    assert_eq!(outcome["complete"], true);
    assert_eq!(outcome["missing_chunks"], json!([]));
    assert_same_evidence(&a, &b, &root).await;
    let (s, entry) = get_json(&b, &format!("/api/v1/provcache/entries/{veri_key}")).await;
    assert_eq!(s, 200);
    let (_, entry_a) = get_json(&a, &format!("/api/v1/provcache/entries/{veri_key}")).await;
    for field in [
        "verdict",
        "verdict_hash",
        "proof_root",
        "trust_score",
        "policy_hash",
    ] {
        assert_eq!(entry[field], entry_a[field], "{field}");
    }
    a.finish().await;
    b.finish().await;
}
}

both_modes! {
async fn lite_and_standard_complete_by_lazy_fetch_over_http() {
    let Some(a) = start_node().await else { return };
    let Some(b) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;
    let dir = tempfile::tempdir().expect("tmp");
    for (density, carried) in [("lite", 0u64), ("standard", 3)] {
        let bundle = export(&a, &veri_key, density).await;
        let (status, outcome) = import(&b, &bundle).await;
        assert_eq!(status, 202, "{outcome}");
        assert_eq!(outcome["complete"], false);
        // B's status shows exactly which chunks are missing.
        let (_, st) = get_json(&b, &format!("/api/v1/proofs/{root}/status")).await;
        assert_eq!(st["complete"], false);
        if density == "lite" {
            assert_eq!(st["stored_chunks"], 0);
            assert_eq!(st["missing_chunks"].as_array().expect("missing").len(), 21);
        } else {
            assert!(st["stored_chunks"].as_u64().expect("stored") >= carried);
        }
        // B cannot export more evidence than it holds.
        let resp = b
            .http
            .get(b.url(&format!(
                "/api/v1/provcache/entries/{veri_key}/bundle?density=strict"
            )))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("export from B");
        assert_eq!(resp.status(), 409);
        let file = dir.path().join(format!("{density}.json"));
        std::fs::write(&file, &bundle).expect("write bundle");
        let (code, out, err) = run(provd()
            .arg("import")
            .arg(&file)
            .args(["--lazy-fetch", "--backend", &a.url(""), "--batch-size", "4"])
            .args(b.store_args())
            .env("PROVD_BACKEND_TOKEN", READ_TOKEN));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("complete: every chunk"), "{out}");
        let (_, st) = get_json(&b, &format!("/api/v1/proofs/{root}/status")).await;
        assert_eq!(st["complete"], true, "{st}");
        assert_same_evidence(&a, &b, &root).await;
        // Complete now, B exports a strict bundle that verifies on its own.
        let again = export(&b, &veri_key, "strict").await;
        let f = dir.path().join(format!("{density}-again.json"));
        std::fs::write(&f, &again).expect("write");
        let (code, out, err) = run(provd().arg("verify").arg(&f));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("21 of 21 chunks, complete"), "{out}");
        // Start the next density from an empty B evidence store.
        b.execute("DELETE FROM provcache.prov_evidence_chunks")
            .await
            .expect("reset chunks");
        b.execute("DELETE FROM provcache.prov_evidence_manifests")
            .await
            .expect("reset manifests");
    }
    a.finish().await;
    b.finish().await;
}
}

both_modes! {
async fn lite_and_standard_complete_by_lazy_fetch_from_a_chunks_directory() {
    let Some(a) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;
    let dir = tempfile::tempdir().expect("tmp");
    for density in ["lite", "standard"] {
        let Some(b) = start_node().await else { return };
        let file = dir.path().join(format!("{density}.json"));
        let chunks = dir.path().join(format!("usb-{density}"));
        let (code, out, err) = run(provd()
            .arg("export")
            .args(["--server", &a.url(""), "--token", READ_TOKEN])
            .args(["--verikey", &veri_key, "--density", density])
            .arg("--output")
            .arg(&file)
            .arg("--chunks-dir")
            .arg(&chunks));
        assert_eq!(code, 0, "{out}\n{err}");
        let hex = root.trim_start_matches("sha256:");
        assert!(chunks.join(hex).join("index.json").is_file());
        // Node A is not asked for anything from here on: B gets the rest from the directory.
        let (code, out, err) = run(provd()
            .arg("import")
            .arg(&file)
            .arg("--lazy-fetch")
            .arg("--chunks-dir")
            .arg(&chunks)
            .args(b.store_args()));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("complete: every chunk"), "{out}");
        assert_same_evidence(&a, &b, &root).await;
        let (s, _) = get_json(&b, &format!("/api/v1/provcache/entries/{veri_key}")).await;
        assert_eq!(s, 200);
        b.finish().await;
    }
    a.finish().await;
}
}

fn flip_chunk_byte(v: &mut Value) {
    let data = B64
        .decode(v["chunks"][2]["data"].as_str().expect("data"))
        .expect("b64");
    let mut d = data;
    d[10] ^= 0x01;
    v["chunks"][2]["data"] = Value::String(B64.encode(d));
}

both_modes! {
async fn tampered_bundles_are_refused_and_nothing_is_stored() {
    let Some(a) = start_node().await else { return };
    let Some(b) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;
    let bundle = export(&a, &veri_key, "strict").await;
    let original: Value = serde_json::from_slice(&bundle).expect("json");
    type Tamper = fn(&mut Value);
    let cases: [(&str, Tamper, &str); 4] = [
        (
            "flipped chunk byte",
            flip_chunk_byte,
            "chunk hash check failed",
        ),
        (
            "changed manifest hash",
            |v| {
                v["manifest"]["chunks"][4]["hash"] =
                    Value::String(format!("sha256:{}", "1".repeat(64)))
            },
            "manifest check failed",
        ),
        (
            "changed digest",
            |v| v["digest"]["verdictHash"] = Value::String(format!("sha256:{}", "2".repeat(64))),
            "digest check failed",
        ),
        (
            "reordered chunk list",
            |v| v["chunks"].as_array_mut().expect("chunks").swap(0, 1),
            "chunk list check failed",
        ),
    ];
    for (name, tamper, expect) in cases {
        let mut v = original.clone();
        tamper(&mut v);
        let (status, body) = import(&b, &serde_json::to_vec(&v).expect("json")).await;
        assert_eq!(status, 400, "{name}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expect), "{name}: {msg}");
        assert_nothing_stored(&b, &veri_key, &root).await;
    }
    // A truncated file.
    let (status, body) = import(&b, &bundle[..bundle.len() / 2]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("format check failed")
    );
    assert_nothing_stored(&b, &veri_key, &root).await;

    // Signatures: signed by another key, and checked against the wrong key.
    let dir = tempfile::tempdir().expect("tmp");
    let (trusted_key, trusted_pub) = key_pair(dir.path(), "trusted", "p256");
    let (other_key, _) = key_pair(dir.path(), "other", "ed25519");
    let (_, wrong_pub) = key_pair(dir.path(), "wrong", "p256");
    let by_other = dir.path().join("by-other.json");
    let by_trusted = dir.path().join("by-trusted.json");
    for (key, file) in [(&other_key, &by_other), (&trusted_key, &by_trusted)] {
        let (code, out, err) = run(provd()
            .arg("export")
            .args(["--server", &a.url(""), "--token", READ_TOKEN])
            .args([
                "--verikey",
                &veri_key,
                "--density",
                "standard",
                "--sign",
                "--key",
            ])
            .arg(key)
            .arg("--output")
            .arg(file));
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let (code, out, err) = run(provd()
        .arg("import")
        .arg(&by_other)
        .arg("--trusted-key")
        .arg(&trusted_pub)
        .args(b.store_args()));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("signature check failed"), "{out}");
    assert_nothing_stored(&b, &veri_key, &root).await;
    let (code, out, err) = run(provd()
        .arg("verify")
        .arg(&by_trusted)
        .arg("--trusted-key")
        .arg(&wrong_pub));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("signature check failed"), "{out}");
    let (code, out, _) = run(provd()
        .arg("import")
        .arg(&by_trusted)
        .arg("--trusted-key")
        .arg(&wrong_pub)
        .args(b.store_args()));
    assert_eq!(code, 1, "{out}");
    assert_nothing_stored(&b, &veri_key, &root).await;
    // The tampered cases also fail `provd verify` with the check named, exit 1.
    let mut v = original.clone();
    flip_chunk_byte(&mut v);
    let f = dir.path().join("flipped.json");
    std::fs::write(&f, serde_json::to_vec(&v).expect("json")).expect("write");
    let (code, out, _) = run(provd().arg("verify").arg(&f).arg("--json"));
    assert_eq!(code, 1);
    let j: Value = serde_json::from_str(out.trim()).expect("json output");
    assert_eq!(j["valid"], false);
    assert_eq!(j["check"], "chunk_hash");
    // Usage errors exit 2.
    let (code, _, _) = run(provd().arg("verify").arg(dir.path().join("missing.json")));
    assert_eq!(code, 2);
    a.finish().await;
    b.finish().await;
}
}

/// Generates a key pair with `provd keys generate`; returns (private PEM path, public PEM path).
fn key_pair(dir: &Path, name: &str, alg: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (code, out, err) = run(provd()
        .args([
            "keys",
            "generate",
            "--alg",
            alg,
            "--name",
            "bundle.example",
            "--out",
        ])
        .arg(dir.join(name)));
    assert_eq!(code, 0, "{out}\n{err}");
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    assert!(private.is_file() && public.is_file(), "{out}\n{err}");
    (private, public)
}

// ---------------------------------------------------------------------------------------------
// The independent check: RFC 8785 written here from the RFC, not with provd's code.

/// RFC 8785 for the values a bundle holds (objects, arrays, strings, integers, booleans,
/// null): members sorted by their UTF-16 code units, no whitespace, strings escaped as
/// ECMAScript's JSON.stringify does, integers in plain decimal.
fn jcs(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let i = n.as_i64().expect("bundles in this test hold integers only");
            out.push_str(&i.to_string());
        }
        Value::String(s) => {
            out.push('"');
            for ch in s.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs(&Value::String(k.clone()), out);
                out.push(':');
                jcs(&map[k], out);
            }
            out.push('}');
        }
    }
}

/// The DER SubjectPublicKeyInfo inside a PEM public key.
fn spki_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(b64).expect("PEM base64")
}

both_modes! {
async fn signed_bundle_verifies_with_provd_verify_and_independently() {
    let Some(a) = start_node().await else { return };
    let (veri_key, _) = seed(&a).await;
    let dir = tempfile::tempdir().expect("tmp");
    for alg in ["p256", "ed25519"] {
        let (key, public) = key_pair(dir.path(), alg, alg);
        let file = dir.path().join(format!("signed-{alg}.json"));
        let (code, out, err) = run(provd()
            .arg("export")
            .args(["--server", &a.url(""), "--token", READ_TOKEN])
            .args([
                "--verikey",
                &veri_key,
                "--density",
                "standard",
                "--sign",
                "--key",
            ])
            .arg(&key)
            .arg("--output")
            .arg(&file));
        assert_eq!(code, 0, "{out}\n{err}");

        // provd verify: valid, signature verified.
        let (code, out, err) = run(provd()
            .arg("verify")
            .arg(&file)
            .arg("--trusted-key")
            .arg(&public));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("signature:  verified"), "{out}");
        // Without a key: valid, but the signature is reported as not checked.
        let (code, out, _) = run(provd().arg("verify").arg(&file));
        assert_eq!(code, 0);
        assert!(out.contains("signature not checked"), "{out}");

        // The documented recipe: drop `signature`, canonicalise (RFC 8785), check the
        // signature over those bytes with the raw public key.
        let bytes = std::fs::read(&file).expect("bundle");
        let mut v: Value = serde_json::from_slice(&bytes).expect("json");
        let sig = v
            .as_object_mut()
            .expect("object")
            .remove("signature")
            .expect("signed");
        let mut canonical = String::new();
        jcs(&v, &mut canonical);
        let raw_sig = B64
            .decode(sig["signature"].as_str().expect("sig"))
            .expect("b64");
        let pem = std::fs::read_to_string(&public).expect("pem");
        let der = spki_der(&pem);
        use sha2::Digest as _;
        assert_eq!(sig["keyId"], hex_of(&sha2::Sha256::digest(&der)));
        match alg {
            "p256" => {
                use p256::ecdsa::signature::Verifier as _;
                assert_eq!(sig["algorithm"], "ECDSA-P256");
                // The uncompressed point is the last 65 bytes of the SPKI.
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&der[der.len() - 65..])
                    .expect("point");
                let s = p256::ecdsa::Signature::from_der(&raw_sig).expect("DER");
                key.verify(canonical.as_bytes(), &s)
                    .expect("ECDSA verifies");
                assert!(key.verify(b"other bytes", &s).is_err());
            }
            _ => {
                assert_eq!(sig["algorithm"], "Ed25519");
                // The raw key is the last 32 bytes of the SPKI.
                let raw: [u8; 32] = der[der.len() - 32..].try_into().expect("32 bytes");
                let key = ed25519_dalek::VerifyingKey::from_bytes(&raw).expect("key");
                let s = ed25519_dalek::Signature::from_slice(&raw_sig).expect("64 bytes");
                key.verify_strict(canonical.as_bytes(), &s)
                    .expect("Ed25519 verifies");
            }
        }
        // The file itself is the canonical form (with its signature member).
        let full: Value = serde_json::from_slice(&bytes).expect("json");
        let mut again = String::new();
        jcs(&full, &mut again);
        assert_eq!(again.as_bytes(), bytes.as_slice());
    }
    a.finish().await;
}
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

both_modes! {
async fn oversize_bundle_and_escaping_chunks_dir_path_are_refused() {
    let Some(a) = start_node().await else { return };
    let Some(b) = TestApp::start_with(|c| {
        c.provcache.chunk_size = 1024;
        c.bundles.limits.max_bundle_bytes = 8 * 1024;
    })
    .await
    else {
        return;
    };
    let (veri_key, root) = seed(&a).await;
    let strict = export(&a, &veri_key, "strict").await;
    assert!(strict.len() > 8 * 1024);
    let (status, body) = import(&b, &strict).await;
    assert_eq!(status, 413, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("limits check failed") && msg.contains("8192"),
        "{msg}"
    );
    assert_nothing_stored(&b, &veri_key, &root).await;
    // The CLI refuses it from the file size, before reading it.
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("provd.toml");
    std::fs::write(
        &config,
        "[bundles]\nmax_bundle_bytes = 8192\n",
    )
    .expect("config");
    let file = dir.path().join("strict.json");
    std::fs::write(&file, &strict).expect("write");
    let (code, out, err) = run(provd()
        .arg("--config")
        .arg(&config)
        .arg("import")
        .arg(&file)
        .args(b.store_args()));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("limits check failed"), "{out}");
    let (code, out, _) = run(provd()
        .arg("--config")
        .arg(&config)
        .arg("verify")
        .arg(&file));
    assert_eq!(code, 1);
    assert!(out.contains("limits check failed"), "{out}");

    // A chunks directory whose index points chunk 0 outside the directory.
    let lite = dir.path().join("lite.json");
    let chunks = dir.path().join("usb");
    let (code, out, err) = run(provd()
        .arg("export")
        .args(["--server", &a.url(""), "--token", READ_TOKEN])
        .args(["--verikey", &veri_key, "--density", "lite"])
        .arg("--output")
        .arg(&lite)
        .arg("--chunks-dir")
        .arg(&chunks));
    assert_eq!(code, 0, "{out}\n{err}");
    std::fs::write(dir.path().join("secret"), b"not evidence").expect("secret");
    let index_path = chunks
        .join(root.trim_start_matches("sha256:"))
        .join("index.json");
    let mut index: Value =
        serde_json::from_slice(&std::fs::read(&index_path).expect("index")).expect("json");
    index["chunks"][0]["path"] = Value::String("../../secret".into());
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).expect("index");
    let (code, out, err) = run(provd()
        .arg("import")
        .arg(&lite)
        .arg("--lazy-fetch")
        .arg("--chunks-dir")
        .arg(&chunks)
        .args(b.store_args()));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("refused chunk 0: path \"../../secret\" leaves the chunks directory"),
        "{out}"
    );
    // The rest continued: only chunk 0 is missing.
    let st = eventually("status", Duration::from_secs(10), || async {
        let (s, st) = get_json(&b, &format!("/api/v1/proofs/{root}/status")).await;
        (s == 200).then_some(st)
    })
    .await;
    assert_eq!(st["missing_chunks"], json!([0]), "{st}");
    // Resumable: with the index repaired, the same command fetches only what is missing.
    index["chunks"][0]["path"] = Value::String("chunks/0".into());
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).expect("index");
    let (code, out, err) = run(provd()
        .arg("import")
        .arg(&lite)
        .arg("--lazy-fetch")
        .arg("--chunks-dir")
        .arg(&chunks)
        .args(b.store_args()));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("fetched 1 chunks"), "{out}");
    assert_same_evidence(&a, &b, &root).await;
    a.finish().await;
    b.finish().await;
}
}

// ---------------------------------------------------------------------------------------------
// The Rekor receipt of the verdict's attestation travels in the bundle.

/// The local Rekor-compatible log, in-process on port 0.
async fn start_dev_log() -> (
    String,
    provd::devlog::DevLogInfo,
    tokio::sync::oneshot::Sender<()>,
    tempfile::TempDir,
) {
    use provd::devlog::{DevLog, DevLogConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let log = DevLog::open(DevLogConfig {
        data_dir: dir.path().to_path_buf(),
        ..DevLogConfig::default()
    })
    .expect("dev log opens");
    let info = log.info().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(log.serve(listener, async {
        let _ = stopped.await;
    }));
    (base, info, stop, dir)
}

both_modes! {
async fn bundle_carries_the_verified_rekor_receipt_of_the_attestation() {
    use actors::domain::dsse::Envelope;
    use actors::domain::keys::{Algorithm, PrivateKey};
    use provd::config::RawRekor;
    use provd::config::rekor::RawRekorBackend;

    let (log_url, info, _stop, _dir) = start_dev_log().await;
    let rekor = RawRekor {
        default_backend: Some("lab".into()),
        backends: [(
            "lab".to_owned(),
            RawRekorBackend {
                kind: Some("private".into()),
                api: Some("v1".into()),
                url: Some(log_url.clone()),
                keys: Some(vec![info.v1_public_key_pem.clone()]),
                origin: Some(info.origin.clone()),
                ..RawRekorBackend::default()
            },
        )]
        .into(),
        queue: None,
    }
    .validate()
    .expect("rekor config");
    let Some(a) = TestApp::start_with(move |c| {
        c.provcache.chunk_size = 1024;
        c.rekor = rekor;
    })
    .await
    else {
        return;
    };
    let Some(b) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;

    // The attestation: a DSSE envelope over the verdict, logged through A's queue.
    let signer = PrivateKey::generate(Algorithm::P256, &mut |buf: &mut [u8]| {
        getrandom::fill(buf).map_err(|e| e.to_string())
    })
    .expect("key");
    let (_, entry) = get_json(&a, &format!("/api/v1/provcache/entries/{veri_key}")).await;
    let envelope = Envelope::sign(
        "application/vnd.provd.verdict+json",
        entry["verdict"].to_string().as_bytes(),
        &signer,
        "",
    );
    let resp = a
        .http
        .post(a.url("/api/v1/rekor/submissions"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"envelope": envelope, "verifiers": [signer.public_key().to_pem().expect("pem")]}))
        .send()
        .await
        .expect("submit");
    assert!(resp.status().is_success(), "{}", resp.status());
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let uuid = eventually("submission logged", Duration::from_secs(30), || async {
        let (_, s) = get_json(&a, &format!("/api/v1/rekor/submissions/{id}")).await;
        (s["status"] == "logged")
            .then(|| s["entry_uuid"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;

    // Link the entry to it; an unknown receipt is refused.
    let put = |body: Value| {
        a.http
            .put(a.url(&format!("/api/v1/provcache/entries/{veri_key}/receipt")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    assert_eq!(
        put(json!({"rekor_uuid": "0".repeat(64)}))
            .await
            .expect("put")
            .status(),
        404
    );
    assert_eq!(
        put(json!({"rekor_uuid": uuid}))
            .await
            .expect("put")
            .status(),
        200
    );

    let bundle = export(&a, &veri_key, "standard").await;
    let v: Value = serde_json::from_slice(&bundle).expect("json");
    assert_eq!(v["rekor"]["logPublicKey"], info.v1_public_key_pem.as_str());
    assert!(v["rekor"]["logEntry"]["inclusionProof"]["checkpoint"]["envelope"].is_string());

    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("with-receipt.json");
    std::fs::write(&file, &bundle).expect("write");
    let (code, out, err) = run(provd().arg("verify").arg(&file).arg("--json"));
    assert_eq!(code, 0, "{out}\n{err}");
    let j: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(j["rekor_receipt"], true);
    assert!(
        j["checks"]
            .as_array()
            .expect("checks")
            .contains(&json!("rekor_receipt"))
    );

    // A receipt whose body was changed is refused, and nothing is stored.
    let mut bad = v.clone();
    let body = bad["rekor"]["logEntry"]["canonicalizedBody"]
        .as_str()
        .expect("body")
        .to_owned();
    let mut raw = B64.decode(body).expect("b64");
    let last = raw.len() - 2;
    raw[last] ^= 0x01;
    bad["rekor"]["logEntry"]["canonicalizedBody"] = Value::String(B64.encode(raw));
    let (status, body) = import(&b, &serde_json::to_vec(&bad).expect("json")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rekor receipt check failed"),
        "{body}"
    );
    assert_nothing_stored(&b, &veri_key, &root).await;

    // The untouched bundle imports on B, which has no Rekor configuration at all.
    let (status, outcome) = import(&b, &bundle).await;
    assert_eq!(status, 202, "{outcome}");
    assert_eq!(outcome["rekor_receipt"], true);
    a.finish().await;
    b.finish().await;
}
}

both_modes! {
/// An entry node B invalidated after it was written does not come back through an import.
async fn import_does_not_resurrect_an_entry_invalidated_on_the_importing_node() {
    let Some(a) = start_node().await else { return };
    let Some(b) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;
    let bundle = export(&a, &veri_key, "strict").await;
    let resp = b
        .http
        .post(b.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"veri_key": veri_key, "reason": "signer compromised"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(resp.status(), 202);
    eventually(
        "the revocation is in B's ledger",
        Duration::from_secs(20),
        || async {
            let (_, rows) = get_json(&b, "/api/v1/provcache/revocations?since=0").await;
            (rows.to_string().contains(&veri_key)).then_some(())
        },
    )
    .await;
    let (status, body) = import(&b, &bundle).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalidated"),
        "{body}"
    );
    assert_nothing_stored(&b, &veri_key, &root).await;
    a.finish().await;
    b.finish().await;
}
}

both_modes! {
/// With `bundles.trusted_keys` set, the import endpoint takes only bundles signed by one of
/// them.
async fn import_endpoint_requires_a_trusted_signature_when_keys_are_configured() {
    let Some(a) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;
    let dir = tempfile::tempdir().expect("tmp");
    let (key, public) = key_pair(dir.path(), "exporter", "ed25519");
    let pem = std::fs::read_to_string(&public).expect("pem");
    let trusted = provd::config::bundles::load_public_key(&pem).expect("key");
    let Some(b) = TestApp::start_with(move |c| {
        c.provcache.chunk_size = 1024;
        c.bundles.trusted_keys = vec![trusted];
    })
    .await
    else {
        return;
    };
    let unsigned = export(&a, &veri_key, "strict").await;
    let (status, body) = import(&b, &unsigned).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("signature check failed: the bundle is not signed"),
        "{msg}"
    );
    assert_nothing_stored(&b, &veri_key, &root).await;
    let file = dir.path().join("signed.json");
    let (code, out, err) = run(provd()
        .arg("export")
        .args(["--server", &a.url(""), "--token", READ_TOKEN])
        .args([
            "--verikey",
            &veri_key,
            "--density",
            "strict",
            "--sign",
            "--key",
        ])
        .arg(&key)
        .arg("--output")
        .arg(&file));
    assert_eq!(code, 0, "{out}\n{err}");
    let (status, outcome) = import(&b, &std::fs::read(&file).expect("bundle")).await;
    assert_eq!(status, 201, "{outcome}");
    assert_eq!(outcome["signature"]["status"], "verified");
    assert_same_evidence(&a, &b, &root).await;
    a.finish().await;
    b.finish().await;
}
}

both_modes! {
/// Sizes and counts in a bundle come from outside: sizes that would wrap a 64-bit sum, a
/// chunk larger than `chunkSize` and declared totals near 2^63 are refused by import and by
/// `provd verify` with the check named; manifests with huge totals already in the store
/// (written before these checks) do not break `/api/v1/provcache/stats`.
async fn bundle_arithmetic_is_checked_and_stats_survive_huge_totals() {
    let Some(a) = start_node().await else { return };
    let Some(b) = start_node().await else { return };
    let (veri_key, root) = seed(&a).await;
    let original: Value =
        serde_json::from_slice(&export(&a, &veri_key, "strict").await).expect("json");
    let total = original["manifest"]["totalSize"].as_u64().expect("totalSize");
    let size0 = original["manifest"]["chunks"][0]["size"].as_u64().expect("size");
    let size1 = original["manifest"]["chunks"][1]["size"].as_u64().expect("size");
    type Tamper = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Tamper)> = vec![
        (
            // 2^63 + 2^63 wraps to 0, so a wrapping sum would match this total.
            "sizes that wrap",
            Box::new(move |v: &mut Value| {
                let m = &mut v["manifest"];
                m["chunks"][0]["size"] = json!(1u64 << 63);
                m["chunks"][1]["size"] = json!(1u64 << 63);
                m["totalSize"] = json!(total - size0 - size1);
            }),
        ),
        (
            // The sum is unchanged; one chunk claims a byte more than `chunkSize`.
            "a size over chunkSize",
            Box::new(move |v: &mut Value| {
                let m = &mut v["manifest"];
                m["chunks"][0]["size"] = json!(size0 + 1);
                m["chunks"][1]["size"] = json!(size1 - 1);
            }),
        ),
        (
            "a huge declared total",
            Box::new(|v: &mut Value| v["manifest"]["totalSize"] = json!(i64::MAX)),
        ),
        (
            "a total beyond 2^63",
            Box::new(|v: &mut Value| v["manifest"]["totalSize"] = json!(u64::MAX)),
        ),
    ];
    let dir = tempfile::tempdir().expect("tmp");
    for (name, tamper) in &cases {
        let mut v = original.clone();
        tamper(&mut v);
        let bytes = serde_json::to_vec(&v).expect("json");
        let (status, body) = import(&b, &bytes).await;
        assert_eq!(status, 400, "{name}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("manifest check failed"), "{name}: {msg}");
        assert_nothing_stored(&b, &veri_key, &root).await;
        let f = dir.path().join("tampered.json");
        std::fs::write(&f, &bytes).expect("write");
        let (code, out, _) = run(provd().arg("verify").arg(&f).arg("--json"));
        assert_eq!(code, 1, "{name}: {out}");
        let j: Value = serde_json::from_str(out.trim()).expect("json output");
        assert_eq!(j["valid"], false, "{name}");
        assert_eq!(j["check"], "manifest", "{name}: {j}");
    }

    // Two manifests declaring 2^63 − 1 bytes each, as an earlier version could store them.
    for n in 0..2 {
        b.execute(&format!(
            "INSERT INTO provcache.prov_evidence_manifests \
             (proof_root, total_chunks, total_size, chunk_size, content_type, chunk_hashes) \
             VALUES ('sha256:{n:064x}', 2147483647, {}, 1024, 'x', '[]')",
            i64::MAX
        ))
        .await
        .expect("insert a huge manifest");
    }
    let (status, stats) = get_json(&b, "/api/v1/provcache/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["evidence"]["bytes"], json!(i64::MAX), "{stats}");
    assert_eq!(stats["evidence"]["roots"], 2, "{stats}");
    a.finish().await;
    b.finish().await;
}
}

/// Starts an import whose body arrives in two halves: sends the headers and the first half
/// and returns the open connection, so the import stays in flight until [`finish_slow`].
async fn start_slow_import(b: &TestApp, bundle: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut conn = tokio::net::TcpStream::connect(b.addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/provcache/import HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        b.addr(),
        bundle.len()
    );
    conn.write_all(head.as_bytes()).await.expect("headers");
    conn.write_all(&bundle[..bundle.len() / 2])
        .await
        .expect("first half");
    conn.flush().await.expect("flush");
    conn
}

/// Sends the rest of a [`start_slow_import`] body; returns the answer's status code.
async fn finish_slow(mut conn: tokio::net::TcpStream, bundle: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.write_all(&bundle[bundle.len() / 2..])
        .await
        .expect("second half");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("answer");
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"))
}

both_modes! {
/// With `bundles.max_concurrent_imports = 1`, an import arriving while another is in flight
/// is answered 503 with `Retry-After` and the JSON error, its body unread; the import in
/// flight completes, and the next import is taken again.
async fn imports_beyond_the_concurrency_limit_get_503_with_retry_after() {
    let Some(a) = start_node().await else { return };
    let Some(b) = TestApp::start_with(|c| {
        c.provcache.chunk_size = 1024;
        c.bundles.max_concurrent_imports = 1;
    })
    .await
    else {
        return;
    };
    let (veri_key, root) = seed(&a).await;
    let bundle = export(&a, &veri_key, "strict").await;
    let mut held = start_slow_import(&b, &bundle).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (retry_after, body) = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for an import beside the held one to be turned away"
        );
        let resp = b
            .http
            .post(b.url("/api/v1/provcache/import"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("import");
        if resp.status() == 503 {
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            break (retry, resp.json::<Value>().await.expect("json error"));
        }
        // This quick import got the permit (its invalid body is refused at once). If it
        // held the permit when the slow one arrived, the slow one was answered: start it
        // again.
        assert_eq!(resp.status(), 400, "only one import runs at a time");
        let mut probe = [0u8; 1];
        match held.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => held = start_slow_import(&b, &bundle).await,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let retry_after = retry_after.expect("a 503 says when to retry");
    assert!(retry_after.parse::<u32>().expect("seconds") > 0);
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_concurrent_imports"),
        "{body}"
    );
    assert_nothing_stored(&b, &veri_key, &root).await;
    assert!(b.metric("provd_bundle_imports_total", &[("outcome", "busy")]).await >= 1.0);
    // The held import completes, and frees its permit.
    assert_eq!(finish_slow(held, &bundle).await, 201);
    let (status, body) = import(&b, &bundle).await;
    assert_eq!(status, 201, "{body}");
    assert_same_evidence(&a, &b, &root).await;
    a.finish().await;
    b.finish().await;
}
}

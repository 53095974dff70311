//! The dev log used by stock Sigstore clients, as they are: sigstore-python's `RekorClient`
//! and `RekorV2Client` and sigstore-js's `RekorWitness` (`@sigstore/sign`) log artifacts and
//! DSSE envelopes signed with a throwaway CA's leaf certificate, with the requests those
//! clients really send (certificates as verifiers, computed fields as JSON `null`, the
//! retrieve route with a trailing slash, DSSE as sigstore-js's `intoto` 0.0.2). Every entry
//! a client got back is verified twice: by the client's own code (in the scripts) and by
//! provd's receipt verification (`Receipt::verify`: inclusion proof, signed checkpoint and,
//! for Rekor v1, the SET against the dev log's keys). The scripts are in `tests/clients/`
//! (`stock_rekor_python.py`, `stock_rekor_js.mjs`); `.ci/tools` installs the clients at
//! pinned versions. Without them the client test is skipped, and under `CI=true` it fails.
//!
//! The last test checks the same request forms without a client: Rekor's path cleaning on
//! every route, and nulls in v1 and v2 requests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use actors::domain::dsse::Envelope;
use actors::domain::receipt::{Receipt, TransparencyLogEntry, TrustedLog};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::lab_log::LabLog;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The clients `.ci/tools` installs, or `None` (skip) outside CI when one is missing.
fn clients() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let python = dir.join(".venv/bin/python");
    let mut missing = Vec::new();
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("node");
    }
    if !dir
        .join("node_modules/@sigstore/sign/package.json")
        .is_file()
    {
        missing.push("@sigstore/sign (tests/clients/node_modules)");
    }
    if !python.is_file() {
        missing.push("sigstore-python (tests/clients/.venv)");
    }
    if !Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("openssl");
    }
    if missing.is_empty() {
        return Some((dir, python));
    }
    let msg = format!(
        "stock Sigstore clients missing: {}; `bash .ci/tools` installs them",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: a missing client is a failure)");
    }
    eprintln!("skipping: {msg}");
    None
}

/// A `trusted_root.json` naming the dev log's two keys under the host its checkpoints are
/// signed as (`localhost`), which the clients require of a checkpoint signature's name.
fn trusted_root(log: &LabLog) -> Value {
    let port = log.base.rsplit(':').next().expect("port");
    let url = format!("http://{}:{port}", log.info.origin);
    let tlog = |der: Vec<u8>, details: &str, log_id: &[u8]| {
        json!({
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": B64.encode(der), "keyDetails": details,
                          "validFor": {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": B64.encode(log_id)},
        })
    };
    json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [
            tlog(log.info.v1_key.to_spki_der(), "PKIX_ECDSA_P256_SHA_256", &log.info.v1_log_id),
            tlog(log.info.v2_key.to_spki_der(), "PKIX_ED25519", &log.info.v2_log_id),
        ],
        "certificateAuthorities": [],
        "ctlogs": [],
        "timestampAuthorities": [],
    })
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the command runs"))
        .await
        .expect("joined")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a client script; its one JSON line.
async fn script(who: &str, cmd: Command) -> Value {
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{who} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{who} printed no JSON line ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// The canonical body of an entry a client got back, checked by provd's receipt
/// verification against the log's key for the entry's API.
fn verified_body(log: &LabLog, who: &str, entry: &Value) -> Value {
    let name = entry["name"].as_str().expect("name");
    let trusted: TrustedLog = match entry["api"].as_str() {
        Some("v1") => log.info.trusted_v1(),
        Some("v2") => log.info.trusted_v2(),
        other => panic!("unknown api {other:?}"),
    };
    let tle: TransparencyLogEntry = serde_json::from_value(entry["tle"].clone())
        .unwrap_or_else(|e| panic!("{who} {name}: not a TransparencyLogEntry: {e}: {entry}"));
    let receipt = Receipt::from_tle(&tle).expect("receipt");
    receipt
        .verify(&trusted)
        .unwrap_or_else(|e| panic!("provd refused {who}'s {name} entry: {e}"));
    if entry["api"] == "v1" {
        assert!(
            receipt.signed_entry_timestamp.is_some(),
            "{who} {name}: no SET"
        );
    }
    eprintln!(
        "provd verified {who}'s {name} entry (index {})",
        receipt.log_index
    );
    serde_json::from_slice(&receipt.canonical_body).expect("the body is JSON")
}

fn entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} entry in {report}"))
}

/// sigstore-python's and sigstore-js's own Rekor clients log entries with certificates,
/// nulls, the trailing-slash retrieve route and `intoto`; both the clients and provd verify
/// every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_python_and_sigstore_js_rekor_clients_use_the_dev_log() {
    let Some((dir, python)) = clients() else {
        return;
    };
    let log = LabLog::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("trusted_root.json");
    std::fs::write(&root, trusted_root(&log).to_string()).expect("write");

    // sigstore-python.
    let mut cmd = Command::new(&python);
    cmd.arg(dir.join("stock_rekor_python.py"))
        .arg(&log.base)
        .arg(&root);
    let report = script("sigstore-python", cmd).await;
    eprintln!(
        "sigstore-python: {}",
        serde_json::to_string(&report["nulls"]).expect("json")
    );
    assert!(
        report["nulls"]["v1 dsse"].as_u64().is_some_and(|n| n > 0),
        "sigstore-python's dsse request no longer carries nulls: {report}"
    );
    let cert_pem = report["certificate_pem"].as_str().expect("certificate");
    for e in report["entries"].as_array().expect("entries") {
        verified_body(&log, "sigstore-python", e);
    }
    // The certificate is stored as Rekor stores it: canonical PEM, base64.
    let body = verified_body(&log, "sigstore-python", entry(&report, "v1 hashedrekord"));
    assert_eq!(
        body["spec"]["signature"]["publicKey"]["content"],
        B64.encode(cert_pem)
    );
    let body = verified_body(&log, "sigstore-python", entry(&report, "v1 dsse"));
    assert_eq!(
        body["spec"]["signatures"][0]["verifier"],
        B64.encode(cert_pem)
    );
    assert_eq!(
        entry(&report, "v1 retrieve")["tle"]["logIndex"],
        entry(&report, "v1 hashedrekord")["tle"]["logIndex"]
    );
    for name in ["v2 hashedrekord", "v2 dsse"] {
        let body = verified_body(&log, "sigstore-python", entry(&report, name));
        let der = B64.encode(common_cert_der(cert_pem));
        assert_eq!(
            body["spec"]["hashedRekordV002"]["signature"]["verifier"]["x509Certificate"]["rawBytes"],
            der,
            "{name}: {body}"
        );
    }

    // sigstore-js.
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("stock_rekor_js.mjs"))
        .arg(&log.base)
        .arg(&root)
        .arg(work.path());
    let report = script("sigstore-js", cmd).await;
    let cert_pem = report["certificate_pem"].as_str().expect("certificate");
    for e in report["entries"].as_array().expect("entries") {
        verified_body(&log, "sigstore-js", e);
    }
    // intoto 0.0.2 as Rekor stores it: no payload, the payload hash computed, the envelope
    // hash and the double-encoded signature and key as sent.
    let body = verified_body(&log, "sigstore-js", entry(&report, "v1 intoto"));
    assert_eq!(body["kind"], "intoto");
    assert_eq!(body["apiVersion"], "0.0.2");
    let content = &body["spec"]["content"];
    assert!(content["envelope"].get("payload").is_none(), "{body}");
    assert_eq!(
        content["envelope"]["payloadType"],
        "application/vnd.in-toto+json"
    );
    assert_eq!(content["hash"]["algorithm"], "sha256");
    assert_eq!(content["payloadHash"]["algorithm"], "sha256");
    let sig = &content["envelope"]["signatures"][0];
    assert!(
        sig.get("keyid").is_none(),
        "an empty keyid is omitted: {body}"
    );
    assert_eq!(sig["publicKey"], B64.encode(cert_pem));
    let inner = B64
        .decode(sig["sig"].as_str().expect("sig"))
        .expect("base64");
    assert!(
        B64.decode(&inner).is_ok(),
        "the stored sig is base64 of the base64 signature"
    );
    // The conflict was answered with the existing entry.
    assert_eq!(
        entry(&report, "v1 intoto")["tle"]["logIndex"],
        entry(&report, "v1 intoto again (409, fetched)")["tle"]["logIndex"]
    );
    let body = verified_body(&log, "sigstore-js", entry(&report, "v1 hashedrekord"));
    assert_eq!(
        body["spec"]["signature"]["publicKey"]["content"],
        B64.encode(cert_pem)
    );
    // Rekor v2 refuses DSSE requests (DSSE goes in as a hashedrekord over the PAE); so does
    // the dev log, and sigstore-js reports it.
    let v2_dsse = report["v2_dsse"].as_str().expect("v2 dsse");
    assert!(
        v2_dsse.starts_with("refused") && v2_dsse.contains("must be hashedrekord"),
        "{v2_dsse}"
    );
}

/// The DER of the first PEM block.
fn common_cert_der(pem: &str) -> Vec<u8> {
    actors::domain::entry_binding::pem_block(pem)
        .expect("a PEM block")
        .1
}

/// Without a client: every route is served at its cleaned path (a trailing slash, doubled
/// slashes, `.` elements), and JSON `null` is absent in v1 (`hashedrekord`, `dsse`, `intoto`,
/// retrieve) and v2 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_cleaned_and_nulls_are_absent() {
    let log = LabLog::start().await;
    let http = reqwest::Client::new();
    let key = &log.signer;
    let pem_b64 = B64.encode(key.public_key().to_pem().expect("pem"));

    // dsse with the computed fields null, posted to `/api/v1/log/entries/`.
    let envelope = Envelope::sign("application/vnd.in-toto+json", b"{\"n\":1}", key, "");
    let dsse = json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
        "proposedContent": {"envelope": envelope.to_json(), "verifiers": [pem_b64]},
        "signatures": null, "envelopeHash": null, "payloadHash": null}});
    let resp = http
        .post(format!("{}/api/v1/log/entries/", log.base))
        .json(&dsse)
        .send()
        .await
        .expect("post");
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let created: Value = resp.json().await.expect("json");
    let id = created
        .as_object()
        .expect("object")
        .keys()
        .next()
        .expect("id")
        .clone();

    // intoto with nulls where Go reads absent values.
    let payload = b"{\"n\":2}";
    let sig = B64.encode(key.sign(&actors::domain::dsse::pae(
        "application/vnd.in-toto+json",
        payload,
    )));
    let intoto = json!({"apiVersion": "0.0.2", "kind": "intoto", "spec": {"content": {
        "envelope": {"payloadType": "application/vnd.in-toto+json",
                     "payload": B64.encode(B64.encode(payload)),
                     "signatures": [{"keyid": null, "sig": B64.encode(&sig), "publicKey": pem_b64}]},
        "hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(b"envelope"))},
        "payloadHash": null}}});
    let resp = http
        .post(format!("{}//api/v1/./log/entries", log.base))
        .json(&intoto)
        .send()
        .await
        .expect("post");
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let created: Value = resp.json().await.expect("json");
    let (_, v1_entry) = created
        .as_object()
        .expect("object")
        .iter()
        .next()
        .expect("entry");
    let body: Value = serde_json::from_slice(
        &B64.decode(v1_entry["body"].as_str().expect("body"))
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(
        body["spec"]["content"]["payloadHash"]["value"],
        hex::encode(Sha256::digest(payload))
    );
    // A signature that does not verify is refused, nulls or not.
    let mut bad = intoto.clone();
    bad["spec"]["content"]["envelope"]["payload"] = json!(B64.encode(B64.encode(b"{\"n\":3}")));
    let resp = http
        .post(format!("{}/api/v1/log/entries", log.base))
        .json(&bad)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);

    // v2 with nulls in the request.
    let digest = Sha256::digest(b"v2 artifact");
    let v2 = json!({"hashedRekordRequestV002": {
        "digest": B64.encode(digest),
        "signature": {"content": B64.encode(key.sign(b"v2 artifact")),
                      "verifier": {"publicKey": {"rawBytes": B64.encode(key.public_key().to_spki_der())},
                                   "x509Certificate": null,
                                   "keyDetails": "PKIX_ECDSA_P256_SHA_256"}}},
        "dsseRequestV002": null});
    let resp = http
        .post(format!("{}/api/v2/log/entries/", log.base))
        .json(&v2)
        .send()
        .await
        .expect("post");
    assert_eq!(
        resp.status(),
        201,
        "{}",
        resp.text().await.unwrap_or_default()
    );

    // Reads at cleaned paths, each the same as at its own path.
    let uuid = &id[16..];
    for (path, clean) in [
        ("/api/v1/log/".to_owned(), "/api/v1/log".to_owned()),
        (
            "/api/v1/log/publicKey/".into(),
            "/api/v1/log/publicKey".into(),
        ),
        (
            "/api/v1/log/proof/?firstSize=1&lastSize=2".into(),
            "/api/v1/log/proof?firstSize=1&lastSize=2".into(),
        ),
        (
            format!("/api/v1/log/entries/{uuid}/"),
            format!("/api/v1/log/entries/{uuid}"),
        ),
        (
            "/api/v1/log/entries/?logIndex=1".into(),
            "/api/v1/log/entries?logIndex=1".into(),
        ),
        (
            "/api/v1//log/x/../publicKey".into(),
            "/api/v1/log/publicKey".into(),
        ),
        ("/tile/0/000.p/3/".into(), "/tile/0/000.p/3".into()),
        ("/healthz/".into(), "/healthz".into()),
    ] {
        let a = http
            .get(format!("{}{path}", log.base))
            .send()
            .await
            .expect("get");
        assert_eq!(a.status(), 200, "{path}");
        let b = http
            .get(format!("{}{clean}", log.base))
            .send()
            .await
            .expect("get");
        assert_eq!(b.status(), 200, "{clean}");
        // Checkpoint signatures are deterministic (RFC 6979 ECDSA, Ed25519): same bytes.
        assert_eq!(
            a.bytes().await.expect("body"),
            b.bytes().await.expect("body"),
            "{path}"
        );
    }

    // Retrieve with a trailing slash and nulls: the dsse entry found by its UUID and by the
    // proposed entry.
    let resp = http
        .post(format!("{}/api/v1/log/entries/retrieve/", log.base))
        .json(&json!({"entryUUIDs": [uuid], "logIndexes": null, "entries": [dsse]}))
        .send()
        .await
        .expect("retrieve");
    assert_eq!(resp.status(), 200);
    let found: Value = resp.json().await.expect("json");
    let found = found.as_array().expect("array");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|f| f.get(&id).is_some()), "{found:?}");
}

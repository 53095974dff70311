//! The Sigstore bundle of every attestation provd logs, end to end: provd (its HTTP API and
//! submission queue) logs a DSSE envelope in the local Rekor-compatible log through the v1
//! API (a `dsse` 0.0.1 entry) and the v2 API (a `hashedrekord` 0.0.2 entry over the PAE),
//! serves each one's bundle at `GET /api/v1/rekor/submissions/{id}/bundle`, and the bundle is
//! verified by provd itself and by the reference clients sigstore-js (`@sigstore/verify`) and
//! sigstore-python, each of which must also refuse a copy with one flipped signature byte.
//!
//! The clients are installed at pinned versions by `.ci/tools` into `tests/clients/`
//! (`node_modules/` from `package-lock.json`, `.venv/` from `requirements.txt`); this test
//! installs nothing. Without them it is skipped, and under `CI=true` it fails.
//!
//! A Rekor v2 entry carries no integrated time and the local log has no timestamp authority,
//! so a v2 bundle has no verified time. provd, like sigstore-js, requires one by default
//! (`--timestamp-threshold 1`, `timestampThreshold: 1`) and refuses it, which the test checks;
//! it is then verified with a threshold of 0, the caller's explicit choice for a managed key.
//! sigstore-python has no managed-key verification: `tests/clients/verify_python.py` says
//! which of its checks it runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use actors::domain::dsse::Envelope;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::lab_log::LabLog;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually};
use provd::config::RawRekor;
use provd::config::rekor::RawRekorBackend;
use provd::devlog::Faults;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The artifact the statements name as their subject.
const ARTIFACT: &[u8] = b"the artifact provd's attestation is about";

impl LabLog {
    /// One backend per API of this log, `v1` the default; no retries inside the client, so
    /// every failure reaches the queue.
    fn rekor_both_apis(&self) -> RawRekor {
        let backend = |api: &str, key: &str| RawRekorBackend {
            kind: Some("private".into()),
            api: Some(api.into()),
            url: Some(self.base.clone()),
            keys: Some(vec![key.to_owned()]),
            origin: Some(self.info.origin.clone()),
            max_attempts: Some(1),
            initial_backoff: Some("20ms".into()),
            breaker_threshold: Some(100_000),
            read_timeout: Some("5s".into()),
            sync_interval: Some("1h".into()),
            ..RawRekorBackend::default()
        };
        RawRekor {
            default_backend: Some("v1".into()),
            backends: [
                ("v1".to_owned(), backend("v1", &self.info.v1_public_key_pem)),
                ("v2".to_owned(), backend("v2", &self.info.v2_vkey)),
            ]
            .into(),
            queue: None,
        }
    }

    /// A `trusted_root.json` naming this log's two keys: the Rekor v1 key (log ID: SHA-256
    /// of its SPKI) and the v2 checkpoint key (log ID: its C2SP key ID). The base URL names
    /// the log by the host its checkpoints are signed as (`localhost`), which sigstore-js
    /// requires of a signature's name.
    fn trusted_root(&self) -> Value {
        let port = self.base.rsplit(':').next().expect("port");
        let url = format!("http://{}:{port}", self.info.origin);
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
                tlog(self.info.v1_key.to_spki_der(), "PKIX_ECDSA_P256_SHA_256", &self.info.v1_log_id),
                tlog(self.info.v2_key.to_spki_der(), "PKIX_ED25519", &self.info.v2_log_id),
            ],
            "certificateAuthorities": [],
            "ctlogs": [],
            "timestampAuthorities": [],
        })
    }

    /// An in-toto statement about [`ARTIFACT`], signed by the log's test signer; `n` makes
    /// each one a new entry.
    fn statement(&self, n: &str) -> Envelope {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "artifact", "digest": {"sha256": hex::encode(Sha256::digest(ARTIFACT))}}],
            "predicateType": "https://provd.test/attestation/v1",
            "predicate": {"n": n, "nonce": uuid::Uuid::new_v4()},
        });
        Envelope::sign(
            "application/vnd.in-toto+json",
            statement.to_string().as_bytes(),
            &self.signer,
            "",
        )
    }

    fn signer_pem(&self) -> String {
        self.signer.public_key().to_pem().expect("pem")
    }
}

async fn start_provd(log: &LabLog) -> Option<TestApp> {
    let rekor = log
        .rekor_both_apis()
        .validate()
        .expect("valid rekor config");
    TestApp::start_with(move |c| c.rekor = rekor).await
}

impl TestApp {
    /// Queues `envelope` for `backend`; returns the submission id.
    async fn submit_to(&self, log: &LabLog, envelope: &Envelope, backend: &str) -> String {
        let resp = self
            .http
            .post(self.url("/api/v1/rekor/submissions"))
            .bearer_auth(ADMIN_TOKEN)
            .json(
                &json!({"envelope": envelope, "verifiers": [log.signer_pem()], "backend": backend}),
            )
            .send()
            .await
            .expect("submit");
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    async fn status_of(&self, id: &str) -> String {
        let s: Value = self
            .http
            .get(self.url(&format!("/api/v1/rekor/submissions/{id}")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        s["status"].as_str().expect("status").to_owned()
    }

    async fn until_logged(&self, id: &str) {
        eventually(
            &format!("submission {id} logged"),
            Duration::from_secs(60),
            || async { (self.status_of(id).await == "logged").then_some(()) },
        )
        .await;
    }

    /// `GET /bundle`: the status and the body.
    async fn bundle(&self, id: &str) -> (reqwest::StatusCode, Option<String>, Value) {
        let resp = self
            .http
            .get(self.url(&format!("/api/v1/rekor/submissions/{id}/bundle")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("bundle");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, content_type, resp.json().await.expect("json"))
    }
}

/// Runs a command to completion off the async runtime.
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the command runs"))
        .await
        .expect("joined")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
    path
}

/// The bundle with its envelope signature's last byte flipped.
fn tampered(bundle: &Value) -> Value {
    let mut copy = bundle.clone();
    let sig = &mut copy["dsseEnvelope"]["signatures"][0]["sig"];
    let mut bytes = B64.decode(sig.as_str().expect("sig")).expect("base64");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    *sig = json!(B64.encode(bytes));
    copy
}

both_modes! {
/// The route: 404 for an unknown id, 409 naming the status while the submission waits, the
/// bundle once it is logged; and `provd rekor submit --wait --bundle-out` writes that bundle.
async fn the_bundle_route_and_the_cli_bundle_out() {
    let log = LabLog::start().await;
    let Some(app) = start_provd(&log).await else {
        return;
    };
    let (status, _, body) = app.bundle("sub-unknown").await;
    assert_eq!(status, 404, "{body}");

    // While the log fails every write, the submission waits and has no bundle.
    log.set_faults(&Faults {
        fail_next: 100_000,
        fail_status: 503,
        ..Faults::default()
    })
    .await;
    let id = app.submit_to(&log, &log.statement("waiting"), "v1").await;
    eventually("a failed attempt", Duration::from_secs(30), || async {
        (app.status_of(&id).await == "retrying").then_some(())
    })
    .await;
    let (status, _, body) = app.bundle(&id).await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        ["queued", "submitting", "retrying"]
            .iter()
            .any(|s| message.contains(&format!("is {s};"))),
        "{message}"
    );
    log.set_faults(&Faults::default()).await;
    app.until_logged(&id).await;
    let (status, content_type, bundle) = app.bundle(&id).await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(bundle["mediaType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
    assert_eq!(
        bundle["verificationMaterial"]["publicKey"]["hint"],
        B64.encode(Sha256::digest(log.signer.public_key().to_spki_der()))
    );
    assert_eq!(bundle["verificationMaterial"]["tlogEntries"][0]["kindVersion"]["kind"], "dsse");
    // `read` scope.
    let resp = app
        .http
        .get(app.url(&format!("/api/v1/rekor/submissions/{id}/bundle")))
        .send()
        .await
        .expect("bundle");
    assert_eq!(resp.status(), 401);

    // The CLI, to the v2 backend: the file is the bundle the route serves.
    let dir = tempfile::tempdir().expect("tempdir");
    let envelope = log.statement("cli");
    let env_path = dir.path().join("envelope.json");
    std::fs::write(&env_path, envelope.to_json()).expect("write");
    let pem_path = dir.path().join("signer.pub.pem");
    std::fs::write(&pem_path, log.signer_pem()).expect("write");
    let out_path = dir.path().join("attestation.sigstore.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
    cmd.args(["rekor", "submit"])
        .arg(&env_path)
        .arg("--verifier")
        .arg(&pem_path)
        .args(["--backend", "v2", "--server", &app.url(""), "--token", ADMIN_TOKEN])
        .args(["--wait", "--timeout", "60s", "--bundle-out"])
        .arg(&out_path);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let id = actors::domain::submission::submission_id("v2", &envelope);
    assert!(
        text(&out.stdout).contains(&format!("{id} bundle written to")),
        "{}",
        text(&out.stdout)
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(&out_path).expect("bundle file")).expect("json");
    let (status, _, served) = app.bundle(&id).await;
    assert_eq!(status, 200);
    assert_eq!(written, served);
    assert_eq!(
        written["verificationMaterial"]["tlogEntries"][0]["kindVersion"],
        json!({"kind": "hashedrekord", "version": "0.0.2"})
    );

    // `--bundle-out` needs `--wait`: a usage error.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
    cmd.args(["rekor", "submit"])
        .arg(&env_path)
        .arg("--verifier")
        .arg(&pem_path)
        .arg("--bundle-out")
        .arg(&out_path);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    app.finish().await;
}
}

/// Where `.ci/tools` installs the reference clients.
struct Clients {
    dir: PathBuf,
    python: PathBuf,
}

/// The installed clients, or `None` (skip) outside CI when they are missing.
fn clients() -> Option<Clients> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let python = dir.join(".venv/bin/python");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    if !node {
        missing.push("node");
    }
    if !dir
        .join("node_modules/@sigstore/verify/package.json")
        .is_file()
    {
        missing.push("sigstore-js (tests/clients/node_modules)");
    }
    if !python.is_file() {
        missing.push("sigstore-python (tests/clients/.venv)");
    }
    if missing.is_empty() {
        return Some(Clients { dir, python });
    }
    let msg = format!(
        "reference Sigstore clients missing: {}; `bash .ci/tools` installs them",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: a missing client is a failure)");
    }
    eprintln!("skipping: {msg}");
    None
}

impl Clients {
    async fn provd(&self, bundle: &Path, key: &Path, root: &Path, threshold: u32) -> Output {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(ARTIFACT)));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
        cmd.args(["sigstore", "verify-bundle", "--bundle"])
            .arg(bundle)
            .arg("--key")
            .arg(key)
            .arg("--trusted-root")
            .arg(root)
            .args(["--timestamp-threshold", &threshold.to_string(), &digest]);
        run(cmd).await
    }

    async fn sigstore_js(&self, bundle: &Path, key: &Path, root: &Path, threshold: u32) -> Output {
        let mut cmd = Command::new("node");
        cmd.arg(self.dir.join("verify-js.mjs"))
            .arg(bundle)
            .arg(root)
            .arg(key)
            .arg(threshold.to_string());
        run(cmd).await
    }

    async fn sigstore_python(&self, bundle: &Path, key: &Path, root: &Path) -> Output {
        let mut cmd = Command::new(&self.python);
        cmd.arg(self.dir.join("verify_python.py"))
            .arg(bundle)
            .arg(root)
            .arg(key);
        run(cmd).await
    }
}

fn accepted(who: &str, api: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{who} refused the {api} bundle: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    eprintln!(
        "{who} verified the {api} bundle: {}",
        text(&out.stdout).trim()
    );
}

fn refused(who: &str, what: &str, out: &Output, because: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{who} did not refuse {what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains(because),
        "{who} refused {what}, but not because of {because:?}: {}",
        text(&out.stderr)
    );
    eprintln!("{who} refused {what}: {}", text(&out.stderr).trim());
}

/// Each client accepts the v1 and the v2 bundle provd serves, and refuses a copy of each with
/// one flipped signature byte and a v1 bundle whose envelope is another (validly signed) one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provd_sigstore_js_and_sigstore_python_verify_provd_bundles() {
    let Some(clients) = clients() else {
        return;
    };
    // The clients see only files: the store behind the route is covered in both modes above.
    common::in_mode(common::Mode::Embedded, async {
        let log = LabLog::start().await;
        let app = start_provd(&log)
            .await
            .expect("embedded mode needs no services");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = write_json(dir.path(), "trusted_root.json", &log.trusted_root());
        let key = dir.path().join("signer.pub");
        std::fs::write(&key, log.signer_pem()).expect("write");

        let mut bundles = Vec::new();
        for api in ["v1", "v2"] {
            let id = app.submit_to(&log, &log.statement(api), api).await;
            app.until_logged(&id).await;
            let (status, _, bundle) = app.bundle(&id).await;
            assert_eq!(status, 200, "{bundle}");
            let good = write_json(dir.path(), &format!("{api}.sigstore.json"), &bundle);
            let bad = write_json(
                dir.path(),
                &format!("{api}-tampered.sigstore.json"),
                &tampered(&bundle),
            );
            let tampered_copy = format!("the tampered {api} bundle");
            // A v2 entry has no trusted time: refused at the default threshold, then verified
            // with the caller's explicit threshold of 0.
            let threshold = u32::from(api == "v1");
            if api == "v2" {
                let out = clients.provd(&good, &key, &root, 1).await;
                refused(
                    "provd",
                    "the v2 bundle at --timestamp-threshold 1",
                    &out,
                    "threshold check failed",
                );
                let out = clients.sigstore_js(&good, &key, &root, 1).await;
                refused(
                    "sigstore-js",
                    "the v2 bundle at timestampThreshold 1",
                    &out,
                    "expected 1 timestamps, got 0",
                );
            }

            let out = clients.provd(&good, &key, &root, threshold).await;
            accepted("provd", api, &out);
            let out = clients.provd(&bad, &key, &root, threshold).await;
            refused("provd", &tampered_copy, &out, "check failed");

            let out = clients.sigstore_js(&good, &key, &root, threshold).await;
            accepted("sigstore-js", api, &out);
            let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
            assert_eq!(report["set"], api == "v1");
            let out = clients.sigstore_js(&bad, &key, &root, threshold).await;
            refused("sigstore-js", &tampered_copy, &out, "refused the bundle");

            let out = clients.sigstore_python(&good, &key, &root).await;
            accepted("sigstore-python", api, &out);
            let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
            assert_eq!(report["set"], api == "v1");
            assert!(
                report["public_bundle_api"]
                    .as_str()
                    .is_some_and(|r| r.contains("expected certificate in bundle")),
                "sigstore-python's Bundle.from_json now takes key-signed bundles: use it ({report})"
            );
            let out = clients.sigstore_python(&bad, &key, &root).await;
            refused(
                "sigstore-python",
                &tampered_copy,
                &out,
                "refused the bundle at signature",
            );
            bundles.push(bundle);
        }

        // A validly signed envelope beside another envelope's v1 entry: every signature
        // verifies, but the entry is not about this envelope.
        let mut swapped = bundles[0].clone();
        swapped["dsseEnvelope"] = bundles[1]["dsseEnvelope"].clone();
        let swapped = write_json(dir.path(), "swapped.sigstore.json", &swapped);
        let what = "a v1 entry beside another envelope";
        let out = clients.provd(&swapped, &key, &root, 1).await;
        refused("provd", what, &out, "transparency log check failed");
        let out = clients.sigstore_js(&swapped, &key, &root, 1).await;
        refused("sigstore-js", what, &out, "refused the bundle");
        let out = clients.sigstore_python(&swapped, &key, &root).await;
        refused(
            "sigstore-python",
            what,
            &out,
            "refused the bundle at binding",
        );
        app.finish().await;
    })
    .await;
}

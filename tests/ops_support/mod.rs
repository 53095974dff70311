//! Helpers shared by the operations tests (metrics catalogue, dashboard, status, logs): the
//! in-process local log, traffic through every landed capability, and the external tools
//! (promtool, Chromium) that CI installs and a developer may lack.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use actors::domain::dsse::Envelope;
use actors::domain::keys::{Algorithm, PrivateKey};
use provd::config::RawRekor;
use provd::config::rekor::{RawRekorBackend, RawRekorQueue};
use serde_json::{Value, json};

pub use crate::common::lab_log::LabLog;
use crate::common::{ADMIN_TOKEN, READ_TOKEN, TestApp, eventually, fresh_veri_key};

/// Long enough for a write-behind flush (5 s interval) and a Rekor submission.
pub const WAIT: Duration = Duration::from_secs(60);

impl LabLog {
    /// A `[rekor]` section with this log as the Rekor v1 backend `lab`.
    pub fn rekor(&self) -> RawRekor {
        RawRekor {
            default_backend: Some("lab".into()),
            backends: [
                (
                    "lab".to_owned(),
                    RawRekorBackend {
                        kind: Some("private".into()),
                        api: Some("v1".into()),
                        url: Some(self.base.clone()),
                        keys: Some(vec![self.info.v1_public_key_pem.clone()]),
                        origin: Some(self.info.origin.clone()),
                        read_timeout: Some("5s".into()),
                        // Short, so the log sync verifies checkpoints within a test.
                        sync_interval: Some("200ms".into()),
                        ..RawRekorBackend::default()
                    },
                ),
                // The same tree through the Rekor v2 (tlog-tiles) API, cached by the tile cache.
                (
                    "lab2".to_owned(),
                    RawRekorBackend {
                        kind: Some("private".into()),
                        api: Some("v2".into()),
                        url: Some(self.base.clone()),
                        keys: Some(vec![self.info.v2_vkey.clone()]),
                        origin: Some(self.info.origin.clone()),
                        read_timeout: Some("5s".into()),
                        sync_interval: Some("200ms".into()),
                        ..RawRekorBackend::default()
                    },
                ),
            ]
            .into(),
            queue: Some(RawRekorQueue {
                batch_size: Some(8),
                concurrency: Some(2),
                max_attempts: Some(3),
                ack_wait: Some("60s".into()),
            }),
        }
    }
}

/// Starts provd with the local log as its Rekor backend.
pub async fn start_with_log(log: &LabLog) -> Option<TestApp> {
    let rekor = log.rekor().validate().expect("valid rekor config");
    let tiles = provd::config::TilesConfig {
        cache_dir: log.scratch_dir("tiles"),
        max_bytes: 64 << 20,
        backends: vec!["lab2".into()],
        prefetch: true,
        require_token: false,
    };
    TestApp::start_with(move |c| {
        c.rekor = rekor;
        c.tiles = Some(tiles);
    })
    .await
}

/// Drives traffic through every landed capability and waits until each has shown in the
/// metrics: a cache write (flushed behind), reads that hit and miss, an evidence upload, an
/// invalidation, and a Rekor submission logged by the local log.
pub async fn drive_traffic(t: &TestApp) {
    // Cache: write, read back (hit), read an unknown key (miss).
    let key = fresh_veri_key();
    let r = t
        .http
        .post(t.url("/api/v1/provcache/entries"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "veri_key": key,
            "verdict": {"decision": "allow"},
            "trust_score": 90,
            "proof_root": format!("sha256:{}", "ab".repeat(32)),
            "policy_hash": "sha256:policy-ops",
            "signer_set_hash": "sha256:signers-ops",
            "signer_key_ids": ["key-a"],
        }))
        .send()
        .await
        .expect("put entry");
    assert!(r.status().is_success(), "put entry: {}", r.status());
    let r = t
        .http
        .get(t.url(&format!("/api/v1/provcache/entries/{key}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get entry");
    assert_eq!(r.status(), 200);
    let r = t
        .http
        .get(t.url(&format!("/api/v1/provcache/entries/{}", fresh_veri_key())))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get miss");
    assert_eq!(r.status(), 404);

    // The flusher writes the entry behind before the invalidation below can drop it.
    eventually("the write-behind flush", WAIT, || async {
        (t.metric("provd_write_behind_flushed_total", &[]).await > 0.0).then_some(())
    })
    .await;

    // Evidence.
    let r = t
        .http
        .post(t.url("/api/v1/proofs"))
        .bearer_auth(ADMIN_TOKEN)
        .body(vec![7u8; 200_000])
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201);

    // Invalidation by policy (the entry above goes).
    let r = t
        .http
        .post(t.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"policy_hash": "sha256:policy-ops", "reason": "ops catalogue test"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(r.status(), 202);

    // A Rekor submission through the queue to the local log.
    let r = t
        .http
        .post(t.url("/api/v1/rekor/submissions"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&submission_body())
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    eventually("the submission is logged", WAIT, || async {
        let s: Value = t
            .http
            .get(t.url(&format!("/api/v1/rekor/submissions/{id}")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s["status"] == "logged").then_some(())
    })
    .await;

    // Everything has shown in the metrics.
    for (name, labels) in [
        ("provd_provcache_hits_total", vec![("tier", "memory")]),
        ("provd_evidence_uploads_total", vec![("outcome", "created")]),
        ("provd_invalidations_total", vec![("type", "explicit")]),
        ("provd_rekor_submissions_total", vec![("outcome", "logged")]),
    ] {
        eventually(&format!("{name} counts the traffic"), WAIT, || async {
            (t.metric(name, &labels).await > 0.0).then_some(())
        })
        .await;
    }
}

/// The body of `POST /api/v1/rekor/submissions`: a fresh signed envelope and its key.
pub fn submission_body() -> Value {
    let signer = PrivateKey::generate(Algorithm::P256, &mut |buf: &mut [u8]| {
        getrandom::fill(buf).map_err(|e| e.to_string())
    })
    .expect("key");
    let pem = signer.public_key().to_pem().expect("pem");
    let payload =
        json!({"_type": "https://in-toto.io/Statement/v1", "nonce": uuid::Uuid::new_v4()});
    let envelope = Envelope::sign(
        "application/vnd.in-toto+json",
        payload.to_string().as_bytes(),
        &signer,
        "",
    );
    json!({"envelope": envelope, "verifiers": [pem]})
}

/// Whether CI runs this (a missing tool is then a failure, not a skip).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of a tool, or `None` (after saying so) when it is missing outside CI.
pub fn tool(name: &str, candidates: &[&str], package: &str) -> Option<PathBuf> {
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.exists())
            })
        });
    if found.is_none() {
        let msg = format!("{name} is missing; install Debian's `{package}` package");
        assert!(
            !in_ci(),
            "{msg} (CI=true: a missing tool is a failure; .ci/run installs it)"
        );
        eprintln!("SKIPPED: {msg}");
    }
    found
}

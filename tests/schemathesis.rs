//! schemathesis, a property-based API tester, finds nothing wrong with `/api/openapi.json`.
//!
//! provd runs in each mode with a Rekor backend (the local lab log) and the tile proxy, so
//! every documented route is served; schemathesis (installed by `.ci/tools` into
//! `tests/clients/schemathesis/.venv`, pinned) reads the document from the running server
//! and runs all its checks in all its phases with the admin token, a fixed seed and a bounded
//! number of examples per operation. Any failure it reports, a 5xx included, fails the test
//! with its report.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::lab_log::LabLog;
use common::{ADMIN_TOKEN, TestApp, both_modes};
use provd::config::rekor::RawRekorBackend;
use provd::config::{RawRekor, TilesConfig};

/// Test cases per operation and phase: enough to cover each schema's shapes, few enough
/// that one mode takes about two minutes on two cores.
const MAX_EXAMPLES: &str = "40";

/// The seed that makes the generated requests the same on every run.
const SEED: &str = "22";

/// The installed `st` command, or `None` (skip) outside CI when it is missing.
fn schemathesis() -> Option<PathBuf> {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/schemathesis/.venv/bin/st");
    if st.is_file() {
        return Some(st);
    }
    let msg =
        "schemathesis missing (tests/clients/schemathesis/.venv); `bash .ci/tools` installs it";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: a missing tool is a failure)");
    }
    eprintln!("skipping: {msg}");
    None
}

both_modes! {
async fn schemathesis_finds_no_failure() {
    let Some(st) = schemathesis() else { return };
    let log = LabLog::start().await;
    let rekor = RawRekor {
        default_backend: Some("lab".into()),
        backends: [(
            "lab".to_owned(),
            RawRekorBackend {
                kind: Some("private".into()),
                api: Some("v2".into()),
                url: Some(log.base.clone()),
                keys: Some(vec![log.info.v2_vkey.clone()]),
                origin: Some(log.info.origin.clone()),
                max_attempts: Some(1),
                read_timeout: Some("10s".into()),
                ..RawRekorBackend::default()
            },
        )]
        .into(),
        queue: None,
    }
    .validate()
    .expect("valid rekor config");
    let tiles = TilesConfig {
        cache_dir: log.scratch_dir("tiles"),
        max_bytes: 64 << 20,
        backends: vec!["lab".into()],
        prefetch: false,
        require_token: true,
    };
    let Some(t) = TestApp::start_with(move |c| {
        c.rekor = rekor;
        c.tiles = Some(tiles);
    })
    .await
    else {
        return;
    };
    let report = log.scratch_dir("schemathesis-report");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/schemathesis/schemathesis.toml");
    let mut cmd = std::process::Command::new(&st);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(t.url("/api/openapi.json"))
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        // One worker: with two, CPython 3.11's `ast` is parsed from two threads at once
        // (hypothesis describing its lambdas) and now and then fails with "AST constructor
        // recursion depth mismatch", a crash of the tool, not a finding.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {ADMIN_TOKEN}"))
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .stdin(Stdio::null())
        // schemathesis keeps a cache (`.schemathesis/`) in its working directory: the test's.
        .current_dir(&report);
    // The server runs on this runtime's other threads while schemathesis blocks this one.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis reported failures ({}): see its report above",
        out.status
    );
    // A run that tested nothing would pass as well: it must have reached the API.
    assert!(
        stdout.contains("/api/v1/provcache/entries"),
        "schemathesis tested the documented operations"
    );
    t.finish().await;
}
}

//! The ops dashboard in headless Chromium against a running provd: every figure the page shows
//! equals `GET /api/v1/status`, an open divergence is shown as open (red), and a screenshot is
//! written to `target/dashboard.png`.
//!
//! The divergence is real: the local log is switched to its wrong-key fault mode and provd's
//! log sync detects it (`bad_signature`).

mod common;
mod ops_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ADMIN_TOKEN, TestApp, both_modes, eventually};
use ops_support::{LabLog, WAIT, start_with_log, tool};
use serde_json::{Value, json};

/// Runs headless Chromium with `extra` arguments on `url`; returns stdout. It runs on the
/// blocking pool: the provd it reads is served by this test's own runtime.
async fn chromium(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> String {
    let (bin, profile, url) = (bin.to_owned(), profile.to_owned(), url.to_owned());
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || run_chromium(&bin, &profile, &extra, &url))
        .await
        .expect("join")
}

fn run_chromium(bin: &Path, profile: &Path, extra: &[String], url: &str) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// Every `data-figure="path" data-value="value"` pair of the DOM.
fn figures(dom: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in dom.split("data-figure=\"").skip(1) {
        let Some((path, rest)) = part.split_once('"') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("data-value=\"") else {
            continue;
        };
        let Some((value, _)) = rest.split_once('"') else {
            continue;
        };
        out.insert(path.to_owned(), value.replace("&amp;", "&"));
    }
    out
}

/// The value at a dotted path (`checkpoints.0.tree_size`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) if v.is_array() => &v[i],
        _ => &v[k],
    })
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn status(t: &TestApp) -> Value {
    t.http
        .get(t.url("/api/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status json")
}

both_modes! {
async fn the_dashboard_shows_the_status_figures_and_an_open_divergence_in_headless_chromium() {
    let Some(chromium_bin) = tool("chromium", &["/usr/bin/chromium"], "chromium") else {
        return;
    };
    let log = LabLog::start().await;
    let Some(t) = start_with_log(&log).await else {
        return;
    };
    ops_support::drive_traffic(&t).await;
    // Another invalidation, so the replay table has this node's checkpoint.
    let r = t
        .http
        .post(t.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"signer_set_hash": "sha256:nobody", "reason": "dashboard test"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(r.status(), 202);
    eventually("this node's replay checkpoint", WAIT, || async {
        let s = status(&t).await;
        (s["replay"].as_array().is_some_and(|r| !r.is_empty())
            && s["ledger"]["head"].as_i64() == Some(2))
        .then_some(())
    })
    .await;
    // A verified checkpoint, then an open divergence: the log starts signing with a wrong key.
    eventually("a verified checkpoint", WAIT, || async {
        let s = status(&t).await;
        s["checkpoints"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
            .then_some(())
    })
    .await;
    let r = t
        .http
        .post(format!("{}/__faults", log.base))
        .json(&json!({"wrong_key": true}))
        .send()
        .await
        .expect("faults");
    assert!(r.status().is_success(), "faults refused: {r:?}");
    let divergence_id = eventually("a divergence on each backend", WAIT, || async {
        let body: Value = t
            .http
            .get(t.url("/api/v1/rekor/divergences?open=true"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        // One per backend: the same tree is read as Rekor v1 (`lab`) and v2 (`lab2`).
        let all = body["divergences"].as_array()?;
        if all.len() < 2 {
            return None;
        }
        for d in all {
            assert_eq!(d["kind"], "bad_signature", "{d}");
        }
        all[0]["id"].as_i64()
    })
    .await;

    let profile = tempfile::tempdir().expect("profile dir");
    let url = t.url("/dashboard");
    let before = status(&t).await;
    let dom = chromium(&chromium_bin, profile.path(), &["--dump-dom"], &url).await;
    let after = status(&t).await;
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page rendered the status: {dom}"
    );

    // Every figure on the page equals the endpoint's (a figure that moves with the clock,
    // such as an age, lies between the values read just before and just after).
    let shown = figures(&dom);
    let services: Vec<String> = t
        .services_expected()
        .iter()
        .map(|s| format!("services.{s}.status"))
        .collect();
    for path in services.iter().map(String::as_str).chain([
        "status",
        "node_id",
        "deployment_id",
        "actors.write-behind-flusher.status",
        "actors.rekor-submitter.status",
        "cache.hit_ratio",
        "cache.hits",
        "cache.misses",
        "write_behind.lag_seconds",
        "write_behind.queue_depth",
        "submissions.queue_depth",
        "submissions.dead_letters",
        "divergences.open",
        "checkpoints.0.tree_size",
        "checkpoints.0.age_seconds",
        "invalidations.last_24h",
        "replay.0.node_id",
        "replay.0.lag",
        "ledger.head",
    ]) {
        assert!(shown.contains_key(path), "the page shows {path}: {shown:?}");
    }
    for (path, value) in &shown {
        let (b, a) = (at(&before, path), at(&after, path));
        match (b.as_f64(), a.as_f64(), value.parse::<f64>()) {
            (Some(lo), Some(hi), Ok(v)) => assert!(
                lo.min(hi) <= v && v <= lo.max(hi),
                "{path}: the page shows {v}, the endpoint {lo}..{hi}"
            ),
            _ => assert!(
                *value == as_text(b) || *value == as_text(a),
                "{path}: the page shows {value:?}, the endpoint {b} / {a}"
            ),
        }
    }
    assert_eq!(shown["divergences.open"], "2");
    assert_eq!(shown["status"], "unhealthy");
    assert!(
        dom.contains(&format!(
            "<tr class=\"open\" data-divergence-id=\"{divergence_id}\" data-state=\"open\">"
        )),
        "the divergence is shown as open: {dom}"
    );
    assert!(
        dom.contains("id=\"divergences\" class=\"open\""),
        "the divergences panel is marked open (red)"
    );

    // A screenshot for people.
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &chromium_bin,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1000",
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG at {}", shot.display());
    t.finish().await;
}
}

//! The metrics catalogue: after traffic through every landed capability, `/metrics` passes
//! `promtool check metrics`, every metric has `# HELP` and `# TYPE`, and its names are exactly
//! those listed in `docs/metrics.md`.

mod common;
mod ops_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use common::both_modes;
use ops_support::{LabLog, drive_traffic, start_with_log, tool};

/// The metric names `docs/metrics.md` lists (first column of its tables).
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("provd_"))
        .map(str::to_owned)
        .collect()
}

/// Metric families in Prometheus text: name → type, and the names that have `# HELP`.
fn families(text: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut types = Vec::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(ty)) => {
                types.push((name.to_owned(), ty.to_owned()))
            }
            (Some("#"), Some("HELP"), Some(name), _) => {
                helped.insert(name.to_owned());
            }
            _ => {}
        }
    }
    (types, helped)
}

both_modes! {
async fn metrics_pass_promtool_and_match_the_catalogue_after_traffic_through_every_capability() {
    let log = LabLog::start().await;
    let Some(t) = start_with_log(&log).await else {
        return;
    };
    // Before any traffic the catalogue is already complete: every series exists at zero.
    let before = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    drive_traffic(&t).await;
    let text = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");

    let (types, helped) = families(&text);
    let names: BTreeSet<String> = types.iter().map(|(n, _)| n.clone()).collect();
    let doc = documented();
    let undocumented: Vec<_> = names.difference(&doc).collect();
    let absent: Vec<_> = doc.difference(&names).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/metrics.md: {undocumented:?}"
    );
    assert!(
        absent.is_empty(),
        "in docs/metrics.md but not exported: {absent:?}"
    );
    let (before_types, _) = families(&before);
    let before_names: BTreeSet<String> = before_types.into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        before_names, names,
        "the same metrics exist before traffic (created at zero)"
    );
    let unhelped: Vec<_> = names.difference(&helped).collect();
    assert!(unhelped.is_empty(), "metrics without # HELP: {unhelped:?}");
    for (name, ty) in &types {
        assert!(name.starts_with("provd_"), "{name}: the provd_ prefix");
        match ty.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name} ends in _total"),
            "histogram" => assert!(
                name.ends_with("_seconds") || name.ends_with("_bytes") || name.ends_with("_size"),
                "histogram {name} names its unit"
            ),
            "gauge" => assert!(
                !name.ends_with("_total"),
                "gauge {name} must not end in _total"
            ),
            other => panic!("{name} is a {other}; only counters, gauges and histograms"),
        }
    }

    if let Some(promtool) = tool("promtool", &["/usr/bin/promtool"], "prometheus") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write metrics");
        let out = child.wait_with_output().expect("promtool ends");
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    t.finish().await;
}
}

#[test]
fn the_catalogue_lists_each_metric_once() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let rows: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert_eq!(rows.len(), documented().len(), "a metric is listed twice");
}

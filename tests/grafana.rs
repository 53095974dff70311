//! `dashboards/grafana.json` is a Grafana dashboard over provd's metrics: valid dashboard JSON,
//! one panel per figure of the built-in dashboard, and every metric its queries name is in
//! `docs/metrics.md`.

use std::collections::BTreeSet;

use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
}

fn documented() -> BTreeSet<String> {
    read("docs/metrics.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// Metric names in a PromQL expression (a histogram's series map to the histogram).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("provd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_grafana_dashboard_is_valid_and_queries_only_catalogued_metrics() {
    let dash: Value = serde_json::from_str(&read("dashboards/grafana.json")).expect("valid JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let panels = dash["panels"].as_array().expect("panels");
    let doc = documented();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("title");
        titles.push(title.to_lowercase());
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "panel ids are unique"
        );
        assert!(p["type"].is_string(), "{title}: type");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: queries");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let names = metrics_in(expr);
            assert!(!names.is_empty(), "{title}: {expr} names a provd metric");
            for n in names {
                assert!(doc.contains(&n), "{title}: {n} is not in docs/metrics.md");
            }
        }
    }
    // One panel per figure of the built-in dashboard.
    for figure in [
        "services",
        "actors",
        "hit ratio",
        "write-behind",
        "dead letters",
        "checkpoint",
        "divergences",
        "invalidations",
        "replay lag",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(figure)),
            "a panel for {figure}: {titles:?}"
        );
    }
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metrics_in(
            "sum(rate(provd_a_total[5m])) / histogram_quantile(0.9, provd_b_seconds_bucket)"
        ),
        vec!["provd_a_total", "provd_b_seconds"]
    );
}

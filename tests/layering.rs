//! Dependencies point inward: `events` and `actors` never reach a database, cache, broker or
//! HTTP library, directly or through another crate.

use std::collections::{HashMap, HashSet};
use std::process::Command;

const FORBIDDEN: [&str; 5] = ["sqlx", "redis", "async-nats", "reqwest", "axum"];

#[test]
fn events_and_actors_do_not_depend_on_adapter_crates() {
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    // Normal (non-dev, non-build) dependency edges of the resolved graph.
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_str().expect("id");
        for dep in node["deps"].as_array().expect("deps") {
            let normal = dep["dep_kinds"]
                .as_array()
                .expect("kinds")
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                edges
                    .entry(id)
                    .or_default()
                    .push(dep["pkg"].as_str().expect("pkg"));
            }
        }
    }
    let reach = |root: &str| -> HashSet<&str> {
        let start = names
            .iter()
            .find(|(_, n)| **n == root)
            .map(|(id, _)| *id)
            .expect("crate in the workspace");
        let mut seen = HashSet::new();
        let mut stack = vec![start];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(edges.get(id).into_iter().flatten());
            }
        }
        seen.into_iter().map(|id| names[id]).collect()
    };
    // The walk itself works: the provd package does reach every adapter crate.
    let provd = reach("provd");
    for name in FORBIDDEN {
        assert!(provd.contains(name), "provd should depend on {name}");
    }
    for root in ["events", "actors"] {
        let found: Vec<&str> = reach(root)
            .into_iter()
            .filter(|n| FORBIDDEN.contains(n))
            .collect();
        assert!(
            found.is_empty(),
            "`{root}` depends on {found:?}; only the provd package may"
        );
    }
}

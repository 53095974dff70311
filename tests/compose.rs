//! `deploy/compose.yaml`, the distributed mode's deployment files, checked without a container
//! runtime: `docker-compose config` (Debian's package; it needs no daemon) accepts the file
//! and renders both provd nodes with the shared settings and their own node ids; every file
//! it mounts exists; provd itself accepts each node's environment (`provd config check`);
//! and `promtool check config` accepts the Prometheus configuration, which scrapes both nodes.

mod common;
mod ops_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ops_support::tool;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn compose(bin: &Path, args: &[&str]) -> String {
    let out = run(Command::new(bin)
        .current_dir(root())
        .args([
            "--file",
            "deploy/compose.yaml",
            "--project-directory",
            "deploy",
        ])
        .args(args));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `KEY=value` lines of an env file, comments and blank lines skipped.
fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .expect("env file")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_compose_file_renders_two_provd_nodes_over_the_shared_services() {
    let Some(bin) = tool(
        "docker-compose",
        &["/usr/bin/docker-compose"],
        "docker-compose",
    ) else {
        return;
    };
    let mut services: Vec<String> = compose(&bin, &["config", "--services"])
        .lines()
        .map(str::to_owned)
        .collect();
    services.sort();
    assert_eq!(
        services,
        [
            "grafana",
            "nats",
            "postgres",
            "prometheus",
            "provd-a",
            "provd-b",
            "valkey"
        ]
    );

    let rendered = compose(&bin, &["config"]);
    let shared = env_file(&root().join("deploy/provd.env"));
    for node in ["provd-a", "provd-b"] {
        assert!(
            rendered.contains(&format!("PROVD_NODE_ID: {node}")),
            "{node} has its own node id:\n{rendered}"
        );
    }
    for (key, value) in &shared {
        let line = format!("{key}: {value}");
        assert_eq!(
            rendered.matches(&line).count(),
            2,
            "both nodes get {line}:\n{rendered}"
        );
    }
    // JetStream is on: provd's bus needs it.
    assert!(rendered.contains("- -js"), "nats runs with JetStream");

    // Every bind mount's source exists (the Prometheus configuration, Grafana's provisioning
    // and the dashboard itself).
    let mounts: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- /"))
        .filter(|l| l.contains(":/"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.ends_with("dashboards/grafana.json")),
        "Grafana is given dashboards/grafana.json:\n{rendered}"
    );
    for m in mounts {
        assert!(
            Path::new("/").join(m).exists(),
            "/{m} is mounted but missing"
        );
    }

    // provd accepts each node's environment as its configuration.
    for node in ["provd-a", "provd-b"] {
        let out = run(Command::new(env!("CARGO_BIN_EXE_provd"))
            .args(["config", "check"])
            .env_clear()
            .envs(shared.iter().cloned())
            .env("PROVD_NODE_ID", node));
        let toml = String::from_utf8_lossy(&out.stdout);
        // Each shared setting took effect (a misspelt variable would be ignored).
        for want in [
            format!("node_id = \"{node}\""),
            "database_url = \"postgres://provd:****@postgres:5432/provd\"".to_owned(),
            "redis_url = \"redis://valkey:6379\"".to_owned(),
            "nats_url = \"nats://nats:4222\"".to_owned(),
            "listen = \"0.0.0.0:8080\"".to_owned(),
            "name = \"admin (PROVD_ADMIN_TOKEN)\"".to_owned(),
        ] {
            assert!(toml.contains(&want), "{want} in:\n{toml}");
        }
    }
}

#[test]
fn prometheus_scrapes_both_nodes() {
    let Some(promtool) = tool("promtool", &["/usr/bin/promtool"], "prometheus") else {
        return;
    };
    let config = root().join("deploy/prometheus.yml");
    run(Command::new(promtool)
        .arg("check")
        .arg("config")
        .arg(&config));
    let text = std::fs::read_to_string(&config).expect("prometheus.yml");
    for node in ["provd-a:8080", "provd-b:8080"] {
        assert!(text.contains(node), "Prometheus scrapes {node}");
    }
}

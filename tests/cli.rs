//! The binary's command line: help, configuration errors, config check.

use std::process::Command;

fn provd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_provd"));
    // Start from a clean slate: no inherited provd settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("PROVD_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn help_lists_the_subcommands() {
    let out = provd().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "migrate", "config", "events"] {
        assert!(text.contains(cmd), "{cmd} missing from:\n{text}");
    }
    let out = provd().args(["serve", "--help"]).output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Example"));
}

#[test]
fn a_bad_config_value_stops_serve_with_a_message_naming_the_key() {
    let out = provd()
        .arg("serve")
        .env("PROVD_LISTEN", "not-an-address")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`listen`"), "{err}");
    assert!(err.contains("not-an-address"), "{err}");

    let dir = std::env::temp_dir().join(format!("provd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("provd.toml");
    std::fs::write(&file, "[provcache]\nflush_interval = \"soon\"\n").expect("write");
    let out = provd()
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`provcache.flush_interval`"), "{err}");

    std::fs::write(&file, "listn = \"127.0.0.1:1\"\n").expect("write");
    let out = provd()
        .arg("--config")
        .arg(&file)
        .args(["config", "check"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listn"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_masked() {
    let out = provd()
        .args(["config", "check"])
        .env(
            "PROVD_DATABASE_URL",
            "postgres://provd:hunter2hunter2@db:5432/provd",
        )
        .env("PROVD_ADMIN_TOKEN", "super-secret-admin-token")
        .env("PROVD_NODE_ID", "node-a")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node_id = \"node-a\""), "{text}");
    assert!(text.contains("chunk_size = 65536"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("super-secret-admin-token"), "{text}");
}

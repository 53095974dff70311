//! `provd tiles verify` on Tessera's real testdata log, intact and with one tile byte changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The shared real vectors (`$PROVD_VECTORS_DIR` overrides); missing vectors fail the test.
fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("PROVD_VECTORS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"),
    };
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: check out the shared vectors there or set PROVD_VECTORS_DIR",
        dir.display()
    );
    dir
}

fn log_dir() -> PathBuf {
    vectors_dir().join("tessera-testdata-log")
}

fn vkey() -> String {
    fs::read_to_string(log_dir().join("log.vkey.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

fn verify(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(["tiles", "verify"])
        .arg(dir)
        .args(["--key", &vkey()])
        .args(extra)
        .output()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_real_log_verifies() {
    let out = verify(&log_dir(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("valid: 17 checkpoint(s)"), "{stdout}");

    let out = verify(&log_dir(), &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["origin"], "example.com/log/testdata");
    assert_eq!(json["checkpoints"].as_array().unwrap().len(), 17);
    assert_eq!(json["entry_bundles"], 15);
    assert_eq!(json["consistency_proofs"], 14);
}

#[test]
fn a_changed_tile_byte_is_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&log_dir(), tmp.path());
    let tile = tmp.path().join("tile/0/000.p/9");
    let mut bytes = fs::read(&tile).unwrap();
    bytes[100] ^= 0x01;
    fs::write(&tile, bytes).unwrap();

    let out = verify(tmp.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("invalid: tiles for checkpoint.9:"),
        "{stderr}"
    );

    let out = verify(tmp.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert!(json["reason"].as_str().unwrap().contains("checkpoint.9"));
}

#[test]
fn a_wrong_key_is_invalid_and_a_bad_key_is_an_error() {
    let other = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let out = Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(["tiles", "verify"])
        .arg(log_dir())
        .args(["--key", other])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(["tiles", "verify"])
        .arg(log_dir())
        .args(["--key", "not a key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(["tiles", "verify"])
        .arg(log_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error: {out:?}");
}

//! `provd rekor`, `provd dsse` and `provd keys` run as a user would, over the real vectors in
//! `../shared/vectors`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The vectors directory: `$PROVD_VECTORS_DIR`, or `../shared/vectors` from the project root.
/// A missing directory fails the test rather than skipping it.
fn vectors() -> PathBuf {
    let dir = std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: set PROVD_VECTORS_DIR to the shared/vectors directory",
        dir.display()
    );
    dir
}

fn provd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(args)
        .output()
        .expect("run provd")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

/// A scratch directory unique to this test run.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("provd-cli-tlog-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The transparency-log part alone passes every conformance case without `_fail` (each with
/// its own trusted root, or the production one), and its JSON form agrees. Which `_fail`
/// cases it refuses is checked against complete verification in `tests/sigstore_verify.rs`.
#[test]
fn verify_bundle_passes_every_valid_conformance_case() {
    let v = vectors();
    let dir = v.join("sigstore-conformance");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("bundle.sigstore.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 55);
    for case in &cases {
        let own = dir.join(case).join("trusted_root.json");
        let root = if own.is_file() {
            own
        } else {
            v.join("sigstore-python/prod_trusted_root.json")
        };
        let bundle = dir.join(case).join("bundle.sigstore.json");
        let out = provd(&[
            "rekor",
            "verify-bundle",
            s(&bundle),
            "--trusted-root",
            s(&root),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !case.ends_with("_fail") {
            assert_eq!(code(&out), 0, "{case}: {stderr}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("transparency log only"), "{case}: {stdout}");
        } else if code(&out) != 0 {
            assert_eq!(code(&out), 1, "{case}: {stderr}");
            assert!(stderr.starts_with("invalid: "), "{case}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{case}: {stderr}");
        }
        // The JSON form agrees.
        let json_out = provd(&[
            "rekor",
            "verify-bundle",
            s(&bundle),
            "--trusted-root",
            s(&root),
            "--json",
        ]);
        let json: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
        assert_eq!(json["valid"], code(&out) == 0, "{case}: {json}");
    }
}

#[test]
fn verify_bundle_staging_rekor_v2() {
    let v = vectors().join("sigstore-python");
    let out = provd(&[
        "rekor",
        "verify-bundle",
        s(&v.join("staging-rekor-v2.txt.sigstore.json")),
        "--trusted-root",
        s(&v.join("staging_trusted_root.json")),
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["result"]["entries"][0]["checkpoint"]["origin"],
        "log2025-alpha1.rekor.sigstage.dev"
    );
}

#[test]
fn verify_prod_checkpoint_and_a_one_byte_change() {
    let v = vectors().join("rekor-prod-keys");
    let cp = v.join("prod_v1_checkpoint_tree2605736670972794746_size79317123.txt");
    let pem = v.join("rekor.sigstore.dev.pub.pem");
    let out = provd(&[
        "rekor",
        "verify-checkpoint",
        s(&cp),
        "--key",
        s(&pem),
        "--origin",
        "rekor.sigstore.dev - 2605736670972794746",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("79317123"));

    // The same with the vkey form of the key, given inline.
    let vkey = "rekor.sigstore.dev+c0d23d6a+AjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNhtmPtrWm3U1eQXBogSMdGvXwBcK5AW5i0hrZLOC96l+smGNM7nwZ4QvFK/4sueRoVj//QP22Ni4Qt9DPfkWLc=";
    let out = provd(&[
        "rekor",
        "verify-checkpoint",
        s(&cp),
        "--key",
        vkey,
        "--json",
    ]);
    assert_eq!(code(&out), 0);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["result"]["size"], 79317123);

    // One byte changed (the tree size's last digit) fails with exit 1.
    let dir = scratch("checkpoint");
    let mut bytes = std::fs::read(&cp).unwrap();
    let i = bytes.iter().position(|&b| b == b'\n').unwrap() + 8;
    assert_eq!(bytes[i], b'3');
    bytes[i] = b'4';
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, bytes).unwrap();
    let out = provd(&["rekor", "verify-checkpoint", s(&bad), "--key", s(&pem)]);
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("invalid: "));

    // A wrong origin is rejected too.
    let out = provd(&[
        "rekor",
        "verify-checkpoint",
        s(&cp),
        "--key",
        s(&pem),
        "--origin",
        "rekor.sigstore.dev - 1",
    ]);
    assert_eq!(code(&out), 1);
}

#[test]
fn tessera_checkpoint_with_vkey_file() {
    let v = vectors().join("tessera-testdata-log");
    let out = provd(&[
        "rekor",
        "verify-checkpoint",
        s(&v.join("checkpoint.15")),
        "--key",
        s(&v.join("log.vkey.txt")),
        "--origin",
        "example.com/log/testdata",
    ]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn keys_generate_then_dsse_sign_and_verify() {
    let dir = scratch("dsse");
    let payload = dir.join("statement.json");
    std::fs::write(&payload, br#"{"_type":"https://in-toto.io/Statement/v1"}"#).unwrap();
    for alg in ["p256", "ed25519"] {
        let prefix = dir.join(alg);
        let mut args = vec!["keys", "generate", "--alg", alg, "--out", s(&prefix)];
        if alg == "ed25519" {
            args.extend(["--name", "log.example"]);
        }
        let out = provd(&args);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let key = dir.join(format!("{alg}.key"));
        let public = dir.join(format!("{alg}.pub"));
        assert!(key.is_file() && public.is_file());
        assert_eq!(dir.join(format!("{alg}.vkey")).is_file(), alg == "ed25519");
        // Generating again refuses to overwrite.
        assert_eq!(code(&provd(&args)), 2);

        let out = provd(&[
            "dsse",
            "sign",
            "--payload",
            s(&payload),
            "--payload-type",
            "application/vnd.in-toto+json",
            "--key",
            s(&key),
        ]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let envelope = dir.join(format!("{alg}.envelope.json"));
        std::fs::write(&envelope, &out.stdout).unwrap();
        let out = provd(&["dsse", "verify", s(&envelope), "--key", s(&public)]);
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));

        // A changed payload type breaks the signature.
        let text = std::fs::read_to_string(&envelope).unwrap();
        let tampered = dir.join(format!("{alg}.tampered.json"));
        std::fs::write(&tampered, text.replace("in-toto+json", "in-toto+jsom")).unwrap();
        let out = provd(&["dsse", "verify", s(&tampered), "--key", s(&public)]);
        assert_eq!(code(&out), 1);
    }
    // ed25519 without --name is a usage error.
    let out = provd(&[
        "keys",
        "generate",
        "--alg",
        "ed25519",
        "--out",
        s(&dir.join("noname")),
    ]);
    assert_eq!(code(&out), 2);
}

#[test]
fn usage_errors_exit_2_and_help_has_examples() {
    assert_eq!(code(&provd(&["rekor", "verify-bundle"])), 2);
    assert_eq!(code(&provd(&["keys", "generate", "--alg", "rsa"])), 2);
    let help = provd(&["rekor", "verify-bundle", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("out of scope"), "{text}");
    assert!(text.contains("Example"), "{text}");
    for cmd in [
        &["rekor", "verify-checkpoint"][..],
        &["dsse", "sign"],
        &["dsse", "verify"],
        &["keys", "generate"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let text = String::from_utf8_lossy(&provd(&args).stdout).into_owned();
        assert!(text.contains("Example"), "{cmd:?}: {text}");
    }
}

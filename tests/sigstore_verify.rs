//! `provd sigstore verify-bundle` and `provd rekor verify-bundle` run as a user runs them,
//! over the real Sigstore conformance bundles and production attestations in
//! `../shared/vectors`, and over a bundle of the local log's first entry.

mod common;

use common::vectors;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use actors::domain::receipt::{Receipt, parse_v1_response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn provd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(args)
        .env_remove("PROVD_CONFIG")
        .output()
        .expect("run provd")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// The identity and issuer of the conformance suite's bundles, unless a case names its own.
const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const GITHUB: &str = "https://token.actions.githubusercontent.com";

/// The checks a refusal may name, as the first words of its one line.
const CHECKS: [&str; 11] = [
    "bundle",
    "trusted root",
    "key",
    "certificate",
    "signed certificate timestamp",
    "timestamp",
    "transparency log",
    "signature",
    "artifact",
    "identity",
    "threshold",
];

/// One conformance case with its inputs, as the suite's harness assembles them.
struct Case {
    name: String,
    dir: PathBuf,
    root: PathBuf,
    artifact: PathBuf,
    policy: Vec<String>,
}

impl Case {
    fn expect_valid(&self) -> bool {
        !self.name.ends_with("_fail")
    }

    fn bundle(&self) -> String {
        s(&self.dir.join("bundle.sigstore.json"))
    }

    fn digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(std::fs::read(&self.artifact).unwrap()))
        )
    }

    /// `provd sigstore verify-bundle` over this case, with the artifact file or its digest.
    fn verify(&self, artifact: &str, extra: &[&str]) -> Output {
        let bundle = self.bundle();
        let root = s(&self.root);
        let mut args = vec!["sigstore", "verify-bundle", "--bundle", &bundle];
        args.extend(self.policy.iter().map(String::as_str));
        args.extend(["--trusted-root", &root]);
        args.extend(extra);
        args.push(artifact);
        provd(&args)
    }

    /// `provd rekor verify-bundle` over this case.
    fn verify_tlog(&self) -> Output {
        provd(&[
            "rekor",
            "verify-bundle",
            &self.bundle(),
            "--trusted-root",
            &s(&self.root),
        ])
    }
}

fn cases() -> Vec<Case> {
    let v = vectors();
    let dir = v.join("sigstore-conformance");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("bundle.sigstore.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.len() >= 55,
        "expected the 55 shared cases, found {}",
        names.len()
    );
    names
        .into_iter()
        .map(|name| {
            let case = dir.join(&name);
            let or = |file: &str, default: PathBuf| {
                let p = case.join(file);
                if p.is_file() { p } else { default }
            };
            let read = |file: &str, default: &str| {
                std::fs::read_to_string(case.join(file))
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_else(|_| default.to_owned())
            };
            let policy = if case.join("key.pub").is_file() {
                vec!["--key".into(), s(&case.join("key.pub"))]
            } else {
                vec![
                    "--certificate-identity".into(),
                    read("identity", BEACON),
                    "--certificate-oidc-issuer".into(),
                    read("issuer", GITHUB),
                ]
            };
            Case {
                root: or(
                    "trusted_root.json",
                    v.join("sigstore-python/prod_trusted_root.json"),
                ),
                artifact: or("artifact", dir.join("a.txt")),
                policy,
                dir: case,
                name,
            }
        })
        .collect()
}

/// A refusal is one line that starts with the name of the check that failed.
fn assert_names_a_check(case: &str, err: &str) {
    // A stale trusted root is a warning line of its own, before the verdict.
    let kept: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .collect();
    let joined = kept.join("\n");
    let line = joined.trim_end();
    assert_eq!(line.lines().count(), 1, "{case}: one line expected: {err}");
    assert!(
        CHECKS
            .iter()
            .any(|c| line.starts_with(&format!("{c} check failed: "))),
        "{case}: the failed check is not named: {err}"
    );
}

#[test]
fn every_conformance_case_gets_its_verdict_from_the_file_and_from_the_digest() {
    let mut wrong = Vec::new();
    for case in cases() {
        for artifact in [s(&case.artifact), case.digest()] {
            let out = case.verify(&artifact, &[]);
            let expected = if case.expect_valid() { 0 } else { 1 };
            if code(&out) != expected {
                wrong.push(format!(
                    "{} ({artifact}): exit {}, expected {expected}: {}{}",
                    case.name,
                    code(&out),
                    stdout(&out),
                    stderr(&out)
                ));
                continue;
            }
            if case.expect_valid() {
                assert!(
                    stdout(&out).starts_with("OK: signed by "),
                    "{}",
                    stdout(&out)
                );
            } else {
                assert_names_a_check(&case.name, &stderr(&out));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

#[test]
fn the_json_report_lists_every_check_the_signer_and_the_log_entry() {
    let cases = cases();
    let happy = cases.iter().find(|c| c.name == "happy-path-v0.3").unwrap();
    let out = happy.verify(&s(&happy.artifact), &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), CHECKS.len());
    for check in checks {
        assert!(
            check["status"] == "passed" || check["status"] == "not_applicable",
            "{check}"
        );
    }
    for passed in [
        "certificate",
        "signature",
        "transparency_log",
        "identity",
        "sct",
    ] {
        assert!(
            checks
                .iter()
                .any(|c| c["check"] == passed && c["status"] == "passed"),
            "{passed} not passed: {report}"
        );
    }
    assert_eq!(report["signer"]["kind"], "certificate");
    assert_eq!(report["signer"]["san"], BEACON);
    assert_eq!(report["signer"]["issuer"], GITHUB);
    assert!(report["signing_time"].as_str().unwrap().starts_with("20"));
    let bundle: Value = serde_json::from_slice(&std::fs::read(happy.bundle()).unwrap()).unwrap();
    let tle = &bundle["verificationMaterial"]["tlogEntries"][0];
    let entry = &report["log_entries"][0];
    assert_eq!(entry["log_url"], "https://rekor.sigstore.dev");
    assert_eq!(
        entry["log_index"].to_string(),
        tle["logIndex"].as_str().unwrap()
    );
    assert_eq!(
        report["content"]["digest"],
        format!("{}", happy.digest()),
        "the message digest is the artifact's"
    );

    // A refusal names the check that failed and leaves the others unknown.
    let bad = cases
        .iter()
        .find(|c| c.name == "signature-mismatch_fail")
        .unwrap();
    let out = bad.verify(&s(&bad.artifact), &["--json"]);
    assert_eq!(code(&out), 1);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["failed_check"], "signature");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .starts_with("signature check failed: ")
    );
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["check"], "signature");
    assert!(
        report["signer"].is_null(),
        "no signer is vouched for: {report}"
    );
}

#[test]
fn identity_policies_accept_the_true_signer_and_name_the_claim_that_differs() {
    let cases = cases();
    let happy = cases.iter().find(|c| c.name == "happy-path-v0.3").unwrap();
    let bundle = happy.bundle();
    let root = s(&happy.root);
    let artifact = s(&happy.artifact);
    let run = |policy: &[&str]| {
        let mut args = vec!["sigstore", "verify-bundle", "--bundle", &bundle];
        args.extend(policy);
        args.extend(["--trusted-root", &root, &artifact]);
        provd(&args)
    };
    let ok = run(&[
        "--certificate-identity",
        BEACON,
        "--certificate-oidc-issuer",
        GITHUB,
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));

    for (policy, says) in [
        (
            vec![
                "--certificate-identity",
                "https://github.com/someone/else/.github/workflows/x.yml@refs/heads/main",
                "--certificate-oidc-issuer",
                GITHUB,
            ],
            "identity check failed: the certificate's subject alternative name is",
        ),
        (
            vec![
                "--certificate-identity",
                BEACON,
                "--certificate-oidc-issuer",
                "https://accounts.google.com",
            ],
            "identity check failed: the certificate's OIDC issuer is",
        ),
        (
            vec![
                "--certificate-identity-regexp",
                "https://github.com/sigstore/.*",
                "--certificate-oidc-issuer",
                GITHUB,
            ],
            "identity check failed: the certificate's subject alternative name is",
        ),
        (
            // Anchored: a pattern that matches only part of the SAN does not do.
            vec![
                "--certificate-identity-regexp",
                "extremely-dangerous",
                "--certificate-oidc-issuer",
                GITHUB,
            ],
            "a match of /extremely-dangerous/",
        ),
    ] {
        let out = run(&policy);
        assert_eq!(code(&out), 1, "{policy:?}: {}", stdout(&out));
        assert!(stderr(&out).contains(says), "{policy:?}: {}", stderr(&out));
        assert_names_a_check("identity", &stderr(&out));
    }
    let ok = run(&[
        "--certificate-identity-regexp",
        "https://github.com/sigstore-conformance/.*",
        "--certificate-oidc-issuer-regexp",
        "https://token\\.actions\\.githubusercontent\\.com",
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
}

/// The npm provenance of sigstore 1.3.0: a real production DSSE bundle with a SHA-512
/// subject, signed by sigstore-js's release workflow.
fn npm_provenance() -> (PathBuf, PathBuf, String) {
    let v = vectors().join("sigstore-go-examples");
    let bundle = v.join("bundle-provenance.json");
    let json: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let payload = B64
        .decode(json["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    let digest = format!(
        "sha512:{}",
        statement["subject"][0]["digest"]["sha512"]
            .as_str()
            .unwrap()
    );
    (bundle, v.join("trusted-root-public-good.json"), digest)
}

const SIGSTORE_JS: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";

#[test]
fn real_npm_attestations_verify_with_their_workflow_claims_and_key() {
    let (bundle, root, digest) = npm_provenance();
    let (bundle, root) = (s(&bundle), s(&root));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "sigstore",
            "verify-bundle",
            "--bundle",
            &bundle,
            "--certificate-identity",
            SIGSTORE_JS,
            "--certificate-oidc-issuer",
            GITHUB,
            "--trusted-root",
            &root,
        ];
        args.extend(extra);
        args.push(&digest);
        provd(&args)
    };
    let out = run(&[
        "--certificate-github-workflow-repository",
        "sigstore/sigstore-js",
        "--certificate-github-workflow-ref",
        "refs/heads/main",
        "--certificate-github-workflow",
        ".github/workflows/release.yml",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["signer"]["san"], SIGSTORE_JS);
    assert_eq!(
        report["content"]["predicate_type"],
        "https://slsa.dev/provenance/v0.2"
    );
    for (flag, value, claim) in [
        (
            "--certificate-github-workflow-repository",
            "sigstore/cosign",
            "source repository",
        ),
        (
            "--certificate-github-workflow-ref",
            "refs/heads/release",
            "source ref",
        ),
        (
            "--certificate-github-workflow",
            ".github/workflows/ci.yml",
            "workflow",
        ),
        (
            "--certificate-github-workflow-trigger",
            "schedule",
            "workflow trigger",
        ),
    ] {
        let out = run(&[flag, value]);
        assert_eq!(code(&out), 1, "{flag} {value}");
        assert!(
            stderr(&out).starts_with(&format!(
                "identity check failed: the certificate's {claim} "
            )),
            "{flag}: {}",
            stderr(&out)
        );
    }
    // An artifact that is not one of the statement's subjects.
    let out = provd(&[
        "sigstore",
        "verify-bundle",
        "--bundle",
        &bundle,
        "--certificate-identity",
        SIGSTORE_JS,
        "--certificate-oidc-issuer",
        GITHUB,
        "--trusted-root",
        &root,
        &format!("sha512:{}", "ab".repeat(64)),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("artifact check failed: "),
        "{}",
        stderr(&out)
    );

    // npm's publish attestation, signed with npm's key: its hint is the key's OpenSSH
    // fingerprint.
    let v = vectors().join("sigstore-go-examples");
    let publish = s(&v.join("bundle-publish.json"));
    let statement: Value = {
        let json: Value = serde_json::from_slice(&std::fs::read(&publish).unwrap()).unwrap();
        serde_json::from_slice(
            &B64.decode(json["dsseEnvelope"]["payload"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let subject = format!(
        "sha512:{}",
        statement["subject"][0]["digest"]["sha512"]
            .as_str()
            .unwrap()
    );
    let with_key = |key: &Path| {
        provd(&[
            "sigstore",
            "verify-bundle",
            "--bundle",
            &publish,
            "--key",
            &s(key),
            "--trusted-root",
            &root,
            &subject,
        ])
    };
    let out = with_key(&v.join("publish_key.pub"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with("OK: signed by the key sha256:"));
    let other = vectors().join("rekor-prod-keys/rekor.sigstore.dev.pub.pem");
    let out = with_key(&other);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("key check failed: the bundle's key hint"),
        "{}",
        stderr(&out)
    );
}

/// Writes `bundle` into `dir` and returns its path.
fn write_bundle(dir: &Path, name: &str, bundle: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(bundle).unwrap()).unwrap();
    s(&path)
}

#[test]
fn entries_of_other_content_no_content_and_bad_signatures_are_refused_by_both_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let happy = cases.iter().find(|c| c.name == "happy-path-v0.3").unwrap();
    let original: Value = serde_json::from_slice(&std::fs::read(happy.bundle()).unwrap()).unwrap();
    let prod_root = s(&happy.root);
    let identity = [
        "--certificate-identity",
        BEACON,
        "--certificate-oidc-issuer",
        GITHUB,
    ];

    // The log entry is valid and included, but it is about a.txt, and the bundle now says
    // it signs other bytes.
    let other = b"some other artifact";
    let other_path = dir.path().join("other.txt");
    std::fs::write(&other_path, other).unwrap();
    let mut other_artifact = original.clone();
    other_artifact["messageSignature"]["messageDigest"]["digest"] =
        Value::String(B64.encode(Sha256::digest(other)));
    // The DSSE bundle's envelope swapped for another statement.
    let dsse_case = cases
        .iter()
        .find(|c| c.name == "intoto-with-custom-trust-root")
        .unwrap();
    let mut other_envelope: Value =
        serde_json::from_slice(&std::fs::read(dsse_case.bundle()).unwrap()).unwrap();
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "a.txt", "digest": {"sha256": hex::encode(Sha256::digest(b"x"))}}],
        "predicateType": "https://example.com/other",
        "predicate": {}
    });
    other_envelope["dsseEnvelope"]["payload"] =
        Value::String(B64.encode(serde_json::to_vec(&statement).unwrap()));
    // No content at all.
    let mut no_content = original.clone();
    no_content
        .as_object_mut()
        .unwrap()
        .remove("messageSignature");
    // The signature changed in one byte.
    let mut bad_signature = original.clone();
    let mut sig = B64
        .decode(original["messageSignature"]["signature"].as_str().unwrap())
        .unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    bad_signature["messageSignature"]["signature"] = Value::String(B64.encode(&sig));

    let a_txt = s(&happy.artifact);
    for (name, bundle, artifact, root, tlog_says, full_says) in [
        (
            "other-artifact",
            other_artifact,
            s(&other_path),
            prod_root.clone(),
            "the entry is for another artifact",
            "check failed",
        ),
        (
            "other-envelope",
            other_envelope,
            format!("sha256:{}", hex::encode(Sha256::digest(b"x"))),
            s(&dsse_case.root),
            "the entry is for another envelope",
            "check failed",
        ),
        (
            "no-content",
            no_content,
            a_txt.clone(),
            prod_root.clone(),
            "bundle check failed",
            "bundle check failed",
        ),
        (
            "bad-signature",
            bad_signature,
            a_txt.clone(),
            prod_root.clone(),
            "the entry records another signature",
            "check failed",
        ),
    ] {
        let path = write_bundle(dir.path(), &format!("{name}.json"), &bundle);
        let tlog = provd(&["rekor", "verify-bundle", &path, "--trusted-root", &root]);
        assert_eq!(
            code(&tlog),
            1,
            "{name}: rekor verify-bundle accepted it: {}",
            stdout(&tlog)
        );
        assert!(
            stderr(&tlog).contains(tlog_says),
            "{name}: {}",
            stderr(&tlog)
        );
        let mut args = vec!["sigstore", "verify-bundle", "--bundle", &path];
        args.extend(identity);
        args.extend(["--trusted-root", &root, &artifact]);
        let full = provd(&args);
        assert_eq!(code(&full), 1, "{name}: sigstore verify-bundle accepted it");
        assert!(
            stderr(&full).contains(full_says),
            "{name}: {}",
            stderr(&full)
        );
        assert_names_a_check(name, &stderr(&full));
    }

    // A real production bundle (npm's provenance of sigstore 1.3.0) with an invalid
    // signature.
    let (bundle, root, digest) = npm_provenance();
    let mut tampered: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let mut sig = B64
        .decode(
            tampered["dsseEnvelope"]["signatures"][0]["sig"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    sig[10] ^= 0x40;
    tampered["dsseEnvelope"]["signatures"][0]["sig"] = Value::String(B64.encode(&sig));
    let path = write_bundle(dir.path(), "npm-bad-signature.json", &tampered);
    let root = s(&root);
    let tlog = provd(&["rekor", "verify-bundle", &path, "--trusted-root", &root]);
    assert_eq!(code(&tlog), 1, "{}", stdout(&tlog));
    let full = provd(&[
        "sigstore",
        "verify-bundle",
        "--bundle",
        &path,
        "--certificate-identity",
        SIGSTORE_JS,
        "--certificate-oidc-issuer",
        GITHUB,
        "--trusted-root",
        &root,
        &digest,
    ]);
    assert_eq!(code(&full), 1);
    assert_names_a_check("npm-bad-signature", &stderr(&full));
}

#[test]
fn the_transparency_log_check_agrees_with_complete_verification_on_every_case() {
    for case in cases() {
        let tlog = case.verify_tlog();
        let full = case.verify(&s(&case.artifact), &["--json"]);
        let report: Value = serde_json::from_slice(&full.stdout)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", case.name, stderr(&full)));
        let complete_valid = report["valid"] == true;
        let tlog_valid = code(&tlog) == 0;
        // What the log check refuses, complete verification never accepts.
        assert!(
            tlog_valid || !complete_valid,
            "{}: the log check refused what complete verification accepted: {}",
            case.name,
            stderr(&tlog)
        );
        // A bundle complete verification refuses for its log entries, the log check
        // refuses too.
        if report["failed_check"] == "transparency_log" {
            assert!(
                !tlog_valid,
                "{}: complete verification refused its log entry ({}), the log check accepted it",
                case.name, report["error"]
            );
        }
        // Every valid case passes the log check, and says what it did not check.
        if complete_valid {
            assert!(
                stdout(&tlog).contains(
                    "transparency log only: the signature and the signer were not checked"
                ),
                "{}: {}",
                case.name,
                stdout(&tlog)
            );
        }
        if !tlog_valid {
            assert!(stderr(&tlog).starts_with("invalid: "), "{}", stderr(&tlog));
        }
    }
}

/// Submits a hashedrekord entry of `artifact` signed by the lab log's signer and returns the
/// receipt.
async fn submit(lab: &common::lab_log::LabLog, artifact: &[u8]) -> Receipt {
    let key = &lab.signer;
    let request = json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(artifact))}},
        "signature": {"content": B64.encode(key.sign(artifact)),
                      "publicKey": {"content": B64.encode(key.public_key().to_pem().unwrap())}},
    }});
    let resp = lab
        .http
        .post(format!("{}/api/v1/log/entries", lab.base))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let (id, entry) = parse_v1_response(&resp.bytes().await.unwrap())
        .unwrap()
        .remove(0);
    Receipt::from_v1(&id, &entry).unwrap()
}

#[tokio::test]
async fn the_first_entry_of_a_log_verifies_without_a_log_index_behind_a_base_url_with_a_port() {
    let lab = common::lab_log::LabLog::start().await;
    let dir = tempfile::tempdir().unwrap();
    let artifact = b"the first artifact of a fresh log";
    let receipt = submit(&lab, artifact).await;
    assert_eq!(receipt.log_index, 0);
    assert_eq!(receipt.inclusion_proof.as_ref().unwrap().log_index, 0);

    // protobuf-JSON leaves zero values out: no `logIndex` in the entry or its proof.
    let mut tle = serde_json::to_value(receipt.to_tle()).unwrap();
    tle.as_object_mut().unwrap().remove("logIndex");
    tle["inclusionProof"]
        .as_object_mut()
        .unwrap()
        .remove("logIndex");
    let key_der = lab.signer.public_key().to_spki_der();
    // P-256 signatures are randomised: the bundle carries the one the log recorded.
    let body: Value = serde_json::from_slice(&receipt.canonical_body).unwrap();
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": B64.encode(Sha256::digest(&key_der))},
            "tlogEntries": [tle],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(Sha256::digest(artifact))},
            "signature": body["spec"]["signature"]["content"],
        }
    });
    let bundle_path = write_bundle(dir.path(), "first.sigstore.json", &bundle);
    // The trusted root names the log by its address, port included; the log signs its
    // checkpoints as `localhost`.
    assert!(lab.base.starts_with("http://127.0.0.1:"));
    let root = json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": lab.base,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": B64.encode(lab.info.v1_key.to_spki_der()),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            },
            "logId": {"keyId": B64.encode(lab.info.v1_log_id)}
        }],
        "certificateAuthorities": [],
        "ctlogs": [],
        "timestampAuthorities": []
    });
    let root_path = write_bundle(dir.path(), "trusted_root.json", &root);
    let key_path = dir.path().join("signer.pub");
    std::fs::write(&key_path, lab.signer.public_key().to_pem().unwrap()).unwrap();
    let artifact_path = dir.path().join("artifact");
    std::fs::write(&artifact_path, artifact).unwrap();

    let tlog = provd(&[
        "rekor",
        "verify-bundle",
        &bundle_path,
        "--trusted-root",
        &root_path,
        "--json",
    ]);
    assert_eq!(code(&tlog), 0, "{}{}", stdout(&tlog), stderr(&tlog));
    let tlog: Value = serde_json::from_slice(&tlog.stdout).unwrap();
    assert_eq!(tlog["result"]["entries"][0]["log_index"], 0);
    let full = provd(&[
        "sigstore",
        "verify-bundle",
        "--bundle",
        &bundle_path,
        "--key",
        &s(&key_path),
        "--trusted-root",
        &root_path,
        "--json",
        &s(&artifact_path),
    ]);
    assert_eq!(code(&full), 0, "{}{}", stdout(&full), stderr(&full));
    let report: Value = serde_json::from_slice(&full.stdout).unwrap();
    assert_eq!(report["log_entries"][0]["log_index"], 0);
    assert_eq!(report["log_entries"][0]["log_url"], lab.base);
    assert_eq!(report["log_entries"][0]["uuid"], receipt.uuid());

    // The same bundle with another artifact is refused.
    let out = provd(&[
        "sigstore",
        "verify-bundle",
        "--bundle",
        &bundle_path,
        "--key",
        &s(&key_path),
        "--trusted-root",
        &root_path,
        &format!("sha256:{}", hex::encode(Sha256::digest(b"another"))),
    ]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).starts_with("artifact check failed: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2_and_help_has_examples() {
    let cases = cases();
    let happy = cases.iter().find(|c| c.name == "happy-path-v0.3").unwrap();
    let bundle = happy.bundle();
    // Neither an identity nor a key.
    let out = provd(&["sigstore", "verify-bundle", "--bundle", &bundle, "a.txt"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--certificate-identity"),
        "{}",
        stderr(&out)
    );
    // An identity without an issuer.
    let out = provd(&[
        "sigstore",
        "verify-bundle",
        "--bundle",
        &bundle,
        "--certificate-identity",
        BEACON,
        "a.txt",
    ]);
    assert_eq!(code(&out), 2);
    // An identity and a key.
    let out = provd(&[
        "sigstore",
        "verify-bundle",
        "--bundle",
        &bundle,
        "--certificate-identity",
        BEACON,
        "--key",
        "k.pub",
        "a.txt",
    ]);
    assert_eq!(code(&out), 2);
    // A bundle that does not exist.
    let out = happy.verify(&s(&happy.artifact), &[]);
    assert_eq!(code(&out), 0);
    let out = provd(&[
        "sigstore",
        "verify-bundle",
        "--bundle",
        "/nonexistent/bundle.json",
        "--certificate-identity",
        BEACON,
        "--certificate-oidc-issuer",
        GITHUB,
        "--trusted-root",
        &s(&happy.root),
        &s(&happy.artifact),
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    let help = stdout(&provd(&["sigstore", "verify-bundle", "--help"]));
    assert!(help.contains("Example"), "{help}");
    assert!(help.contains("--certificate-identity-regexp"), "{help}");
}

#[test]
fn the_conformance_entrypoint_drives_provd_with_the_protocol_arguments() {
    let cases = cases();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_provd")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sigstore-conformance-entrypoint");
    for name in ["happy-path-v0.3", "wrong-material_fail"] {
        let case = cases.iter().find(|c| c.name == name).unwrap();
        // The protocol's order: --bundle, the identity or key, --trusted-root, the artifact.
        let mut args = vec!["verify-bundle".to_owned(), "--bundle".into(), case.bundle()];
        args.extend(case.policy.iter().cloned());
        args.extend(["--trusted-root".into(), s(&case.root), case.digest()]);
        let out = Command::new(&script)
            .args(&args)
            .env("PATH", &path)
            .env_remove("PROVD_CONFIG")
            .output()
            .expect("run the entrypoint");
        assert_eq!(
            out.status.success(),
            case.expect_valid(),
            "{name}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn staging_bundles_verify_with_the_embedded_staging_root_and_not_with_production() {
    let v = vectors().join("sigstore-python");
    let data_dir = tempfile::tempdir().unwrap();
    let run = |staging: bool| {
        let bundle = s(&v.join("staging-rekor-v2.txt.sigstore.json"));
        let artifact = s(&v.join("staging-rekor-v2.txt"));
        let dir = s(data_dir.path());
        let mut args = vec![
            "sigstore",
            "verify-bundle",
            "--offline",
            "--data-dir",
            &dir,
            "--bundle",
            &bundle,
            "--certificate-identity",
            "jku@goto.fi",
            "--certificate-oidc-issuer",
            "https://github.com/login/oauth",
            "--json",
        ];
        if staging {
            args.push("--staging");
        }
        args.push(&artifact);
        provd(&args)
    };
    // No cache in the data directory: the root embedded in provd is used, and named.
    let out = run(true);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["trusted_root"]
            .as_str()
            .unwrap()
            .starts_with("embedded staging root"),
        "{report}"
    );
    assert_eq!(
        report["log_entries"][0]["log_url"],
        "https://log2025-alpha1.rekor.sigstage.dev"
    );
    let out = run(false);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Production trusts neither the staging timestamp authority nor the staging log.
    assert!(
        report["failed_check"] == "timestamp" || report["failed_check"] == "transparency_log",
        "{report}"
    );
    assert!(
        report["trusted_root"]
            .as_str()
            .unwrap()
            .starts_with("embedded production root"),
        "{report}"
    );
    assert!(
        std::fs::read_dir(data_dir.path()).unwrap().next().is_none(),
        "--offline wrote nothing into the data directory"
    );
}

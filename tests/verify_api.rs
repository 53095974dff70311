//! `POST /api/v1/verify` on the real HTTP server: the same verdicts as
//! `provd sigstore verify-bundle` on the conformance cases, clear 400s for what cannot be
//! verified as written, and the trusted root the service was configured with.

mod common;

use common::vectors;

use std::path::PathBuf;
use std::process::Command;

use common::{READ_TOKEN, TestApp, both_modes};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const GITHUB: &str = "https://token.actions.githubusercontent.com";

/// A conformance case that verifies against the production root.
struct Case {
    name: String,
    dir: PathBuf,
    artifact: PathBuf,
    key: Option<PathBuf>,
    identity: String,
    issuer: String,
}

/// Every shared case without a trusted root of its own: the service's root is production's.
fn production_cases() -> Vec<Case> {
    let root = vectors().join("sigstore-conformance");
    let mut cases: Vec<Case> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.join("bundle.sigstore.json").is_file() && !p.join("trusted_root.json").exists()
        })
        .map(|dir| {
            let read = |f: &str, d: &str| {
                std::fs::read_to_string(dir.join(f))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| d.to_owned())
            };
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                artifact: if dir.join("artifact").is_file() {
                    dir.join("artifact")
                } else {
                    root.join("a.txt")
                },
                key: Some(dir.join("key.pub")).filter(|k| k.is_file()),
                identity: read("identity", BEACON),
                issuer: read("issuer", GITHUB),
                dir,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        cases.len() >= 20,
        "expected the production cases, found {}",
        cases.len()
    );
    cases
}

fn prod_root() -> PathBuf {
    vectors().join("sigstore-python/prod_trusted_root.json")
}

impl Case {
    fn digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(std::fs::read(&self.artifact).unwrap()))
        )
    }

    /// The request body: the bundle as an object when it is JSON, else as its text.
    fn body(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("bundle.sigstore.json")).unwrap();
        let bundle = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        let mut body = json!({"bundle": bundle, "artifact_digest": self.digest()});
        match &self.key {
            Some(k) => body["key"] = Value::String(std::fs::read_to_string(k).unwrap()),
            None => {
                body["policy"] = json!({"identity": self.identity, "issuer": self.issuer});
            }
        }
        body
    }

    /// The CLI's verdict on the same inputs.
    fn cli_valid(&self) -> bool {
        let bundle = self.dir.join("bundle.sigstore.json");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_provd"));
        cmd.env_remove("PROVD_CONFIG")
            .args(["sigstore", "verify-bundle", "--bundle"])
            .arg(&bundle)
            .arg("--trusted-root")
            .arg(prod_root());
        match &self.key {
            Some(k) => {
                cmd.arg("--key").arg(k);
            }
            None => {
                cmd.args(["--certificate-identity", &self.identity]);
                cmd.args(["--certificate-oidc-issuer", &self.issuer]);
            }
        }
        cmd.arg(self.digest());
        cmd.output().expect("run provd").status.success()
    }
}

async fn post(app: &TestApp, token: &str, body: &Value) -> (u16, Value) {
    let resp = app
        .http
        .post(app.url("/api/v1/verify"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

both_modes! {
    /// The route's verdict on every production conformance case is the CLI's.
    async fn gives_the_cli_verdict_on_the_conformance_cases() {
        let Some(app) = TestApp::start_with(|c| {
            c.trust.trusted_root = Some(prod_root());
        })
        .await
        else {
            return;
        };
        for case in production_cases() {
            let (status, body) = post(&app, READ_TOKEN, &case.body()).await;
            let cli = case.cli_valid();
            assert_eq!(cli, !case.name.ends_with("_fail"), "{}: the CLI's verdict", case.name);
            match status {
                200 => {
                    assert_eq!(body["valid"], cli, "{}: {body}", case.name);
                    if cli {
                        assert!(body["signer"].is_object(), "{}: {body}", case.name);
                    } else {
                        assert!(
                            body["error"].as_str().unwrap().contains(" check failed: "),
                            "{}: {body}",
                            case.name
                        );
                    }
                    assert!(
                        body["trusted_root"].as_str().unwrap().contains("prod_trusted_root.json"),
                        "{body}"
                    );
                }
                400 => {
                    assert!(!cli, "{}: the CLI accepts what the route calls malformed", case.name);
                    assert_eq!(body["error"]["code"], "bad_request");
                    assert!(
                        body["error"]["message"]
                            .as_str()
                            .unwrap()
                            .starts_with("bundle check failed: "),
                        "{}: {body}",
                        case.name
                    );
                }
                other => panic!("{}: status {other}: {body}", case.name),
            }
        }
        app.finish().await;
    }
}

both_modes! {
    /// What cannot be verified as written is a 400 naming what is wrong; the route needs the
    /// `read` scope.
    async fn refuses_malformed_requests_with_clear_messages() {
        let Some(app) = TestApp::start_with(|c| {
            c.trust.trusted_root = Some(prod_root());
        })
        .await
        else {
            return;
        };
        let case = production_cases()
            .into_iter()
            .find(|c| c.name == "happy-path-v0.3")
            .unwrap();
        let good = case.body();
        let (status, body) = post(&app, READ_TOKEN, &good).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["valid"], true, "{body}");
        assert_eq!(body["signer"]["san"], BEACON);

        let mut no_policy = good.clone();
        no_policy.as_object_mut().unwrap().remove("policy");
        let mut both = good.clone();
        both["key"] = Value::String("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----".into());
        let mut bad_digest = good.clone();
        bad_digest["artifact_digest"] = Value::String("sha256:abc".into());
        let mut bad_regex = good.clone();
        bad_regex["policy"] = json!({"identity_regexp": "(", "issuer": GITHUB});
        let mut not_a_bundle = good.clone();
        not_a_bundle["bundle"] = json!({"mediaType": "application/json"});
        let mut no_issuer = good.clone();
        no_issuer["policy"] = json!({"identity": BEACON});
        for (name, body, says) in [
            ("no policy", no_policy, "give `policy`"),
            ("policy and key", both, "not both"),
            ("bad digest", bad_digest, "`artifact_digest`"),
            ("bad regex", bad_regex, "`policy.identity_regexp`"),
            ("not a bundle", not_a_bundle, "bundle check failed"),
            ("no issuer", no_issuer, "`policy.issuer`"),
            ("a number", json!({"bundle": 1, "artifact_digest": case.digest()}), "`bundle`"),
        ] {
            let (status, answer) = post(&app, READ_TOKEN, &body).await;
            assert_eq!(status, 400, "{name}: {answer}");
            assert_eq!(answer["error"]["code"], "bad_request", "{name}");
            assert!(
                answer["error"]["message"].as_str().unwrap().contains(says),
                "{name}: {answer}"
            );
        }
        // No token, and a token without the scope.
        let resp = app
            .http
            .post(app.url("/api/v1/verify"))
            .json(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        app.finish().await;
    }
}

both_modes! {
    /// A wrong identity is a verdict (200, invalid), naming the claim, like the CLI.
    async fn a_wrong_identity_is_an_invalid_verdict_naming_the_claim() {
        let Some(app) = TestApp::start_with(|c| {
            c.trust.trusted_root = Some(prod_root());
        })
        .await
        else {
            return;
        };
        let case = production_cases()
            .into_iter()
            .find(|c| c.name == "happy-path-v0.3")
            .unwrap();
        let mut body = case.body();
        body["policy"] = json!({"identity": BEACON, "issuer": "https://accounts.google.com"});
        let (status, answer) = post(&app, READ_TOKEN, &body).await;
        assert_eq!(status, 200);
        assert_eq!(answer["valid"], false);
        assert_eq!(answer["failed_check"], "identity");
        assert!(
            answer["error"].as_str().unwrap().contains("OIDC issuer is"),
            "{answer}"
        );
        body["policy"] = json!({
            "identity_regexp": "https://github.com/sigstore-conformance/.*",
            "issuer": GITHUB,
            "github": {"repository": "sigstore-conformance/extremely-dangerous-public-oidc-beacon"}
        });
        let (status, answer) = post(&app, READ_TOKEN, &body).await;
        assert_eq!(status, 200);
        assert_eq!(answer["valid"], true, "{answer}");
        app.finish().await;
    }
}

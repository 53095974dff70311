//! Verify-then-cache on the real server: policies decide verdicts over real production
//! attestations (npm's provenance and publish attestations of sigstore 1.3.0), misses verify
//! once and hits verify nothing, Rego rules decide with their messages, explanations replay
//! offline, and replacing a policy or revoking an identity removes exactly the verdicts that
//! relied on it, on every node, with one ledger row.

mod common;

use std::time::Duration;

use actors::domain::policy::identity_id;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually, vectors};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const GITHUB: &str = "https://token.actions.githubusercontent.com";
const SIGSTORE_JS: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";

fn read_json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(vectors().join(rel)).expect("vector")).expect("json")
}

/// npm's SLSA provenance of sigstore 1.3.0, signed by sigstore-js's release workflow.
fn provenance() -> Value {
    read_json("sigstore-go-examples/bundle-provenance.json")
}

/// npm's publish attestation of the same package, signed with npm's key.
fn publish() -> Value {
    read_json("sigstore-go-examples/bundle-publish.json")
}

/// The package's digest: the statements' subject.
fn package_digest() -> String {
    let b = provenance();
    let payload = B64
        .decode(b["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    format!(
        "sha512:{}",
        statement["subject"][0]["digest"]["sha512"]
            .as_str()
            .unwrap()
    )
}

fn npm_key() -> String {
    std::fs::read_to_string(vectors().join("sigstore-go-examples/publish_key.pub")).unwrap()
}

/// A provd trusting Sigstore's public-good root of the vectors.
async fn start() -> Option<TestApp> {
    TestApp::start_with(|c| {
        c.trust.trusted_root =
            Some(vectors().join("sigstore-go-examples/trusted-root-public-good.json"));
    })
    .await
}

fn trusting_sigstore_js(rego: Option<&str>) -> Value {
    let mut doc = json!({
        "identities": [{"issuer": GITHUB, "san": SIGSTORE_JS,
                        "github": {"repository": "sigstore/sigstore-js"}}],
        "predicate_types": ["https://slsa.dev/provenance/v0.2"],
    });
    if let Some(r) = rego {
        doc["rego"] = json!(r);
    }
    doc
}

async fn put_policy(app: &TestApp, name: &str, doc: &Value) -> Value {
    let resp = app
        .http
        .put(app.url(&format!("/api/v1/policies/{name}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(doc)
        .send()
        .await
        .expect("put policy");
    let status = resp.status();
    let body: Value = resp.json().await.expect("json");
    assert!(status.is_success(), "PUT policy {name}: {status} {body}");
    body
}

/// POSTs an evaluation; the status, the body and the tier header.
async fn evaluate(
    app: &TestApp,
    policy: &str,
    attestations: Vec<Value>,
) -> (u16, Value, Option<String>) {
    let resp = app
        .http
        .post(app.url("/api/v1/provcache/evaluate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "artifact_digest": package_digest(),
            "policy": policy,
            "attestations": attestations,
        }))
        .send()
        .await
        .expect("evaluate");
    let status = resp.status().as_u16();
    let tier = resp
        .headers()
        .get("x-provcache-tier")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, resp.json().await.expect("json"), tier)
}

async fn entry_status(app: &TestApp, veri_key: &str) -> u16 {
    app.http
        .get(app.url(&format!("/api/v1/provcache/entries/{veri_key}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get entry")
        .status()
        .as_u16()
}

both_modes! {
    /// A miss verifies and allows with the identity; the same request again is a hit that
    /// verifies nothing; another identity is a deny with the reason; a tampered attestation is
    /// a deny naming the failed check; concurrent misses verify once.
    async fn a_miss_verifies_once_and_the_same_request_is_a_hit() {
        let Some(app) = start().await else { return };
        put_policy(&app, "npm", &trusting_sigstore_js(None)).await;
        let (status, first, tier) = evaluate(&app, "npm", vec![provenance()]).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["decision"], "allow", "{first}");
        assert_eq!(first["cached"], false);
        assert!(tier.is_none());
        let id = identity_id(GITHUB, SIGSTORE_JS);
        assert_eq!(first["identities"], json!([id]));
        let verdict = &first["verdict"];
        assert_eq!(verdict["attestations"][0]["signer"]["san"], SIGSTORE_JS);
        assert_eq!(verdict["predicate_types"], json!(["https://slsa.dev/provenance/v0.2"]));
        assert!(verdict["attestations"][0]["log_entries"][0]["uuid"].is_string());

        let (status, again, tier) = evaluate(&app, "npm", vec![provenance()]).await;
        assert_eq!(status, 200);
        assert_eq!(again["cached"], true, "{again}");
        assert_eq!(again["veri_key"], first["veri_key"]);
        assert_eq!(again["decision"], "allow");
        assert!(tier.is_some(), "a hit names its tier");
        let vk = first["veri_key"].as_str().unwrap();
        assert_eq!(entry_status(&app, vk).await, 200);

        // The same artifact under a policy trusting another identity: a deny, with why.
        let mut other = trusting_sigstore_js(None);
        other["identities"][0]["san"] =
            json!("https://github.com/sigstore/cosign/.github/workflows/release.yml@refs/heads/main");
        put_policy(&app, "cosign-only", &other).await;
        let (status, denied, _) = evaluate(&app, "cosign-only", vec![provenance()]).await;
        assert_eq!(status, 200);
        assert_eq!(denied["decision"], "deny", "{denied}");
        let reasons = denied["reasons"].to_string();
        assert!(reasons.contains("identity check failed"), "{reasons}");
        assert_eq!(denied["identities"], json!([]));

        // A tampered attestation is never an allow, and names the failed check.
        let mut tampered = provenance();
        let mut sig = B64
            .decode(tampered["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        sig[12] ^= 0x10;
        tampered["dsseEnvelope"]["signatures"][0]["sig"] = json!(B64.encode(&sig));
        let (status, bad, _) = evaluate(&app, "npm", vec![tampered.clone()]).await;
        assert_eq!(status, 200);
        assert_eq!(bad["decision"], "deny", "{bad}");
        assert!(bad["reasons"].to_string().contains("check failed"), "{bad}");
        // The forged attestation's verdict is its own: the genuine one still allows.
        assert_ne!(bad["veri_key"], first["veri_key"]);

        // Eight concurrent misses of one new VeriKey verify once and agree: one decides it
        // now (`cached: false`), the seven others wait and read its verdict.
        let mut relaxed = trusting_sigstore_js(None);
        relaxed["predicate_types"] = json!([]);
        put_policy(&app, "npm-relaxed", &relaxed).await;
        let answers = futures::future::join_all(
            (0..8).map(|_| evaluate(&app, "npm-relaxed", vec![provenance()])),
        )
        .await;
        let keys: std::collections::BTreeSet<String> = answers
            .iter()
            .map(|(s, b, _)| {
                assert_eq!(*s, 200, "{b}");
                assert_eq!(b["decision"], "allow");
                b["veri_key"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(keys.len(), 1);
        let decided_now = answers.iter().filter(|(_, b, _)| b["cached"] == false).count();
        assert_eq!(decided_now, 1, "concurrent misses verify once");
        app.finish().await;
    }
}

both_modes! {
    /// A Rego rule over the verified statements decides the verdict, its message among the
    /// reasons; bad requests are 4xx naming the problem.
    async fn a_rego_rule_decides_with_its_message() {
        let Some(app) = start().await else { return };
        let rule = |builder: &str| {
            format!(
                r#"package provd
default allow := false
allow if {{
  some a in input.attestations
  a.statement.predicate.builder.id == "{builder}"
}}
deny contains msg if {{
  some a in input.attestations
  a.statement.predicate.builder.id != "{builder}"
  msg := sprintf("builder %v is not {builder}", [a.statement.predicate.builder.id])
}}"#
            )
        };
        put_policy(&app, "runner", &trusting_sigstore_js(Some(&rule("https://github.com/actions/runner")))).await;
        put_policy(&app, "other-builder", &trusting_sigstore_js(Some(&rule("https://example.com/builder")))).await;
        let (_, allowed, _) = evaluate(&app, "runner", vec![provenance()]).await;
        assert_eq!(allowed["decision"], "allow", "{allowed}");
        assert!(allowed["reasons"].to_string().contains("Rego module allows"), "{allowed}");
        let (_, denied, _) = evaluate(&app, "other-builder", vec![provenance()]).await;
        assert_eq!(denied["decision"], "deny", "{denied}");
        assert!(
            denied["reasons"]
                .to_string()
                .contains("rego: builder https://github.com/actions/runner is not https://example.com/builder"),
            "{denied}"
        );

        // Requests provd cannot evaluate as written.
        for (body, status, says) in [
            (json!({"artifact_digest": "sha512:zz", "policy": "runner", "attestations": [provenance()]}), 400, "artifact_digest"),
            (json!({"artifact_digest": package_digest(), "policy": "runner", "attestations": []}), 400, "attestations"),
            (json!({"artifact_digest": package_digest(), "policy": "nope", "attestations": [provenance()]}), 404, "no policy named"),
        ] {
            let resp = app
                .http
                .post(app.url("/api/v1/provcache/evaluate"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status);
            let answer: Value = resp.json().await.unwrap();
            assert!(answer["error"]["message"].as_str().unwrap().contains(says), "{answer}");
        }
        // Reading needs `read`, deciding needs `write`.
        let resp = app
            .http
            .post(app.url("/api/v1/provcache/evaluate"))
            .bearer_auth(READ_TOKEN)
            .json(&json!({"artifact_digest": package_digest(), "policy": "runner", "attestations": [provenance()]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        app.finish().await;
    }
}

/// `provd verify --explain` over an explanation written to a file.
fn replay(explanation: &Value, dir: &std::path::Path, name: &str) -> std::process::Output {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(explanation).unwrap()).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(["verify", "--explain"])
        .arg(&path)
        .env_remove("PROVD_CONFIG")
        .output()
        .expect("run provd")
}

async fn explain(app: &TestApp, veri_key: &str) -> (u16, Value) {
    let resp = app
        .http
        .get(app.url(&format!("/api/v1/provcache/entries/{veri_key}/explain")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// A signer revocation event through the API.
async fn revoke(app: &TestApp, data: Value) {
    let resp = app
        .http
        .post(app.url("/api/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "specversion": "1.0",
            "id": uuid::Uuid::now_v7().to_string(),
            "source": "urn:example:test",
            "type": "dev.provd.signer.revoked.v1",
            "datacontenttype": "application/json",
            "data": data,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
}

/// Ledger rows of one type, newest last.
async fn ledger_rows(app: &TestApp, ty: &str) -> Vec<Value> {
    let rows: Value = app
        .http
        .get(app.url("/api/v1/provcache/revocations?since=0&limit=1000"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = rows["revocations"]
        .as_array()
        .or(rows.as_array())
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .filter(|r| r["revocation_type"] == ty)
        .collect()
}

/// Two verdicts — one relying on sigstore-js's identity, one on npm's key — on `nodes`;
/// revoking the identity removes exactly the first on every node with one ledger row, and
/// the surviving verdict's explanation still replays offline; replacing the policy removes
/// the rest, and the next evaluation verifies again.
async fn revocations_remove_exactly_what_relied_on_them(nodes: &[&TestApp]) {
    let a = nodes[0];
    let dir = tempfile::tempdir().unwrap();
    put_policy(a, "sigstore-js", &trusting_sigstore_js(None)).await;
    put_policy(a, "npm-key", &json!({"identities": [{"key": npm_key()}]})).await;
    let (_, by_identity, _) = evaluate(a, "sigstore-js", vec![provenance()]).await;
    let (_, by_key, _) = evaluate(a, "npm-key", vec![publish()]).await;
    assert_eq!(by_identity["decision"], "allow", "{by_identity}");
    assert_eq!(by_key["decision"], "allow", "{by_key}");
    let (vk_identity, vk_key) = (
        by_identity["veri_key"].as_str().unwrap().to_owned(),
        by_key["veri_key"].as_str().unwrap().to_owned(),
    );
    for n in nodes {
        for vk in [&vk_identity, &vk_key] {
            eventually("each node to serve both verdicts", WAIT, || async {
                (entry_status(n, vk).await == 200).then_some(())
            })
            .await;
        }
    }
    // Both explanations replay offline before anything is revoked.
    let (status, explanation) = explain(a, &vk_key).await;
    assert_eq!(status, 200, "{explanation}");
    let out = replay(&explanation, dir.path(), "key.json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut forged = explanation.clone();
    forged["verdict"]["decision"] = json!("deny");
    let out = replay(&forged, dir.path(), "forged.json");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a changed decision does not replay"
    );

    let signer_rows = ledger_rows(a, "signer").await.len();
    revoke(
        a,
        json!({"identity": {"issuer": GITHUB, "san": SIGSTORE_JS}, "reason": "workflow compromised"}),
    )
    .await;
    for n in nodes {
        eventually(
            "the identity's verdict to go on every node",
            WAIT,
            || async { (entry_status(n, &vk_identity).await == 404).then_some(()) },
        )
        .await;
        assert_eq!(
            entry_status(n, &vk_key).await,
            200,
            "the key's verdict stays"
        );
    }
    let rows = ledger_rows(a, "signer").await;
    assert_eq!(rows.len(), signer_rows + 1, "one ledger row: {rows:?}");
    let row = rows.last().unwrap();
    assert_eq!(row["revoked_key"], identity_id(GITHUB, SIGSTORE_JS));
    assert!(
        row["reason"].as_str().unwrap().contains(SIGSTORE_JS),
        "{row}"
    );
    // The surviving verdict still replays.
    let (status, explanation) = explain(a, &vk_key).await;
    assert_eq!(status, 200);
    let out = replay(&explanation, dir.path(), "key-after.json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Replacing the key policy invalidates its verdict everywhere, once.
    let policy_rows = ledger_rows(a, "policy").await.len();
    put_policy(
        a,
        "npm-key",
        &json!({"identities": [{"key": npm_key()}], "transparency": {"tlog_entries": 1, "timestamps": 1},
                "predicate_types": ["https://github.com/npm/attestation/tree/main/specs/publish/v0.1"]}),
    )
    .await;
    for n in nodes {
        eventually(
            "the replaced policy's verdict to go on every node",
            WAIT,
            || async { (entry_status(n, &vk_key).await == 404).then_some(()) },
        )
        .await;
    }
    assert_eq!(ledger_rows(a, "policy").await.len(), policy_rows + 1);
    let (_, again, _) = evaluate(a, "npm-key", vec![publish()]).await;
    assert_eq!(again["cached"], false, "the next evaluation verifies again");
    assert_eq!(again["decision"], "allow", "{again}");
}

both_modes! {
    /// One node: revocations by identity and by policy replacement, and explanations.
    async fn revocations_remove_exactly_the_verdicts_that_relied_on_them() {
        let Some(app) = start().await else { return };
        revocations_remove_exactly_what_relied_on_them(&[&app]).await;
        app.finish().await;
    }
}

/// Two nodes on one database and NATS: what one node decides and revokes, the other serves
/// and drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_node() {
    let Some(a) = start().await else { return };
    let (db, prefix) = (a.config.database_url.clone(), a.config.nats_prefix.clone());
    let b = TestApp::start_with(|c| {
        c.database_url = db;
        c.nats_prefix = prefix;
        c.trust.trusted_root =
            Some(vectors().join("sigstore-go-examples/trusted-root-public-good.json"));
    })
    .await
    .expect("the second node starts");
    revocations_remove_exactly_what_relied_on_them(&[&a, &b]).await;
    let TestApp { app, data, .. } = b;
    app.stop().await;
    data.remove().await;
    a.finish().await;
}

both_modes! {
    /// `provd evaluate` through a running provd: exit 0 allow (then cached), 1 deny.
    async fn provd_evaluate_answers_with_its_exit_code() {
        let Some(app) = start().await else { return };
        put_policy(&app, "npm", &trusting_sigstore_js(None)).await;
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("provenance.json");
        std::fs::write(&good, serde_json::to_vec(&provenance()).unwrap()).unwrap();
        let run = |policy: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_provd"))
                .args(["evaluate", "--policy", policy, "--bundle"])
                .arg(&good)
                .args(["--server", &app.base, "--token", ADMIN_TOKEN, &package_digest()])
                .env_remove("PROVD_CONFIG")
                .output()
                .expect("run provd")
        };
        let out = tokio::task::block_in_place(|| run("npm"));
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("allow: sha256:"));
        let out = tokio::task::block_in_place(|| run("npm"));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("allow (cached): "));
        let mut other = trusting_sigstore_js(None);
        other["identities"][0]["san"] = json!("someone@example.com");
        put_policy(&app, "someone", &other).await;
        let out = tokio::task::block_in_place(|| run("someone"));
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stdout).contains("identity check failed"));
        let out = tokio::task::block_in_place(|| run("missing"));
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no policy named"));
        app.finish().await;
    }
}

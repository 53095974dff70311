//! Policies as stored, versioned documents, in both modes: `PUT/GET /api/v1/policies`,
//! versions under concurrency at the store, scopes, refusals that name the problem, a
//! replacement invalidating the old policy's verdicts through the ledger exactly once, two
//! nodes on one database, `provd policy`, and the documented examples.

mod common;

use actors::ports::PolicyStore as _;
use std::process::{Command, Output};
use std::time::Duration;

use actors::domain::policy::Policy;
use actors::ports::{PolicyPut, PortError};
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually, fresh_veri_key};
use events::{EventKind, Subjects};
use provd::http::policies::policy_updated_event;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A policy trusting one GitHub workflow identity of `repo`.
fn document(repo: &str) -> Value {
    json!({
        "identities": [{
            "issuer": "https://token.actions.githubusercontent.com",
            "san_regexp": format!("^https://github\\.com/{repo}/\\.github/workflows/.+$"),
            "github": {"repository": repo, "ref": "refs/heads/main"},
        }],
        "predicate_types": ["https://slsa.dev/provenance/v1"],
    })
}

fn hash_of(doc: &Value) -> String {
    Policy::from_json(&serde_json::to_vec(doc).expect("json"))
        .expect("a valid policy")
        .hash
}

/// The document as stored: the canonical form, defaults filled in.
fn stored_form(doc: &Value) -> Value {
    let policy = Policy::from_json(&serde_json::to_vec(doc).expect("json")).expect("valid");
    serde_json::from_slice(&policy.canonical).expect("canonical JSON")
}

async fn put_raw(t: &TestApp, name: &str, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
    let mut req = t
        .http
        .put(t.url(&format!("/api/v1/policies/{name}")))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("PUT policy");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn put(t: &TestApp, name: &str, doc: &Value) -> (u16, Value) {
    put_raw(
        t,
        name,
        serde_json::to_vec(doc).expect("json"),
        Some(ADMIN_TOKEN),
    )
    .await
}

async fn get(t: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = t.http.get(t.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("GET");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// Writes a cache entry decided under `policy_hash` through the API.
async fn write_entry(t: &TestApp, key: &str, policy_hash: &str) {
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/entries"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "veri_key": key,
            "verdict": {"decision": "allow"},
            "trust_score": 90,
            "policy_hash": policy_hash,
            "signer_set_hash": "sha256:signers",
            "signer_key_ids": ["key-a"],
            "ttl": "1h",
        }))
        .send()
        .await
        .expect("write entry");
    assert!(
        matches!(resp.status().as_u16(), 201 | 202),
        "entry accepted: {}",
        resp.status()
    );
}

async fn entry_status(t: &TestApp, key: &str) -> u16 {
    get(
        t,
        &format!("/api/v1/provcache/entries/{key}"),
        Some(READ_TOKEN),
    )
    .await
    .0
}

/// The ledger's rows of type `policy`.
async fn policy_rows(t: &TestApp) -> Vec<Value> {
    let (status, body) = get(
        t,
        "/api/v1/provcache/revocations?since=0&limit=1000",
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["revocations"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["revocation_type"] == "policy")
        .cloned()
        .collect()
}

/// Waits until the ledger has a `policy` row revoking `hash`, and returns every such row.
async fn rows_revoking(t: &TestApp, hash: &str) -> Vec<Value> {
    eventually("a policy row in the ledger", WAIT, || async {
        let rows: Vec<Value> = policy_rows(t)
            .await
            .into_iter()
            .filter(|r| r["revoked_key"] == hash)
            .collect();
        (!rows.is_empty()).then_some(rows)
    })
    .await
}

both_modes! {
async fn policies_are_stored_versioned_and_listed() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let (a, b) = (document("acme/app"), document("acme/other"));
    let (status, created) = put(&t, "release", &a).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "release");
    assert_eq!(created["version"], 1);
    assert_eq!(created["policy_hash"], hash_of(&a));
    assert!(created["created_at"].is_string());
    assert!(created.get("unchanged").is_none() && created.get("previous_policy_hash").is_none());

    // The stored document is the canonical form of what was sent, defaults filled in.
    let (status, got) = get(&t, "/api/v1/policies/release", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["version"], 1);
    assert_eq!(got["policy_hash"], hash_of(&a));
    assert_eq!(got["document"], stored_form(&a));
    assert_eq!(got["document"]["transparency"], json!({"tlog_entries": 1, "timestamps": 1}));

    // The same policy written differently (key order, spacing) is the same document.
    let respelled = serde_json::to_vec_pretty(&json!({
        "predicate_types": a["predicate_types"],
        "identities": a["identities"],
    }))
    .expect("json");
    let (status, same) = put_raw(&t, "release", respelled, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["unchanged"], true);
    assert_eq!(same["version"], 1);

    let (status, replaced) = put(&t, "release", &b).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["policy_hash"], hash_of(&b));
    assert_eq!(replaced["previous_policy_hash"], hash_of(&a));
    assert_eq!(replaced["previous_version"], 1);
    let (_, got) = get(&t, "/api/v1/policies/release", Some(READ_TOKEN)).await;
    assert_eq!((got["version"].clone(), got["document"].clone()), (json!(2), stored_form(&b)));

    // Back to the first document: a new version, not the old one.
    let (status, back) = put(&t, "release", &a).await;
    assert_eq!((status, back["version"].clone()), (200, json!(3)));
    assert_eq!(back["previous_policy_hash"], hash_of(&b));

    let (status, other) = put(&t, "audit.v1", &b).await;
    assert_eq!((status, other["version"].clone()), (201, json!(1)));

    let (status, list) = get(&t, "/api/v1/policies", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{list}");
    let summary: Vec<(Value, Value, Value)> = list["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .map(|p| (p["name"].clone(), p["version"].clone(), p["policy_hash"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("audit.v1"), json!(1), json!(hash_of(&b))),
            (json!("release"), json!(3), json!(hash_of(&a))),
        ]
    );

    // Every version stays: an old verdict's hash still explains itself.
    let old = t
        .app
        .store()
        .policy_by_hash(&hash_of(&b))
        .await
        .expect("store")
        .expect("stored");
    assert_eq!(old.document, stored_form(&b));

    let (status, missing) = get(&t, "/api/v1/policies/nope", Some(READ_TOKEN)).await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["error"]["code"], "not_found");
    t.finish().await;
}
}

both_modes! {
async fn bad_names_and_documents_are_400_naming_the_problem() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let good = serde_json::to_vec(&document("acme/app")).expect("json");
    let long = "x".repeat(129);
    for name in [".hidden", "-x", "a%20b", "caf%C3%A9", long.as_str()] {
        let (status, body) = put_raw(&t, name, good.clone(), Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 400, "{name}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("policy name"), "{name}: {message}");
    }
    for (doc, says) in [
        (b"not json".to_vec(), "not a policy document"),
        (br#"{"identities": []}"#.to_vec(), "`identities` is empty"),
        (
            br#"{"identities": [{"issuer": "https://i", "san_regexp": "("}]}"#.to_vec(),
            "identities[0].san_regexp",
        ),
        (
            br#"{"identities": [{"key": "not a key"}]}"#.to_vec(),
            "identities[0].key",
        ),
        (
            br#"{"identities": [{"issuer": "https://i", "san": "me"}], "surprise": 1}"#.to_vec(),
            "unknown field",
        ),
        (
            serde_json::to_vec(&json!({
                "identities": [{"issuer": "https://i", "san": "me"}],
                "rego": "package other\nallow := true",
            }))
            .expect("json"),
            "package",
        ),
    ] {
        let (status, body) = put_raw(&t, "release", doc, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 400, "{says}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{message} should say {says}");
    }
    let (_, list) = get(&t, "/api/v1/policies", Some(READ_TOKEN)).await;
    assert_eq!(list["policies"], json!([]), "nothing was stored");
    t.finish().await;
}
}

both_modes! {
async fn policy_routes_need_their_scopes() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let doc = serde_json::to_vec(&document("acme/app")).expect("json");
    assert_eq!(put_raw(&t, "release", doc.clone(), None).await.0, 401);
    assert_eq!(put_raw(&t, "release", doc.clone(), Some("wrong-token-0123456789")).await.0, 401);
    let (status, body) = put_raw(&t, "release", doc.clone(), Some(READ_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(get(&t, "/api/v1/policies/release", None).await.0, 401);
    assert_eq!(get(&t, "/api/v1/policies", None).await.0, 401);
    // Nothing was stored by the refused PUTs; the reader reads.
    assert_eq!(get(&t, "/api/v1/policies/release", Some(READ_TOKEN)).await.0, 404);
    assert_eq!(put_raw(&t, "release", doc, Some(ADMIN_TOKEN)).await.0, 201);
    assert_eq!(get(&t, "/api/v1/policies/release", Some(READ_TOKEN)).await.0, 200);
    t.finish().await;
}
}

both_modes! {
async fn replacing_a_policy_invalidates_its_verdicts_once() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let (a, b, c) = (document("acme/a"), document("acme/b"), document("acme/c"));
    let (hash_a, hash_b) = (hash_of(&a), hash_of(&b));
    assert_eq!(put(&t, "release", &a).await.0, 201);
    let (under_a, under_other) = (fresh_veri_key(), fresh_veri_key());
    write_entry(&t, &under_a, &hash_a).await;
    write_entry(&t, &under_other, &format!("sha256:{}", "0f".repeat(32))).await;
    assert_eq!(entry_status(&t, &under_a).await, 200);
    assert_eq!(entry_status(&t, &under_other).await, 200);

    // The same document again publishes nothing (checked below: one row for A).
    assert_eq!(put(&t, "release", &a).await.1["unchanged"], true);
    let (status, replaced) = put(&t, "release", &b).await;
    assert_eq!(status, 200, "{replaced}");

    eventually("the verdict under the old policy to go", WAIT, || async {
        (entry_status(&t, &under_a).await == 404).then_some(())
    })
    .await;
    let rows = rows_revoking(&t, &hash_a).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reason"], "policy release replaced by version 2");
    assert_eq!(entry_status(&t, &under_other).await, 200, "other policies' verdicts stay");

    // A retried replacement (a crash between publishing and storing) publishes the same
    // event again: it must not make a second row.
    let previous = t
        .app
        .store()
        .policy_by_hash(&hash_a)
        .await
        .expect("store")
        .expect("version 1 is kept");
    let again = policy_updated_event(&t.config.node_id, "release", &previous, &hash_b, 2);
    assert_eq!(again.id, rows[0]["revocation_id"], "the id is derived, not random");
    t.app
        .bus()
        .publish(
            &Subjects::new(t.config.nats_prefix.clone()).subject(EventKind::PolicyUpdated),
            &again.id,
            again.to_json(),
        )
        .await
        .expect("publish the retry");
    // A later replacement's row shows the invalidator has read past the retried event.
    assert_eq!(put(&t, "release", &c).await.0, 200);
    rows_revoking(&t, &hash_b).await;
    let rows = policy_rows(&t).await;
    assert_eq!(
        rows.iter().filter(|r| r["revoked_key"] == hash_a).count(),
        1,
        "one revocation of A: {rows:?}"
    );
    assert_eq!(rows.len(), 2, "A and B each revoked once: {rows:?}");
    t.finish().await;
}
}

both_modes! {
async fn concurrent_puts_get_consecutive_versions() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let store = t.app.store().clone();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let doc = document(&format!("acme/repo{i}"));
                store.put_policy("busy", &hash_of(&doc), &doc).await
            })
        })
        .collect();
    let mut versions = Vec::new();
    let mut created = 0;
    for task in tasks {
        match task.await.expect("task").expect("no error to any caller") {
            PolicyPut::Created(c) => {
                created += 1;
                versions.push(c.version);
            }
            PolicyPut::Replaced { current, previous } => {
                assert_eq!(previous.version, current.version - 1);
                versions.push(current.version);
            }
            PolicyPut::Unchanged(u) => panic!("every document differs: {u:?}"),
        }
    }
    versions.sort_unstable();
    assert_eq!(created, 1);
    assert_eq!(versions, (1..=20).collect::<Vec<i64>>());
    let current = store.policy("busy").await.expect("store").expect("stored");
    assert_eq!(current.version, 20);
    let same = store
        .put_policy("busy", &current.policy_hash, &current.document)
        .await
        .expect("store");
    assert!(matches!(same, PolicyPut::Unchanged(ref u) if u.version == 20), "{same:?}");

    // Over HTTP too: concurrent PUTs all succeed, with distinct versions.
    let puts: Vec<_> = (0..5)
        .map(|i| {
            let (http, url) = (t.http.clone(), t.url("/api/v1/policies/busy-http"));
            tokio::spawn(async move {
                let resp = http
                    .put(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .json(&document(&format!("acme/http{i}")))
                    .send()
                    .await
                    .expect("PUT");
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    let mut versions = Vec::new();
    for p in puts {
        let (status, body) = p.await.expect("task");
        assert!(matches!(status, 200 | 201), "{status} {body}");
        versions.push(body["version"].as_i64().expect("version"));
    }
    versions.sort_unstable();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);

    // What the schema refuses is refused before SQL, as `Rejected`, never `Unavailable`.
    let doc = document("acme/app");
    for (name, hash) in [
        ("a b", hash_of(&doc)),
        ("ok", "sha256:ABC".to_owned()),
        ("ok", hash_of(&doc).to_uppercase()),
    ] {
        let err = store.put_policy(name, &hash, &doc).await.expect_err("refused");
        assert!(matches!(err, PortError::Rejected(_)), "{name} {hash}: {err:?}");
    }
    // And the schema itself keeps names and hashes sane, whoever writes.
    let hash = hash_of(&doc);
    for (name, hash) in [
        ("ok", hash.as_str()),
        ("a b", hash.as_str()),
        ("-x", hash.as_str()),
        ("ok2", "sha256:abc"),
        ("ok3", &hash.replace("sha256:", "sha512:")),
    ] {
        let sql = format!(
            "INSERT INTO provcache.prov_policies (name, version, policy_hash, document) \
             VALUES ('{name}', 1, '{hash}', '{{}}')"
        );
        let result = t.execute(&sql).await;
        assert_eq!(result.is_ok(), name == "ok", "{name} {hash}: {result:?}");
    }
    t.finish().await;
}
}

/// Two nodes on one database and NATS: a replacement made on A takes the old policy's
/// verdict out of B's hot tiers too (distributed mode only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_on_one_node_clears_the_other_nodes_hot_tiers() {
    let Some(a) =
        TestApp::start_with(|c| c.provcache.flush_interval = Duration::from_millis(200)).await
    else {
        return;
    };
    let (db, prefix) = (a.config.database_url.clone(), a.config.nats_prefix.clone());
    let Some(b) = TestApp::start_with(|c| {
        c.database_url = db;
        c.nats_prefix = prefix;
    })
    .await
    else {
        return;
    };
    let (old, new) = (document("acme/old"), document("acme/new"));
    assert_eq!(put(&a, "release", &old).await.0, 201);
    let key = fresh_veri_key();
    write_entry(&a, &key, &hash_of(&old)).await;
    // Once flushed, B reads it from PostgreSQL into its own memory tier and Redis prefix.
    eventually("B to read the entry", WAIT, || async {
        (entry_status(&b, &key).await == 200).then_some(())
    })
    .await;
    let in_b_redis = || async {
        b.app
            .redis()
            .expect("distributed mode has Redis")
            .get_entry(&key)
            .await
            .expect("redis")
            .is_some()
    };
    assert!(in_b_redis().await, "B's Redis tier holds it");

    assert_eq!(put(&a, "release", &new).await.0, 200);
    eventually("the entry to go from both nodes", WAIT, || async {
        let gone = entry_status(&a, &key).await == 404
            && entry_status(&b, &key).await == 404
            && !in_b_redis().await;
        gone.then_some(())
    })
    .await;
    // B serves the same current policy from the shared database.
    let (_, got) = get(&b, "/api/v1/policies/release", Some(READ_TOKEN)).await;
    assert_eq!(
        (got["version"].clone(), got["document"].clone()),
        (json!(2), stored_form(&new))
    );
    assert_eq!(rows_revoking(&b, &hash_of(&old)).await.len(), 1);
    let TestApp { app, data, .. } = b;
    app.stop().await;
    data.remove().await;
    a.finish().await;
}

async fn provd_policy(t: &TestApp, token: &str, args: &[&str]) -> Output {
    let (base, token) = (t.base.clone(), token.to_owned());
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_provd"))
            .arg("policy")
            .args(&args)
            .args(["--server", &base, "--token", &token])
            .env_remove("PROVD_SERVER")
            .env_remove("PROVD_TOKEN")
            .output()
            .expect("provd policy runs")
    })
    .await
    .expect("join")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

both_modes! {
async fn provd_policy_applies_gets_and_lists() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("release.json");
    let doc = document("acme/app");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    let path = file.display().to_string();

    let out = provd_policy(&t, ADMIN_TOKEN, &["apply", &path]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("created policy release version 1 {}", hash_of(&doc))
    );
    let out = provd_policy(&t, ADMIN_TOKEN, &["apply", &path]).await;
    assert!(text(&out.stdout).starts_with("unchanged policy release version 1"), "{}", text(&out.stdout));

    let other = document("acme/other");
    let other_file = dir.path().join("v2.json");
    std::fs::write(&other_file, serde_json::to_vec(&other).expect("json")).expect("write");
    let out = provd_policy(
        &t,
        ADMIN_TOKEN,
        &["apply", &other_file.display().to_string(), "--name", "release"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!(
            "replaced policy release version 2 {} (was {}",
            hash_of(&other),
            hash_of(&doc)
        )),
        "{}",
        text(&out.stdout)
    );

    let out = provd_policy(&t, READ_TOKEN, &["get", "release", "--document"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("the document is JSON");
    assert_eq!(got, stored_form(&other));
    let out = provd_policy(&t, READ_TOKEN, &["list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("release\tversion 2\t"), "{}", text(&out.stdout));

    // Refused by provd: exit 1 with provd's message.
    let out = provd_policy(&t, READ_TOKEN, &["apply", &path]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    std::fs::write(&file, br#"{"identities": []}"#).expect("write");
    let out = provd_policy(&t, ADMIN_TOKEN, &["apply", &path]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("`identities` is empty"), "{}", text(&out.stderr));
    let out = provd_policy(&t, READ_TOKEN, &["get", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    // Usage: exit 2.
    let out = provd_policy(&t, ADMIN_TOKEN, &["apply", &path, "--name", "a b"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let missing = dir.path().join("missing.json").display().to_string();
    let out = provd_policy(&t, ADMIN_TOKEN, &["apply", &missing]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    t.finish().await;
}
}

/// Every example in docs/policies.md is a valid policy.
#[test]
fn the_documented_examples_are_valid_policies() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policies.md"))
        .expect("docs/policies.md");
    let mut checked = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("<!-- example: policy -->") {
        rest = &rest[start..];
        let body_start = rest.find("```json\n").expect("json block follows") + 8;
        let body_end = rest[body_start..].find("```").expect("block closes") + body_start;
        let json = &rest[body_start..body_end];
        if let Err(e) = Policy::from_json(json.as_bytes()) {
            panic!("{e}\n{json}");
        }
        checked += 1;
        rest = &rest[body_end..];
    }
    assert!(checked >= 2, "two examples at least, found {checked}");
}

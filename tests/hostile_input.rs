//! Hostile but plausible input, in both modes: every value the API, the events and the
//! queues carry is either refused with a 4xx (or a recorded rejection) naming the field, or
//! stored and readable back; nothing is accepted and then lost, and one bad message never
//! blocks the good ones behind it.

mod common;

use actors::ports::EntryStore as _;
use std::collections::BTreeMap;
use std::time::Duration;

use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use actors::ports::PortError;
use chrono::Utc;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually, fresh_veri_key};
use events::Subjects;
use events::streams::PROVCACHE_WRITES_SUBJECT;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Texts that are odd but valid Unicode: byte-order marks, direction overrides, combining
/// marks, the last code points, controls, emoji.
const ODD: [&str; 10] = [
    "\u{FEFF}bom",
    "\u{202E}override",
    "e\u{0301}",
    "\u{10FFFF}",
    "\u{FFFF}",
    "\u{1F600}",
    "\u{7F}del",
    "tab\there\nnewline",
    "quote\"back\\slash",
    "' OR 1=1; --",
];

/// Hostile texts for a field whose limit is `limit` bytes: NUL anywhere, lengths around the
/// limit (in bytes and in multi-byte characters), odd Unicode, any printable text.
fn hostile(limit: usize) -> BoxedStrategy<String> {
    prop_oneof![
        ("[ -~]{0,12}", "[ -~]{0,12}").prop_map(|(a, b)| format!("{a}\u{0}{b}")),
        (0usize..3).prop_map(move |d| "x".repeat(limit - 1 + d)),
        (0usize..3).prop_map(move |d| "é".repeat(limit / 2 - 1 + d)),
        (0usize..2).prop_map(move |d| "x".repeat(limit * (2 + d))),
        prop::sample::select(ODD.to_vec()).prop_map(str::to_owned),
        "\\PC{1,24}",
    ]
    .boxed()
}

/// `count` values of `strategy`, from a fixed seed so a failure can be replayed.
fn generate<T: std::fmt::Debug>(strategy: impl Strategy<Value = T>, count: usize) -> Vec<T> {
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect()
}

/// The entry fields a writer gives as text, with their limits in bytes.
const ENTRY_FIELDS: [(&str, usize); 7] = [
    ("policy_hash", 128),
    ("signer_set_hash", 128),
    ("signer_key_ids", 256),
    ("feed_id", 128),
    ("feed_epoch", 64),
    ("proof_root", 128),
    ("verdict", 128),
];

fn entry_body(veri_key: &str, field: &str, value: &str) -> Value {
    let mut body = json!({
        "veri_key": veri_key,
        "verdict": {"decision": "allow"},
        "trust_score": 50,
        "policy_hash": "sha256:policy",
        // The key IDs are the signer set's members, kept per signer set: one set per entry.
        "signer_set_hash": format!("signers-{}", &veri_key[7..]),
    });
    match field {
        "signer_key_ids" => body[field] = json!([value]),
        // A hostile text both as a value and as a key of the verdict.
        "verdict" => body[field] = json!({"decision": "allow", "note": value, value: 1}),
        _ => body[field] = json!(value),
    }
    body
}

/// The field's value as stored, in the same shape the request gave it.
fn stored_value(e: &Entry, field: &str) -> Value {
    match field {
        "policy_hash" => json!(e.policy_hash),
        "signer_set_hash" => json!(e.signer_set_hash),
        "signer_key_ids" => json!(e.signer_key_ids),
        "feed_id" => json!(e.feed_id),
        "feed_epoch" => json!(e.feed_epoch),
        "proof_root" => json!(e.proof_root),
        "verdict" => e.verdict.clone(),
        other => panic!("no field {other}"),
    }
}

async fn send(
    t: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = t.http.request(method, t.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn refusal_names(body: &Value, field: &str) -> bool {
    body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains(field))
}

both_modes! {
    /// Entries: every hostile field value is a 400 naming the field, or is served and
    /// reaches the durable store unchanged.
    async fn hostile_entries_are_refused_naming_the_field_or_stored_and_read_back() {
        let Some(t) = TestApp::start().await else { return };
        let cases = generate(
            (0..ENTRY_FIELDS.len()).prop_flat_map(|i| (Just(i), hostile(ENTRY_FIELDS[i].1))),
            60,
        );
        let mut accepted: BTreeMap<String, (&str, Value)> = BTreeMap::new();
        for (i, value) in &cases {
            let field = ENTRY_FIELDS[*i].0;
            let key = fresh_veri_key();
            let body = entry_body(&key, field, value);
            let (status, answer) =
                send(&t, reqwest::Method::POST, "/api/v1/provcache/entries", Some(&body)).await;
            match status {
                400 => assert!(
                    refusal_names(&answer, &format!("`{field}`")),
                    "{field}={value:?}: the refusal names the field: {answer}"
                ),
                201 | 202 => {
                    let want = match field {
                        "verdict" => body["verdict"].clone(),
                        "signer_key_ids" => json!([value]),
                        _ => json!(value),
                    };
                    accepted.insert(key, (field, want));
                }
                other => panic!("{field}={value:?}: answered {other}: {answer}"),
            }
        }
        assert!(!accepted.is_empty(), "some hostile values are valid and stored");
        assert!(accepted.len() < cases.len(), "some hostile values are refused");
        let store = t.app.parts().store.clone();
        for (key, (field, want)) in &accepted {
            let stored = eventually("the accepted entry in the durable store", WAIT, || async {
                store.get_entry(key).await.expect("store answers")
            })
            .await;
            assert_eq!(&stored_value(&stored, field), want, "{field} of {key} read back");
        }
        t.finish().await;
    }
}

/// The criterion fields of an invalidation, with their limits.
const INVALIDATION_FIELDS: [(&str, usize); 4] = [
    ("policy_hash", 128),
    ("signer_set_hash", 128),
    ("veri_key", 128),
    ("reason", 1024),
];

both_modes! {
    /// Invalidations through the API and events through `POST /api/v1/events`: a 400 naming
    /// the field, or a ledger row holding exactly what was asked.
    async fn hostile_invalidations_and_events_are_refused_naming_the_field_or_recorded() {
        let Some(t) = TestApp::start().await else { return };
        let cases = generate(
            (0..INVALIDATION_FIELDS.len())
                .prop_flat_map(|i| (Just(i), hostile(INVALIDATION_FIELDS[i].1), any::<bool>())),
            48,
        );
        // revocation id → (field, value)
        let mut accepted: BTreeMap<String, (&str, String)> = BTreeMap::new();
        for (i, value, as_event) in &cases {
            let field = INVALIDATION_FIELDS[*i].0;
            let mut data = json!({"reason": "hostile input test", "policy_hash": "sha256:p"});
            if field != "reason" {
                data = json!({"reason": "hostile input test"});
            }
            data[field] = json!(value);
            let (path, body) = if *as_event {
                let id = uuid::Uuid::new_v4().to_string();
                (
                    "/api/v1/events",
                    json!({
                        "specversion": "1.0",
                        "id": id,
                        "source": "urn:test:hostile",
                        "type": "dev.provd.invalidate.requested.v1",
                        "datacontenttype": "application/json",
                        "data": data,
                    }),
                )
            } else {
                ("/api/v1/provcache/invalidate", data)
            };
            let (status, answer) = send(&t, reqwest::Method::POST, path, Some(&body)).await;
            match status {
                400 => assert!(
                    refusal_names(&answer, field),
                    "{path} {field}={value:?}: the refusal names the field: {answer}"
                ),
                202 => {
                    let id = answer["revocation_id"]
                        .as_str()
                        .or(answer["id"].as_str())
                        .expect("an id")
                        .to_owned();
                    accepted.insert(id, (field, value.clone()));
                }
                other => panic!("{path} {field}={value:?}: answered {other}: {answer}"),
            }
        }
        assert!(!accepted.is_empty() && accepted.len() < cases.len(), "{accepted:?}");
        let rows = eventually("a ledger row for every accepted invalidation", WAIT, || async {
            let (status, page) = send(
                &t,
                reqwest::Method::GET,
                "/api/v1/provcache/revocations?since=0&limit=1000",
                None,
            )
            .await;
            assert_eq!(status, 200, "{page}");
            let rows: BTreeMap<String, Value> = page["revocations"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| (r["revocation_id"].as_str().unwrap_or_default().to_owned(), r.clone()))
                .collect();
            accepted.keys().all(|id| rows.contains_key(id)).then_some(rows)
        })
        .await;
        for (id, (field, value)) in &accepted {
            let row = &rows[id];
            // A criterion is matched without surrounding blanks; a reason is kept as given.
            let (stored, want) = if *field == "reason" {
                (&row["reason"], json!(value))
            } else {
                (&row["revoked_key"], json!(value.trim()))
            };
            assert_eq!(stored, &want, "{field} of {id} read back from the ledger");
        }
        // A submission id that cannot exist is not found, whatever it holds.
        for id in ["sub-%00", "%00", "sub-%F0%9F%98%80", &"x".repeat(300)] {
            let (status, answer) = send(
                &t,
                reqwest::Method::GET,
                &format!("/api/v1/rekor/submissions/{id}"),
                None,
            )
            .await;
            assert_eq!(status, 404, "{id}: {answer}");
        }
        t.finish().await;
    }
}

fn good_entry(key: &str) -> Entry {
    let now = Utc::now();
    let verdict = json!({"decision": "allow"});
    Entry {
        veri_key: key.to_owned(),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: None,
        trust_score: 70,
        policy_hash: "sha256:poison-test".into(),
        signer_set_hash: "sha256:signers".into(),
        signer_key_ids: vec!["key-a".into()],
        feed_id: None,
        feed_epoch: None,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

async fn rejected(t: &TestApp) -> Vec<Value> {
    let resp = t
        .http
        .get(t.url("/api/v1/rejected?limit=1000"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("rejected");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["rejected"].as_array().expect("list").clone()
}

both_modes! {
    /// One poison write among 50 good ones in a flush batch, published straight onto the
    /// write-behind stream past the API's checks: the 50 reach the durable store, the poison
    /// one is recorded as rejected and counted, and `/api/v1/status` shows it. The same for
    /// a poison invalidation and a poison ledger event among good ones.
    async fn a_poison_message_is_recorded_and_never_blocks_the_good_ones() {
        let Some(t) = TestApp::start_with(|c| {
            c.provcache.flush_batch = 64;
            c.provcache.flush_interval = Duration::from_millis(500);
        })
        .await
        else {
            return;
        };
        let bus = t.app.bus().clone();
        let subjects = Subjects::new(&t.config.nats_prefix);
        let before = t.metric("provd_write_behind_rejected_total", &[]).await;
        let keys: Vec<String> = (0..50).map(|_| fresh_veri_key()).collect();
        let poison_key = fresh_veri_key();
        let mut poison = good_entry(&poison_key);
        poison.verdict = json!({"note": "nul \u{0} inside"});
        poison.policy_hash = "p".repeat(200);
        let mut writes: Vec<EntryWrite> = keys
            .iter()
            .map(|k| EntryWrite {
                write_id: uuid::Uuid::now_v7(),
                accepted_at: Utc::now(),
                entry: good_entry(k),
            })
            .collect();
        writes.insert(
            25,
            EntryWrite {
                write_id: uuid::Uuid::now_v7(),
                accepted_at: Utc::now(),
                entry: poison,
            },
        );
        let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
        for w in &writes {
            bus.publish(&subject, &w.write_id.to_string(), w.to_json())
                .await
                .expect("published");
        }
        let store = t.app.parts().store.clone();
        eventually("the 50 good writes in the durable store", WAIT, || async {
            let mut all = true;
            for k in &keys {
                all &= store.get_entry(k).await.expect("store answers").is_some();
            }
            all.then_some(())
        })
        .await;
        assert!(store.get_entry(&poison_key).await.expect("store").is_none());
        let recorded = eventually("the poison write recorded", WAIT, || async {
            rejected(&t)
                .await
                .into_iter()
                .find(|r| r["subject"] == subject)
        })
        .await;
        assert!(
            recorded["detail"].as_str().is_some_and(|d| d.contains("policy_hash") || d.contains("verdict")),
            "{recorded}"
        );
        assert_eq!(
            t.metric("provd_write_behind_rejected_total", &[]).await - before,
            1.0,
            "the metric counts it once"
        );

        // A poison invalidation between two good ones, past the API's checks.
        let inv = |reason: &str, policy: &str| {
            json!({
                "specversion": "1.0",
                "id": uuid::Uuid::new_v4().to_string(),
                "source": "urn:test:poison",
                "type": "dev.provd.invalidate.requested.v1",
                "datacontenttype": "application/json",
                "data": {"policy_hash": policy, "reason": reason},
            })
        };
        let first = inv("first", "sha256:poison-test");
        let bad = inv("nul \u{0} in the reason", "sha256:other");
        let last = inv("last", "sha256:nothing");
        let inv_subject = subjects.subject(events::EventKind::InvalidateRequested);
        for e in [&first, &bad, &last] {
            bus.publish(&inv_subject, e["id"].as_str().unwrap(), serde_json::to_vec(e).unwrap())
                .await
                .expect("published");
        }
        for good in [&first, &last] {
            let id = good["id"].as_str().unwrap().to_owned();
            eventually("the good invalidation's ledger row", WAIT, || async {
                let n = t
                    .query_i64(&format!(
                        "SELECT count(*) FROM provcache.prov_revocations WHERE revocation_id = '{id}'"
                    ))
                    .await;
                (n == 1).then_some(())
            })
            .await;
        }
        // The good one before it removed the good writes' entries: it was applied.
        assert!(store.get_entry(&keys[0]).await.expect("store").is_none());
        let bad_id = bad["id"].as_str().unwrap().to_owned();
        eventually("the poison invalidation recorded", WAIT, || async {
            rejected(&t).await.into_iter().find(|r| r["event_id"] == bad_id)
        })
        .await;

        // A ledger event no node can apply (its criterion is unknown), then a good one.
        let ledger_subject = subjects.subject(events::EventKind::RevocationRecorded);
        let row = |seq_no: i64, criterion: &str| {
            json!({
                "specversion": "1.0",
                "id": uuid::Uuid::new_v4().to_string(),
                "source": "urn:test:poison",
                "type": "dev.provd.ledger.revocation.recorded.v1",
                "datacontenttype": "application/json",
                "data": {
                    "seq_no": seq_no,
                    "revocation_id": uuid::Uuid::new_v4(),
                    "revocation_type": "explicit",
                    "revoked_key": "k",
                    "reason": null,
                    "entries_invalidated": 0,
                    "source": "urn:test:poison",
                    "correlation_id": null,
                    "revoked_at": Utc::now(),
                    "metadata": {"criterion": criterion, "value": "k"},
                },
            })
        };
        let poison_row = row(1_000_000, "no-such-criterion");
        bus.publish(
            &ledger_subject,
            poison_row["id"].as_str().unwrap(),
            serde_json::to_vec(&poison_row).unwrap(),
        )
        .await
        .expect("published");
        let poison_row_id = poison_row["id"].as_str().unwrap().to_owned();
        eventually("the poison ledger event recorded", WAIT, || async {
            rejected(&t).await.into_iter().find(|r| r["event_id"] == poison_row_id)
        })
        .await;
        // The status report counts what was recorded.
        let (_, status) = send(&t, reqwest::Method::GET, "/api/v1/status", None).await;
        let total = status["rejected"]["total"].as_i64().unwrap_or_default();
        assert!(total >= 3, "{}", status["rejected"]);
        t.finish().await;
    }
}

both_modes! {
    /// A store's refusal keeps its kind: the durable store refuses what it cannot hold as
    /// `Rejected` (never as unavailable), and a write both stores can hold is stored.
    async fn store_refusals_are_rejections_not_outages() {
        let Some(t) = TestApp::start().await else { return };
        let store = t.app.parts().store.clone();
        let mut e = good_entry(&fresh_veri_key());
        e.verdict = json!({"note": "nul \u{0} inside"});
        let w = EntryWrite {
            write_id: uuid::Uuid::now_v7(),
            accepted_at: Utc::now(),
            entry: e,
        };
        match (t.mode(), store.upsert_entries(std::slice::from_ref(&w)).await) {
            // PostgreSQL's JSONB cannot hold NUL; SQLite can. The API refuses it for both.
            (common::Mode::Distributed, Err(PortError::Rejected(_))) => {}
            (common::Mode::Embedded, Ok(_)) => {}
            (mode, other) => panic!("{mode:?}: {other:?}"),
        }
        let mut long = good_entry(&fresh_veri_key());
        long.policy_hash = "p".repeat(300);
        let w = EntryWrite {
            write_id: uuid::Uuid::now_v7(),
            accepted_at: Utc::now(),
            entry: long,
        };
        match (t.mode(), store.upsert_entries(std::slice::from_ref(&w)).await) {
            (common::Mode::Distributed, Err(PortError::Rejected(_))) => {}
            (common::Mode::Embedded, Ok(_)) => {}
            (mode, other) => panic!("{mode:?}: {other:?}"),
        }
        // The API refuses both with a 400 naming the field, never a 503.
        for (field, value) in [("policy_hash", json!("p".repeat(300))), ("verdict", json!({"n": "\u{0}"}))] {
            let mut body = entry_body(&fresh_veri_key(), "feed_id", "f");
            body[field] = value;
            let (status, answer) =
                send(&t, reqwest::Method::POST, "/api/v1/provcache/entries", Some(&body)).await;
            assert_eq!(status, 400, "{answer}");
            assert!(refusal_names(&answer, field), "{answer}");
        }
        t.finish().await;
    }
}

/// Uploads fresh evidence and an entry pointing at it to `a`; returns the exported strict
/// bundle as JSON.
async fn exported_bundle(a: &TestApp, n: usize) -> Value {
    let evidence: Vec<u8> = (0..3000 + n).map(|i| ((i * 31 + n) % 251) as u8).collect();
    let resp = a
        .http
        .post(a.url("/api/v1/proofs"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/spdx+json")
        .body(evidence)
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 201);
    let manifest: Value = resp.json().await.expect("manifest");
    let key = fresh_veri_key();
    let mut body = entry_body(&key, "feed_epoch", "1.0.0");
    body["proof_root"] = manifest["proof_root"].clone();
    let (status, answer) = send(
        a,
        reqwest::Method::POST,
        "/api/v1/provcache/entries",
        Some(&body),
    )
    .await;
    assert!(status == 201 || status == 202, "{answer}");
    let resp = a
        .http
        .get(a.url(&format!(
            "/api/v1/provcache/entries/{key}/bundle?density=strict"
        )))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("bundle")
}

/// Bundle fields an importer takes, with hostile values for each.
fn hostile_bundle_field() -> BoxedStrategy<(&'static str, Value)> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            i32::MAX as u64,
            i32::MAX as u64 + 1,
            u64::MAX,
            1024
        ])
        .prop_map(|n| ("chunkSize", json!(n))),
        hostile(64).prop_map(|v| ("contentType", json!(v))),
        hostile(128).prop_map(|v| ("policyHash", json!(v))),
        hostile(64).prop_map(|v| ("feedEpoch", json!(v))),
    ]
    .boxed()
}

both_modes! {
    /// Bundle imports with hostile manifests and entries: a 4xx naming the field, or the
    /// imported entry and manifest read back as the bundle gave them; never a 503.
    async fn hostile_bundle_imports_are_refused_naming_the_field_or_stored() {
        let change = |c: &mut provd::config::Config| c.provcache.chunk_size = 1024;
        let Some(a) = TestApp::start_with(change).await else { return };
        let Some(b) = TestApp::start_with(change).await else { return };
        let cases = generate(hostile_bundle_field(), 16);
        let (mut refused, mut stored) = (0, 0);
        for (n, (field, value)) in cases.iter().enumerate() {
            let mut bundle = exported_bundle(&a, n).await;
            match *field {
                "chunkSize" | "contentType" => bundle["manifest"][field] = value.clone(),
                _ => bundle["entry"][field] = value.clone(),
            }
            let resp = b
                .http
                .post(b.url("/api/v1/provcache/import"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&bundle)
                .send()
                .await
                .expect("import");
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            match status {
                400..=499 => {
                    refused += 1;
                    // The bundle's camelCase name, or the entry's own.
                    let snake = field.replace("Hash", "_hash").replace("Epoch", "_epoch");
                    assert!(
                        refusal_names(&answer, field) || refusal_names(&answer, &snake),
                        "{field}={value}: the refusal names the field: {answer}"
                    );
                }
                200 | 201 => {
                    stored += 1;
                    let key = bundle["digest"]["veriKey"].as_str().expect("key");
                    let entry = b
                        .app
                        .parts()
                        .store
                        .get_entry(key)
                        .await
                        .expect("store")
                        .expect("imported entry");
                    let root = bundle["manifest"]["proofRoot"].as_str().expect("root");
                    let (_, manifest) = send(
                        &b,
                        reqwest::Method::GET,
                        &format!("/api/v1/proofs/{root}/manifest"),
                        None,
                    )
                    .await;
                    let got = match *field {
                        "chunkSize" => manifest["chunk_size"].clone(),
                        "contentType" => manifest["content_type"].clone(),
                        "policyHash" => json!(entry.policy_hash),
                        _ => json!(entry.feed_epoch),
                    };
                    assert_eq!(&got, value, "{field} read back");
                }
                other => panic!("{field}={value}: answered {other}: {answer}"),
            }
        }
        assert!(refused > 0 && stored > 0, "refused {refused}, stored {stored}");
        a.finish().await;
        b.finish().await;
    }
}

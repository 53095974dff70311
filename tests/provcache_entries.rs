//! Provenance-cache entries in both modes (PostgreSQL, Redis and NATS; SQLite, the
//! in-process tier and bus): VeriKey, the tiered read path, write-behind, TTLs, and a dead
//! Redis.

mod common;

use actors::ports::EntryStore as _;
use actors::ports::InvalidationStore as _;
use std::time::Duration;

use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use actors::domain::invalidation::Invalidation;
use chrono::Utc;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, dead_port, eventually, fresh_veri_key};
use events::CloudEvent;
use events::data::InvalidateRequested;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

fn entry(veri_key: &str, policy: &str, ttl: chrono::Duration) -> Entry {
    let now = Utc::now();
    let verdict = json!({"decision": "allow", "rules": 3});
    Entry {
        veri_key: veri_key.to_owned(),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: Some(format!("sha256:{}", "cd".repeat(32))),
        trust_score: 87,
        policy_hash: policy.to_owned(),
        signer_set_hash: "sha256:signers".into(),
        signer_key_ids: vec!["key-a".into(), "key-b".into()],
        feed_id: Some("osv".into()),
        feed_epoch: Some("1.4.0".into()),
        created_at: now,
        expires_at: now + ttl,
    }
}

fn write(e: Entry) -> EntryWrite {
    EntryWrite {
        write_id: uuid::Uuid::now_v7(),
        accepted_at: Utc::now(),
        entry: e,
    }
}

async fn get(t: &TestApp, key: &str) -> (u16, Option<String>, Value) {
    let resp = t
        .http
        .get(t.url(&format!("/api/v1/provcache/entries/{key}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get entry");
    let status = resp.status().as_u16();
    let tier = resp
        .headers()
        .get("x-provcache-tier")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, tier, resp.json().await.expect("json"))
}

async fn put(t: &TestApp, body: Value) -> (u16, Value) {
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/entries"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("put entry");
    (resp.status().as_u16(), resp.json().await.expect("json"))
}

fn body(key: &str, ttl: Value) -> Value {
    json!({
        "veri_key": key,
        "verdict": {"decision": "deny"},
        "trust_score": 42,
        "proof_root": format!("sha256:{}", "ef".repeat(32)),
        "policy_hash": "sha256:policy",
        "signer_set_hash": "sha256:signers",
        "signer_key_ids": ["key-a"],
        "feed_id": "osv",
        "feed_epoch": "2.0.0",
        "ttl": ttl,
    })
}

both_modes! {
async fn a_durable_only_entry_is_read_through_and_then_served_hot() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let key = fresh_veri_key();
    let e = entry(&key, "sha256:policy", chrono::Duration::hours(1));
    t.app
        .store()
        .upsert_entries(&[write(e.clone())])
        .await
        .expect("seed the durable tier");
    if let Some(redis) = t.app.redis() {
        assert!(redis.get_entry(&key).await.expect("redis").is_none());
    }

    let (status, tier, got) = get(&t, &key).await;
    assert_eq!(status, 200);
    assert_eq!(tier.as_deref(), Some(t.app.provcache().durable_tier()));
    assert_eq!(got["veri_key"], key);
    assert_eq!(got["trust_score"], 87);
    assert_eq!(got["verdict_hash"], e.verdict_hash);
    assert_eq!(got["signer_key_ids"], json!(["key-a", "key-b"]));

    // The PostgreSQL hit filled the tiers above it.
    let (status, tier, again) = get(&t, &key).await;
    assert_eq!(status, 200);
    assert_eq!(tier.as_deref(), Some("memory"));
    assert_eq!(again, got);
    if let Some(redis) = t.app.redis() {
        assert!(redis.get_entry(&key).await.expect("redis").is_some());
    }

    // An unknown key is a 404 JSON error, a malformed one a 400.
    let (status, _, err) = get(&t, &fresh_veri_key()).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
    let (status, _, err) = get(&t, "sha256:nope").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "bad_request");
    t.finish().await;
}
}

#[tokio::test]
async fn a_valkey_hit_fills_the_memory_tier_and_expired_entries_are_misses() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    // In Valkey only: served from there once, then from memory.
    let key = fresh_veri_key();
    let e = entry(&key, "sha256:policy", chrono::Duration::hours(1));
    t.app
        .redis()
        .expect("distributed mode has Redis")
        .put_entry(&key, &serde_json::to_vec(&e).expect("json"), 3600)
        .await
        .expect("redis put");
    let (status, tier, _) = get(&t, &key).await;
    assert_eq!((status, tier.as_deref()), (200, Some("valkey")));
    let (status, tier, _) = get(&t, &key).await;
    assert_eq!((status, tier.as_deref()), (200, Some("memory")));

    // Expired in PostgreSQL: a miss.
    let old = fresh_veri_key();
    let mut e = entry(&old, "sha256:policy", chrono::Duration::hours(1));
    e.expires_at = Utc::now() - chrono::Duration::seconds(1);
    t.app
        .store()
        .upsert_entries(&[write(e)])
        .await
        .expect("seed postgres");
    let (status, _, err) = get(&t, &old).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");

    // Written through the API with a one-second TTL: served, then a miss in every tier.
    let short = fresh_veri_key();
    let (status, _) = put(&t, body(&short, json!(1))).await;
    assert_eq!(status, 202);
    let (status, _, _) = get(&t, &short).await;
    assert_eq!(status, 200);
    eventually("the entry to expire", WAIT, || async {
        (get(&t, &short).await.0 == 404).then_some(())
    })
    .await;
    t.finish().await;
}

both_modes! {
async fn writes_are_queued_then_flushed_and_the_verikey_endpoint_matches_the_docs() {
    let Some(t) =
        TestApp::start_with(|c| c.provcache.flush_interval = Duration::from_millis(200)).await
    else {
        return;
    };
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/verikey"))
        .bearer_auth(READ_TOKEN)
        .json(&json!({
            "source_artifact_digest": "sha256:aaaa",
            "sbom_digest": "sha256:bbbb",
            "vex_digests": ["sha256:dddd", "sha256:cccc"],
            "policy_hash": "sha256:eeee",
            "signer_set_hash": "sha256:ffff",
            "feed_epoch": "2026.11.22",
            "time_window": {"start": 1767225600, "end": 1767312000}
        }))
        .send()
        .await
        .expect("verikey");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        v["veri_key"],
        "sha256:4ca8c905f4b6dfb73d21ae677053e74262cb36e42c2a1b729b76e31f405b2f12"
    );

    // Inputs instead of a key: the key is computed, and the fields come from the inputs.
    let (status, accepted) = put(
        &t,
        json!({
            "inputs": {
                "source_artifact_digest": "sha256:aaaa",
                "sbom_digest": "sha256:bbbb",
                "policy_hash": "sha256:eeee",
                "signer_set_hash": "sha256:ffff",
                "feed_epoch": "2026.11.22"
            },
            "verdict": {"decision": "allow"},
            "trust_score": 100,
            "signer_key_ids": ["key-z"]
        }),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    let key = accepted["veri_key"].as_str().expect("key").to_owned();
    let (status, tier, got) = get(&t, &key).await;
    assert_eq!((status, tier.as_deref()), (200, Some("memory")));
    assert_eq!(got["policy_hash"], "sha256:eeee");
    let stored = eventually("the flushed entry", WAIT, || async {
        t.app.store().get_entry(&key).await.expect("pg")
    })
    .await;
    assert_eq!(stored.signer_key_ids, vec!["key-z".to_owned()]);

    // A read-only token cannot write; bad bodies are 400 with a code.
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/entries"))
        .bearer_auth(READ_TOKEN)
        .json(&body(&fresh_veri_key(), json!("1h")))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 403);
    let mut bad = body(&fresh_veri_key(), json!("1h"));
    bad["trust_score"] = json!(101);
    let (status, err) = put(&t, bad).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "bad_request");
    t.finish().await;
}
}

both_modes! {
async fn a_write_invalidated_while_in_flight_never_reaches_the_durable_tier() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let doomed = fresh_veri_key();
    let other = fresh_veri_key();
    // Accepted before the invalidation, flushed after it.
    let w1 = write(entry(
        &doomed,
        "sha256:withdrawn",
        chrono::Duration::hours(1),
    ));
    let w2 = write(entry(&other, "sha256:kept", chrono::Duration::hours(1)));
    let event = CloudEvent::new(
        "urn:test",
        InvalidateRequested {
            veri_key: None,
            signer_set_hash: None,
            policy_hash: Some("sha256:withdrawn".into()),
            feed_epoch_before: None,
            reason: "policy withdrawn".into(),
        },
    );
    let inv = Invalidation::explicit(&event).expect("invalidation");
    t.app.store().invalidate(&inv).await.expect("invalidate");
    let outcome = t.app.store().upsert_entries(&[w1, w2]).await.expect("flush");
    assert_eq!(outcome.written, 1);
    assert_eq!(outcome.invalidated, 1);
    assert!(t.app.store().get_entry(&doomed).await.expect("pg").is_none());
    assert!(t.app.store().get_entry(&other).await.expect("pg").is_some());

    // An older version arriving late never replaces a newer one.
    let mut newer = write(entry(&other, "sha256:kept", chrono::Duration::hours(1)));
    newer.entry.trust_score = 5;
    let mut older = write(entry(&other, "sha256:kept", chrono::Duration::hours(1)));
    older.accepted_at = newer.accepted_at - chrono::Duration::seconds(1);
    older.entry.trust_score = 99;
    t.app.store().upsert_entries(&[newer]).await.expect("flush");
    t.app.store().upsert_entries(&[older]).await.expect("flush");
    let got = t
        .app
        .store()
        .get_entry(&other)
        .await
        .expect("pg")
        .expect("entry");
    assert_eq!(got.trust_score, 5);
    t.finish().await;
}
}

#[tokio::test]
async fn with_redis_on_a_dead_port_gets_and_puts_go_through_postgres() {
    let port = dead_port();
    let Some(t) = TestApp::start_with(|c| {
        c.redis_url = Some(format!("redis://127.0.0.1:{port}"));
        // Without the in-process tier every read must reach PostgreSQL.
        c.provcache.memory_entries = 0;
    })
    .await
    else {
        return;
    };
    let key = fresh_veri_key();
    let (status, accepted) = put(&t, body(&key, json!("1h"))).await;
    assert_eq!(status, 201, "{accepted}");
    assert_eq!(accepted["status"], "committed");
    assert!(t.app.store().get_entry(&key).await.expect("pg").is_some());
    for _ in 0..3 {
        let (status, tier, got) = get(&t, &key).await;
        assert_eq!((status, tier.as_deref()), (200, Some("postgres")));
        assert_eq!(got["trust_score"], 42);
    }
    let (status, _, _) = get(&t, &fresh_veri_key()).await;
    assert_eq!(status, 404);
    let errors = t
        .metric(
            "provd_provcache_tier_errors_total",
            &[("tier", "valkey"), ("op", "put")],
        )
        .await;
    assert!(errors >= 1.0, "valkey errors are counted: {errors}");
    t.finish().await;
}

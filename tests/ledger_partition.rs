//! A node cut off from NATS catches up from the ledger the moment its connection comes back.
//!
//! Node A runs on the shared NATS server. Node B shares A's PostgreSQL but talks to a NATS
//! server of its own, started by the test from the machine's `nats-server` binary, so the
//! test can take B's NATS away and bring it back without disturbing anything else. While B
//! is cut off, A revokes a signer; A's outbox publishes the ledger row where B cannot see it,
//! so only B's reconnect catch-up can purge B's hot tier.

mod common;

use actors::ports::EntryStore as _;
use actors::ports::ReplayStore as _;
use std::time::Duration;

use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use chrono::Utc;
use common::private_nats::PrivateNats;
use common::{READ_TOKEN, TestApp, eventually, fresh_veri_key, publish};
use provd::adapters::redis::RedisCache;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn entry(signer_set: &str, key: &str) -> Entry {
    let now = Utc::now();
    let verdict = json!({"decision": "allow"});
    Entry {
        veri_key: fresh_veri_key(),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: None,
        trust_score: 80,
        policy_hash: "sha256:pol".into(),
        signer_set_hash: signer_set.to_owned(),
        signer_key_ids: vec![key.to_owned()],
        feed_id: Some("osv".into()),
        feed_epoch: Some("1.0.0".into()),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

async fn status(t: &TestApp, key: &str) -> u16 {
    t.http
        .get(t.url(&format!("/api/v1/provcache/entries/{key}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get entry")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_node_whose_nats_comes_back_catches_up_from_the_ledger() {
    let Some(mut nats) = PrivateNats::start() else {
        return;
    };
    let Some(a) =
        TestApp::start_with(|c| c.provcache.flush_interval = Duration::from_millis(200)).await
    else {
        return;
    };
    let db = a.config.database_url.clone();
    let b_nats = nats.url();
    let Some(b) = TestApp::start_with(|c| {
        c.database_url = db;
        c.nats_url = Some(b_nats);
    })
    .await
    else {
        return;
    };

    // B's start-up catch-up must be over before it is cut off: run later, it would read the
    // revocation below from the ledger, which is what this test wants only after a reconnect.
    eventually("B is ready (caught up from the ledger)", WAIT, || async {
        let r = b.http.get(b.url("/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let revoked = entry("sha256:set-partition", "key-partition");
    let kept = entry("sha256:set-kept", "key-kept");
    let writes: Vec<EntryWrite> = [&revoked, &kept]
        .iter()
        .map(|e| EntryWrite {
            write_id: uuid::Uuid::now_v7(),
            accepted_at: Utc::now(),
            entry: (*e).clone(),
        })
        .collect();
    a.app.store().upsert_entries(&writes).await.expect("seed");
    for e in [&revoked, &kept] {
        assert_eq!(status(&b, &e.veri_key).await, 200, "B reads {}", e.veri_key);
    }
    let b_redis = RedisCache::new(
        b.config.redis_url.as_deref().expect("redis url"),
        &b.config.redis_prefix,
    )
    .expect("redis");
    let in_b = |key: String| {
        let r = b_redis.clone();
        async move { r.get_entry(&key).await.expect("redis").is_some() }
    };
    assert!(in_b(revoked.veri_key.clone()).await);
    let reconnects_before = b
        .metric("provd_ledger_catch_ups_total", &[("trigger", "reconnect")])
        .await;

    // Cut B off, then revoke through A.
    nats.kill();
    let ev = json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "urn:example:test",
        "type": "dev.provd.signer.revoked.v1",
        "time": "2026-11-22T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"signer_key_id": "key-partition", "reason": "key compromised"},
    });
    publish(&a, "prov.events.signer.revoked", &ev).await;
    let head = eventually("A's ledger row", WAIT, || async {
        let h = a.app.store().ledger_head().await.ok()?;
        (h > 0).then_some(h)
    })
    .await;
    assert_eq!(status(&a, &revoked.veri_key).await, 404);
    // B cannot have heard of it: its hot tier still holds the entry.
    assert!(in_b(revoked.veri_key.clone()).await);
    assert!(
        b.app
            .store()
            .checkpoint(&b.config.node_id)
            .await
            .expect("checkpoint")
            < head
    );

    // B's NATS comes back: B catches up from the ledger by itself.
    nats.spawn();
    eventually("B's checkpoint to reach the ledger head", WAIT, || async {
        let cp = b.app.store().checkpoint(&b.config.node_id).await.ok()?;
        (cp >= head).then_some(())
    })
    .await;
    assert!(!in_b(revoked.veri_key.clone()).await, "B still serves it");
    assert!(in_b(kept.veri_key.clone()).await, "B lost an entry");
    assert_eq!(status(&b, &revoked.veri_key).await, 404);
    assert_eq!(status(&b, &kept.veri_key).await, 200);
    let reconnects_after = b
        .metric("provd_ledger_catch_ups_total", &[("trigger", "reconnect")])
        .await;
    assert!(
        reconnects_after > reconnects_before,
        "the catch-up did not come from the reconnect ({reconnects_before} → {reconnects_after})"
    );
    // And B reports ready again once it has caught up.
    eventually("B ready", WAIT, || async {
        let s = b.http.get(b.url("/readyz")).send().await.ok()?.status();
        (s == 200).then_some(())
    })
    .await;

    let TestApp { app, data, .. } = b;
    app.stop().await;
    data.remove().await;
    a.finish().await;
}

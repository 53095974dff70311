//! Invalidations racing the hot tiers, in both modes: an entry invalidated while its write
//! waits in the write-behind queue must leave Valkey and the in-process tier too, not only
//! the durable store.

mod common;

use actors::ports::EntryStore as _;
use actors::ports::InvalidationStore as _;
use std::time::Duration;

use actors::domain::invalidation::Invalidation;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, both_modes, eventually, fresh_veri_key};
use events::CloudEvent;
use events::data::InvalidateRequested;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn tier_serving(t: &TestApp, key: &str) -> (u16, Option<String>) {
    let resp = t
        .http
        .get(t.url(&format!("/api/v1/provcache/entries/{key}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get");
    let tier = resp
        .headers()
        .get("x-provcache-tier")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (resp.status().as_u16(), tier)
}

both_modes! {
async fn a_queued_write_invalidated_before_its_flush_leaves_the_hot_tiers() {
    let Some(t) =
        TestApp::start_with(|c| c.provcache.flush_interval = Duration::from_secs(2)).await
    else {
        return;
    };
    let key = fresh_veri_key();
    let policy = format!("sha256:{}", &fresh_veri_key()[7..]);
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/entries"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "veri_key": key,
            "verdict": {"decision": "allow"},
            "trust_score": 70,
            "policy_hash": policy,
            "signer_set_hash": "sha256:signers",
            "signer_key_ids": ["key-a"],
            "ttl": "1h",
        }))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 202);
    if let Some(redis) = t.app.redis() {
        assert!(redis.get_entry(&key).await.expect("redis").is_some());
    }
    // Served hot before its flush.
    assert_eq!(tier_serving(&t, &key).await, (200, Some("memory".to_owned())));

    // The policy is withdrawn while the write still waits for its flush: the invalidation
    // deletes nothing from PostgreSQL, so its own purge does not name this key.
    let event = CloudEvent::new(
        "urn:test",
        InvalidateRequested {
            veri_key: None,
            signer_set_hash: None,
            policy_hash: Some(policy.clone()),
            feed_epoch_before: None,
            reason: "policy withdrawn".into(),
        },
    );
    let inv = Invalidation::explicit(&event).expect("invalidation");
    let outcome = t.app.store().invalidate(&inv).await.expect("invalidate");
    assert!(outcome.deleted_keys.is_empty());

    // The flusher drops the write and purges it from every hot tier.
    eventually(
        "the invalidated entry to leave the hot tiers",
        WAIT,
        || async {
            let gone = match t.app.redis() {
                Some(redis) => redis.get_entry(&key).await.expect("redis").is_none(),
                // Embedded: the in-process tier is the only hot tier.
                None => tier_serving(&t, &key).await.0 == 404,
            };
            gone.then_some(())
        },
    )
    .await;
    let (status, tier) = tier_serving(&t, &key).await;
    assert_eq!(status, 404, "served from {tier:?}");
    assert!(t.app.store().get_entry(&key).await.expect("pg").is_none());
    t.finish().await;
}
}

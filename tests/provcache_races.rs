//! Invalidations racing the hot tiers, against real PostgreSQL, Redis and NATS: an entry
//! invalidated while its write waits in the write-behind queue must leave Valkey and the
//! in-process tier too, not only PostgreSQL.

mod common;

use std::time::Duration;

use actors::domain::invalidation::Invalidation;
use actors::ports::InvalidationStore;
use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, eventually, fresh_veri_key};
use events::CloudEvent;
use events::data::InvalidateRequested;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
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
    assert!(
        t.app
            .cache()
            .get_entry(&key)
            .await
            .expect("redis")
            .is_some()
    );

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
            let gone = t
                .app
                .cache()
                .get_entry(&key)
                .await
                .expect("redis")
                .is_none();
            gone.then_some(())
        },
    )
    .await;
    let resp = t
        .http
        .get(t.url(&format!("/api/v1/provcache/entries/{key}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(
        resp.status(),
        404,
        "served from {:?}",
        resp.headers().get("x-provcache-tier")
    );
    assert!(t.app.store().entry(&key).await.expect("pg").is_none());
    t.finish().await;
}

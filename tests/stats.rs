//! `GET /api/v1/provcache/stats` reports what the cache did, and agrees with `/metrics`.
//! This file holds one test so the process-wide counters it reads are its own.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, READ_TOKEN, TestApp, eventually, fresh_veri_key};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// `GET /api/v1/provcache/stats` with the read token.
async fn stats_of(t: &TestApp) -> Value {
    t.http
        .get(t.url("/api/v1/provcache/stats"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn stats_count_entries_hits_misses_evidence_and_revocations() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let key = fresh_veri_key();
    let r = t
        .http
        .post(t.url("/api/v1/provcache/entries"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "veri_key": key,
            "verdict": {"decision": "allow"},
            "trust_score": 90,
            "proof_root": format!("sha256:{}", "ab".repeat(32)),
            "policy_hash": "sha256:policy",
            "signer_set_hash": "sha256:signers",
            "signer_key_ids": ["key-a"],
        }))
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "{}", r.status());
    eventually("the write to be flushed", WAIT, || async {
        (t.app.store().count_items().await.ok()? == 1).then_some(())
    })
    .await;

    // One hit from the in-process tier, one read that misses every tier.
    for (k, want) in [(key.clone(), 200), (fresh_veri_key(), 404)] {
        let r = t
            .http
            .get(t.url(&format!("/api/v1/provcache/entries/{k}")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), want);
    }
    let evidence = vec![7u8; 100 * 1024];
    let r = t
        .http
        .post(t.url("/api/v1/proofs"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/spdx+json")
        .body(evidence.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 201);

    let stats = stats_of(&t).await;
    assert_eq!(stats["entries"], 1, "{stats}");
    assert_eq!(stats["tiers"]["memory"]["hits"], 1.0, "{stats}");
    assert_eq!(stats["hits"], 1.0, "{stats}");
    assert_eq!(stats["misses"], 1.0, "{stats}");
    assert_eq!(stats["hit_ratio"], 0.5, "{stats}");
    assert_eq!(stats["evidence"]["roots"], 1, "{stats}");
    assert_eq!(stats["evidence"]["bytes"], evidence.len(), "{stats}");
    assert_eq!(stats["revocations"]["total_entries"], 0, "{stats}");
    for tier in ["memory", "valkey", "postgres"] {
        for (field, metric) in [
            ("hits", "provd_provcache_hits_total"),
            ("misses", "provd_provcache_misses_total"),
        ] {
            let from_metrics = t.metric(metric, &[("tier", tier)]).await;
            assert_eq!(
                stats["tiers"][tier][field].as_f64(),
                Some(from_metrics),
                "{tier} {field}: {stats}"
            );
        }
    }
    // The status report reads the same typed figures: they equal `/metrics` too.
    let status: Value = t
        .http
        .get(t.url("/api/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let mut hits = 0.0;
    for tier in ["memory", "valkey", "postgres", "sqlite"] {
        hits += t
            .metric("provd_provcache_hits_total", &[("tier", tier)])
            .await;
    }
    assert_eq!(status["cache"]["hits"].as_f64(), Some(hits), "{status}");
    let misses = t
        .metric("provd_provcache_misses_total", &[("tier", "postgres")])
        .await;
    assert_eq!(status["cache"]["misses"].as_f64(), Some(misses), "{status}");
    // Gauges move with the flusher: the two views agree once it is idle.
    for (field, metric) in [
        ("queue_depth", "provd_write_behind_queue_depth"),
        ("lag_seconds", "provd_write_behind_lag_seconds"),
    ] {
        eventually(
            "stats and /metrics agree",
            Duration::from_secs(30),
            || async {
                let stats_now = stats_of(&t).await;
                let from_metrics = t.metric(metric, &[]).await;
                (stats_now["write_behind"][field].as_f64() == Some(from_metrics)).then_some(())
            },
        )
        .await;
    }
    let r = t
        .http
        .get(t.url("/api/v1/provcache/stats"))
        .send()
        .await
        .expect("stats");
    assert_eq!(r.status(), 401);
    t.finish().await;
}

//! The foundation's first path, end to end in both modes: against real PostgreSQL, Redis
//! and NATS, and embedded (SQLite, the in-process tier and bus).

mod common;

use std::time::Duration;

use actors::supervisor::{ChildSpec, SupervisorMsg};
use chrono::Utc;
use common::items::{NewItem, insert_item, item_exists};
use common::{ADMIN_TOKEN, Mode, READ_TOKEN, TestApp, both_modes, eventually};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn item(veri_key: &str, policy: &str, signer_set: &str, keys: &[&str]) -> NewItem {
    NewItem {
        veri_key: veri_key.into(),
        verdict: json!({"decision": "allow"}),
        verdict_hash: format!("sha256:{}", "ab".repeat(32)),
        trust_score: 80,
        policy_hash: policy.into(),
        signer_set_hash: signer_set.into(),
        signer_key_ids: keys.iter().map(|k| (*k).to_owned()).collect(),
        feed_id: Some("osv".into()),
        feed_epoch: Some("1.9.0".into()),
        expires_at: Utc::now() + chrono::Duration::hours(1),
    }
}

/// Seeds the durable tier and, in distributed mode, Redis with entries.
async fn seed(t: &TestApp, items: &[NewItem]) {
    for i in items {
        insert_item(t.app.store(), i).await;
        if let Some(redis) = t.app.redis() {
            redis
                .put_entry(&i.veri_key, b"{}", 3600)
                .await
                .expect("redis put");
        }
    }
}

/// Whether Redis holds the key (always false in embedded mode, which has no Redis).
async fn in_redis(t: &TestApp, key: &str) -> bool {
    match t.app.redis() {
        Some(redis) => redis.get_entry(key).await.expect("redis get").is_some(),
        None => false,
    }
}

async fn ledger(t: &TestApp, since: i64) -> Vec<Value> {
    let resp = t
        .http
        .get(t.url(&format!("/api/v1/provcache/revocations?since={since}")))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("revocations");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["revocations"].as_array().expect("array").clone()
}

async fn wait_for_revocation(t: &TestApp, revocation_id: &str) -> Value {
    eventually("the ledger row", WAIT, || async {
        ledger(t, 0)
            .await
            .into_iter()
            .find(|r| r["revocation_id"] == revocation_id)
    })
    .await
}

both_modes! {
async fn an_invalidation_through_the_api_reaches_the_ledger_the_store_and_redis() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    seed(
        &t,
        &[
            item("sha256:k1", "sha256:pol-old", "sha256:ss1", &["key-a"]),
            item("sha256:k2", "sha256:pol-old", "sha256:ss2", &["key-b"]),
            item("sha256:k3", "sha256:pol-new", "sha256:ss1", &["key-a"]),
        ],
    )
    .await;
    let before = t
        .metric("provd_invalidations_total", &[("type", "explicit")])
        .await;

    let resp = t
        .http
        .post(t.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-correlation-id", "corr-42")
        .json(&json!({"policy_hash": "sha256:pol-old", "reason": "policy withdrawn"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.expect("json");
    let id = body["revocation_id"].as_str().expect("id").to_owned();

    let row = wait_for_revocation(&t, &id).await;
    assert_eq!(row["revocation_type"], "explicit");
    assert_eq!(row["revoked_key"], "sha256:pol-old");
    assert_eq!(row["reason"], "policy withdrawn");
    assert_eq!(row["entries_invalidated"], 2);
    assert_eq!(row["correlation_id"], "corr-42");
    assert!(
        row["source"]
            .as_str()
            .expect("source")
            .starts_with("urn:provd:")
    );

    let store = t.app.store();
    assert!(!item_exists(store, "sha256:k1").await);
    assert!(!item_exists(store, "sha256:k2").await);
    assert!(item_exists(store, "sha256:k3").await);
    // Redis is purged after the commit, before the ack: poll briefly.
    eventually("redis purge", WAIT, || async {
        (!in_redis(&t, "sha256:k1").await && !in_redis(&t, "sha256:k2").await).then_some(())
    })
    .await;
    assert_eq!(in_redis(&t, "sha256:k3").await, t.app.redis().is_some());

    let stats: Value = t
        .http
        .get(t.url("/api/v1/provcache/revocations/stats"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["total_entries"], 1, "{stats}");
    assert_eq!(stats["entries_by_type"]["explicit"], 1, "{stats}");
    assert_eq!(stats["total_entries_invalidated"], 2, "{stats}");
    assert_eq!(stats["head_seq_no"], row["seq_no"], "{stats}");

    let after = t
        .metric("provd_invalidations_total", &[("type", "explicit")])
        .await;
    assert!(
        after >= before + 1.0,
        "counter went from {before} to {after}"
    );
    t.finish().await;
}
}

#[tokio::test]
async fn an_invalidation_published_on_nats_reaches_the_ledger_and_a_malformed_one_is_rejected() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    seed(
        &t,
        &[
            item("sha256:n1", "sha256:p", "sha256:set-a", &["key-x", "key-y"]),
            item("sha256:n2", "sha256:p", "sha256:set-b", &["key-z"]),
        ],
    )
    .await;
    let subject = format!("{}.prov.events.invalidate", t.config.nats_prefix);
    let labels = [
        ("subject", "prov.events.invalidate"),
        ("reason", "invalid_json"),
    ];
    let rejected_before = t.metric("provd_events_rejected_total", &labels).await;

    // Any NATS client can publish: here the plain client, no provd code.
    let client = async_nats::connect(&t.services.nats_url)
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let bad = js
        .publish(subject.clone(), "{this is not json".into())
        .await
        .expect("publish");
    bad.await.expect("stored");
    let event_id = uuid::Uuid::now_v7().to_string();
    let good = json!({
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:example:ops",
        "type": "dev.provd.invalidate.requested.v1",
        "time": "2026-11-22T10:00:00Z",
        "datacontenttype": "application/json",
        "correlationid": "c-9",
        "data": {"signer_set_hash": "sha256:set-a", "reason": "signer set retired"}
    });
    js.publish(
        subject.clone(),
        serde_json::to_vec(&good).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");

    let row = wait_for_revocation(&t, &event_id).await;
    assert_eq!(row["revoked_key"], "sha256:set-a");
    assert_eq!(row["entries_invalidated"], 1);
    assert_eq!(row["source"], "urn:example:ops");
    assert_eq!(row["correlation_id"], "c-9");
    assert!(!item_exists(t.app.store(), "sha256:n1").await);
    assert!(item_exists(t.app.store(), "sha256:n2").await);
    eventually("redis purge", WAIT, || async {
        (!in_redis(&t, "sha256:n1").await).then_some(())
    })
    .await;

    // The malformed event was terminated, recorded and counted; the consumer went on.
    let rejected = t.app.store().rejected_events(10).await.expect("rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0].reason, "invalid_json");
    assert_eq!(rejected[0].subject, subject);
    assert_eq!(rejected[0].payload, b"{this is not json");
    let rejected_after = t.metric("provd_events_rejected_total", &labels).await;
    assert!(rejected_after >= rejected_before + 1.0);

    // Publishing the same event again (same id) does not invalidate twice.
    js.publish(
        subject.clone(),
        serde_json::to_vec(&good).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let consumer_pending = || async {
        let stream = format!("t{}_PROV_EVENTS", &t.config.nats_prefix[1..]);
        let n = t
            .app
            .bus()
            .consumer_pending(&stream, "invalidator-explicit")
            .await
            .expect("consumer info");
        (n == 0).then_some(())
    };
    eventually("the consumer to drain", WAIT, consumer_pending).await;
    let rows: Vec<Value> = ledger(&t, 0)
        .await
        .into_iter()
        .filter(|r| r["revocation_id"] == event_id.as_str())
        .collect();
    assert_eq!(rows.len(), 1);
    t.finish().await;
}

both_modes! {
async fn the_ledger_rejects_update_delete_and_truncate() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"veri_key": "sha256:gone", "reason": "test"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["revocation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    wait_for_revocation(&t, &id).await;

    let mut statements = vec![
        "UPDATE provcache.prov_revocations SET reason = 'rewritten'",
        "DELETE FROM provcache.prov_revocations",
    ];
    // SQLite has no TRUNCATE (an unqualified DELETE is its truncate, refused above).
    if t.mode() == Mode::Distributed {
        statements.push("TRUNCATE provcache.prov_revocations");
    }
    for sql in statements {
        let err = t.execute(sql).await.expect_err("the ledger must refuse");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let rows = ledger(&t, 0).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["reason"], "test");
    t.finish().await;
}
}

both_modes! {
async fn requests_without_a_token_or_scope_are_refused() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let body = json!({"veri_key": "sha256:x", "reason": "r"});
    let inv = t.url("/api/v1/provcache/invalidate");

    let r = t.http.post(&inv).json(&body).send().await.expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "unauthorized");

    let r = t
        .http
        .post(&inv)
        .bearer_auth("not-a-real-token-at-all")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    let r = t
        .http
        .post(&inv)
        .bearer_auth(READ_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "forbidden");

    let r = t
        .http
        .get(t.url("/api/v1/provcache/revocations"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    // Health, readiness and metrics stay open (readiness may still be 503 while NATS
    // connects, but never asks for a token).
    for path in ["/healthz", "/metrics"] {
        let r = t.http.get(t.url(path)).send().await.expect("send");
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = t.http.get(t.url("/readyz")).send().await.expect("send");
    assert!(
        r.status() == 200 || r.status() == 503,
        "/readyz answered {}",
        r.status()
    );

    // A malformed body is a JSON 400 with a stable code, not a panic or a plain-text error.
    for bad in [
        json!({"reason": "no criterion"}),
        json!({"veri_key": "a", "policy_hash": "b", "reason": "two"}),
        json!({"feed_epoch_before": "last tuesday", "reason": "bad epoch"}),
    ] {
        let r = t
            .http
            .post(&inv)
            .bearer_auth(ADMIN_TOKEN)
            .json(&bad)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["code"], "bad_request");
    }
    let r = t
        .http
        .post(&inv)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let r = t
        .http
        .get(t.url("/api/v1/provcache/revocations?limit=0"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    t.finish().await;
}

}

both_modes! {
async fn metrics_and_readiness_are_served_in_their_formats() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let r = t.http.get(t.url("/metrics")).send().await.expect("metrics");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.expect("text");
    assert!(text.contains("# TYPE provd_build_info gauge"), "{text}");
    assert!(text.contains("provd_build_info{version=\""), "{text}");

    let ready: Value = eventually("readiness", WAIT, || async {
        let r = t.http.get(t.url("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())?;
        r.json().await.ok()
    })
    .await;
    assert_eq!(ready["status"], "ready");
    let services = ready["services"].as_object().expect("services");
    assert_eq!(services.len(), t.services_expected().len(), "{ready}");
    for svc in t.services_expected() {
        assert_eq!(ready["services"][svc]["status"], "ok", "{ready}");
    }
    assert_eq!(ready["actors"]["invalidator-explicit"]["status"], "running");
    t.finish().await;
}
}

/// A child that panics as soon as it gets a message, to exercise the real supervisor.
struct Doomed;

impl Actor for Doomed {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        myself.cast(()).map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _msg: (),
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        panic!("doomed actor panics on purpose");
    }
}

both_modes! {
async fn a_killed_or_panicking_actor_is_restarted_and_counted() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let sup = t.app.supervisor().clone();

    // Kill the real explicit invalidator: it comes back and still processes events.
    let restarts_before = t
        .metric(
            "provd_actor_restarts_total",
            &[("actor", "invalidator-explicit")],
        )
        .await;
    let children = ractor::call!(sup, SupervisorMsg::Children).expect("children");
    let cell = children
        .into_iter()
        .find(|(n, _)| n == "invalidator-explicit")
        .and_then(|(_, c)| c)
        .expect("the explicit invalidator runs");
    cell.kill();
    eventually("the invalidator to restart", WAIT, || async {
        let h = t.app.health().get("invalidator-explicit")?;
        (h.restarts >= 1 && h.status == actors::health::ChildStatus::Running).then_some(())
    })
    .await;
    let restarts_after = t
        .metric(
            "provd_actor_restarts_total",
            &[("actor", "invalidator-explicit")],
        )
        .await;
    assert!(restarts_after >= restarts_before + 1.0);
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"veri_key": "sha256:after-restart", "reason": "still works"}))
        .send()
        .await
        .expect("invalidate");
    let id = resp.json::<Value>().await.expect("json")["revocation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    wait_for_revocation(&t, &id).await;

    // A required child that panics every time is restarted with backoff, counted, and
    // escalated once its budget is spent, which turns /readyz red; the process lives on.
    let name = format!("doomed-{}", uuid::Uuid::new_v4().simple());
    sup.cast(SupervisorMsg::Add(ChildSpec::new(
        name.clone(),
        true,
        || (Doomed, ()),
    )))
    .expect("add child");
    eventually("escalation", Duration::from_secs(30), || async {
        matches!(
            t.app.health().get(&name)?.status,
            actors::health::ChildStatus::Failed(_)
        )
        .then_some(())
    })
    .await;
    let counted = t
        .metric("provd_actor_restarts_total", &[("actor", name.as_str())])
        .await;
    assert!(counted >= 5.0, "restarts counted: {counted}");
    let r = t.http.get(t.url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["actors"][name.as_str()]["status"], "failed");
    let r = t.http.get(t.url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
    t.finish().await;
}
}

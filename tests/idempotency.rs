//! Mutations a client may retry: `POST /api/v1/provcache/invalidate` with an
//! `Idempotency-Key` is one revocation however often it is sent, including a retry after a
//! NATS outage whose 503 left the client unsure whether it was recorded.

mod common;

use std::time::Duration;

use common::private_nats::PrivateNats;
use common::{ADMIN_TOKEN, Mode, TestApp, both_modes, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

async fn invalidate(t: &TestApp, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = t
        .http
        .post(t.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(body);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Ledger rows whose reason is `reason`.
async fn rows(t: &TestApp, reason: &str) -> i64 {
    t.query_i64(&format!(
        "SELECT count(*) FROM provcache.prov_revocations WHERE reason = '{reason}'"
    ))
    .await
}

/// Waits until the ledger holds a row for `marker`, sent after everything else: the
/// invalidator handles its events in order, so everything before it was handled.
async fn settle(t: &TestApp, marker: &str) {
    let (status, answer) = invalidate(
        t,
        None,
        &json!({"policy_hash": "sha256:marker", "reason": marker}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    eventually("the marker in the ledger", WAIT, || async {
        (rows(t, marker).await == 1).then_some(())
    })
    .await;
}

both_modes! {
async fn one_idempotency_key_is_one_revocation() {
    let Some(t) = TestApp::start().await else { return };
    let reason = format!("retried {}", uuid::Uuid::new_v4());
    let body = json!({"policy_hash": "sha256:retried", "reason": reason});
    let (s1, a1) = invalidate(&t, Some("job-42-attempt"), &body).await;
    let (s2, a2) = invalidate(&t, Some("job-42-attempt"), &body).await;
    assert_eq!((s1, s2), (202, 202), "{a1} {a2}");
    assert_eq!(a1["revocation_id"], a2["revocation_id"], "a retry is the same revocation");
    // Another key, or none, is another revocation.
    let (s3, a3) = invalidate(&t, Some("job-43"), &body).await;
    let (s4, a4) = invalidate(&t, None, &body).await;
    assert_eq!((s3, s4), (202, 202));
    assert_ne!(a3["revocation_id"], a1["revocation_id"]);
    assert_ne!(a4["revocation_id"], a1["revocation_id"]);
    settle(&t, &format!("marker {}", uuid::Uuid::new_v4())).await;
    assert_eq!(rows(&t, &reason).await, 3, "two keys and one request without a key");
    // A key that is not a visible ASCII token is refused, naming the header.
    let (s, a) = invalidate(&t, Some("two words"), &body).await;
    assert_eq!(s, 400, "{a}");
    assert!(a["error"]["message"].as_str().unwrap_or_default().contains("Idempotency-Key"), "{a}");
    t.finish().await;
}
}

#[tokio::test]
async fn a_retry_after_a_nats_outage_with_the_same_key_makes_one_ledger_row() {
    if common::mode() != Mode::Distributed {
        return;
    }
    let Some(mut nats) = PrivateNats::start() else {
        return;
    };
    let url = nats.url();
    let Some(t) = TestApp::start_with(|c| c.nats_url = Some(url.clone())).await else {
        return;
    };
    eventually("ready on the private NATS", WAIT, || async {
        let r = t.http.get(t.url("/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // NATS goes away: the request fails as unavailable and says how to retry.
    nats.kill();
    let reason = format!("outage {}", uuid::Uuid::new_v4());
    let body = json!({"policy_hash": "sha256:outage", "reason": reason});
    let (status, answer) = invalidate(&t, Some("deploy-7-revoke"), &body).await;
    assert_eq!(status, 503, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may have been recorded") && message.contains("Idempotency-Key"),
        "{message}"
    );

    // NATS comes back (same storage); the client retries with the same key until accepted.
    nats.spawn();
    let first = eventually("the retry accepted", WAIT, || async {
        let (status, answer) = invalidate(&t, Some("deploy-7-revoke"), &body).await;
        (status == 202).then_some(answer)
    })
    .await;
    // A client that cannot tell whether that answer arrived retries once more.
    let (status, again) = invalidate(&t, Some("deploy-7-revoke"), &body).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(first["revocation_id"], again["revocation_id"]);
    settle(&t, &format!("marker {}", uuid::Uuid::new_v4())).await;
    assert_eq!(rows(&t, &reason).await, 1, "one ledger row for one key");
    t.finish().await;
}

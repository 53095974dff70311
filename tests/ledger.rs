//! The revocation ledger across two provd nodes sharing PostgreSQL and NATS, each with its
//! own Valkey/Redis key prefix: every trigger published by a plain NATS client, catch-up
//! before readiness after a node was down, `provd replay` over a stale hot tier, and writes
//! racing invalidations without resurrection.

mod common;

use actors::ports::EntryStore as _;
use actors::ports::InvalidationStore as _;
use actors::ports::ReplayStore as _;
use std::time::{Duration, Instant};

use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use actors::ports::EntryTier;
use chrono::Utc;
use common::{
    ADMIN_TOKEN, Mode, READ_TOKEN, TestApp, both_modes, eventually, fresh_veri_key, publish,
};
use provd::adapters::redis::RedisCache;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// Node A, and node B sharing A's database and NATS prefix with its own Redis prefix.
async fn two_nodes(flush: Duration) -> Option<(TestApp, TestApp)> {
    let a = TestApp::start_with(|c| c.provcache.flush_interval = flush).await?;
    let (db, prefix) = (a.config.database_url.clone(), a.config.nats_prefix.clone());
    assert!(
        db.is_some(),
        "two nodes share a PostgreSQL database (distributed mode)"
    );
    let b = TestApp::start_with(|c| {
        c.database_url = db;
        c.nats_prefix = prefix;
        c.provcache.flush_interval = flush;
    })
    .await?;
    Some((a, b))
}

/// Stops B without touching what it shares with A (streams, database).
async fn stop_b(b: TestApp) {
    let TestApp { app, data, .. } = b;
    app.stop().await;
    data.remove().await;
}

fn entry(key: &str, signer_set: &str, keys: &[&str], policy: &str, feed: (&str, &str)) -> Entry {
    let now = Utc::now();
    let verdict = json!({"decision": "allow"});
    Entry {
        veri_key: key.to_owned(),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: None,
        trust_score: 80,
        policy_hash: policy.to_owned(),
        signer_set_hash: signer_set.to_owned(),
        signer_key_ids: keys.iter().map(|k| (*k).to_owned()).collect(),
        feed_id: Some(feed.0.to_owned()),
        feed_epoch: Some(feed.1.to_owned()),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

fn write(e: &Entry) -> EntryWrite {
    EntryWrite {
        write_id: uuid::Uuid::now_v7(),
        accepted_at: Utc::now(),
        entry: e.clone(),
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

async fn in_redis(t: &TestApp, key: &str) -> bool {
    t.app
        .redis()
        .expect("distributed mode has Redis")
        .get_entry(key)
        .await
        .expect("redis")
        .is_some()
}

async fn stats(t: &TestApp) -> Value {
    t.http
        .get(t.url("/api/v1/provcache/revocations/stats"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

async fn row(t: &TestApp, revocation_id: &str) -> Value {
    eventually("the ledger row", WAIT, || async {
        let body: Value = t
            .http
            .get(t.url("/api/v1/provcache/revocations?since=0&limit=1000"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["revocations"]
            .as_array()?
            .iter()
            .find(|r| r["revocation_id"] == revocation_id)
            .cloned()
    })
    .await
}

fn event(ty: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": uuid::Uuid::now_v7().to_string(),
        "source": "urn:example:test",
        "type": ty,
        "time": "2026-11-22T10:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    })
}

async fn checkpoint(t: &TestApp) -> i64 {
    t.app
        .store()
        .checkpoint(&t.config.node_id)
        .await
        .expect("checkpoint")
}

async fn head(t: &TestApp) -> i64 {
    t.app.store().ledger_head().await.expect("head")
}

/// Waits until this node has applied the whole ledger.
async fn caught_up(t: &TestApp) {
    eventually("the checkpoint to reach the head", WAIT, || async {
        let h = head(t).await;
        (checkpoint(t).await >= h).then_some(())
    })
    .await;
}

/// Stores the entries durably and reads each through both nodes, so both hot tiers hold it.
async fn seed_both(a: &TestApp, b: &TestApp, entries: &[Entry]) {
    let writes: Vec<EntryWrite> = entries.iter().map(write).collect();
    a.app.store().upsert_entries(&writes).await.expect("seed");
    for e in entries {
        for n in [a, b] {
            assert_eq!(status(n, &e.veri_key).await, 200);
            assert!(in_redis(n, &e.veri_key).await);
        }
    }
}

#[tokio::test]
async fn every_trigger_removes_exactly_its_entries_on_both_nodes_once() {
    let Some((a, b)) = two_nodes(Duration::from_millis(200)).await else {
        return;
    };
    let e_key = entry(
        &fresh_veri_key(),
        "sha256:set-k",
        &["key-revoked", "key-fine"],
        "sha256:pol",
        ("osv", "1.10.0"),
    );
    let e_set = entry(
        &fresh_veri_key(),
        "sha256:set-s",
        &["key-s"],
        "sha256:pol",
        ("osv", "1.10.0"),
    );
    let e_old_feed = entry(
        &fresh_veri_key(),
        "sha256:set-f",
        &["key-f"],
        "sha256:pol",
        ("osv", "1.9.0"),
    );
    let e_other_feed = entry(
        &fresh_veri_key(),
        "sha256:set-f",
        &["key-f"],
        "sha256:pol",
        ("ghsa", "1.0.0"),
    );
    let e_policy = entry(
        &fresh_veri_key(),
        "sha256:set-p",
        &["key-p"],
        "sha256:pol-old",
        ("osv", "1.10.0"),
    );
    let e_explicit = entry(
        &fresh_veri_key(),
        "sha256:set-x",
        &["key-x"],
        "sha256:pol",
        ("osv", "1.10.0"),
    );
    let all = [
        e_key.clone(),
        e_set.clone(),
        e_old_feed.clone(),
        e_other_feed.clone(),
        e_policy.clone(),
        e_explicit.clone(),
    ];
    seed_both(&a, &b, &all).await;

    let cases = [
        (
            "prov.events.signer.revoked",
            event(
                "dev.provd.signer.revoked.v1",
                json!({"signer_key_id": "key-revoked", "reason": "key compromised"}),
            ),
            &e_key,
            "signer",
        ),
        (
            "prov.events.signer.revoked",
            event(
                "dev.provd.signer.revoked.v1",
                json!({"signer_set_hash": "sha256:set-s", "reason": "set retired"}),
            ),
            &e_set,
            "signer",
        ),
        (
            "prov.events.feed.epoch_advanced",
            // 1.10.0 > 1.9.0 as versions (not as strings); the other feed is untouched.
            event(
                "dev.provd.feed.epoch_advanced.v1",
                json!({"feed_id": "osv", "new_epoch": "1.10.0", "previous_epoch": "1.9.0"}),
            ),
            &e_old_feed,
            "feed_epoch",
        ),
        (
            "prov.events.policy.updated",
            event(
                "dev.provd.policy.updated.v1",
                json!({"old_policy_hash": "sha256:pol-old", "new_policy_hash": "sha256:pol-new"}),
            ),
            &e_policy,
            "policy",
        ),
        (
            "prov.events.invalidate",
            event(
                "dev.provd.invalidate.requested.v1",
                json!({"veri_key": e_explicit.veri_key, "reason": "operator request"}),
            ),
            &e_explicit,
            "explicit",
        ),
    ];
    let mut gone: Vec<&Entry> = Vec::new();
    for (subject, ev, doomed, ty) in &cases {
        publish(&a, subject, ev).await;
        let r = row(&a, ev["id"].as_str().expect("id")).await;
        assert_eq!(r["entries_invalidated"], 1, "{subject}: {r}");
        assert_eq!(r["revocation_type"], *ty);
        gone.push(doomed);
        for n in [&a, &b] {
            caught_up(n).await;
            for e in &all {
                let removed = gone.iter().any(|g| g.veri_key == e.veri_key);
                let expected = if removed { 404 } else { 200 };
                assert_eq!(
                    status(n, &e.veri_key).await,
                    expected,
                    "{} after {subject} on {}",
                    e.veri_key,
                    n.config.node_id
                );
                if removed {
                    assert!(!in_redis(n, &e.veri_key).await);
                }
            }
        }
    }
    let before = stats(&a).await;
    assert_eq!(before["total_entries"], 5);
    assert_eq!(before["total_entries_invalidated"], 5);

    // The same events again: JetStream drops the copies, provd would record each id once.
    for (subject, ev, _, _) in &cases {
        publish(&b, subject, ev).await;
    }
    // A fresh event behind them on every subject shows the consumers got past the copies.
    let mut sentinels = Vec::new();
    for subject in [
        "prov.events.signer.revoked",
        "prov.events.policy.updated",
        "prov.events.feed.epoch_advanced",
        "prov.events.invalidate",
    ] {
        let ev = match subject {
            "prov.events.signer.revoked" => event(
                "dev.provd.signer.revoked.v1",
                json!({"signer_key_id": "key-nobody-uses"}),
            ),
            "prov.events.policy.updated" => event(
                "dev.provd.policy.updated.v1",
                json!({"old_policy_hash": "sha256:nobody", "new_policy_hash": "sha256:x"}),
            ),
            "prov.events.feed.epoch_advanced" => event(
                "dev.provd.feed.epoch_advanced.v1",
                json!({"feed_id": "no-such-feed", "new_epoch": "9.0.0"}),
            ),
            _ => event(
                "dev.provd.invalidate.requested.v1",
                json!({"veri_key": fresh_veri_key(), "reason": "sentinel"}),
            ),
        };
        publish(&b, subject, &ev).await;
        sentinels.push(ev);
    }
    for ev in &sentinels {
        let r = row(&a, ev["id"].as_str().expect("id")).await;
        assert_eq!(r["entries_invalidated"], 0);
    }
    let after = stats(&a).await;
    assert_eq!(after["total_entries"], 9, "{after}");
    assert_eq!(after["total_entries_invalidated"], 5);
    assert_eq!(status(&b, &e_other_feed.veri_key).await, 200);
    stop_b(b).await;
    a.finish().await;
}

#[tokio::test]
async fn a_node_that_was_down_catches_up_before_it_reports_ready() {
    let Some((a, b)) = two_nodes(Duration::from_millis(200)).await else {
        return;
    };
    let revoked = entry(
        &fresh_veri_key(),
        "sha256:set-down",
        &["key-down"],
        "sha256:pol",
        ("osv", "3.0.0"),
    );
    let old_feed = entry(
        &fresh_veri_key(),
        "sha256:set-ok",
        &["key-ok"],
        "sha256:pol",
        ("osv", "1.0.0"),
    );
    let kept = entry(
        &fresh_veri_key(),
        "sha256:set-ok",
        &["key-ok"],
        "sha256:pol",
        ("osv", "3.0.0"),
    );
    seed_both(&a, &b, &[revoked.clone(), old_feed.clone(), kept.clone()]).await;
    caught_up(&b).await;
    let b_config = b.config.clone();
    let b_data = b.data;
    b.app.stop().await;
    // B shared A's durable invalidator consumers; a pull request it left at the server
    // expires after its 1 s wait, and a message the server handed to it would only come
    // back after the ack deadline. Past that second every event goes to A.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let signer = event(
        "dev.provd.signer.revoked.v1",
        json!({"signer_key_id": "key-down", "reason": "key compromised"}),
    );
    let feed = event(
        "dev.provd.feed.epoch_advanced.v1",
        json!({"feed_id": "osv", "new_epoch": "2.0.0"}),
    );
    publish(&a, "prov.events.signer.revoked", &signer).await;
    publish(&a, "prov.events.feed.epoch_advanced", &feed).await;
    row(&a, signer["id"].as_str().expect("id")).await;
    row(&a, feed["id"].as_str().expect("id")).await;
    let ledger_head = head(&a).await;
    // B's hot tier still holds what was revoked while it was away.
    let b_redis = RedisCache::new(
        b_config.redis_url.as_deref().expect("redis url"),
        &b_config.redis_prefix,
    )
    .expect("redis");
    assert!(
        b_redis
            .get_entry(&revoked.veri_key)
            .await
            .expect("redis")
            .is_some()
    );
    assert!(
        b_redis
            .get_entry(&old_feed.veri_key)
            .await
            .expect("redis")
            .is_some()
    );

    let b = provd::app::App::start(b_config.clone())
        .await
        .expect("B restarts");
    let base = format!("http://{}", b.local_addr());
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16();
        if ready == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "B never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The moment B is ready, its hot tier has caught up.
    assert!(
        b_redis
            .get_entry(&revoked.veri_key)
            .await
            .expect("redis")
            .is_none()
    );
    assert!(
        b_redis
            .get_entry(&old_feed.veri_key)
            .await
            .expect("redis")
            .is_none()
    );
    assert!(
        b_redis
            .get_entry(&kept.veri_key)
            .await
            .expect("redis")
            .is_some()
    );
    let cp = b
        .store()
        .checkpoint(&b_config.node_id)
        .await
        .expect("checkpoint");
    assert_eq!(cp, ledger_head);
    for (key, expected) in [
        (&revoked.veri_key, 404),
        (&old_feed.veri_key, 404),
        (&kept.veri_key, 200),
    ] {
        let s = http
            .get(format!("{base}/api/v1/provcache/entries/{key}"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("get")
            .status()
            .as_u16();
        assert_eq!(s, expected);
    }
    b.stop().await;
    b_data.remove().await;
    a.finish().await;
}

/// Runs the built `provd replay` as node C (Redis prefix `redis_prefix`) on A's services.
async fn provd_replay(a: &TestApp, redis_prefix: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_provd"));
    cmd.arg("replay")
        .args(args)
        .env(
            "PROVD_DATABASE_URL",
            a.config.database_url.as_deref().expect("database url"),
        )
        .env(
            "PROVD_REDIS_URL",
            a.config.redis_url.as_deref().expect("redis url"),
        )
        .env(
            "PROVD_NATS_URL",
            a.config.nats_url.as_deref().expect("nats url"),
        )
        .env("PROVD_REDIS_PREFIX", redis_prefix)
        .env("PROVD_NODE_ID", "node-c")
        .env("PROVD_LOG", "warn")
        .env_remove("PROVD_CONFIG");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run provd replay")
}

#[tokio::test]
async fn provd_replay_since_0_cleans_a_hot_tier_restored_from_a_stale_snapshot() {
    let Some(a) =
        TestApp::start_with(|c| c.provcache.flush_interval = Duration::from_millis(200)).await
    else {
        return;
    };
    let doomed_key = entry(
        &fresh_veri_key(),
        "sha256:set-r",
        &["key-r"],
        "sha256:pol",
        ("osv", "5.0.0"),
    );
    let doomed_policy = entry(
        &fresh_veri_key(),
        "sha256:set-ok",
        &["key-ok"],
        "sha256:pol-r",
        ("osv", "5.0.0"),
    );
    let doomed_feed = entry(
        &fresh_veri_key(),
        "sha256:set-ok",
        &["key-ok"],
        "sha256:pol",
        ("nvd", "2026-11-01T00:00:00Z"),
    );
    let kept = entry(
        &fresh_veri_key(),
        "sha256:set-ok",
        &["key-ok"],
        "sha256:pol",
        // 23:30Z, after the new epoch; as a string it would sort before it.
        ("nvd", "2026-11-20T22:30:00-01:00"),
    );
    let all = [
        doomed_key.clone(),
        doomed_policy.clone(),
        doomed_feed.clone(),
        kept.clone(),
    ];
    // The snapshot: taken before the revocations, with the durable rows as they were.
    let snapshot: Vec<EntryWrite> = all.iter().map(write).collect();
    a.app.store().upsert_entries(&snapshot).await.expect("seed");
    let events = [
        (
            "prov.events.signer.revoked",
            event(
                "dev.provd.signer.revoked.v1",
                json!({"signer_key_id": "key-r"}),
            ),
        ),
        (
            "prov.events.policy.updated",
            event(
                "dev.provd.policy.updated.v1",
                json!({"old_policy_hash": "sha256:pol-r", "new_policy_hash": "sha256:p2"}),
            ),
        ),
        (
            "prov.events.feed.epoch_advanced",
            // 2026-11-20T23:00Z: after the doomed epoch, before the kept one (22:00Z + 2h).
            event(
                "dev.provd.feed.epoch_advanced.v1",
                json!({"feed_id": "nvd", "new_epoch": "2026-11-20T23:00:00Z"}),
            ),
        ),
    ];
    for (subject, ev) in &events {
        publish(&a, subject, ev).await;
        row(&a, ev["id"].as_str().expect("id")).await;
    }
    let ledger_head = head(&a).await;

    // Node C's hot tier and the durable rows are restored from the snapshot.
    let c_prefix = format!("{}c:", a.config.redis_prefix);
    let c_redis = RedisCache::new(a.config.redis_url.as_deref().expect("redis url"), &c_prefix)
        .expect("redis");
    for e in &all {
        c_redis
            .put(&std::sync::Arc::new(e.clone()))
            .await
            .expect("restore hot tier");
    }
    for w in &snapshot {
        // As a database restore would: the rows with their original accepted times.
        let e = &w.entry;
        sqlx::query(
            "INSERT INTO provcache.provcache_items (veri_key, verdict, verdict_hash, \
             trust_score, policy_hash, signer_set_hash, feed_id, feed_epoch, created_at, \
             updated_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (veri_key) DO NOTHING",
        )
        .bind(&e.veri_key)
        .bind(&e.verdict)
        .bind(&e.verdict_hash)
        .bind(e.trust_score)
        .bind(&e.policy_hash)
        .bind(&e.signer_set_hash)
        .bind(&e.feed_id)
        .bind(&e.feed_epoch)
        .bind(e.created_at)
        .bind(w.accepted_at)
        .bind(e.expires_at)
        .execute(a.app.parts().store.pg_pool().expect("distributed mode"))
        .await
        .expect("restore durable rows");
    }
    assert!(
        a.app
            .store()
            .get_entry(&doomed_key.veri_key)
            .await
            .expect("pg")
            .is_some()
    );

    let out = provd_replay(&a, &c_prefix, &["--since", "0", "--batch-size", "2"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three distinct entries, removed from PostgreSQL and from C's hot tier.
    assert_eq!(
        stdout.lines().last().expect("summary"),
        format!("replayed 3 revocations, 3 entries invalidated, checkpoint {ledger_head}")
    );
    for e in [&doomed_key, &doomed_policy, &doomed_feed] {
        assert!(
            c_redis
                .get_entry(&e.veri_key)
                .await
                .expect("redis")
                .is_none()
        );
        assert!(
            a.app
                .store()
                .get_entry(&e.veri_key)
                .await
                .expect("pg")
                .is_none()
        );
    }
    assert!(
        c_redis
            .get_entry(&kept.veri_key)
            .await
            .expect("redis")
            .is_some()
    );
    assert!(
        a.app
            .store()
            .get_entry(&kept.veri_key)
            .await
            .expect("pg")
            .is_some()
    );
    assert_eq!(
        a.app.store().checkpoint("node-c").await.expect("cp"),
        ledger_head
    );

    // Again: idempotent, nothing left to remove.
    let out = provd_replay(&a, &c_prefix, &["--since", "0"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(
            format!("replayed 3 revocations, 0 entries invalidated, checkpoint {ledger_head}")
                .as_str()
        )
    );
    a.finish().await;
}

async fn put_via(t: &TestApp, e: &Entry) -> u16 {
    t.http
        .post(t.url("/api/v1/provcache/entries"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "veri_key": e.veri_key,
            "verdict": e.verdict,
            "trust_score": e.trust_score,
            "policy_hash": e.policy_hash,
            "signer_set_hash": e.signer_set_hash,
            "signer_key_ids": e.signer_key_ids,
            "feed_id": e.feed_id,
            "feed_epoch": e.feed_epoch,
            "ttl": "1h",
        }))
        .send()
        .await
        .expect("put")
        .status()
        .as_u16()
}

both_modes! {
/// Two nodes in distributed mode; embedded mode is one node.
async fn writes_racing_invalidations_never_resurrect_on_any_node() {
    let (a, b) = if common::mode() == Mode::Distributed {
        let Some((a, b)) = two_nodes(Duration::from_millis(50)).await else {
            return;
        };
        (a, Some(b))
    } else {
        let Some(a) =
            TestApp::start_with(|c| c.provcache.flush_interval = Duration::from_millis(50)).await
        else {
            return;
        };
        (a, None)
    };
    let nodes: Vec<&TestApp> = std::iter::once(&a).chain(b.as_ref()).collect();
    const ITERATIONS: usize = 20;
    const WRITERS: usize = 6;
    for i in 0..ITERATIONS {
        let iteration_deadline = Instant::now() + WAIT;
        let key = format!("key-race-{i}");
        let set = format!("sha256:set-race-{i}");
        let nodes = &nodes;
        // Writers on both nodes keep writing entries signed with `key` while the key is
        // revoked; each records when its write was answered.
        let invalidated_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let writers = (0..WRITERS).map(|w| {
            let key = key.clone();
            let set = set.clone();
            let invalidated_at = invalidated_at.clone();
            async move {
                let node = nodes[w % nodes.len()];
                let mut answered_before = Vec::new();
                for _ in 0..(3 + (i + w) % 4) {
                    let e = entry(
                        &fresh_veri_key(),
                        &set,
                        &[key.as_str()],
                        "sha256:pol-race",
                        ("osv", "1.0.0"),
                    );
                    let s = put_via(node, &e).await;
                    assert!(s == 202 || s == 201, "write answered {s}");
                    let before = invalidated_at.lock().expect("lock").is_none();
                    if before {
                        answered_before.push(e.veri_key.clone());
                    }
                }
                answered_before
            }
        });
        let revoke = async {
            // Let some writes land first, then revoke while the others are in flight.
            tokio::time::sleep(Duration::from_millis(5 * (i as u64 % 5))).await;
            let ev = event(
                "dev.provd.signer.revoked.v1",
                json!({"signer_key_id": key, "reason": "race"}),
            );
            // From here on a write's answer may come after the revocation.
            *invalidated_at.lock().expect("lock") = Some(Instant::now());
            publish(&a, "prov.events.signer.revoked", &ev).await;
            ev
        };
        let (answered, ev) = tokio::join!(futures::future::join_all(writers), revoke);
        let doomed: Vec<String> = answered.into_iter().flatten().collect();
        let r = row(&a, ev["id"].as_str().expect("id")).await;
        let seq = r["seq_no"].as_i64().expect("seq");
        for n in nodes {
            eventually("the node to apply the revocation", WAIT, || async {
                (checkpoint(n).await >= seq).then_some(())
            })
            .await;
        }
        // Every write answered before the revocation is gone from both nodes, and stays
        // gone once the write-behind queue has drained.
        let drained = || async {
            let stream = format!("t{}_PROVCACHE_WRITES", &a.config.nats_prefix[1..]);
            let n = a
                .app
                .bus()
                .consumer_pending(&stream, "write-behind-flusher")
                .await
                .ok()?;
            (n == 0).then_some(())
        };
        eventually("the write-behind queue to drain", WAIT, drained).await;
        for k in &doomed {
            for n in nodes {
                assert_eq!(
                    status(n, k).await,
                    404,
                    "iteration {i}: {k} resurrected on {}",
                    n.config.node_id
                );
            }
            assert!(a.app.store().get_entry(k).await.expect("pg").is_none());
        }
        assert!(
            Instant::now() < iteration_deadline,
            "iteration {i} took too long"
        );
    }
    if let Some(b) = b {
        stop_b(b).await;
    }
    a.finish().await;
}
}

both_modes! {
async fn a_write_in_flight_is_dropped_for_every_kind_of_revocation() {
    use actors::domain::epoch::FeedEpoch;
    use actors::domain::invalidation::{Criterion, Invalidation, RevocationType};

    let Some(t) = TestApp::start().await else {
        return;
    };
    let base = entry(
        &fresh_veri_key(),
        "sha256:set-inflight",
        &["key-inflight"],
        "sha256:pol-inflight",
        ("osv", "1.9.0"),
    );
    let criteria = [
        Criterion::VeriKey(base.veri_key.clone()),
        Criterion::SignerKeyId("key-inflight".into()),
        Criterion::SignerSetHash("sha256:set-inflight".into()),
        Criterion::PolicyHash("sha256:pol-inflight".into()),
        Criterion::FeedEpochBefore {
            feed_id: Some("osv".into()),
            before: FeedEpoch::parse("1.10.0").expect("epoch"),
        },
        Criterion::FeedEpochBefore {
            feed_id: None,
            before: FeedEpoch::parse("1.10.0").expect("epoch"),
        },
    ];
    for c in criteria {
        // Accepted (hot tiers, queue) before the revocation, flushed after it.
        let mut e = base.clone();
        if !matches!(c, Criterion::VeriKey(_)) {
            e.veri_key = fresh_veri_key();
        }
        let w = write(&e);
        let unrelated = write(&entry(
            &fresh_veri_key(),
            "sha256:set-other",
            &["key-other"],
            "sha256:pol-other",
            ("ghsa", "2.0.0"),
        ));
        let inv = Invalidation {
            revocation_id: uuid::Uuid::now_v7(),
            revocation_type: RevocationType::Explicit,
            criterion: c.clone(),
            reason: None,
            source: "urn:test".into(),
            correlation_id: None,
            traceparent: None,
        };
        t.app.store().invalidate(&inv).await.expect("invalidate");
        let out = t
            .app
            .store()
            .upsert_entries(&[w, unrelated.clone()])
            .await
            .expect("flush");
        assert_eq!((out.written, out.invalidated), (1, 1), "{c:?}");
        assert!(
            t.app
                .store()
                .get_entry(&e.veri_key)
                .await
                .expect("pg")
                .is_none()
        );
        assert!(
            t.app
                .store()
                .get_entry(&unrelated.entry.veri_key)
                .await
                .expect("pg")
                .is_some()
        );
    }
    t.finish().await;
}
}

#[test]
fn replay_has_help_with_an_example_and_refuses_a_bad_batch_size() {
    let provd = || std::process::Command::new(env!("CARGO_BIN_EXE_provd"));
    let out = provd().args(["replay", "--help"]).output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["Example", "--since", "--batch-size", "--dry-run"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let out = provd()
        .args(["replay", "--batch-size", "0"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch-size"));
    let out = provd()
        .args(["replay", "--since=-3"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

both_modes! {
/// One node: a database restored from a snapshot taken before a revocation brings the
/// revoked entry back; `provd replay --since 0` (the same replay a restart runs) removes it
/// again and leaves the rest, and a second replay finds nothing to do.
async fn provd_replay_removes_what_a_stale_restore_brought_back() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let doomed = entry(
        &fresh_veri_key(),
        "sha256:set-restore",
        &["key-restore"],
        "sha256:pol-restore-old",
        ("osv", "1.0.0"),
    );
    let kept = entry(
        &fresh_veri_key(),
        "sha256:set-restore",
        &["key-restore"],
        "sha256:pol-restore-new",
        ("osv", "1.0.0"),
    );
    let resp = t
        .http
        .post(t.url("/api/v1/provcache/invalidate"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"policy_hash": "sha256:pol-restore-old", "reason": "withdrawn"}))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("json")["revocation_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let seq = row(&t, &id).await["seq_no"].as_i64().expect("seq");
    // This node's ledger consumer has applied the row too (its own sweep of the durable
    // tier must not race with the restore below: the snapshot is restored later).
    let applied = format!(
        "SELECT coalesce(max(last_seq_no), 0) FROM provcache.prov_replay_checkpoints \
         WHERE node_id = '{}'",
        t.config.node_id
    );
    eventually("this node applied the revocation", WAIT, || async {
        (t.query_i64(&applied).await >= seq).then_some(())
    })
    .await;

    // The restore: both rows back as they were a day ago, before the revocation.
    for e in [&doomed, &kept] {
        common::items::insert_item(
            t.app.store(),
            &common::items::NewItem {
                veri_key: e.veri_key.clone(),
                verdict: e.verdict.clone(),
                verdict_hash: e.verdict_hash.clone(),
                trust_score: e.trust_score,
                policy_hash: e.policy_hash.clone(),
                signer_set_hash: e.signer_set_hash.clone(),
                signer_key_ids: e.signer_key_ids.clone(),
                feed_id: e.feed_id.clone(),
                feed_epoch: e.feed_epoch.clone(),
                expires_at: e.expires_at,
            },
        )
        .await;
    }
    let backdate = match t.mode() {
        Mode::Distributed => {
            "UPDATE provcache.provcache_items SET updated_at = now() - interval '1 day'"
        }
        Mode::Embedded => "UPDATE provcache.provcache_items SET updated_at = updated_at - 86400000000",
    };
    assert_eq!(t.execute(backdate).await.expect("backdate"), 2);
    assert!(common::items::item_exists(t.app.store(), &doomed.veri_key).await);

    let replay = |args: &'static [&'static str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_provd"));
        cmd.arg("replay")
            .args(args)
            .args(t.store_args())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PROVD_NODE_ID", "node-restore")
            .env("PROVD_LOG", "warn");
        if let Some(url) = &t.config.redis_url {
            cmd.env("PROVD_REDIS_URL", url)
                .env("PROVD_REDIS_PREFIX", format!("{}r:", t.config.redis_prefix));
        }
        async move {
            tokio::task::spawn_blocking(move || cmd.output())
                .await
                .expect("join")
                .expect("run provd replay")
        }
    };
    let out = replay(&["--since", "0"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().last().expect("summary"),
        format!("replayed 1 revocations, 1 entries invalidated, checkpoint {seq}")
    );
    assert!(!common::items::item_exists(t.app.store(), &doomed.veri_key).await);
    assert!(common::items::item_exists(t.app.store(), &kept.veri_key).await);
    assert_eq!(status(&t, &doomed.veri_key).await, 404);
    assert_eq!(status(&t, &kept.veri_key).await, 200);

    let out = replay(&["--since", "0"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(format!("replayed 1 revocations, 0 entries invalidated, checkpoint {seq}").as_str())
    );
    t.finish().await;
}
}

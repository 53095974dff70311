//! The Rekor, log-monitoring and operator-figure half of embedded mode's SQLite store,
//! against a real SQLite file in a temporary directory: submissions and receipts, verified
//! checkpoints and the receipts they re-verify, divergences and their outbox, and the
//! figures of `/api/v1/status`. No service is needed.

use std::path::{Path, PathBuf};

use actors::domain::divergence::{DivergenceKind, dedupe_key};
use actors::domain::merkle::{self, Hash};
use actors::domain::receipt::Receipt;
use actors::domain::sigstore::Bundle;
use actors::domain::submission::SubmissionStatus;
use actors::ports::{
    CheckpointQuery, CheckpointStore, DivergenceStore, NewDivergence, NewSubmission,
    ObservedCheckpoint, PortError, SubmissionStore,
};
use actors::testing_monitor::{FakeLog, note_for};
use provd::storage::Store;
use serde_json::json;
use tempfile::TempDir;

fn vectors() -> PathBuf {
    let dir = std::env::var_os("PROVD_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors"));
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: set PROVD_VECTORS_DIR",
        dir.display()
    );
    dir
}

/// The real Rekor v1 entry of conformance `happy-path-v0.3`: SET, integrated time, shard
/// tree ID and a signed checkpoint.
fn prod_v1_receipt() -> Receipt {
    let bundle = Bundle::from_json(
        &std::fs::read(vectors().join("sigstore-conformance/happy-path-v0.3/bundle.sigstore.json"))
            .expect("vector"),
    )
    .expect("bundle");
    Receipt::from_tle(&bundle.tlog_entries[0]).expect("receipt")
}

/// A migrated store in a fresh directory (kept alive by the returned `TempDir`).
async fn store() -> (TempDir, Store) {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open_sqlite(dir.path()).await.expect("open");
    store.migrate().await.expect("migrate");
    (dir, store)
}

fn submission(id: &str, backend: &str) -> NewSubmission {
    NewSubmission {
        id: id.to_owned(),
        backend: backend.to_owned(),
        envelope: json!({"payloadType": "application/vnd.in-toto+json", "payload": id,
            "signatures": [{"keyid": "", "sig": "c2ln"}]}),
        verifier_keys: vec!["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into()],
    }
}

async fn count(store: &Store, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.sqlite_reader().expect("sqlite"))
        .await
        .expect("count")
}

#[tokio::test]
async fn submissions_move_through_their_lifecycle_and_receipts_round_trip() {
    let (dir, store) = store().await;
    let new = submission("sub-1", "prod-v1");

    let first = store.ensure_submission(&new).await.expect("ensure");
    assert_eq!(first.status, SubmissionStatus::Queued);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.envelope, new.envelope);
    assert_eq!(first.verifier_keys, new.verifier_keys);
    // The same id again keeps the first row, even with another envelope.
    let mut again = new.clone();
    again.envelope = json!({"other": true});
    let second = store.ensure_submission(&again).await.expect("ensure again");
    assert_eq!(second, first);
    // Racing callers all get the one stored row.
    let raced = futures::future::join_all((0..16).map(|_| {
        let (store, again) = (store.clone(), again.clone());
        async move { store.ensure_submission(&again).await.expect("ensure") }
    }))
    .await;
    assert!(raced.iter().all(|r| *r == first));
    assert_eq!(
        count(&store, "SELECT count(*) FROM rekor_submissions").await,
        1
    );

    let attempt = store.begin_attempt("sub-1").await.expect("attempt");
    assert_eq!(attempt.status, SubmissionStatus::Submitting);
    assert_eq!(attempt.attempts, 1);
    assert!(attempt.updated_at >= first.updated_at);
    assert!(matches!(
        store.begin_attempt("nope").await,
        Err(PortError::Rejected(_))
    ));

    let failed = store
        .record_failure("sub-1", SubmissionStatus::Retrying, "503 from the log")
        .await
        .expect("failure");
    assert_eq!(failed.status, SubmissionStatus::Retrying);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.last_error.as_deref(), Some("503 from the log"));
    // A retrying submission is not requeued by hand: it comes back unchanged.
    let unchanged = store.requeue("sub-1").await.expect("requeue").expect("row");
    assert_eq!(unchanged, failed);
    assert_eq!(store.requeue("nope").await.expect("requeue"), None);

    let receipt = prod_v1_receipt();
    assert!(receipt.signed_entry_timestamp.is_some() && receipt.tree_id.is_some());
    let entry_id = receipt.entry_id();
    store.begin_attempt("sub-1").await.expect("attempt 2");
    store
        .record_logged("sub-1", &entry_id, &receipt)
        .await
        .expect("logged");
    // Storing the same receipt again (a redelivered answer) changes nothing.
    store
        .record_logged("sub-1", &entry_id, &receipt)
        .await
        .expect("logged again");
    assert_eq!(count(&store, "SELECT count(*) FROM rekor_entries").await, 1);
    let logged = store.submission("sub-1").await.expect("read").expect("row");
    assert_eq!(logged.status, SubmissionStatus::Logged);
    assert_eq!(logged.attempts, 2);
    assert_eq!(logged.last_error, None);
    assert_eq!(logged.entry_uuid.as_deref(), Some(entry_id.as_str()));

    // The receipt comes back as PostgreSQL rebuilds it: every stored column, and the kind
    // and version left to be read from the body.
    let expected = Receipt {
        kind_version: None,
        ..receipt.clone()
    };
    for key in [
        entry_id.clone(),
        receipt.uuid(),
        receipt.uuid().to_uppercase(),
    ] {
        let stored = store
            .stored_receipt(&key)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("receipt by {key}"));
        assert_eq!(stored.receipt, expected);
        assert_eq!(stored.uuid, entry_id);
        assert_eq!(stored.backend, "prod-v1");
        assert_eq!(stored.submission_id.as_deref(), Some("sub-1"));
        assert_eq!(stored.verified_at, None);
    }
    assert_eq!(
        store.stored_receipt(&"0".repeat(64)).await.expect("read"),
        None
    );

    // Dead-lettered, then requeued by an operator: queued with no attempts.
    store
        .ensure_submission(&submission("sub-2", "prod-v1"))
        .await
        .expect("ensure 2");
    store.begin_attempt("sub-2").await.expect("attempt");
    let dead = store
        .record_failure("sub-2", SubmissionStatus::DeadLettered, "bad signature")
        .await
        .expect("dead");
    assert_eq!(dead.status, SubmissionStatus::DeadLettered);
    let requeued = store.requeue("sub-2").await.expect("requeue").expect("row");
    assert_eq!(requeued.status, SubmissionStatus::Queued);
    assert_eq!(requeued.attempts, 0);
    assert_eq!(requeued.last_error.as_deref(), Some("bad signature"));

    // Everything is in the file: a store opened afresh on it reads the same rows.
    drop(store);
    let reopened = Store::open_sqlite(dir.path()).await.expect("reopen");
    reopened.migrate().await.expect("migrate again");
    assert_eq!(
        reopened.submission("sub-1").await.expect("read"),
        Some(logged)
    );
    assert_eq!(
        reopened
            .stored_receipt(&entry_id)
            .await
            .expect("read")
            .expect("receipt")
            .receipt,
        expected
    );
}

fn observed(origin: &str, size: u64, root: Hash, by: &str) -> ObservedCheckpoint {
    ObservedCheckpoint {
        backend: "local".into(),
        origin: origin.into(),
        tree_size: size,
        root_hash: root,
        note: note_for(origin, size, &root),
        observed_by: by.into(),
    }
}

#[tokio::test]
async fn checkpoints_are_stored_once_and_found_by_each_query() {
    let (_dir, store) = store().await;
    let origin = "log.example/test";
    let log = FakeLog::new(origin);
    for i in 0..8u8 {
        log.append(&[i; 10]);
    }
    let leaves = log.leaf_hashes();
    let r5 = merkle::root_from_leaf_hashes(&leaves[..5]);
    let r8 = merkle::root_from_leaf_hashes(&leaves[..8]);
    let forked: Hash = [9; 32];

    assert_eq!(
        store
            .latest_checkpoint("local", origin, "node-1")
            .await
            .expect("read"),
        None
    );
    let five = observed(origin, 5, r5, "node-1");
    store.record_checkpoint(&five).await.expect("record");
    store.record_checkpoint(&five).await.expect("record again");
    let all = CheckpointQuery {
        limit: 100,
        ..CheckpointQuery::default()
    };
    assert_eq!(store.checkpoints(&all).await.expect("list").len(), 1);

    let eight = observed(origin, 8, r8, "node-1");
    store.record_checkpoint(&eight).await.expect("record 8");
    let latest = store
        .latest_checkpoint("local", origin, "node-1")
        .await
        .expect("read")
        .expect("latest");
    assert_eq!(latest.checkpoint, eight);
    // Only node-1 has observed it so far, and nobody saw another root.
    assert_eq!(
        store
            .latest_foreign_checkpoint(origin, "node-1")
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        store
            .conflicting_checkpoint(origin, 8, &r8)
            .await
            .expect("read"),
        None
    );

    // Another node is served a fork at the same size.
    let fork = observed(origin, 8, forked, "node-2");
    store.record_checkpoint(&fork).await.expect("record fork");
    let conflict = store
        .conflicting_checkpoint(origin, 8, &r8)
        .await
        .expect("read")
        .expect("conflict");
    assert_eq!(conflict.checkpoint, fork);
    let theirs = store
        .conflicting_checkpoint(origin, 8, &forked)
        .await
        .expect("read")
        .expect("conflict");
    assert_eq!(theirs.checkpoint, eight);
    let foreign = store
        .latest_foreign_checkpoint(origin, "node-1")
        .await
        .expect("read")
        .expect("foreign");
    assert_eq!(foreign.checkpoint, fork);
    assert_eq!(
        store
            .latest_foreign_checkpoint("other.origin", "node-1")
            .await
            .expect("read"),
        None
    );

    // Listing: newest first, filtered, limited.
    let listed = store.checkpoints(&all).await.expect("list");
    let sizes: Vec<_> = listed
        .iter()
        .map(|c| (c.checkpoint.tree_size, c.checkpoint.observed_by.as_str()))
        .collect();
    assert_eq!(sizes, [(8, "node-2"), (8, "node-1"), (5, "node-1")]);
    assert!(listed[0].id > listed[1].id && listed[1].id > listed[2].id);
    let of_size = |size| CheckpointQuery {
        tree_size: Some(size),
        limit: 100,
        ..CheckpointQuery::default()
    };
    assert_eq!(store.checkpoints(&of_size(8)).await.expect("list").len(), 2);
    assert_eq!(store.checkpoints(&of_size(5)).await.expect("list").len(), 1);
    let other_backend = CheckpointQuery {
        backend: Some("elsewhere".into()),
        limit: 100,
        ..CheckpointQuery::default()
    };
    assert!(
        store
            .checkpoints(&other_backend)
            .await
            .expect("list")
            .is_empty()
    );
    let limited = CheckpointQuery {
        origin: Some(origin.into()),
        limit: 1,
        ..CheckpointQuery::default()
    };
    assert_eq!(
        store.checkpoints(&limited).await.expect("list"),
        listed[..1]
    );
}

#[tokio::test]
async fn unverified_receipts_are_found_by_origin_and_size_then_marked() {
    let (_dir, store) = store().await;
    let origin = "log.example/test";
    let log = FakeLog::new(origin);
    for i in 0..4u8 {
        log.append(format!("entry {i}").as_bytes());
    }
    // Another log behind the same backend name (a shard): its entries have other indices.
    let other = FakeLog::new("other.example/log");
    for i in 0..6u8 {
        other.append(format!("elsewhere {i}").as_bytes());
    }
    let mut receipts = Vec::new();
    for (n, r) in (0..4)
        .map(|i| log.stored_receipt("local", i, 4))
        .chain([other.stored_receipt("local", 5, 6)])
        .enumerate()
    {
        let id = format!("sub-{n}");
        store
            .ensure_submission(&submission(&id, "local"))
            .await
            .expect("ensure");
        store
            .record_logged(&id, &r.uuid, &r.receipt)
            .await
            .expect("logged");
        receipts.push(r);
    }
    assert_eq!(count(&store, "SELECT count(*) FROM rekor_entries").await, 5);

    let found = store
        .unverified_receipts("local", origin, 3, 10)
        .await
        .expect("read");
    let uuids: Vec<_> = found.iter().map(|r| r.uuid.as_str()).collect();
    let expected: Vec<_> = receipts[..3].iter().map(|r| r.uuid.as_str()).collect();
    assert_eq!(
        uuids, expected,
        "oldest first, below the size, this origin only"
    );
    for (got, want) in found.iter().zip(&receipts) {
        assert_eq!(got.receipt, want.receipt);
    }
    // The origin is the first line of each receipt's checkpoint.
    let ours = store
        .unverified_receipts("local", origin, 100, 10)
        .await
        .expect("read");
    assert_eq!(ours.len(), 4);
    let theirs = store
        .unverified_receipts("local", "other.example/log", 100, 10)
        .await
        .expect("read");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].receipt, receipts[4].receipt);
    assert_eq!(
        store
            .unverified_receipts("local", origin, 4, 2)
            .await
            .expect("read")
            .len(),
        2
    );
    assert!(
        store
            .unverified_receipts("other-backend", origin, 4, 10)
            .await
            .expect("read")
            .is_empty()
    );

    store
        .mark_receipts_verified(&[receipts[0].uuid.clone(), receipts[1].uuid.clone()])
        .await
        .expect("mark");
    let left = store
        .unverified_receipts("local", origin, 4, 10)
        .await
        .expect("read");
    let left: Vec<_> = left.iter().map(|r| r.uuid.clone()).collect();
    assert_eq!(left, [receipts[2].uuid.clone(), receipts[3].uuid.clone()]);
    let marked = store
        .stored_receipt(&receipts[0].uuid)
        .await
        .expect("read")
        .expect("receipt");
    assert!(marked.verified_at.is_some());
    store.mark_receipts_verified(&[]).await.expect("mark none");
}

fn divergence(kind: DivergenceKind, by: &str, part: &str) -> NewDivergence {
    let origin = "log.example/test";
    NewDivergence {
        backend: "local".into(),
        origin: origin.into(),
        kind,
        evidence: json!({"notes": [part], "what": "two roots at size 8"}),
        detected_by: by.into(),
        dedupe_key: dedupe_key(kind, origin, &[part]),
    }
}

#[tokio::test]
async fn divergences_are_raised_once_acknowledged_and_delivered_through_the_outbox() {
    let (_dir, store) = store().await;
    let fork = divergence(DivergenceKind::Fork, "node-1", "8");
    let raised = store
        .raise_divergence(&fork)
        .await
        .expect("raise")
        .expect("new");
    assert_eq!(raised.kind, "fork");
    assert_eq!(raised.evidence, fork.evidence);
    assert_eq!(raised.detected_by, "node-1");
    assert_eq!(raised.delivery_attempts, 0);
    assert_eq!(raised.acknowledged_at, None);
    // The same evidence again, even from another node, is not raised twice.
    let mut seen_elsewhere = fork.clone();
    seen_elsewhere.detected_by = "node-2".into();
    assert_eq!(store.raise_divergence(&fork).await.expect("raise"), None);
    assert_eq!(
        store
            .raise_divergence(&seen_elsewhere)
            .await
            .expect("raise"),
        None
    );
    // Raised by many tasks at once, a divergence is still stored and returned once.
    let raced = futures::future::join_all((0..16).map(|n| {
        let store = store.clone();
        async move {
            let mut d = divergence(DivergenceKind::Rollback, "node-1", "5");
            if n > 0 {
                d.detected_by = format!("node-{}", n + 2);
            }
            store.raise_divergence(&d).await.expect("raise")
        }
    }))
    .await;
    let mut raised_once: Vec<_> = raced.into_iter().flatten().collect();
    assert_eq!(raised_once.len(), 1, "one of the racing raises stores it");
    let rollback = raised_once.pop().expect("one");
    let theirs = store
        .raise_divergence(&divergence(DivergenceKind::BadSignature, "node-2", "x"))
        .await
        .expect("raise")
        .expect("new");

    let open = store.open_divergences(None).await.expect("open");
    let ids: Vec<_> = open.iter().map(|d| d.id).collect();
    assert_eq!(ids, [raised.id, rollback.id, theirs.id]);
    assert_eq!(open[0], raised);
    assert_eq!(
        store
            .open_divergences(Some("elsewhere"))
            .await
            .expect("open"),
        []
    );

    // Acknowledging keeps the first acknowledgement.
    let acked = store
        .acknowledge_divergence(raised.id, "alice")
        .await
        .expect("ack")
        .expect("row");
    assert_eq!(acked.acknowledged_by.as_deref(), Some("alice"));
    let first_ack = acked.acknowledged_at.expect("acknowledged");
    let again = store
        .acknowledge_divergence(raised.id, "bob")
        .await
        .expect("ack")
        .expect("row");
    assert_eq!(again.acknowledged_by.as_deref(), Some("alice"));
    assert_eq!(again.acknowledged_at, Some(first_ack));
    assert_eq!(
        store
            .acknowledge_divergence(9999, "alice")
            .await
            .expect("ack"),
        None
    );
    let open: Vec<_> = store
        .open_divergences(Some("local"))
        .await
        .expect("open")
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(open, [rollback.id, theirs.id]);
    let newest: Vec<_> = store
        .divergences(false, 2)
        .await
        .expect("list")
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(newest, [theirs.id, rollback.id]);
    assert_eq!(store.divergences(true, 10).await.expect("list").len(), 2);
    assert_eq!(store.divergences(false, 10).await.expect("list").len(), 3);

    // The outbox: node-1 publishes its own, then (with a webhook) delivers them.
    let pending = |webhook| {
        let store = store.clone();
        async move {
            store
                .undelivered_divergences("node-1", webhook, 10)
                .await
                .expect("outbox")
                .iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(pending(false).await, [raised.id, rollback.id]);
    store
        .mark_divergence_published(raised.id)
        .await
        .expect("published");
    assert_eq!(pending(false).await, [rollback.id]);
    assert_eq!(pending(true).await, [raised.id, rollback.id]);
    store
        .record_delivery_failure(raised.id, &"x".repeat(5000))
        .await
        .expect("failure");
    store
        .record_delivery_failure(raised.id, "503 Service Unavailable")
        .await
        .expect("failure");
    store
        .mark_divergence_delivered(raised.id)
        .await
        .expect("delivered");
    assert_eq!(pending(true).await, [rollback.id]);
    let delivered = store
        .divergences(false, 10)
        .await
        .expect("list")
        .into_iter()
        .find(|d| d.id == raised.id)
        .expect("row");
    assert_eq!(delivered.delivery_attempts, 2);
    assert_eq!(
        delivered.last_delivery_error.as_deref(),
        Some("503 Service Unavailable")
    );
    assert!(delivered.published_at.is_some() && delivered.delivered_at.is_some());
    assert_eq!(
        store
            .undelivered_divergences("node-2", false, 10)
            .await
            .expect("outbox")
            .len(),
        1
    );
}

/// Creates the provcache tables the figures read, as `20261122000001_provcache.sql` will.
///
/// That migration is written by another branch at the same time; until it is merged the test
/// makes the few tables it needs itself, with PostgreSQL's columns (`IF NOT EXISTS`, so the
/// real ones are used once present).
async fn provcache_tables(store: &Store) {
    for sql in [
        "CREATE TABLE IF NOT EXISTS prov_revocations (
            seq_no INTEGER PRIMARY KEY AUTOINCREMENT, revocation_id TEXT NOT NULL UNIQUE,
            revocation_type TEXT NOT NULL, revoked_key TEXT NOT NULL, reason TEXT,
            entries_invalidated INTEGER NOT NULL, source TEXT NOT NULL, correlation_id TEXT,
            revoked_at INTEGER NOT NULL, metadata TEXT)",
        "CREATE TABLE IF NOT EXISTS prov_replay_checkpoints (
            node_id TEXT PRIMARY KEY, last_seq_no INTEGER NOT NULL DEFAULT 0,
            updated_at INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS prov_ledger_outbox (
            id INTEGER PRIMARY KEY DEFAULT 1 CHECK (id = 1),
            published_seq_no INTEGER NOT NULL DEFAULT 0 CHECK (published_seq_no >= 0),
            updated_at INTEGER NOT NULL DEFAULT 0)",
    ] {
        sqlx::query(sql)
            .execute(store.sqlite_writer().expect("sqlite"))
            .await
            .expect(sql);
    }
}

#[tokio::test]
async fn figures_reflect_ledger_replay_submissions_checkpoints_and_divergences() {
    let (_dir, store) = store().await;
    provcache_tables(&store).await;

    // An empty store: zeros and empty lists.
    let empty = store.ops_snapshot().await.expect("snapshot");
    assert_eq!(empty.ledger_head, 0);
    assert_eq!(empty.outbox_published, 0);
    assert!(empty.checkpoints.is_empty() && empty.submissions_by_status.is_empty());
    assert!(empty.invalidations_per_hour.is_empty());

    // Ledger rows: two in the current hour, one two hours ago, one beyond the 24 hours.
    let now = chrono::Utc::now();
    let hour = |t: chrono::DateTime<chrono::Utc>| {
        let us = t.timestamp_micros();
        chrono::DateTime::from_timestamp_micros(us - us.rem_euclid(3_600_000_000)).expect("hour")
    };
    let times = [
        now - chrono::Duration::hours(30),
        now - chrono::Duration::hours(2),
        now,
        now,
    ];
    for (i, t) in times.iter().enumerate() {
        sqlx::query(
            "INSERT INTO prov_revocations (revocation_id, revocation_type, revoked_key, \
             entries_invalidated, source, revoked_at) VALUES (?1, 'policy', 'p', 1, 'test', ?2)",
        )
        .bind(format!("00000000-0000-0000-0000-00000000000{i}"))
        .bind(t.timestamp_micros())
        .execute(store.sqlite_writer().expect("sqlite"))
        .await
        .expect("ledger row");
    }
    sqlx::query(
        "INSERT INTO prov_ledger_outbox (id, published_seq_no, updated_at) VALUES (1, 3, ?1) \
         ON CONFLICT (id) DO UPDATE SET published_seq_no = 3",
    )
    .bind(now.timestamp_micros())
    .execute(store.sqlite_writer().expect("sqlite"))
    .await
    .expect("outbox");
    for (node, seq) in [("node-b", 4), ("node-a", 1)] {
        sqlx::query(
            "INSERT INTO prov_replay_checkpoints (node_id, last_seq_no, updated_at) \
             VALUES (?1, ?2, ?3)",
        )
        .bind(node)
        .bind(seq)
        .bind(now.timestamp_micros())
        .execute(store.sqlite_writer().expect("sqlite"))
        .await
        .expect("replay");
    }

    // Submissions in three states.
    for id in ["a", "b", "c"] {
        store
            .ensure_submission(&submission(id, "local"))
            .await
            .expect("ensure");
    }
    store.begin_attempt("b").await.expect("attempt");
    store
        .record_failure("c", SubmissionStatus::DeadLettered, "bad")
        .await
        .expect("dead");

    // Checkpoints of two origins, and divergences (one acknowledged).
    let one: Hash = [1; 32];
    let two: Hash = [2; 32];
    for cp in [
        observed("a.origin", 3, one, "node-a"),
        observed("a.origin", 7, two, "node-a"),
        observed("a.origin", 5, one, "node-b"),
        observed("b.origin", 2, two, "node-a"),
    ] {
        store.record_checkpoint(&cp).await.expect("record");
    }
    let first = store
        .raise_divergence(&divergence(DivergenceKind::Fork, "node-a", "1"))
        .await
        .expect("raise")
        .expect("new");
    let second = store
        .raise_divergence(&divergence(DivergenceKind::Rollback, "node-a", "2"))
        .await
        .expect("raise")
        .expect("new");
    store
        .acknowledge_divergence(first.id, "ops")
        .await
        .expect("ack");

    let sampled = store.sampled_figures().await.expect("sampled");
    assert_eq!(sampled.ledger_head, 4);
    assert_eq!(sampled.outbox_published, 3);
    let replay: Vec<_> = sampled
        .replay
        .iter()
        .map(|r| (r.node_id.as_str(), r.checkpoint, r.lag))
        .collect();
    assert_eq!(replay, [("node-a", 1, 3), ("node-b", 4, 0)]);
    assert_eq!(
        sampled.replay[0].updated_at.timestamp_micros(),
        now.timestamp_micros()
    );
    let by_status = vec![
        ("dead_lettered".to_owned(), 1),
        ("queued".to_owned(), 1),
        ("submitting".to_owned(), 1),
    ];
    assert_eq!(sampled.submissions_by_status, by_status);

    let snap = store.ops_snapshot().await.expect("snapshot");
    assert_eq!(snap.ledger_head, sampled.ledger_head);
    assert_eq!(snap.outbox_published, sampled.outbox_published);
    assert_eq!(snap.replay, sampled.replay);
    assert_eq!(snap.submissions_by_status, by_status);
    let latest: Vec<_> = snap
        .checkpoints
        .iter()
        .map(|c| (c.origin.as_str(), c.tree_size, c.root_hash.clone()))
        .collect();
    assert_eq!(
        latest,
        [
            ("a.origin", 7, hex::encode(two)),
            ("b.origin", 2, hex::encode(two)),
        ],
        "the largest checkpoint of each (backend, origin), in order"
    );
    assert_eq!(snap.open_divergences, 1);
    assert_eq!(snap.divergences.len(), 1);
    assert_eq!(snap.divergences[0].id, second.id);
    assert_eq!(snap.divergences[0].kind, "rollback");
    assert_eq!(snap.divergences[0].detected_at, second.detected_at);
    let per_hour: Vec<_> = snap
        .invalidations_per_hour
        .iter()
        .map(|h| (h.hour, h.count))
        .collect();
    assert_eq!(per_hour, [(hour(times[1]), 1), (hour(now), 2)]);
}

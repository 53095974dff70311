//! The embedded mode's SQLite store against a real database file in a temporary
//! directory (no services): entries, invalidations and the append-only ledger, replay,
//! evidence, bundle imports, and data surviving a reopen.

mod common;

use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use actors::domain::epoch::FeedEpoch;
use actors::domain::evidence::{EvidenceLimits, chunk_all};
use actors::domain::invalidation::{Criterion, Invalidation, LedgerRow, RevocationType};
use actors::ports::{
    EntryStore, EvidenceStore, InvalidationStore, LedgerOutboxStore, PortError, RejectedEvent,
    RejectedEventStore, ReplayStore,
};
use chrono::{DateTime, Duration, Utc};
use provd::airgap::BundleStore;
use provd::storage::Store;
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

async fn open() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(dir.path()).await.expect("open");
    store.migrate().await.expect("migrate");
    (dir, store)
}

fn key(n: u32) -> String {
    format!("sha256:{n:064x}")
}

fn entry(n: u32, policy: &str, set: &str, keys: &[&str], feed: Option<(&str, &str)>) -> Entry {
    let now = Utc::now();
    let verdict = json!({"decision": "allow", "n": n});
    Entry {
        veri_key: key(n),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: Some(format!("sha256:{}", "ab".repeat(32))),
        trust_score: 80,
        policy_hash: policy.to_owned(),
        signer_set_hash: set.to_owned(),
        signer_key_ids: keys.iter().map(|k| (*k).to_owned()).collect(),
        feed_id: feed.map(|(f, _)| f.to_owned()),
        feed_epoch: feed.map(|(_, e)| e.to_owned()),
        created_at: now,
        expires_at: now + Duration::hours(1),
    }
}

fn write_at(e: &Entry, accepted_at: DateTime<Utc>) -> EntryWrite {
    EntryWrite {
        write_id: Uuid::now_v7(),
        accepted_at,
        entry: e.clone(),
    }
}

fn invalidation(criterion: Criterion) -> Invalidation {
    Invalidation {
        revocation_id: Uuid::now_v7(),
        revocation_type: RevocationType::Explicit,
        criterion,
        reason: Some("test".into()),
        source: "urn:test".into(),
        correlation_id: None,
        traceparent: None,
    }
}

fn epoch(s: &str) -> FeedEpoch {
    FeedEpoch::parse(s).expect("epoch")
}

/// Five entries that the criteria below split in different ways.
fn population() -> Vec<Entry> {
    vec![
        entry(1, "pol-1", "set-1", &["k1", "k2"], Some(("osv", "1.9.0"))),
        entry(2, "pol-2", "set-2", &["k2", "k3"], Some(("osv", "1.10.0"))),
        entry(3, "pol-2", "set-3", &["k4"], Some(("nvd", "1.2.0"))),
        entry(
            4,
            "pol-3",
            "set-3",
            &["k4"],
            Some(("osv", "2026-01-01T00:00:00Z")),
        ),
        entry(5, "pol-3", "set-4", &["k5"], None),
    ]
}

async fn seed(store: &Store, entries: &[Entry]) {
    let at = Utc::now() - Duration::minutes(10);
    let writes: Vec<EntryWrite> = entries.iter().map(|e| write_at(e, at)).collect();
    let out = store.upsert_writes(&writes).await.expect("upsert");
    assert_eq!(out.written, entries.len() as u64);
}

async fn stored_keys(store: &Store) -> Vec<String> {
    let mut keys = Vec::new();
    for n in 1..=5 {
        if common::items::item_exists(store, &key(n)).await {
            keys.push(key(n));
        }
    }
    keys
}

#[tokio::test]
async fn the_newest_accepted_write_wins_within_and_across_batches() {
    let (_dir, store) = open().await;
    let t = Utc::now();
    let mut newer = entry(1, "pol", "set", &["kb", "ka"], Some(("osv", "1.0.0")));
    newer.trust_score = 10;
    let older = entry(1, "pol", "set", &["kb", "ka"], Some(("osv", "1.0.0")));
    // The newer write comes first in the batch: order must not matter, `accepted_at` does.
    let out = store
        .upsert_writes(&[
            write_at(&newer, t),
            write_at(&older, t - Duration::seconds(1)),
        ])
        .await
        .expect("upsert");
    assert_eq!(out.written, 1);
    assert_eq!(out.invalidated, 0);
    let got = store.entry(&key(1)).await.expect("read").expect("stored");
    assert_eq!(got.trust_score, 10);
    // Members come back sorted, as PostgreSQL returns them.
    assert_eq!(got.signer_key_ids, ["ka", "kb"]);
    assert_eq!(got.verdict, newer.verdict);
    // Times are kept to the microsecond, as in PostgreSQL.
    assert_eq!(
        got.created_at.timestamp_micros(),
        newer.created_at.timestamp_micros()
    );
    assert_eq!(
        got.expires_at.timestamp_micros(),
        newer.expires_at.timestamp_micros()
    );

    // A late, older write does not replace the stored version.
    let out = store
        .upsert_entries(&[write_at(&older, t - Duration::seconds(5))])
        .await
        .expect("upsert");
    assert_eq!(out.written, 0);
    let got = store
        .get_entry(&key(1))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(got.trust_score, 10);

    // A newer one does.
    let out = store
        .upsert_entries(&[write_at(&older, t + Duration::seconds(1))])
        .await
        .expect("upsert");
    assert_eq!(out.written, 1);
    let got = store
        .get_entry(&key(1))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(got.trust_score, 80);
    assert_eq!(store.count_items().await.expect("count"), 1);
}

#[tokio::test]
async fn expired_entries_are_not_served_but_still_counted() {
    let (_dir, store) = open().await;
    let mut e = entry(1, "pol", "set", &["k"], None);
    e.created_at = Utc::now() - Duration::hours(2);
    e.expires_at = Utc::now() - Duration::seconds(1);
    store
        .upsert_writes(&[write_at(&e, Utc::now())])
        .await
        .expect("upsert");
    assert!(store.entry(&key(1)).await.expect("read").is_none());
    assert!(common::items::item_exists(&store, &key(1)).await);
    assert_eq!(store.count_items().await.expect("count"), 1);
}

#[tokio::test]
async fn a_write_accepted_before_a_matching_revocation_is_dropped() {
    let (_dir, store) = open().await;
    let e = entry(1, "pol-x", "set", &["k"], None);
    let other = entry(2, "pol-y", "set-2", &["k2"], None);
    let before = write_at(&e, Utc::now() - Duration::seconds(1));
    store
        .invalidate(&invalidation(Criterion::PolicyHash("pol-x".into())))
        .await
        .expect("invalidate");
    assert!(store.invalidated_after(&before).await.expect("check"));
    let out = store
        .upsert_entries(&[before, write_at(&other, Utc::now() - Duration::seconds(1))])
        .await
        .expect("upsert");
    assert_eq!(out.written, 1);
    assert_eq!(out.invalidated, 1);
    assert_eq!(out.invalidated_keys, [key(1)]);
    assert!(!common::items::item_exists(&store, &key(1)).await);
    assert!(common::items::item_exists(&store, &key(2)).await);

    // Accepted well after the revocation (beyond the 2 s clock-skew margin): kept.
    let after = write_at(&e, Utc::now() + Duration::seconds(3));
    assert!(!store.invalidated_after(&after).await.expect("check"));
    let out = store.upsert_entries(&[after]).await.expect("upsert");
    assert_eq!((out.written, out.invalidated), (1, 0));
    assert!(store.entry(&key(1)).await.expect("read").is_some());
}

#[tokio::test]
async fn each_criterion_invalidates_exactly_its_entries() {
    let cases: Vec<(Criterion, Vec<u32>)> = vec![
        (Criterion::VeriKey(key(1)), vec![1]),
        (Criterion::SignerKeyId("k2".into()), vec![1, 2]),
        (Criterion::SignerSetHash("set-3".into()), vec![3, 4]),
        (Criterion::PolicyHash("pol-2".into()), vec![2, 3]),
        // 1.9.0 is before 1.10.0 as a version (not as text); nvd's 1.2.0 is another feed.
        (
            Criterion::FeedEpochBefore {
                feed_id: Some("osv".into()),
                before: epoch("1.10.0"),
            },
            vec![1],
        ),
        // Any feed; a time epoch does not compare with a version.
        (
            Criterion::FeedEpochBefore {
                feed_id: None,
                before: epoch("2.0.0"),
            },
            vec![1, 2, 3],
        ),
        // Instants compare as instants: 00:00Z is before 01:30+01:00 (00:30Z) but not before
        // 01:30+02:00 (23:30Z the day before).
        (
            Criterion::FeedEpochBefore {
                feed_id: Some("osv".into()),
                before: epoch("2026-01-01T01:30:00+01:00"),
            },
            vec![4],
        ),
        (
            Criterion::FeedEpochBefore {
                feed_id: Some("osv".into()),
                before: epoch("2026-01-01T01:30:00+02:00"),
            },
            vec![],
        ),
    ];
    for (criterion, expected) in cases {
        let (_dir, store) = open().await;
        seed(&store, &population()).await;
        let out = store
            .invalidate(&invalidation(criterion.clone()))
            .await
            .expect("invalidate");
        let mut deleted = out.deleted_keys.clone();
        deleted.sort();
        let expected_keys: Vec<String> = expected.iter().map(|n| key(*n)).collect();
        assert_eq!(deleted, expected_keys, "{criterion:?}");
        assert!(!out.duplicate);
        assert_eq!(out.row.entries_invalidated, expected.len() as i64);
        assert_eq!(out.row.revoked_key, criterion.value());
        assert_eq!(
            Criterion::from_metadata(&out.row.metadata).expect("metadata"),
            criterion
        );
        let remaining: Vec<String> = (1..=5).filter(|n| !expected.contains(n)).map(key).collect();
        assert_eq!(stored_keys(&store).await, remaining, "{criterion:?}");
    }
}

#[tokio::test]
async fn a_repeated_revocation_id_is_a_duplicate_with_no_second_row() {
    let (_dir, store) = open().await;
    seed(&store, &population()).await;
    let inv = invalidation(Criterion::PolicyHash("pol-1".into()));
    let first = store.invalidate(&inv).await.expect("first");
    assert_eq!(first.deleted_keys, [key(1)]);
    // The entry comes back (a later, legitimate write); the redelivered revocation must
    // not delete it again.
    store
        .upsert_writes(&[write_at(
            &population()[0],
            Utc::now() + Duration::seconds(5),
        )])
        .await
        .expect("upsert");
    let again = store.invalidate(&inv).await.expect("again");
    assert!(again.duplicate);
    assert!(again.deleted_keys.is_empty());
    assert_eq!(again.row, first.row);
    assert!(common::items::item_exists(&store, &key(1)).await);
    let stats = store.ledger_stats().await.expect("stats");
    assert_eq!(stats.total_entries, 1);
    assert_eq!(stats.total_entries_invalidated, 1);
    assert_eq!(stats.head_seq_no, first.row.seq_no);
}

#[tokio::test]
async fn the_ledger_refuses_updates_and_deletes() {
    let (_dir, store) = open().await;
    store
        .invalidate(&invalidation(Criterion::VeriKey(key(9))))
        .await
        .expect("invalidate");
    for sql in [
        "UPDATE prov_revocations SET reason = 'rewritten'",
        "DELETE FROM prov_revocations",
    ] {
        let err = sqlx::query(sql)
            .execute(store.sqlite_writer().expect("sqlite"))
            .await
            .expect_err("append-only");
        assert!(
            err.to_string().contains("prov_revocations is append-only"),
            "{sql}: {err}"
        );
    }
    let rows = store.revocations(0, 10).await.expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].reason.as_deref(), Some("test"));
}

#[tokio::test]
async fn ledger_pages_outbox_and_checkpoints_move_forward_only() {
    let (_dir, store) = open().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut inv = invalidation(Criterion::VeriKey(key(100 + n)));
        if n % 2 == 0 {
            inv.revocation_type = RevocationType::Policy;
        }
        ids.push(inv.revocation_id);
        store.invalidate(&inv).await.expect("invalidate");
    }
    let mut seen = Vec::new();
    let mut since = 0;
    loop {
        let page = store.revocations(since, 2).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        since = page.last().expect("row").seq_no;
        seen.extend(page);
    }
    assert_eq!(
        seen.iter().map(|r| r.seq_no).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        seen.iter().map(|r| r.revocation_id).collect::<Vec<_>>(),
        ids
    );
    let via_port = LedgerOutboxStore::ledger_rows(&store, 3, 10)
        .await
        .expect("rows");
    assert_eq!(via_port, seen[3..]);
    assert_eq!(ReplayStore::ledger_head(&store).await.expect("head"), 5);
    let stats = store.ledger_stats().await.expect("stats");
    assert_eq!(stats.total_entries, 5);
    assert_eq!(stats.entries_by_type.get("policy"), Some(&3));
    assert_eq!(stats.entries_by_type.get("explicit"), Some(&2));

    assert_eq!(store.published_seq_no().await.expect("outbox"), 0);
    store.set_published_seq_no(3).await.expect("set");
    store.set_published_seq_no(2).await.expect("set");
    assert_eq!(store.published_seq_no().await.expect("outbox"), 3);

    assert_eq!(store.checkpoint("node-a").await.expect("cp"), 0);
    assert_eq!(store.save_checkpoint("node-a", 4).await.expect("save"), 4);
    assert_eq!(store.save_checkpoint("node-a", 2).await.expect("save"), 4);
    assert_eq!(store.checkpoint("node-a").await.expect("cp"), 4);
    assert_eq!(store.checkpoint("node-b").await.expect("cp"), 0);
}

fn ledger_row(seq_no: i64, criterion: &Criterion, revoked_at: DateTime<Utc>) -> LedgerRow {
    LedgerRow {
        seq_no,
        revocation_id: Uuid::now_v7(),
        revocation_type: "explicit".into(),
        revoked_key: criterion.value(),
        reason: None,
        entries_invalidated: 0,
        source: "urn:other-node".into(),
        correlation_id: None,
        revoked_at,
        metadata: criterion.to_metadata(),
    }
}

#[tokio::test]
async fn replay_deletes_only_entries_accepted_no_later_than_the_revocation() {
    let revoked_at = Utc::now() - Duration::minutes(5);
    let criteria = [
        Criterion::VeriKey(key(1)),
        Criterion::SignerKeyId("k2".into()),
        Criterion::SignerSetHash("set-3".into()),
        Criterion::PolicyHash("pol-3".into()),
        Criterion::FeedEpochBefore {
            feed_id: Some("osv".into()),
            before: epoch("1.10.0"),
        },
        Criterion::FeedEpochBefore {
            feed_id: None,
            before: epoch("2.0.0"),
        },
    ];
    // Accepted before the revocation, within the 2 s margin after it, and past it.
    let times = [
        (revoked_at - Duration::minutes(1), true),
        (revoked_at + Duration::seconds(1), true),
        (revoked_at + Duration::seconds(3), false),
    ];
    for criterion in &criteria {
        for (accepted_at, goes) in times {
            let (_dir, store) = open().await;
            let (matching, others): (Vec<Entry>, Vec<Entry>) =
                population().into_iter().partition(|e| e.matches(criterion));
            assert!(!matching.is_empty(), "{criterion:?}");
            // Entries the criterion does not match stay, however early they were accepted.
            let mut writes: Vec<EntryWrite> = others
                .iter()
                .map(|e| write_at(e, revoked_at - Duration::minutes(1)))
                .collect();
            writes.extend(matching.iter().map(|e| write_at(e, accepted_at)));
            store.upsert_writes(&writes).await.expect("upsert");
            let row = ledger_row(1, criterion, revoked_at);
            let mut deleted = store
                .reapply(std::slice::from_ref(&row))
                .await
                .expect("reapply");
            deleted.sort();
            let expected: Vec<String> = if goes {
                matching.iter().map(|e| e.veri_key.clone()).collect()
            } else {
                Vec::new()
            };
            assert_eq!(deleted, expected, "{criterion:?} at {accepted_at}");
            for e in &others {
                assert!(common::items::item_exists(&store, &e.veri_key).await);
            }
            for e in &matching {
                assert_eq!(
                    common::items::item_exists(&store, &e.veri_key).await,
                    !goes,
                    "{criterion:?} at {accepted_at}"
                );
            }
            // Idempotent.
            assert!(store.reapply(&[row]).await.expect("again").is_empty());
        }
    }

    // An entry accepted after the revocation survives it; the later of two revocations of
    // the same value decides.
    let (_dir, store) = open().await;
    let e = entry(1, "pol", "set", &["k"], None);
    store
        .upsert_writes(&[write_at(&e, revoked_at + Duration::minutes(1))])
        .await
        .expect("upsert");
    let c = Criterion::PolicyHash("pol".into());
    let rows = [
        ledger_row(1, &c, revoked_at),
        ledger_row(2, &c, revoked_at + Duration::minutes(2)),
    ];
    assert!(store.reapply(&rows[..1]).await.expect("reapply").is_empty());
    assert_eq!(store.reapply(&rows).await.expect("reapply"), [key(1)]);
}

#[tokio::test]
async fn evidence_round_trips_with_paging_and_totals() {
    let (_dir, store) = open().await;
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let limits = EvidenceLimits::new(1024, 64).expect("limits");
    let (chunks, manifest) = chunk_all(limits, "application/json", &bytes).expect("chunk");
    assert_eq!(chunks.len(), 10);
    assert!(store.put_evidence(&manifest, &chunks).await.expect("put"));
    assert!(!store.put_evidence(&manifest, &chunks).await.expect("again"));
    assert_eq!(
        EvidenceStore::manifest(&store, &manifest.proof_root)
            .await
            .expect("manifest"),
        Some(manifest.clone())
    );

    let mut infos = Vec::new();
    let mut from = 0;
    loop {
        let page = store
            .chunk_infos(&manifest.proof_root, from, 3)
            .await
            .expect("infos");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        from = page.last().expect("info").index + 1;
        infos.extend(page);
    }
    assert_eq!(infos, manifest.chunks);

    let page = store
        .chunks(&manifest.proof_root, 4, 4)
        .await
        .expect("chunks");
    assert_eq!(
        page.iter().map(|c| c.index).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    let mut joined = Vec::new();
    for c in store
        .chunks(&manifest.proof_root, 0, 100)
        .await
        .expect("all")
    {
        assert_eq!(c.hash, manifest.chunks[c.index as usize].hash);
        assert_eq!(c.content_type, "application/json");
        joined.extend(c.data);
    }
    assert_eq!(joined, bytes);
    let last = store
        .chunk(&manifest.proof_root, 9)
        .await
        .expect("chunk")
        .expect("stored");
    assert_eq!(last.data, chunks[9].data);
    assert!(
        store
            .chunk(&manifest.proof_root, 10)
            .await
            .expect("chunk")
            .is_none()
    );
    assert!(
        store
            .chunk(&manifest.proof_root, u64::MAX)
            .await
            .expect("chunk")
            .is_none()
    );
    assert!(
        store
            .chunk("sha256:none", 0)
            .await
            .expect("chunk")
            .is_none()
    );

    let totals = EvidenceStore::evidence_totals(&store)
        .await
        .expect("totals");
    assert_eq!(
        (totals.roots, totals.chunks, totals.bytes),
        (1, 10, bytes.len() as u64)
    );
}

/// `rekor_entries` belongs to the Rekor migration; the columns this test fills are the
/// PostgreSQL table's required ones, so the insert works on the real table as well.
async fn insert_rekor_entry(store: &Store, uuid: &str) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS rekor_entries (uuid TEXT PRIMARY KEY, backend TEXT NOT NULL, \
         log_id TEXT NOT NULL, log_index INTEGER NOT NULL, shard_log_index INTEGER NOT NULL, \
         body BLOB NOT NULL, inclusion_proof TEXT NOT NULL, checkpoint TEXT NOT NULL)",
    )
    .execute(store.sqlite_writer().expect("sqlite"))
    .await
    .expect("rekor_entries");
    sqlx::query(
        "INSERT INTO rekor_entries \
         (uuid, backend, log_id, log_index, shard_log_index, body, inclusion_proof, checkpoint) \
         VALUES (?, 'stub', 'log', 1, 1, ?, '{}', 'note')",
    )
    .bind(uuid)
    .bind(b"body".as_slice())
    .execute(store.sqlite_writer().expect("sqlite"))
    .await
    .expect("rekor entry");
}

#[tokio::test]
async fn a_bundle_import_stores_entry_manifest_and_chunks_and_links_a_receipt() {
    let (_dir, store) = open().await;
    let bytes = vec![7u8; 4000];
    let limits = EvidenceLimits::new(1000, 16).expect("limits");
    let (chunks, manifest) = chunk_all(limits, "application/octet-stream", &bytes).expect("chunk");
    let mut e = entry(1, "pol", "set", &["k1"], None);
    e.proof_root = Some(manifest.proof_root.clone());
    let carried: Vec<(u64, Vec<u8>)> = [0usize, 2]
        .iter()
        .map(|&i| (i as u64, chunks[i].data.clone()))
        .collect();
    store.import(&e, &manifest, &carried).await.expect("import");
    assert_eq!(
        store
            .stored_indexes(&manifest.proof_root)
            .await
            .expect("indexes"),
        [0, 2]
    );
    assert_eq!(
        BundleStore::manifest(&store, &manifest.proof_root)
            .await
            .expect("manifest"),
        Some(manifest.clone())
    );
    let got = store
        .entry(&e.veri_key)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(got.proof_root, e.proof_root);
    assert_eq!(got.signer_key_ids, ["k1"]);

    // A lazy fetch stores what is missing; chunk 2 is already there.
    let fetched: Vec<(u64, Vec<u8>)> = [1usize, 2, 3]
        .iter()
        .map(|&i| (i as u64, chunks[i].data.clone()))
        .collect();
    assert_eq!(
        store
            .store_chunks(&manifest, &fetched)
            .await
            .expect("store"),
        2
    );
    assert_eq!(
        store
            .stored_indexes(&manifest.proof_root)
            .await
            .expect("indexes"),
        [0, 1, 2, 3]
    );

    assert_eq!(store.linked_receipt(&e.veri_key).await.expect("link"), None);
    let uuid = "ab".repeat(40);
    insert_rekor_entry(&store, &uuid).await;
    store.link_receipt(&e.veri_key, &uuid).await.expect("link");
    assert_eq!(
        store.linked_receipt(&e.veri_key).await.expect("link"),
        Some(uuid)
    );
    // The receipt must exist.
    assert!(store.link_receipt(&e.veri_key, "missing").await.is_err());
}

#[tokio::test]
async fn an_entry_invalidated_after_it_was_written_is_not_imported() {
    let (_dir, store) = open().await;
    let bytes = vec![1u8; 100];
    let limits = EvidenceLimits::new(64, 16).expect("limits");
    let (chunks, manifest) = chunk_all(limits, "application/octet-stream", &bytes).expect("chunk");
    let mut e = entry(1, "pol-gone", "set", &["k1"], None);
    e.created_at = Utc::now() - Duration::minutes(1);
    e.proof_root = Some(manifest.proof_root.clone());
    store
        .invalidate(&invalidation(Criterion::PolicyHash("pol-gone".into())))
        .await
        .expect("invalidate");
    let carried = vec![(0, chunks[0].data.clone())];
    let err = store
        .import(&e, &manifest, &carried)
        .await
        .expect_err("refused");
    assert!(matches!(err, PortError::Conflict(_)), "{err:?}");
    assert!(!common::items::item_exists(&store, &e.veri_key).await);
    assert!(
        BundleStore::manifest(&store, &manifest.proof_root)
            .await
            .expect("manifest")
            .is_none()
    );
    assert!(
        store
            .stored_indexes(&manifest.proof_root)
            .await
            .expect("indexes")
            .is_empty()
    );
}

/// Hands out its batches, then fails: a bundle whose second read broke off mid-way.
struct FailingAfter(Vec<provd::airgap::ChunkBatch>);

#[async_trait::async_trait]
impl provd::airgap::ChunkBatches for FailingAfter {
    async fn next_batch(&mut self) -> Result<Option<provd::airgap::ChunkBatch>, PortError> {
        if self.0.is_empty() {
            return Err(PortError::Rejected("the bundle's chunks broke off".into()));
        }
        Ok(Some(self.0.remove(0)))
    }
}

#[tokio::test]
async fn a_streamed_import_whose_chunks_fail_midway_stores_nothing() {
    let (_dir, store) = open().await;
    let bytes = vec![3u8; 4000];
    let limits = EvidenceLimits::new(1000, 16).expect("limits");
    let (chunks, manifest) = chunk_all(limits, "application/octet-stream", &bytes).expect("chunk");
    let mut e = entry(1, "pol", "set", &["k1"], None);
    e.proof_root = Some(manifest.proof_root.clone());
    let first: Vec<(u64, Vec<u8>)> = chunks[..2]
        .iter()
        .map(|c| (c.index, c.data.clone()))
        .collect();
    let err = store
        .import_batches(&e, &manifest, &mut FailingAfter(vec![first]))
        .await
        .expect_err("the failing source ends the import");
    assert!(matches!(err, PortError::Rejected(_)), "{err:?}");
    assert!(!common::items::item_exists(&store, &e.veri_key).await);
    assert!(
        BundleStore::manifest(&store, &manifest.proof_root)
            .await
            .expect("manifest")
            .is_none()
    );
    assert!(
        store
            .stored_indexes(&manifest.proof_root)
            .await
            .expect("indexes")
            .is_empty()
    );
}

#[tokio::test]
async fn rejected_events_come_back_newest_first() {
    let (_dir, store) = open().await;
    for n in 0..3u8 {
        store
            .record_rejected(&RejectedEvent {
                subject: "prov.events.invalidate".into(),
                event_id: Some(format!("ev-{n}")),
                reason: "malformed".into(),
                detail: format!("detail {n}"),
                payload: vec![n, 0, 255],
                rejected_at: Utc::now(),
            })
            .await
            .expect("record");
    }
    let got = store.rejected_events(2).await.expect("rejected");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].event_id.as_deref(), Some("ev-2"));
    assert_eq!(got[0].payload, [2, 0, 255]);
    assert_eq!(got[1].detail, "detail 1");
}

#[tokio::test]
async fn data_survives_closing_and_reopening_the_file() {
    let (dir, store) = open().await;
    let population = population();
    seed(&store, &population).await;
    let out = store
        .invalidate(&invalidation(Criterion::PolicyHash("pol-2".into())))
        .await
        .expect("invalidate");
    let (chunks, manifest) = chunk_all(
        EvidenceLimits::new(16, 16).expect("limits"),
        "text/plain",
        b"evidence that must persist",
    )
    .expect("chunk");
    assert!(store.put_evidence(&manifest, &chunks).await.expect("put"));
    store.set_published_seq_no(1).await.expect("outbox");
    store.sqlite_writer().expect("sqlite").close().await;
    store.sqlite_reader().expect("sqlite").close().await;
    drop(store);

    let store = Store::open_sqlite(dir.path()).await.expect("reopen");
    store.migrate().await.expect("migrations are idempotent");
    assert_eq!(stored_keys(&store).await, [key(1), key(4), key(5)]);
    let got = store.entry(&key(1)).await.expect("read").expect("entry");
    let want = &population[0];
    assert_eq!(got.verdict, want.verdict);
    assert_eq!(got.signer_key_ids, want.signer_key_ids);
    assert_eq!(got.feed_epoch, want.feed_epoch);
    assert_eq!(
        got.expires_at.timestamp_micros(),
        want.expires_at.timestamp_micros()
    );
    let rows = store.revocations(0, 10).await.expect("rows");
    assert_eq!(rows, [out.row]);
    assert_eq!(
        store
            .evidence_manifest(&manifest.proof_root)
            .await
            .expect("manifest"),
        Some(manifest)
    );
    assert_eq!(store.outbox_position().await.expect("outbox"), 1);
    // The sequence continues after the reopen.
    let next = store
        .invalidate(&invalidation(Criterion::VeriKey(key(5))))
        .await
        .expect("invalidate");
    assert_eq!(next.row.seq_no, 2);
}

//! Embedded-mode benchmarks: the cache's durable reads, the write-behind path and an
//! invalidation on the SQLite file and the in-process bus, each printed beside a baseline
//! measured in the same run on the same file (the bare SQL doing the same rows). The
//! distributed figures of the same paths are `benches/provcache.rs` and `benches/ledger.rs`;
//! `just bench` prints them together.
//!
//! * Durable reads: `EntryStore::get_entry` (what a read that misses the in-process tier
//!   runs) beside a bare `SELECT` of the same row.
//! * Write-behind, queue side: publishing 20 000 writes to the in-process bus (what a `202`
//!   answer waits for) beside a bare `INSERT` of the same bytes, one transaction each: once
//!   strictly one at a time, once from [`PUBLISHERS`] tasks at once, as concurrent requests
//!   publish (the bare baseline from as many tasks on the one writer connection).
//! * Write-behind, flush side: pulling those writes (both sets) in batches, upserting each
//!   batch in one transaction and acknowledging it, as the flusher does, beside a bare
//!   `INSERT` of the same rows in the same batches.
//! * Invalidating 100 000 entries by one signer key (the entries' deletion and the ledger row in
//!   one transaction, then the in-process tier's purge) beside a bare `DELETE` of the rows.
//!
//! Needs no services: everything is in a temporary data directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use actors::domain::invalidation::{Criterion, Invalidation, RevocationType};
use actors::ports::{
    ConsumerSpec, EntryStore, EntryTier, EventBus, HotCachePurge, InvalidationStore, StartPosition,
};
use chrono::Utc;
use events::Subjects;
use events::streams::{PROVCACHE_WRITES, PROVCACHE_WRITES_SUBJECT};
use provd::adapters::local_bus::LocalBus;
use provd::adapters::memory::MemoryTier;
use provd::storage::Store;

const READS: usize = 20_000;
const WRITES: usize = 20_000;
const BATCH: usize = 5_000;
const ENTRIES: usize = 100_000;
/// Concurrent publishers in the concurrent queue-side figure.
const PUBLISHERS: usize = 64;

fn entry(i: usize, key: &str) -> Entry {
    let now = Utc::now();
    let verdict = serde_json::json!({"decision": "allow", "n": i});
    Entry {
        veri_key: format!("sha256:{i:064x}"),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: None,
        trust_score: 80,
        policy_hash: format!("sha256:{}", "cd".repeat(32)),
        // A set per key, so each phase's invalidation names only its own entries.
        signer_set_hash: format!("sha256:set-{key}"),
        signer_key_ids: vec![key.to_owned(), "key-other".into()],
        feed_id: Some(format!("feed-{}", i % 100)),
        feed_epoch: Some("1.0.0".into()),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

fn write(e: Entry, accepted_at: chrono::DateTime<Utc>) -> EntryWrite {
    EntryWrite {
        write_id: uuid::Uuid::now_v7(),
        accepted_at,
        entry: e,
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn scratch(store: &Store) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_scratch \
         (id INTEGER PRIMARY KEY, k TEXT NOT NULL, payload BLOB NOT NULL)",
    )
    .execute(store.sqlite_writer().expect("sqlite"))
    .await
    .expect("scratch table");
}

async fn durable_reads(store: &Store) {
    let past = Utc::now() - chrono::Duration::days(1);
    let writes: Vec<EntryWrite> = (0..READS)
        .map(|i| write(entry(i, "key-read"), past))
        .collect();
    for chunk in writes.chunks(BATCH) {
        store.upsert_entries(chunk).await.expect("seed");
    }
    let keys: Vec<String> = (0..READS)
        .map(|i| format!("sha256:{:064x}", (i * 7919) % READS))
        .collect();
    let t = Instant::now();
    for k in &keys {
        assert!(store.get_entry(k).await.expect("get").is_some());
    }
    let ours = rate(READS, t.elapsed());
    let t = Instant::now();
    for k in &keys {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT verdict FROM provcache_items WHERE veri_key = ?1")
                .bind(k)
                .fetch_optional(store.sqlite_reader().expect("sqlite"))
                .await
                .expect("select");
        assert!(row.is_some());
    }
    let bare = rate(READS, t.elapsed());
    println!(
        "durable read from SQLite (get_entry, signer keys joined, expiry checked) {ours:>8.0}/s | bare SELECT of the row {bare:>8.0}/s | ratio {:.2}×",
        ours / bare
    );
}

async fn write_behind(store: &Store, bus: &LocalBus, subjects: &Subjects) {
    let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
    let now = Utc::now();
    let writes: Vec<EntryWrite> = (0..WRITES)
        .map(|i| write(entry(READS + i, "key-write"), now))
        .collect();
    let payloads: Vec<(String, Vec<u8>)> = writes
        .iter()
        .map(|w| (w.write_id.to_string(), w.to_json()))
        .collect();

    // Queue side: what a 202 waits for, one write at a time.
    let t = Instant::now();
    for (id, payload) in &payloads {
        bus.publish(&subject, id, payload.clone())
            .await
            .expect("publish");
    }
    let ours = rate(WRITES, t.elapsed());
    scratch(store).await;
    let t = Instant::now();
    for (id, payload) in &payloads {
        sqlx::query("INSERT INTO bench_scratch (k, payload) VALUES (?1, ?2)")
            .bind(id)
            .bind(payload)
            .execute(store.sqlite_writer().expect("sqlite"))
            .await
            .expect("insert");
    }
    let bare = rate(WRITES, t.elapsed());
    println!(
        "write-behind queue, one publisher: publish to the in-process bus {ours:>8.0} writes/s | bare INSERT of the same bytes, a transaction each {bare:>8.0}/s | ratio {:.2}×",
        ours / bare
    );

    // Queue side as a server sees it: many requests publishing at once, each answered
    // after its own commit. Fresh writes, so none is a duplicate of the first set.
    let more: Vec<EntryWrite> = (0..WRITES)
        .map(|i| write(entry(READS + WRITES + i, "key-write"), now))
        .collect();
    let shares = |items: Vec<(String, Vec<u8>)>| {
        let mut shares: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); PUBLISHERS];
        for (i, item) in items.into_iter().enumerate() {
            shares[i % PUBLISHERS].push(item);
        }
        shares
    };
    let more_payloads: Vec<(String, Vec<u8>)> = more
        .iter()
        .map(|w| (w.write_id.to_string(), w.to_json()))
        .collect();
    let t = Instant::now();
    let tasks: Vec<_> = shares(more_payloads.clone())
        .into_iter()
        .map(|share| {
            let (bus, subject) = (bus.clone(), subject.clone());
            tokio::spawn(async move {
                for (id, payload) in share {
                    bus.publish(&subject, &id, payload).await.expect("publish");
                }
            })
        })
        .collect();
    for r in futures::future::join_all(tasks).await {
        r.expect("publisher");
    }
    let ours = rate(WRITES, t.elapsed());
    let t = Instant::now();
    let tasks: Vec<_> = shares(more_payloads)
        .into_iter()
        .map(|share| {
            let writer = store.sqlite_writer().expect("sqlite").clone();
            tokio::spawn(async move {
                for (id, payload) in share {
                    sqlx::query("INSERT INTO bench_scratch (k, payload) VALUES (?1, ?2)")
                        .bind(id)
                        .bind(payload)
                        .execute(&writer)
                        .await
                        .expect("insert");
                }
            })
        })
        .collect();
    for r in futures::future::join_all(tasks).await {
        r.expect("inserter");
    }
    let bare = rate(WRITES, t.elapsed());
    println!(
        "write-behind queue, {PUBLISHERS} publishers at once: publish to the in-process bus {ours:>8.0} writes/s | bare INSERT of the same bytes, a transaction each, from {PUBLISHERS} tasks {bare:>8.0}/s | ratio {:.2}×",
        ours / bare
    );
    let writes: Vec<EntryWrite> = writes.into_iter().chain(more).collect();
    let total = writes.len();

    // Flush side: pull a batch, upsert it in one transaction, ack every message.
    let spec = ConsumerSpec {
        stream: subjects.stream_name(&PROVCACHE_WRITES),
        durable: "bench-flusher".into(),
        filter_subject: subject.clone(),
        start: StartPosition::All,
        ack_wait: Duration::from_secs(60),
        max_deliver: -1,
        max_ack_pending: (2 * BATCH) as i64,
    };
    let mut sub = bus.subscribe(&spec).await.expect("subscribe");
    let t = Instant::now();
    let mut flushed = 0;
    while flushed < total {
        let batch = sub
            .next_batch(BATCH, Duration::from_secs(5))
            .await
            .expect("pull");
        assert!(!batch.is_empty(), "the bus ran dry at {flushed}");
        let decoded: Vec<EntryWrite> = batch
            .iter()
            .map(|d| serde_json::from_slice(d.payload()).expect("write"))
            .collect();
        let out = store.upsert_entries(&decoded).await.expect("upsert");
        assert_eq!(out.written as usize, decoded.len());
        // As the flusher does: every ack of the batch at once.
        for r in futures::future::join_all(batch.iter().map(|d| d.ack())).await {
            r.expect("ack");
        }
        flushed += batch.len();
    }
    let ours = rate(total, t.elapsed());
    let t = Instant::now();
    for chunk in writes.chunks(BATCH) {
        let mut tx = store
            .sqlite_writer()
            .expect("sqlite")
            .begin()
            .await
            .expect("begin");
        for w in chunk {
            sqlx::query("INSERT INTO bench_scratch (k, payload) VALUES (?1, ?2)")
                .bind(&w.entry.veri_key)
                .bind(w.entry.verdict.to_string().into_bytes())
                .execute(&mut *tx)
                .await
                .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let bare = rate(total, t.elapsed());
    println!(
        "write-behind flush: pull, upsert in batches of {BATCH}, ack {ours:>8.0} writes/s | bare INSERT of the rows in the same batches {bare:>8.0}/s | ratio {:.2}×",
        ours / bare
    );
}

async fn invalidation(store: &Store) {
    let past = Utc::now() - chrono::Duration::days(1);
    let memory = MemoryTier::new(2 * ENTRIES as u64);
    let entries: Vec<Entry> = (0..ENTRIES)
        .map(|i| entry(1_000_000 + i, "key-bench"))
        .collect();
    let (entries, memory) = (&entries, &memory);
    let fill = |accepted_at: chrono::DateTime<Utc>| async move {
        let writes: Vec<EntryWrite> = entries
            .iter()
            .map(|e| write(e.clone(), accepted_at))
            .collect();
        for chunk in writes.chunks(BATCH) {
            store.upsert_entries(chunk).await.expect("fill");
        }
        for e in entries {
            memory.put(&Arc::new(e.clone())).await.expect("memory put");
        }
    };
    let provcache = actors::provcache::ProvCache::new(
        vec![Arc::new(memory.clone()) as Arc<dyn EntryTier>],
        Arc::new(store.clone()),
        Arc::new(actors::testing::MemoryBus::new()),
        "bench.provcache.writes".into(),
        false,
    );
    fill(past).await;
    let inv = Invalidation {
        revocation_id: uuid::Uuid::now_v7(),
        revocation_type: RevocationType::Signer,
        criterion: Criterion::SignerKeyId("key-bench".into()),
        reason: Some("bench".into()),
        source: "urn:bench".into(),
        correlation_id: None,
        traceparent: None,
    };
    let t = Instant::now();
    let outcome = store.invalidate(&inv).await.expect("invalidate");
    let durable = t.elapsed();
    provcache.purge(&outcome.deleted_keys).await.expect("purge");
    let ours = t.elapsed();
    assert_eq!(outcome.deleted_keys.len(), ENTRIES);

    // Accepted after the revocation (and its clock-skew margin), so the upsert keeps them.
    fill(Utc::now() + chrono::Duration::seconds(5)).await;
    let t = Instant::now();
    // As in the distributed benchmark: the same rows by their signer set, no key lookup.
    let n = sqlx::query("DELETE FROM provcache_items WHERE signer_set_hash = ?1")
        .bind("sha256:set-key-bench")
        .execute(store.sqlite_writer().expect("sqlite"))
        .await
        .expect("delete")
        .rows_affected();
    let bare = t.elapsed();
    assert_eq!(n as usize, ENTRIES);
    println!(
        "invalidate {ENTRIES} entries by one signer key in SQLite: {:>8.1} ms (durable {:.1} ms + in-process purge {:.1} ms) | bare DELETE {:>8.1} ms | ratio {:.2}×",
        ms(ours),
        ms(durable),
        ms(ours - durable),
        ms(bare),
        ms(ours) / ms(bare).max(1e-9)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported by this harness.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _metrics = provd::telemetry::metrics();
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("data directory");
        let store = Store::open_sqlite(dir.path()).await.expect("open");
        store.migrate().await.expect("migrate");
        let subjects = Subjects::new("bench");
        let bus = LocalBus::open(&store, subjects.clone()).await.expect("bus");
        println!(
            "embedded-mode benchmarks on {} (ours | baseline from the same run | ours ÷ baseline)",
            store.sqlite_path().expect("sqlite").display()
        );
        durable_reads(&store).await;
        write_behind(&store, &bus, &subjects).await;
        invalidation(&store).await;
    });
}

//! Provenance-cache benchmarks, each printed beside a baseline measured in the same run.
//!
//! * In-process hit through `ProvCache::get` vs a plain `HashMap` lookup behind a mutex.
//! * Valkey/Redis hit through `ProvCache::get` (Redis tier only) vs a raw `GET` on the very
//!   connection the tier uses (its `ConnectionManager`), p50 and p99.
//! * Write-behind upsert (`Store::upsert_writes`, batches of 5000, one or two in flight,
//!   and batches of 1000) vs row-by-row INSERT … ON CONFLICT and vs COPY of the same rows in
//!   the same batches, in entries per second.
//!
//! Service URLs: `PROVD_TEST_DATABASE_URL`, `PROVD_TEST_REDIS_URL` (the test defaults). A
//! benchmark whose service is unreachable is skipped with a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::domain::entry::{Entry, EntryWrite, verdict_hash};
use actors::ports::{EntryStore, EntryTier, PortError, UpsertOutcome};
use actors::provcache::ProvCache;
use actors::testing::MemoryBus;
use async_trait::async_trait;
use chrono::Utc;
use provd::adapters::memory::MemoryTier;
use provd::adapters::redis::RedisCache;
use provd::storage::Store;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

mod common;
use common::reachable;

/// A durable tier that holds nothing, so only the tiers above are measured.
struct NoStore;

#[async_trait]
impl EntryStore for NoStore {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn get_entry(&self, _veri_key: &str) -> Result<Option<Entry>, PortError> {
        Ok(None)
    }
    async fn upsert_entries(&self, _w: &[EntryWrite]) -> Result<UpsertOutcome, PortError> {
        Ok(UpsertOutcome::default())
    }
    async fn invalidated_after(&self, _w: &EntryWrite) -> Result<bool, PortError> {
        Ok(false)
    }
}

fn entry(i: usize) -> Entry {
    let now = Utc::now();
    let verdict = serde_json::json!({"decision": "allow", "rules": ["r1", "r2"], "n": i});
    Entry {
        veri_key: format!("sha256:{:064x}", i),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: Some(format!("sha256:{}", "ab".repeat(32))),
        trust_score: 80,
        policy_hash: format!("sha256:{}", "cd".repeat(32)),
        signer_set_hash: format!("sha256:{}", "ef".repeat(32)),
        signer_key_ids: vec!["key-a".into(), "key-b".into()],
        feed_id: Some("osv".into()),
        feed_epoch: Some("2026.11.22".into()),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn row(name: &str, ours: &Stats, base: &Stats) {
    println!(
        "{name:<34} p50 {:>8.2} µs  p99 {:>8.2} µs | baseline p50 {:>8.2} µs  p99 {:>8.2} µs | ratio p50 {:>5.2}×  p99 {:>5.2}×",
        us(ours.p50),
        us(ours.p99),
        us(base.p50),
        us(base.p99),
        us(ours.p50) / us(base.p50).max(1e-9),
        us(ours.p99) / us(base.p99).max(1e-9),
    );
}

async fn in_process() {
    const N: usize = 200_000;
    const KEYS: usize = 1000;
    let memory = MemoryTier::new(100_000);
    let tiers: Vec<Arc<dyn EntryTier>> = vec![Arc::new(memory)];
    let cache = ProvCache::new(
        tiers,
        Arc::new(NoStore),
        Arc::new(MemoryBus::new()),
        "bench.provcache.writes".into(),
        false,
    );
    let map: Mutex<HashMap<String, Arc<Entry>>> = Mutex::new(HashMap::new());
    for i in 0..KEYS {
        let e = entry(i);
        cache.put(e.clone()).await.expect("put");
        map.lock()
            .expect("lock")
            .insert(e.veri_key.clone(), Arc::new(e));
    }
    let keys: Vec<String> = (0..KEYS).map(|i| entry(i).veri_key).collect();
    let mut ours = Vec::with_capacity(N);
    let mut base = Vec::with_capacity(N);
    for i in 0..N {
        let k = &keys[i % KEYS];
        let t = Instant::now();
        let hit = cache.get(k).await.expect("get");
        ours.push(t.elapsed());
        assert!(hit.is_some());
        let t = Instant::now();
        // The baseline hands out a shared reference too, as the tiers do.
        let hit = map.lock().expect("lock").get(k).map(Arc::clone);
        base.push(t.elapsed());
        assert!(hit.is_some());
    }
    row(
        "in-process hit (vs HashMap+Mutex)",
        &stats(ours),
        &stats(base),
    );
}

async fn valkey(url: &str) {
    const N: usize = 20_000;
    let prefix = format!("bench{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisCache::new(url, &prefix).expect("redis url");
    let e = entry(7);
    EntryTier::put(&redis, &Arc::new(e.clone()))
        .await
        .expect("redis put");
    let tiers: Vec<Arc<dyn EntryTier>> = vec![Arc::new(redis.clone())];
    let cache = ProvCache::new(
        tiers,
        Arc::new(NoStore),
        Arc::new(MemoryBus::new()),
        "bench.provcache.writes".into(),
        false,
    );
    // The very connection the tier uses: same kind, same settings (timeouts, retries).
    let mut raw = redis.connection().await.expect("raw connection");
    let key = redis.entry_key(&e.veri_key);
    // Warm both connections up.
    for _ in 0..200 {
        let _ = cache.get(&e.veri_key).await;
        let _: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("get");
    }
    let mut ours = Vec::with_capacity(N);
    let mut base = Vec::with_capacity(N);
    // Interleaved so both see the same machine load.
    for _ in 0..N {
        let t = Instant::now();
        let (_, served) = cache.get(&e.veri_key).await.expect("get").expect("hit");
        ours.push(t.elapsed());
        assert_eq!(served.as_str(), "valkey");
        let t = Instant::now();
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .expect("get");
        base.push(t.elapsed());
        assert!(v.is_some());
    }
    row("valkey hit (vs raw GET)", &stats(ours), &stats(base));
    let _ = actors::ports::HotCachePurge::purge(&redis, &[e.veri_key]).await;
}

fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    format!("{}/{db}", &url[..path_start])
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn truncate(store: &Store) {
    sqlx::query("TRUNCATE provcache.provcache_items, provcache.prov_signer_set_members")
        .execute(store.pg_pool().expect("postgres"))
        .await
        .expect("truncate");
}

/// Upserts `writes` in batches of `batch` with `in_flight` flushes running at once, each
/// taking the next batch as the flusher would; entries per second.
async fn upsert_rate(store: &Store, writes: &[EntryWrite], batch: usize, in_flight: usize) -> f64 {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let chunks: Vec<&[EntryWrite]> = writes.chunks(batch).collect();
    let t = Instant::now();
    let flushers = (0..in_flight).map(|_| async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(chunk) = chunks.get(i) else { break };
            let out = store.upsert_writes(chunk).await.expect("upsert");
            assert_eq!(out.written as usize, chunk.len());
        }
    });
    futures::future::join_all(flushers).await;
    rate(writes.len(), t.elapsed())
}

/// The same rows as CSV for COPY (text format, the verdict JSON quoted).
fn csv(batch: &[EntryWrite]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(batch.len() * 512);
    for w in batch {
        let e = &w.entry;
        let verdict = serde_json::to_string(&e.verdict)
            .expect("json")
            .replace('"', "\"\"");
        writeln!(
            out,
            "{},\"{}\",{},{},{},{},{},{},{},{},{},{}",
            e.veri_key,
            verdict,
            e.verdict_hash,
            e.proof_root.as_deref().unwrap_or(""),
            e.trust_score,
            e.policy_hash,
            e.signer_set_hash,
            e.feed_id.as_deref().unwrap_or(""),
            e.feed_epoch.as_deref().unwrap_or(""),
            e.created_at.to_rfc3339(),
            w.accepted_at.to_rfc3339(),
            e.expires_at.to_rfc3339(),
        )
        .expect("write");
    }
    out
}

async fn postgres(admin_url: &str) {
    const N: usize = 100_000;
    // `provcache.flush_batch`'s default.
    const BATCH: usize = 5000;
    const SMALL: usize = 1000;
    let name = format!(
        "provd_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut admin = PgConnection::connect(admin_url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let store = Store::connect_postgres(&with_database(admin_url, &name))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let t0 = Utc::now();
    let writes: Vec<EntryWrite> = (0..N)
        .map(|i| EntryWrite {
            write_id: uuid::Uuid::now_v7(),
            accepted_at: t0,
            entry: entry(i),
        })
        .collect();

    // Warm-up (connections, catalog and buffer caches), not measured.
    upsert_rate(&store, &writes[..10 * SMALL], SMALL, 2).await;
    truncate(&store).await;

    // Ours: what the flusher runs per batch (shared flush lock, invalidation check, one
    // statement for items and signer-set members, commit), at the default batch size with
    // two flushes in flight, as the flusher runs them.
    let ours = upsert_rate(&store, &writes, BATCH, 2).await;
    truncate(&store).await;
    let one = upsert_rate(&store, &writes, BATCH, 1).await;
    truncate(&store).await;
    let small = upsert_rate(&store, &writes, SMALL, 1).await;
    truncate(&store).await;

    // Baseline 1: the same rows, one INSERT … ON CONFLICT per row (the same upsert),
    // committed per batch.
    let t = Instant::now();
    for batch in writes.chunks(BATCH) {
        let mut tx = store
            .pg_pool()
            .expect("postgres")
            .begin()
            .await
            .expect("begin");
        for w in batch {
            let e = &w.entry;
            sqlx::query(
                "INSERT INTO provcache.provcache_items \
                 (veri_key, verdict, verdict_hash, proof_root, trust_score, policy_hash, \
                  signer_set_hash, feed_id, feed_epoch, created_at, updated_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (veri_key) DO UPDATE SET verdict = EXCLUDED.verdict, \
                  verdict_hash = EXCLUDED.verdict_hash, proof_root = EXCLUDED.proof_root, \
                  trust_score = EXCLUDED.trust_score, policy_hash = EXCLUDED.policy_hash, \
                  signer_set_hash = EXCLUDED.signer_set_hash, feed_id = EXCLUDED.feed_id, \
                  feed_epoch = EXCLUDED.feed_epoch, created_at = EXCLUDED.created_at, \
                  updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at \
                 WHERE provcache.provcache_items.updated_at <= EXCLUDED.updated_at",
            )
            .bind(&e.veri_key)
            .bind(&e.verdict)
            .bind(&e.verdict_hash)
            .bind(&e.proof_root)
            .bind(e.trust_score)
            .bind(&e.policy_hash)
            .bind(&e.signer_set_hash)
            .bind(&e.feed_id)
            .bind(&e.feed_epoch)
            .bind(e.created_at)
            .bind(w.accepted_at)
            .bind(e.expires_at)
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let row_by_row = rate(N, t.elapsed());
    truncate(&store).await;

    // Baseline 2: COPY of the same rows (text CSV) in the same batches, one transaction
    // each; a plain load into the empty table, no conflict handling, no members. Once on
    // one connection, and once on two at a time, as the flusher runs two flushes.
    let copy_rate = |in_flight: usize| {
        let store = &store;
        let writes = &writes;
        async move {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let chunks: Vec<&[EntryWrite]> = writes.chunks(BATCH).collect();
            let t = Instant::now();
            let loaders = (0..in_flight).map(|_| async {
                let mut conn = store
                    .pg_pool()
                    .expect("postgres")
                    .acquire()
                    .await
                    .expect("conn");
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    let mut copy = conn
                        .copy_in_raw(
                            "COPY provcache.provcache_items (veri_key, verdict, verdict_hash, \
                             proof_root, trust_score, policy_hash, signer_set_hash, feed_id, \
                             feed_epoch, created_at, updated_at, expires_at) \
                             FROM STDIN WITH (FORMAT csv)",
                        )
                        .await
                        .expect("copy");
                    copy.send(csv(chunk)).await.expect("send");
                    copy.finish().await.expect("finish");
                }
            });
            futures::future::join_all(loaders).await;
            rate(writes.len(), t.elapsed())
        }
    };
    let copy = copy_rate(1).await;
    truncate(&store).await;
    let copy2 = copy_rate(2).await;
    truncate(&store).await;

    println!(
        "write-behind upsert into PostgreSQL  {ours:>8.0} entries/s ({N} rows, batches of {BATCH}, two flushes in flight as the flusher runs) \
         | row-by-row INSERT {row_by_row:>8.0}/s (ratio {:.1}×) | COPY {copy:>8.0}/s (ratio {:.2}×) | COPY on two connections {copy2:>8.0}/s (ratio {:.2}×) | goal ≥ 50000/s: {}",
        ours / row_by_row,
        ours / copy,
        ours / copy2,
        if ours >= 50_000.0 { "met" } else { "NOT met" },
    );
    println!(
        "  same upsert, one flush at a time: batches of {BATCH} {one:>8.0}/s (ratio to COPY {:.2}×), batches of {SMALL} {small:>8.0}/s (ratio to COPY {:.2}×)",
        one / copy,
        small / copy,
    );
    store.pg_pool().expect("postgres").close().await;
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported by this harness.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The service's own recorder, so metric updates cost what they cost in provd.
    let _metrics = provd::telemetry::metrics();
    rt.block_on(async {
        let db = std::env::var("PROVD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let redis_url = std::env::var("PROVD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        println!("provcache benchmarks (ours | baseline from the same run | ours ÷ baseline)");
        in_process().await;
        if reachable(&redis_url, 6379) {
            valkey(&redis_url).await;
        } else {
            println!("SKIPPED valkey hit: Redis unreachable at {redis_url}");
        }
        if reachable(&db, 5432) {
            postgres(&db).await;
        } else {
            println!("SKIPPED write-behind upsert: PostgreSQL unreachable at {db}");
        }
    });
}

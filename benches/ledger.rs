//! Revocation-ledger benchmarks, each printed beside a baseline measured in the same run.
//!
//! * Invalidating 100 000 entries by one signer key, as the invalidator does it (one
//!   transaction deleting the entries and appending the ledger row, then the purge of the
//!   in-process and Valkey/Redis tiers), and as another node's ledger consumer does it (a
//!   sweep of its hot tiers by the key), beside a bare `DELETE` of the same rows.
//! * Replaying a 1 000 000-row ledger through the one replay (`Replayer`, re-applying every
//!   batch to PostgreSQL and both hot tiers and saving the checkpoint), beside a bare read
//!   of the same rows in the same pages.
//!
//! Service URLs: `PROVD_TEST_DATABASE_URL`, `PROVD_TEST_REDIS_URL` (the test defaults). The
//! benchmark is skipped with a message when a service is unreachable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::domain::entry::{Entry, verdict_hash};
use actors::domain::invalidation::{Criterion, Invalidation, RevocationType};
use actors::ledger_replay::{ReplayOptions, Replayer};
use actors::ports::{EntryTier, HotCachePurge, HotTierSweep, InvalidationStore, PortError};
use chrono::Utc;
use futures::StreamExt;
use provd::adapters::hot_sweep::HotTiers;
use provd::adapters::memory::MemoryTier;
use provd::adapters::redis::RedisCache;
use provd::storage::Store;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

mod common;
use common::reachable;

const ENTRIES: usize = 100_000;
const LEDGER_ROWS: i64 = 1_000_000;

fn entry(i: usize, signer_set: &str, key: &str) -> Entry {
    let now = Utc::now();
    let verdict = serde_json::json!({"decision": "allow", "n": i});
    Entry {
        veri_key: format!("sha256:{i:064x}"),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: None,
        trust_score: 80,
        policy_hash: format!("sha256:{}", "cd".repeat(32)),
        signer_set_hash: signer_set.to_owned(),
        signer_key_ids: vec![key.to_owned(), "key-other".into()],
        feed_id: Some(format!("feed-{}", i % 100)),
        feed_epoch: Some("1.0.0".into()),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    }
}

fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    format!("{}/{db}", &url[..path_start])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Stores the entries durably, as accepted a day ago (before any revocation of the run),
/// and in both hot tiers.
async fn fill(store: &Store, memory: &MemoryTier, redis: &RedisCache, entries: &[Entry]) {
    for chunk in entries.chunks(10_000) {
        let col = |f: fn(&Entry) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        sqlx::query(
            "INSERT INTO provcache.provcache_items (veri_key, verdict, verdict_hash, \
             trust_score, policy_hash, signer_set_hash, feed_id, feed_epoch, created_at, \
             updated_at, expires_at) \
             SELECT k, '{}'::jsonb, 'sha256:bench', 80, p, s, f, '1.0.0', now(), \
              now() - interval '1 day', now() + interval '1 hour' \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS t(k, p, s, f) \
             ON CONFLICT (veri_key) DO UPDATE SET signer_set_hash = EXCLUDED.signer_set_hash",
        )
        .bind(col(|e| e.veri_key.clone()))
        .bind(col(|e| e.policy_hash.clone()))
        .bind(col(|e| e.signer_set_hash.clone()))
        .bind(col(|e| e.feed_id.clone().unwrap_or_default()))
        .execute(store.pg_pool().expect("postgres"))
        .await
        .expect("fill");
        let (sets, keys): (Vec<String>, Vec<String>) = chunk
            .iter()
            .flat_map(|e| {
                e.signer_key_ids
                    .iter()
                    .map(|k| (e.signer_set_hash.clone(), k.clone()))
            })
            .unzip();
        sqlx::query(
            "INSERT INTO provcache.prov_signer_set_members (signer_set_hash, key_id) \
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&sets)
        .bind(&keys)
        .execute(store.pg_pool().expect("postgres"))
        .await
        .expect("members");
    }
    fill_hot(memory, redis, entries).await;
}

async fn fill_hot(memory: &MemoryTier, redis: &RedisCache, entries: &[Entry]) {
    futures::stream::iter(entries)
        .for_each_concurrent(256, |e| async move {
            let e = std::sync::Arc::new(e.clone());
            memory.put(&e).await.expect("memory put");
            redis.put(&e).await.expect("redis put");
        })
        .await;
}

async fn invalidation(store: &Store, redis_url: &str, prefix: &str) {
    let memory = MemoryTier::new(2 * ENTRIES as u64);
    let redis = RedisCache::new(redis_url, prefix).expect("redis");
    let set = format!("sha256:{}", "ef".repeat(32));
    let entries: Vec<Entry> = (0..ENTRIES).map(|i| entry(i, &set, "key-bench")).collect();
    let tiers: Vec<Arc<dyn EntryTier>> = vec![Arc::new(memory.clone()), Arc::new(redis.clone())];
    let provcache = actors::provcache::ProvCache::new(
        tiers,
        Arc::new(store.clone()),
        Arc::new(actors::testing::MemoryBus::new()),
        "bench.provcache.writes".into(),
        false,
    );
    let hot = HotTiers::new(Some(memory.clone()), Some(redis.clone()));

    // Warm-up round, not measured.
    fill(store, &memory, &redis, &entries[..10_000]).await;
    sqlx::query("DELETE FROM provcache.provcache_items")
        .execute(store.pg_pool().expect("postgres"))
        .await
        .expect("delete");

    // Ours, as the invalidator: one transaction, then the purge of both hot tiers.
    fill(store, &memory, &redis, &entries).await;
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
    assert!(
        redis
            .get_entry(&entries[7].veri_key)
            .await
            .expect("get")
            .is_none()
    );

    // Where the purge's time goes: each tier on its own, in the purge's order.
    fill_hot(&memory, &redis, &entries).await;
    let t = Instant::now();
    redis
        .remove(&outcome.deleted_keys)
        .await
        .expect("valkey purge");
    let valkey = t.elapsed();
    let t = Instant::now();
    memory
        .remove(&outcome.deleted_keys)
        .await
        .expect("memory purge");
    let in_process = t.elapsed();
    println!(
        "  purge by tier: Valkey {:.1} ms, in-process {:.1} ms",
        ms(valkey),
        ms(in_process)
    );

    // Ours, as another node's ledger consumer: a sweep of its hot tiers by the key.
    fill_hot(&memory, &redis, &entries).await;
    let t = Instant::now();
    let swept = hot
        .sweep(&[Criterion::SignerKeyId("key-bench".into())], &[])
        .await
        .expect("sweep");
    let sweep = t.elapsed();
    assert_eq!(swept.len(), ENTRIES);

    // Baseline: a bare DELETE of the same rows.
    fill(store, &memory, &redis, &entries).await;
    let t = Instant::now();
    let n = sqlx::query("DELETE FROM provcache.provcache_items WHERE signer_set_hash = $1")
        .bind(&set)
        .execute(store.pg_pool().expect("postgres"))
        .await
        .expect("delete")
        .rows_affected();
    let bare = t.elapsed();
    assert_eq!(n as usize, ENTRIES);
    println!(
        "invalidate {ENTRIES} entries by one signer key: {:>8.1} ms (durable {:.1} ms + hot-tier purge {:.1} ms) | bare DELETE {:>8.1} ms | ratio {:.2}×",
        ms(ours),
        ms(durable),
        ms(ours - durable),
        ms(bare),
        ms(ours) / ms(bare).max(1e-9)
    );
    println!(
        "  another node's hot-tier sweep by the key (memory + Valkey): {:>8.1} ms ({:.0} entries/s)",
        ms(sweep),
        ENTRIES as f64 / sweep.as_secs_f64()
    );
    // Leave Redis clean.
    hot.sweep(&[Criterion::SignerKeyId("key-bench".into())], &[])
        .await
        .expect("sweep");
}

/// Which tiers a replay variant purges.
#[derive(Debug, Clone, Copy)]
enum Tiers {
    /// In-process and Valkey/Redis, as a node runs it.
    Both,
    /// Valkey/Redis only, as `provd replay` runs it.
    RedisOnly,
    /// PostgreSQL only, to show what the hot tiers cost.
    DurableOnly,
}

/// No hot tier.
struct NoHot;

#[async_trait::async_trait]
impl HotTierSweep for NoHot {
    async fn sweep(&self, _c: &[Criterion], _k: &[String]) -> Result<Vec<String>, PortError> {
        Ok(Vec::new())
    }
}

async fn replay(store: &Store, redis_url: &str, prefix: &str) {
    // A ledger of every criterion kind, as the invalidators write it.
    let t = Instant::now();
    sqlx::query(
        "INSERT INTO provcache.prov_revocations (revocation_id, revocation_type, revoked_key, \
         reason, entries_invalidated, source, revoked_at, metadata) \
         SELECT gen_random_uuid(), \
                (ARRAY['explicit','signer','signer','policy','feed_epoch'])[g % 5 + 1], \
                'k' || g, 'bench', 1, 'urn:bench', now(), \
                CASE g % 5 \
                  WHEN 0 THEN jsonb_build_object('criterion', 'veri_key', 'value', \
                              'sha256:' || lpad(to_hex(g), 64, '0')) \
                  WHEN 1 THEN jsonb_build_object('criterion', 'signer_key_id', 'value', 'key-' || g) \
                  WHEN 2 THEN jsonb_build_object('criterion', 'signer_set_hash', 'value', 'sha256:set-' || g) \
                  WHEN 3 THEN jsonb_build_object('criterion', 'policy_hash', 'value', 'sha256:pol-' || g) \
                  ELSE jsonb_build_object('criterion', 'feed_epoch_before', 'value', '0.' || (g % 7) || '.0', \
                              'feed_id', 'feed-' || (g % 100)) \
                END \
         FROM generate_series(1, $1) AS g",
    )
    .bind(LEDGER_ROWS)
    .execute(store.pg_pool().expect("postgres"))
    .await
    .expect("ledger");
    println!(
        "  (built a {LEDGER_ROWS}-row ledger in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    // Some live entries in every tier, so the replay's deletes and sweeps find work.
    let memory = MemoryTier::new(200_000);
    let redis = RedisCache::new(redis_url, prefix).expect("redis");
    let entries: Vec<Entry> = (0..10_000)
        .map(|i| {
            entry(
                i,
                &format!("sha256:set-{}", i * 5 + 2),
                &format!("key-{}", i * 5 + 1),
            )
        })
        .collect();
    fill(store, &memory, &redis, &entries).await;
    // What autovacuum would have done by now after the invalidation benchmark's 300 000 dead
    // rows; without it every statement plans against stale statistics over a bloated table.
    sqlx::query("VACUUM ANALYZE provcache.provcache_items, provcache.prov_signer_set_members")
        .execute(store.pg_pool().expect("postgres"))
        .await
        .expect("vacuum");

    // Where a batch's durable time goes: 1000 rows of one criterion kind at a time.
    let sample = store.revocations(0, 5000).await.expect("rows");
    let mut parts = Vec::new();
    for kind in [
        "veri_key",
        "signer_key_id",
        "signer_set_hash",
        "policy_hash",
        "feed_epoch_before",
    ] {
        let rows: Vec<_> = sample
            .iter()
            .filter(|r| r.metadata["criterion"] == kind)
            .take(1000)
            .cloned()
            .collect();
        let t = Instant::now();
        for _ in 0..10 {
            store.reapply_rows(&rows).await.expect("reapply");
        }
        parts.push(format!("{kind} {:.1} ms", ms(t.elapsed()) / 10.0));
    }
    println!(
        "  durable re-application of 1000 rows of one kind: {}",
        parts.join(", ")
    );
    for (batch, tiers) in [
        (1000usize, Tiers::Both),
        (10_000, Tiers::Both),
        (1000, Tiers::RedisOnly),
        (1000, Tiers::DurableOnly),
    ] {
        // Baseline: a bare read of the same rows in the same pages.
        let t = Instant::now();
        let (mut at, mut n) = (0i64, 0usize);
        loop {
            let rows = store.revocations(at, batch as i64).await.expect("read");
            let Some(last) = rows.last() else { break };
            at = last.seq_no;
            n += rows.len();
        }
        let bare = t.elapsed();
        // The ledger also holds the row of the invalidation benchmark.
        assert_eq!(n as i64, LEDGER_ROWS + 1);

        let node = format!("bench-{batch}-{tiers:?}");
        let hot: Arc<dyn HotTierSweep> = match tiers {
            Tiers::Both => Arc::new(HotTiers::new(Some(memory.clone()), Some(redis.clone()))),
            Tiers::RedisOnly => Arc::new(HotTiers::new(None, Some(redis.clone()))),
            Tiers::DurableOnly => Arc::new(NoHot),
        };
        let replayer = Replayer::new(Arc::new(store.clone()), hot, node);
        let t = Instant::now();
        let report = replayer
            .replay(
                ReplayOptions {
                    since: Some(0),
                    batch_size: batch,
                    dry_run: false,
                },
                |_| {},
            )
            .await
            .expect("replay");
        let ours = t.elapsed();
        assert_eq!(report.revocations as usize, n);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "replay {n} revocations, batches of {batch:>5}, {tiers:?}: {:>9.0}/s ({:.1} s, {} entries invalidated) | bare read {:>9.0}/s ({:.1} s) | ratio {:.2}×",
            rate(ours),
            ours.as_secs_f64(),
            report.entries_invalidated,
            rate(bare),
            bare.as_secs_f64(),
            ours.as_secs_f64() / bare.as_secs_f64().max(1e-9)
        );
        fill(store, &memory, &redis, &entries).await;
    }
    // Leave Redis clean.
    let keys: Vec<String> = entries.iter().map(|e| e.veri_key.clone()).collect();
    HotTiers::new(None, Some(redis))
        .sweep(
            &(0..10_000)
                .map(|i| Criterion::SignerSetHash(format!("sha256:set-{}", i * 5 + 2)))
                .collect::<Vec<_>>(),
            &keys,
        )
        .await
        .expect("clean");
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported by this harness.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let admin = std::env::var("PROVD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let redis_url = std::env::var("PROVD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        if !reachable(&admin, 5432) || !reachable(&redis_url, 6379) {
            println!("SKIPPED ledger benchmarks: PostgreSQL or Redis unreachable");
            return;
        }
        println!("ledger benchmarks (ours | baseline from the same run | ours ÷ baseline)");
        let name = format!(
            "provd_bench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut conn = PgConnection::connect(&admin).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let store = Store::connect_postgres(&with_database(&admin, &name))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        let prefix = format!("bench-{}:", &name[12..]);
        invalidation(&store, &redis_url, &prefix).await;
        replay(&store, &redis_url, &prefix).await;
        store.pg_pool().expect("postgres").close().await;
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    });
}

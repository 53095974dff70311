//! Test-only access to the durable tier's items: seeding rows as they would be after a
//! restore (bypassing the write path's checks, which is the point) and asking whether a row
//! is stored, expired or not.

use chrono::{DateTime, Utc};
use provd::storage::Store;

/// A provcache item to insert.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// The VeriKey.
    pub veri_key: String,
    /// The verdict.
    pub verdict: serde_json::Value,
    /// Hash of the verdict.
    pub verdict_hash: String,
    /// 0 to 100.
    pub trust_score: i16,
    /// Policy hash.
    pub policy_hash: String,
    /// Signer-set hash.
    pub signer_set_hash: String,
    /// Key IDs of the signer set.
    pub signer_key_ids: Vec<String>,
    /// Feed identifier.
    pub feed_id: Option<String>,
    /// Feed epoch.
    pub feed_epoch: Option<String>,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// Inserts or replaces an item and its signer-set members with SQL of the store's own
/// database, stamped now.
pub async fn insert_item(store: &Store, item: &NewItem) {
    let now = Utc::now();
    if let Some(pg) = store.pg_pool() {
        let mut tx = pg.begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO provcache.provcache_items \
             (veri_key, verdict, verdict_hash, trust_score, policy_hash, signer_set_hash, \
              feed_id, feed_epoch, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) \
             ON CONFLICT (veri_key) DO UPDATE SET verdict = EXCLUDED.verdict, \
              verdict_hash = EXCLUDED.verdict_hash, trust_score = EXCLUDED.trust_score, \
              policy_hash = EXCLUDED.policy_hash, signer_set_hash = EXCLUDED.signer_set_hash, \
              feed_id = EXCLUDED.feed_id, feed_epoch = EXCLUDED.feed_epoch, \
              expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at",
        )
        .bind(&item.veri_key)
        .bind(&item.verdict)
        .bind(&item.verdict_hash)
        .bind(item.trust_score)
        .bind(&item.policy_hash)
        .bind(&item.signer_set_hash)
        .bind(&item.feed_id)
        .bind(&item.feed_epoch)
        .bind(now)
        .bind(item.expires_at)
        .execute(&mut *tx)
        .await
        .expect("insert item");
        for key in &item.signer_key_ids {
            sqlx::query(
                "INSERT INTO provcache.prov_signer_set_members (signer_set_hash, key_id) \
                 VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&item.signer_set_hash)
            .bind(key)
            .execute(&mut *tx)
            .await
            .expect("insert member");
        }
        tx.commit().await.expect("commit");
        return;
    }
    let lite = store.sqlite_writer().expect("a SQLite store");
    let mut tx = lite.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO provcache_items \
         (veri_key, verdict, verdict_hash, trust_score, policy_hash, signer_set_hash, \
          feed_id, feed_epoch, created_at, updated_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10) \
         ON CONFLICT (veri_key) DO UPDATE SET verdict = excluded.verdict, \
          verdict_hash = excluded.verdict_hash, trust_score = excluded.trust_score, \
          policy_hash = excluded.policy_hash, signer_set_hash = excluded.signer_set_hash, \
          feed_id = excluded.feed_id, feed_epoch = excluded.feed_epoch, \
          expires_at = excluded.expires_at, updated_at = excluded.updated_at",
    )
    .bind(&item.veri_key)
    .bind(item.verdict.to_string())
    .bind(&item.verdict_hash)
    .bind(item.trust_score)
    .bind(&item.policy_hash)
    .bind(&item.signer_set_hash)
    .bind(&item.feed_id)
    .bind(&item.feed_epoch)
    .bind(now.timestamp_micros())
    .bind(item.expires_at.timestamp_micros())
    .execute(&mut *tx)
    .await
    .expect("insert item");
    for key in &item.signer_key_ids {
        sqlx::query(
            "INSERT INTO prov_signer_set_members (signer_set_hash, key_id) VALUES (?1, ?2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&item.signer_set_hash)
        .bind(key)
        .execute(&mut *tx)
        .await
        .expect("insert member");
    }
    tx.commit().await.expect("commit");
}

/// Whether an item with this VeriKey is stored (expired or not).
pub async fn item_exists(store: &Store, veri_key: &str) -> bool {
    let n: i64 = if let Some(pg) = store.pg_pool() {
        sqlx::query_scalar("SELECT count(*) FROM provcache.provcache_items WHERE veri_key = $1")
            .bind(veri_key)
            .fetch_one(pg)
            .await
            .expect("count items")
    } else {
        sqlx::query_scalar("SELECT count(*) FROM provcache_items WHERE veri_key = ?1")
            .bind(veri_key)
            .fetch_one(store.sqlite_reader().expect("a SQLite store"))
            .await
            .expect("count items")
    };
    n > 0
}

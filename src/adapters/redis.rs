//! The Redis / Valkey hot tier.
//!
//! The connection is opened lazily and re-opened by the connection manager, so provd
//! starts, and keeps serving from PostgreSQL, while Redis is down.

use std::sync::Arc;

use actors::domain::entry::Entry;
use actors::ports::{EntryTier, HotCachePurge, PortError};
use async_trait::async_trait;
use chrono::Utc;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::AdapterError;

/// Keys deleted per round trip.
const PURGE_BATCH: usize = 1000;

/// The hot tier on Redis.
#[derive(Clone)]
pub struct RedisCache {
    client: redis::Client,
    conn: std::sync::Arc<OnceCell<ConnectionManager>>,
    pub(crate) prefix: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// A cache on `url` whose keys start with `prefix`. Does not connect yet.
    pub fn new(url: &str, prefix: &str) -> Result<Self, AdapterError> {
        use redis::IntoConnectionInfo;
        // redis-rs leaves Nagle on by default; a pipeline larger than one segment would then
        // wait for the server's delayed ACK (about 40 ms) before its tail is sent.
        let info = url
            .into_connection_info()?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        Ok(RedisCache {
            client: redis::Client::open(info)?,
            conn: std::sync::Arc::new(OnceCell::new()),
            prefix: prefix.to_owned(),
        })
    }

    /// The connection the tier uses (opened on first use), for benchmarks that compare
    /// a raw command with the tier on the very same connection.
    pub async fn connection(&self) -> Result<ConnectionManager, AdapterError> {
        self.conn().await
    }

    pub(crate) async fn conn(&self) -> Result<ConnectionManager, AdapterError> {
        let cm = self
            .conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
                    .set_response_timeout(Some(std::time::Duration::from_secs(2)))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(cm.clone())
    }

    /// The Redis key of an entry.
    pub fn entry_key(&self, veri_key: &str) -> String {
        format!("{}entry:{veri_key}", self.prefix)
    }

    /// Checks Redis answers.
    pub async fn ping(&self) -> Result<(), AdapterError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Stores raw entry bytes with a TTL in seconds.
    pub async fn put_entry(
        &self,
        veri_key: &str,
        value: &[u8],
        ttl_secs: u64,
    ) -> Result<(), AdapterError> {
        let mut c = self.conn().await?;
        let _: () = c
            .set_ex(self.entry_key(veri_key), value, ttl_secs.max(1))
            .await?;
        Ok(())
    }

    /// Reads raw entry bytes.
    pub async fn get_entry(&self, veri_key: &str) -> Result<Option<Vec<u8>>, AdapterError> {
        let mut c = self.conn().await?;
        Ok(c.get(self.entry_key(veri_key)).await?)
    }
}

#[async_trait]
impl HotCachePurge for RedisCache {
    async fn purge(&self, veri_keys: &[String]) -> Result<(), PortError> {
        let mut c = self.conn().await?;
        for chunk in veri_keys.chunks(PURGE_BATCH) {
            let keys: Vec<String> = chunk.iter().map(|k| self.entry_key(k)).collect();
            let _: i64 = c.del(keys).await.map_err(AdapterError::from)?;
        }
        Ok(())
    }
}

#[async_trait]
impl EntryTier for RedisCache {
    fn name(&self) -> &'static str {
        "valkey"
    }

    async fn get(&self, veri_key: &str) -> Result<Option<Arc<Entry>>, PortError> {
        let Some(bytes) = self.get_entry(veri_key).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(entry) => Ok(Some(Arc::new(entry)).filter(|e| e.is_live(Utc::now()))),
            // A value this version cannot read (another writer, an older format) is a miss,
            // not a tier failure: the durable tier answers and the fill overwrites it.
            Err(e) => {
                metrics::counter!("provd_provcache_undecodable_total", "tier" => "valkey")
                    .increment(1);
                tracing::debug!(veri_key, error = %e, "undecodable cached entry; treated as a miss");
                Ok(None)
            }
        }
    }

    async fn put(&self, entry: &Arc<Entry>) -> Result<(), PortError> {
        let left = (entry.expires_at - Utc::now()).num_milliseconds();
        if left <= 0 {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&**entry)
            .map_err(|e| AdapterError::Corrupt(format!("entry {}: {e}", entry.veri_key)))?;
        // The entry and its criterion indexes go in together, so a ledger sweep on this
        // node finds it (see `hot_sweep.rs`).
        Ok(self.put_indexed(entry, bytes, left as u64).await?)
    }

    async fn remove(&self, veri_keys: &[String]) -> Result<(), PortError> {
        self.purge(veri_keys).await
    }
}

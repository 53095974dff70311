//! The in-process event bus of embedded mode: JetStream's semantics on the SQLite file.
//!
//! The streams of `events::streams` (under the deployment's prefix), their messages, the
//! durable consumers with their positions and every delivered but unacknowledged message
//! live in tables of the SQLite store's file, so a publish that returned is on disk and a
//! restart resumes where the process stopped. Every write goes through the store's one
//! writer connection, which serialises them: two subscriptions on one durable consumer can
//! never take the same message. Waiting subscriptions sleep on a per-stream `Notify`
//! (woken by publishes and settlements) or until the earliest redelivery is due; they never
//! poll the database.
//!
//! What it mirrors from JetStream: the stream a subject belongs to, sequence numbers per
//! stream, message-id deduplication within the duplicate window, limits retention (age and
//! size) versus work-queue retention (an ack removes the message), durable pull consumers
//! with subject filters, start positions, ack wait, `max_deliver` and `max_ack_pending`,
//! nak with delay and term.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actors::ports::{ConsumerSpec, Delivery, EventBus, PortError, StartPosition, Subscription};
use async_trait::async_trait;
use events::Subjects;
use events::streams::{self as defs, Retention, subject_matches};
use sqlx::Transaction;
use sqlx::sqlite::{Sqlite, SqlitePool};
use tokio::sync::Notify;

use super::AdapterError;
use crate::storage::Store;

/// JetStream's `max_ack_pending` when a consumer asks for the broker's default.
const DEFAULT_MAX_ACK_PENDING: i64 = 1000;

/// Publishes to one stream between two age prunes.
const PRUNE_EVERY: u64 = 512;

/// How often every stream is pruned by age, whether or not it receives messages.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// One stream as this process knows it: its definition under the prefix, and what wakes
/// the subscriptions waiting on it.
#[derive(Debug)]
struct StreamInfo {
    name: String,
    subjects: Vec<String>,
    retention: Retention,
    max_age_us: i64,
    max_bytes: i64,
    duplicate_window_us: i64,
    /// Woken after a publish and after a settlement (which may free room under
    /// `max_ack_pending` or move a redelivery's due time).
    notify: Notify,
    /// Publishes since this process opened the bus, to prune by age every so often.
    published: AtomicU64,
}

impl StreamInfo {
    fn retention_str(&self) -> &'static str {
        match self.retention {
            Retention::Limits => "limits",
            Retention::WorkQueue => "workqueue",
        }
    }
}

#[derive(Debug)]
struct Inner {
    writer: SqlitePool,
    reader: SqlitePool,
    subjects: Subjects,
    streams: Vec<StreamInfo>,
    /// Acks and terms on their way to the settler task, which commits every one waiting in
    /// one transaction: a flusher acks thousands at once, and a transaction each would be
    /// most of its time.
    settle: tokio::sync::mpsc::UnboundedSender<Settle>,
    /// Publishes on their way to the publisher task, which commits every one waiting in
    /// one transaction (group commit): concurrent publishers share a commit instead of
    /// queueing for the writer connection one transaction each.
    publish: tokio::sync::mpsc::UnboundedSender<Publish>,
}

/// One publish waiting for the publisher.
#[derive(Debug)]
struct Publish {
    stream: usize,
    subject: String,
    msg_id: String,
    payload: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<(), PortError>>,
}

/// Most publishes committed in one transaction.
const PUBLISH_BATCH: usize = 1024;

/// Most messages one `INSERT` statement carries (a power of two; see [`insert_messages`]).
const INSERT_ROWS: usize = 64;

/// One ack or term waiting for the settler.
#[derive(Debug)]
struct Settle {
    stream: usize,
    durable: String,
    seq: i64,
    done: tokio::sync::oneshot::Sender<Result<(), PortError>>,
}

/// Most settlements committed in one transaction.
const SETTLE_BATCH: usize = 4096;

/// The in-process durable event bus, persisted in the SQLite file.
#[derive(Debug, Clone)]
pub struct LocalBus {
    inner: Arc<Inner>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Labels sqlx's errors as SQLite's (`.sq()?`), since `?` alone would call them PostgreSQL's.
trait SqliteResult<T> {
    fn sq(self) -> Result<T, AdapterError>;
}

impl<T> SqliteResult<T> for Result<T, sqlx::Error> {
    fn sq(self) -> Result<T, AdapterError> {
        self.map_err(AdapterError::Sqlite)
    }
}

/// A GLOB pattern that matches at least every subject the NATS filter matches, so SQLite
/// skips most non-matching rows; `subject_matches` then decides exactly (a NATS `*` is one
/// token, a GLOB `*` any text).
fn filter_glob(filter: &str) -> String {
    let mut out = String::with_capacity(filter.len());
    for (i, token) in filter.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if token == "*" || token == ">" {
            out.push('*');
            continue;
        }
        for c in token.chars() {
            match c {
                '*' => out.push_str("[*]"),
                '?' => out.push_str("[?]"),
                '[' => out.push_str("[[]"),
                c => out.push(c),
            }
        }
    }
    out
}

/// Whether some subject matches both NATS filters.
fn filters_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            _ => return false,
        }
    }
}

impl LocalBus {
    /// Opens the bus on `store`'s file, whose migrations the caller has applied (as
    /// `app::open_sqlite` does once for store and bus): creates the streams of the
    /// definitions under `subjects`' prefix, and makes every delivery left unacknowledged
    /// by a previous process due at once (no process holds it any more).
    pub async fn open(store: &Store, subjects: Subjects) -> Result<LocalBus, AdapterError> {
        Self::open_with_max_bytes(store, subjects, None).await
    }

    /// [`LocalBus::open`], capping every stream at `max_bytes` instead of its definition's
    /// size (as `JetStreamBus::with_stream_max_bytes` does).
    pub async fn open_with_max_bytes(
        store: &Store,
        subjects: Subjects,
        max_bytes: Option<i64>,
    ) -> Result<LocalBus, AdapterError> {
        let (Some(writer), Some(reader)) = (store.sqlite_writer(), store.sqlite_reader()) else {
            return Err(AdapterError::Corrupt(
                "the in-process bus lives in a SQLite file, and this store is not one".into(),
            ));
        };
        let streams = defs::ALL
            .iter()
            .map(|def| StreamInfo {
                name: subjects.stream_name(def),
                subjects: subjects.stream_subjects(def),
                retention: def.retention,
                max_age_us: micros(def.max_age),
                max_bytes: max_bytes.unwrap_or(def.max_bytes),
                // JetStream's default window when a definition has none.
                duplicate_window_us: micros(if def.duplicate_window.is_zero() {
                    Duration::from_secs(120)
                } else {
                    def.duplicate_window
                }),
                notify: Notify::new(),
                published: AtomicU64::new(0),
            })
            .collect();
        let (settle, settle_rx) = tokio::sync::mpsc::unbounded_channel();
        let (publish, publish_rx) = tokio::sync::mpsc::unbounded_channel();
        let bus = LocalBus {
            inner: Arc::new(Inner {
                writer: writer.clone(),
                reader: reader.clone(),
                subjects,
                streams,
                settle,
                publish,
            }),
        };
        // The settler and the publisher hold the bus weakly; their channels close with the
        // last handle.
        tokio::spawn(settler(Arc::downgrade(&bus.inner), settle_rx));
        tokio::spawn(publisher(Arc::downgrade(&bus.inner), publish_rx));
        bus.ensure_streams().await?;
        let mut tx = bus.inner.writer.begin().await.sq()?;
        for s in &bus.inner.streams {
            sqlx::query("UPDATE bus_pending SET due_at = 0 WHERE stream = ?")
                .bind(&s.name)
                .execute(&mut *tx)
                .await
                .sq()?;
        }
        tx.commit().await.sq()?;
        bus.prune_streams().await?;
        // Streams that receive little are pruned by age on a timer too; the task holds the
        // bus weakly, so it ends with the last handle.
        let weak = Arc::downgrade(&bus.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (LocalBus { inner }).prune_streams().await {
                    tracing::warn!(error = %e, "cannot prune the local bus's streams");
                }
            }
        });
        Ok(bus)
    }

    /// Applies every stream's limits now: drops messages older than its max age, message
    /// ids older than its duplicate window and the oldest messages beyond its max bytes.
    /// Publishing and a timer call it too.
    pub async fn prune_streams(&self) -> Result<(), AdapterError> {
        let mut tx = self.inner.writer.begin().await.sq()?;
        for s in &self.inner.streams {
            prune(&mut tx, s, now_us()).await?;
        }
        tx.commit().await.sq()?;
        Ok(())
    }

    /// The deployment's subjects.
    pub fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    /// Creates every stream that does not exist yet and brings the limits of existing ones
    /// up to date with the definitions (idempotent; messages and positions are kept).
    pub async fn ensure_streams(&self) -> Result<(), AdapterError> {
        let mut tx = self.inner.writer.begin().await.sq()?;
        for s in &self.inner.streams {
            ensure_stream(&mut tx, s).await?;
        }
        tx.commit().await.sq()?;
        Ok(())
    }

    /// Deletes this deployment's streams with their messages and consumers (tests clean up
    /// with it). A later publish or subscribe creates an empty stream again.
    pub async fn delete_streams(&self) -> Result<(), AdapterError> {
        let mut tx = self.inner.writer.begin().await.sq()?;
        for s in &self.inner.streams {
            for sql in [
                "DELETE FROM bus_pending WHERE stream = ?",
                "DELETE FROM bus_consumers WHERE stream = ?",
                "DELETE FROM bus_dedupe WHERE stream = ?",
                "DELETE FROM bus_messages WHERE stream = ?",
                "DELETE FROM bus_streams WHERE name = ?",
            ] {
                sqlx::query(sql)
                    .bind(&s.name)
                    .execute(&mut *tx)
                    .await
                    .sq()?;
            }
        }
        tx.commit().await.sq()?;
        for s in &self.inner.streams {
            s.notify.notify_waiters();
        }
        Ok(())
    }

    /// Checks the database answers and the streams exist (creating missing ones, as after
    /// `delete_streams`).
    pub async fn ping(&self) -> Result<(), AdapterError> {
        let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bus_streams")
            .fetch_one(&self.inner.reader)
            .await
            .sq()?;
        let mut missing = false;
        if present < self.inner.streams.len() as i64 {
            missing = true;
        } else {
            for s in &self.inner.streams {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM bus_streams WHERE name = ?")
                        .bind(&s.name)
                        .fetch_optional(&self.inner.reader)
                        .await
                        .sq()?;
                missing |= found.is_none();
            }
        }
        if missing {
            self.ensure_streams().await?;
        }
        Ok(())
    }

    /// Messages not yet delivered or acknowledged on a durable consumer; an error when the
    /// consumer does not exist.
    pub async fn consumer_pending(&self, stream: &str, durable: &str) -> Result<u64, AdapterError> {
        let (filter, cursor): (String, i64) = sqlx::query_as(
            "SELECT filter_subject, cursor FROM bus_consumers WHERE stream = ? AND durable = ?",
        )
        .bind(stream)
        .bind(durable)
        .fetch_one(&self.inner.reader)
        .await
        .sq()?;
        let mut conn = self.inner.reader.acquire().await.sq()?;
        let waiting = count_undelivered(&mut conn, stream, cursor, &filter).await?;
        let unacked = count_unacked(&mut conn, stream, durable).await?;
        Ok(waiting + unacked)
    }

    /// Every durable consumer on this deployment's streams with its pending messages
    /// (undelivered plus unacknowledged), for the `provd_jetstream_consumer_pending` gauge.
    pub async fn consumers_pending(&self) -> Result<Vec<(String, u64)>, AdapterError> {
        let mut conn = self.inner.reader.acquire().await.sq()?;
        let mut out = Vec::new();
        for s in &self.inner.streams {
            let consumers: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT durable, filter_subject, cursor FROM bus_consumers WHERE stream = ? \
                 ORDER BY durable",
            )
            .bind(&s.name)
            .fetch_all(&mut *conn)
            .await
            .sq()?;
            for (durable, filter, cursor) in consumers {
                let waiting = count_undelivered(&mut conn, &s.name, cursor, &filter).await?;
                let unacked = count_unacked(&mut conn, &s.name, &durable).await?;
                out.push((durable, waiting + unacked));
            }
        }
        Ok(out)
    }

    fn stream_for_subject(&self, subject: &str) -> Option<usize> {
        self.inner.streams.iter().position(|s| {
            s.subjects
                .iter()
                .any(|pattern| subject_matches(pattern, subject))
        })
    }

    fn stream_named(&self, name: &str) -> Option<usize> {
        self.inner.streams.iter().position(|s| s.name == name)
    }
}

/// Creates the stream's row, or updates its limits; its sequence and totals are kept.
async fn ensure_stream(
    tx: &mut Transaction<'_, Sqlite>,
    s: &StreamInfo,
) -> Result<(), AdapterError> {
    sqlx::query(
        "INSERT INTO bus_streams (name, subjects, retention, max_age_us, max_bytes, \
         duplicate_window_us) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET subjects = excluded.subjects, \
         retention = excluded.retention, max_age_us = excluded.max_age_us, \
         max_bytes = excluded.max_bytes, duplicate_window_us = excluded.duplicate_window_us",
    )
    .bind(&s.name)
    .bind(s.subjects.join(" "))
    .bind(s.retention_str())
    .bind(s.max_age_us)
    .bind(s.max_bytes)
    .bind(s.duplicate_window_us)
    .execute(&mut **tx)
    .await
    .sq()?;
    Ok(())
}

/// Removes messages older than the stream's max age, message ids older than its duplicate
/// window, then the oldest messages while it holds more than its max bytes.
async fn prune(
    tx: &mut Transaction<'_, Sqlite>,
    s: &StreamInfo,
    now: i64,
) -> Result<(), AdapterError> {
    let removed: Vec<(i64,)> = sqlx::query_as(
        "DELETE FROM bus_messages WHERE stream = ? AND published_at < ? RETURNING size",
    )
    .bind(&s.name)
    .bind(now.saturating_sub(s.max_age_us))
    .fetch_all(&mut **tx)
    .await
    .sq()?;
    if !removed.is_empty() {
        let bytes: i64 = removed.iter().map(|(b,)| b).sum();
        forget_removed(tx, &s.name, removed.len() as i64, bytes).await?;
    }
    sqlx::query("DELETE FROM bus_dedupe WHERE stream = ? AND published_at < ?")
        .bind(&s.name)
        .bind(now.saturating_sub(s.duplicate_window_us))
        .execute(&mut **tx)
        .await
        .sq()?;
    let bytes: Option<i64> = sqlx::query_scalar("SELECT bytes FROM bus_streams WHERE name = ?")
        .bind(&s.name)
        .fetch_optional(&mut **tx)
        .await
        .sq()?;
    if let Some(bytes) = bytes
        && bytes > s.max_bytes
    {
        prune_bytes(tx, &s.name, bytes - s.max_bytes).await?;
    }
    Ok(())
}

/// Removes the oldest messages until at least `excess` bytes are freed (JetStream's
/// discard-old policy).
async fn prune_bytes(
    tx: &mut Transaction<'_, Sqlite>,
    stream: &str,
    excess: i64,
) -> Result<(), AdapterError> {
    let mut freed = 0i64;
    let mut cutoff = 0i64;
    let mut count = 0i64;
    'scan: loop {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, size FROM bus_messages WHERE stream = ? AND seq > ? ORDER BY seq \
             LIMIT 256",
        )
        .bind(stream)
        .bind(cutoff)
        .fetch_all(&mut **tx)
        .await
        .sq()?;
        if rows.is_empty() {
            break;
        }
        for (seq, size) in rows {
            cutoff = seq;
            freed += size;
            count += 1;
            if freed >= excess {
                break 'scan;
            }
        }
    }
    if count > 0 {
        sqlx::query("DELETE FROM bus_messages WHERE stream = ? AND seq <= ?")
            .bind(stream)
            .bind(cutoff)
            .execute(&mut **tx)
            .await
            .sq()?;
        forget_removed(tx, stream, count, freed).await?;
    }
    Ok(())
}

/// Updates the stream's totals after `count` messages of `bytes` were removed, and drops
/// the pending deliveries of messages that are gone.
async fn forget_removed(
    tx: &mut Transaction<'_, Sqlite>,
    stream: &str,
    count: i64,
    bytes: i64,
) -> Result<(), AdapterError> {
    sqlx::query("UPDATE bus_streams SET msgs = msgs - ?, bytes = bytes - ? WHERE name = ?")
        .bind(count)
        .bind(bytes)
        .bind(stream)
        .execute(&mut **tx)
        .await
        .sq()?;
    sqlx::query(
        "DELETE FROM bus_pending WHERE stream = ?1 AND NOT EXISTS \
         (SELECT 1 FROM bus_messages m WHERE m.stream = ?1 AND m.seq = bus_pending.seq)",
    )
    .bind(stream)
    .execute(&mut **tx)
    .await
    .sq()?;
    Ok(())
}

/// Removes one message (an acknowledged or terminated work-queue message) and every
/// pending delivery of it.
async fn remove_messages(
    tx: &mut Transaction<'_, Sqlite>,
    stream: &str,
    seqs: &[i64],
) -> Result<(), AdapterError> {
    let list = seq_list(seqs);
    let sizes: Vec<i64> = sqlx::query_scalar(
        "DELETE FROM bus_messages WHERE stream = ? \
         AND seq IN (SELECT value FROM json_each(?)) RETURNING size",
    )
    .bind(stream)
    .bind(&list)
    .fetch_all(&mut **tx)
    .await
    .sq()?;
    if !sizes.is_empty() {
        sqlx::query("UPDATE bus_streams SET msgs = msgs - ?, bytes = bytes - ? WHERE name = ?")
            .bind(i64::try_from(sizes.len()).unwrap_or(i64::MAX))
            .bind(sizes.iter().sum::<i64>())
            .bind(stream)
            .execute(&mut **tx)
            .await
            .sq()?;
    }
    sqlx::query(
        "DELETE FROM bus_pending WHERE stream = ? AND seq IN (SELECT value FROM json_each(?))",
    )
    .bind(stream)
    .bind(&list)
    .execute(&mut **tx)
    .await
    .sq()?;
    Ok(())
}

/// Sequence numbers as a JSON array, for `json_each`: one statement for a whole batch.
fn seq_list(seqs: &[i64]) -> String {
    let items: Vec<String> = seqs.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(","))
}

/// Commits publishes as they come, every one waiting in one transaction, and answers each
/// after the commit. When a shared transaction fails, its publishes are retried one
/// transaction each, so one publish the database refuses fails alone.
async fn publisher(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Publish>,
) {
    let gone = || PortError::Unavailable {
        service: super::Service::LocalBus.as_str(),
        message: "the bus is shutting down".into(),
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            for p in batch {
                let _ = p.done.send(Err(gone()));
            }
            continue;
        };
        let result = publish_batch(&inner, &batch).await;
        if result.is_err() && batch.len() > 1 {
            for p in batch {
                let one = publish_batch(&inner, std::slice::from_ref(&p)).await;
                let _ = p.done.send(one.map_err(PortError::from));
            }
            continue;
        }
        let result = result.map_err(PortError::from);
        for p in batch {
            let _ = p.done.send(result.clone());
        }
    }
}

/// Stores a batch of publishes in one transaction, stream by stream in order of arrival,
/// then wakes the streams' subscriptions.
async fn publish_batch(inner: &Inner, batch: &[Publish]) -> Result<(), AdapterError> {
    let mut streams: Vec<(usize, Vec<&Publish>)> = Vec::new();
    for p in batch {
        match streams.iter_mut().find(|(s, _)| *s == p.stream) {
            Some((_, items)) => items.push(p),
            None => streams.push((p.stream, vec![p])),
        }
    }
    let now = now_us();
    let mut tx = inner.writer.begin().await.sq()?;
    for (stream, items) in &streams {
        publish_to(&mut tx, &inner.streams[*stream], items, now).await?;
    }
    tx.commit().await.sq()?;
    for (stream, _) in &streams {
        inner.streams[*stream].notify.notify_waiters();
    }
    Ok(())
}

/// Appends one stream's share of a batch: drops the publishes whose message id was seen
/// within the duplicate window (or earlier in the batch), takes the sequence numbers of the
/// rest in one update, stores them and their message ids, and applies the limits.
async fn publish_to(
    tx: &mut Transaction<'_, Sqlite>,
    s: &StreamInfo,
    items: &[&Publish],
    now: i64,
) -> Result<(), AdapterError> {
    let ids: Vec<&str> = items
        .iter()
        .filter(|p| !p.msg_id.is_empty())
        .map(|p| p.msg_id.as_str())
        .collect();
    let mut seen: std::collections::HashSet<String> = if ids.is_empty() {
        Default::default()
    } else {
        sqlx::query_scalar(
            // `+published_at` keeps SQLite off the time index: the primary key finds each
            // id, where the time index would scan every id of the window.
            "SELECT msg_id FROM bus_dedupe WHERE stream = ?1 AND +published_at >= ?2 \
             AND msg_id IN (SELECT value FROM json_each(?3))",
        )
        .bind(&s.name)
        .bind(now.saturating_sub(s.duplicate_window_us))
        .bind(json_strings(&ids)?)
        .fetch_all(&mut **tx)
        .await
        .sq()?
        .into_iter()
        .collect()
    };
    // A retried publish whose first copy is stored succeeds silently, as on JetStream.
    let fresh: Vec<&Publish> = items
        .iter()
        .copied()
        .filter(|p| p.msg_id.is_empty() || seen.insert(p.msg_id.clone()))
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let count = fresh.len() as i64;
    let size: i64 = fresh.iter().map(|p| p.payload.len() as i64).sum();
    let bump = "UPDATE bus_streams SET last_seq = last_seq + ?, msgs = msgs + ?, \
                bytes = bytes + ? WHERE name = ? RETURNING last_seq, bytes";
    let mut row: Option<(i64, i64)> = sqlx::query_as(bump)
        .bind(count)
        .bind(count)
        .bind(size)
        .bind(&s.name)
        .fetch_optional(&mut **tx)
        .await
        .sq()?;
    if row.is_none() {
        // The stream was deleted (`delete_streams`): publishing creates it again.
        ensure_stream(tx, s).await?;
        row = sqlx::query_as(bump)
            .bind(count)
            .bind(count)
            .bind(size)
            .bind(&s.name)
            .fetch_optional(&mut **tx)
            .await
            .sq()?;
    }
    let Some((last_seq, bytes)) = row else {
        return Err(AdapterError::Corrupt(format!(
            "stream {} is missing",
            s.name
        )));
    };
    let first_seq = last_seq - count + 1;
    insert_messages(tx, &s.name, &fresh, first_seq, now).await?;
    let dedupe: Vec<(&str, i64)> = fresh
        .iter()
        .zip(first_seq..)
        .filter(|(p, _)| !p.msg_id.is_empty())
        .map(|(p, seq)| (p.msg_id.as_str(), seq))
        .collect();
    if !dedupe.is_empty() {
        let pairs = serde_json::to_string(&dedupe)
            .map_err(|e| AdapterError::Corrupt(format!("message ids as JSON: {e}")))?;
        // SQLite reads an upsert's `ON` after a bare `FROM` as a join: `WHERE true` ends
        // the SELECT.
        sqlx::query(
            "INSERT INTO bus_dedupe (stream, msg_id, seq, published_at) \
             SELECT ?1, value ->> 0, value ->> 1, ?2 FROM json_each(?3) WHERE true \
             ON CONFLICT (stream, msg_id) DO UPDATE SET seq = excluded.seq, \
             published_at = excluded.published_at",
        )
        .bind(&s.name)
        .bind(now)
        .bind(pairs)
        .execute(&mut **tx)
        .await
        .sq()?;
    }
    let before = s.published.fetch_add(count as u64, Ordering::Relaxed);
    if (before + count as u64) / PRUNE_EVERY > before / PRUNE_EVERY {
        prune(tx, s, now).await?;
    } else if bytes > s.max_bytes {
        prune_bytes(tx, &s.name, bytes - s.max_bytes).await?;
    }
    Ok(())
}

/// Inserts messages with consecutive sequence numbers from `first_seq`, as few statements
/// as the binary digits of their count: each statement carries a power of two of rows up to
/// [`INSERT_ROWS`], so a handful of statement texts serve every batch and stay prepared in
/// the connection's cache.
async fn insert_messages(
    tx: &mut Transaction<'_, Sqlite>,
    stream: &str,
    items: &[&Publish],
    first_seq: i64,
    now: i64,
) -> Result<(), AdapterError> {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        (0..=INSERT_ROWS.trailing_zeros())
            .map(|bit| {
                // Anonymous `?` parameters: sqlx asks SQLite for every numbered
                // parameter's name, a scan of all the statement's names each, which made
                // binding quadratic in the rows.
                let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; 1usize << bit];
                format!(
                    "INSERT INTO bus_messages \
                     (stream, seq, subject, msg_id, payload, size, published_at) VALUES {}",
                    rows.join(", ")
                )
            })
            .collect()
    });
    let mut rest = items;
    let mut seq = first_seq;
    while !rest.is_empty() {
        let bit = rest.len().min(INSERT_ROWS).ilog2();
        let (chunk, tail) = rest.split_at(1 << bit);
        let mut q = sqlx::query(texts[bit as usize].as_str());
        for p in chunk {
            q = q
                .bind(stream)
                .bind(seq)
                .bind(&p.subject)
                .bind((!p.msg_id.is_empty()).then_some(p.msg_id.as_str()))
                .bind(&p.payload)
                .bind(p.payload.len() as i64)
                .bind(now);
            seq += 1;
        }
        q.execute(&mut **tx).await.sq()?;
        rest = tail;
    }
    Ok(())
}

/// Strings as a JSON array, for `json_each`.
fn json_strings(items: &[&str]) -> Result<String, AdapterError> {
    serde_json::to_string(items)
        .map_err(|e| AdapterError::Corrupt(format!("message ids as JSON: {e}")))
}

/// Commits acks and terms as they come, every one waiting in one transaction, and answers
/// each after the commit.
async fn settler(
    inner: std::sync::Weak<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Settle>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < SETTLE_BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let result = match inner.upgrade() {
            Some(inner) => settle_batch(&inner, &batch).await.map_err(PortError::from),
            None => Err(PortError::Unavailable {
                service: super::Service::LocalBus.as_str(),
                message: "the bus is shutting down".into(),
            }),
        };
        for s in batch {
            let _ = s.done.send(result.clone());
        }
    }
}

/// Settles a batch: the deliveries leave their consumers' pending sets, and on a work-queue
/// stream the messages go too.
async fn settle_batch(inner: &Inner, batch: &[Settle]) -> Result<(), AdapterError> {
    let mut groups: std::collections::BTreeMap<(usize, &str), Vec<i64>> = Default::default();
    for s in batch {
        groups
            .entry((s.stream, s.durable.as_str()))
            .or_default()
            .push(s.seq);
    }
    let mut tx = inner.writer.begin().await.sq()?;
    for ((stream, durable), seqs) in &groups {
        let s = &inner.streams[*stream];
        let settled: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM bus_pending WHERE stream = ? AND durable = ? \
             AND seq IN (SELECT value FROM json_each(?)) RETURNING seq",
        )
        .bind(&s.name)
        .bind(durable)
        .bind(seq_list(seqs))
        .fetch_all(&mut *tx)
        .await
        .sq()?;
        if !settled.is_empty() && s.retention == Retention::WorkQueue {
            remove_messages(&mut tx, &s.name, &settled).await?;
        }
    }
    tx.commit().await.sq()?;
    for (stream, _) in groups.keys() {
        inner.streams[*stream].notify.notify_waiters();
    }
    Ok(())
}

/// Messages past `cursor` that match `filter`: not yet delivered to the consumer.
async fn count_undelivered(
    conn: &mut sqlx::SqliteConnection,
    stream: &str,
    cursor: i64,
    filter: &str,
) -> Result<u64, AdapterError> {
    let glob = filter_glob(filter);
    if !filter.split('.').any(|t| t == "*") {
        // Without `*` the GLOB is exact (`>` only ends a filter), so SQLite counts alone.
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM bus_messages WHERE stream = ? AND seq > ? AND subject GLOB ?",
        )
        .bind(stream)
        .bind(cursor)
        .bind(&glob)
        .fetch_one(&mut *conn)
        .await
        .sq()?;
        return Ok(n as u64);
    }
    let subjects: Vec<(String,)> = sqlx::query_as(
        "SELECT subject FROM bus_messages WHERE stream = ? AND seq > ? AND subject GLOB ?",
    )
    .bind(stream)
    .bind(cursor)
    .bind(&glob)
    .fetch_all(&mut *conn)
    .await
    .sq()?;
    Ok(subjects
        .iter()
        .filter(|(s,)| subject_matches(filter, s))
        .count() as u64)
}

/// Delivered but unacknowledged messages of a consumer.
async fn count_unacked(
    conn: &mut sqlx::SqliteConnection,
    stream: &str,
    durable: &str,
) -> Result<u64, AdapterError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM bus_pending WHERE stream = ? AND durable = ?")
            .bind(stream)
            .bind(durable)
            .fetch_one(&mut *conn)
            .await
            .sq()?;
    Ok(n as u64)
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Vec<u8>,
    ) -> Result<(), PortError> {
        let Some(stream) = self.stream_for_subject(subject) else {
            return Err(PortError::Rejected(format!(
                "no stream captures subject {subject}"
            )));
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        let gone = || PortError::Unavailable {
            service: super::Service::LocalBus.as_str(),
            message: "the bus is shutting down".into(),
        };
        self.inner
            .publish
            .send(Publish {
                stream,
                subject: subject.to_owned(),
                msg_id: msg_id.to_owned(),
                payload,
                done,
            })
            .map_err(|_| gone())?;
        // Answered only after the transaction holding the message has committed.
        answer.await.map_err(|_| gone())?
    }

    async fn subscribe(&self, spec: &ConsumerSpec) -> Result<Box<dyn Subscription>, PortError> {
        let Some(index) = self.stream_named(&spec.stream) else {
            return Err(PortError::Rejected(format!(
                "no stream named {}",
                spec.stream
            )));
        };
        let s = &self.inner.streams[index];
        let mut tx = self.inner.writer.begin().await.sq()?;
        ensure_stream(&mut tx, s).await?;
        let select = "SELECT filter_subject, ack_wait_us, max_deliver, max_ack_pending \
                      FROM bus_consumers WHERE stream = ? AND durable = ?";
        let existing: Option<(String, i64, i64, i64)> = sqlx::query_as(select)
            .bind(&s.name)
            .bind(&spec.durable)
            .fetch_optional(&mut *tx)
            .await
            .sq()?;
        let (filter, ack_wait_us, max_deliver, max_ack_pending) = match existing {
            // An existing consumer keeps its position and configuration, as JetStream's
            // get-or-create does.
            Some(config) => config,
            None => {
                if s.retention == Retention::WorkQueue {
                    let others: Vec<(String, String)> = sqlx::query_as(
                        "SELECT durable, filter_subject FROM bus_consumers WHERE stream = ?",
                    )
                    .bind(&s.name)
                    .fetch_all(&mut *tx)
                    .await
                    .sq()?;
                    if let Some((other, _)) = others
                        .iter()
                        .find(|(_, f)| filters_overlap(f, &spec.filter_subject))
                    {
                        // Each work-queue message goes to one consumer only.
                        return Err(PortError::Rejected(format!(
                            "work-queue stream {} already has consumer {other} for an \
                             overlapping subject",
                            s.name
                        )));
                    }
                }
                let last_seq: i64 =
                    sqlx::query_scalar("SELECT last_seq FROM bus_streams WHERE name = ?")
                        .bind(&s.name)
                        .fetch_one(&mut *tx)
                        .await
                        .sq()?;
                let cursor = match spec.start {
                    StartPosition::All => 0,
                    StartPosition::New => last_seq,
                    StartPosition::Since(t) => {
                        let first: Option<i64> = sqlx::query_scalar(
                            "SELECT MIN(seq) FROM bus_messages WHERE stream = ? AND \
                             published_at >= ?",
                        )
                        .bind(&s.name)
                        .bind(t.timestamp_micros())
                        .fetch_one(&mut *tx)
                        .await
                        .sq()?;
                        first.map_or(last_seq, |seq| seq - 1)
                    }
                };
                let max_ack_pending = if spec.max_ack_pending > 0 {
                    spec.max_ack_pending
                } else {
                    DEFAULT_MAX_ACK_PENDING
                };
                let ack_wait_us = micros(spec.ack_wait).max(1);
                sqlx::query(
                    "INSERT INTO bus_consumers (stream, durable, filter_subject, ack_wait_us, \
                     max_deliver, max_ack_pending, cursor, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&s.name)
                .bind(&spec.durable)
                .bind(&spec.filter_subject)
                .bind(ack_wait_us)
                .bind(spec.max_deliver)
                .bind(max_ack_pending)
                .bind(cursor)
                .bind(now_us())
                .execute(&mut *tx)
                .await
                .sq()?;
                (
                    spec.filter_subject.clone(),
                    ack_wait_us,
                    spec.max_deliver,
                    max_ack_pending,
                )
            }
        };
        tx.commit().await.sq()?;
        Ok(Box::new(LocalSubscription {
            inner: self.inner.clone(),
            stream: index,
            durable: spec.durable.clone(),
            glob: filter_glob(&filter),
            filter,
            ack_wait_us,
            max_deliver,
            max_ack_pending,
        }))
    }
}

/// A pull subscription on a durable consumer of the local bus.
struct LocalSubscription {
    inner: Arc<Inner>,
    stream: usize,
    durable: String,
    filter: String,
    glob: String,
    ack_wait_us: i64,
    max_deliver: i64,
    max_ack_pending: i64,
}

/// One message taken from the database for delivery.
struct Taken {
    seq: i64,
    subject: String,
    payload: Vec<u8>,
    delivered: u64,
    /// Whether it came from past the cursor (rather than being redelivered).
    new: bool,
}

impl LocalSubscription {
    fn stream(&self) -> &StreamInfo {
        &self.inner.streams[self.stream]
    }

    /// Takes up to `max` messages in one transaction: due redeliveries first, then new
    /// messages past the cursor, within `max_ack_pending`. Returns them with the pending
    /// count after them, or when none was due the time the next redelivery will be.
    async fn take(&self, max: usize) -> Result<(Vec<Taken>, u64, Option<i64>), AdapterError> {
        let name = &self.stream().name;
        let now = now_us();
        let due_at = now.saturating_add(self.ack_wait_us);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let mut tx = self.inner.writer.begin().await.sq()?;

        // Deliveries that used up max_deliver (or whose message is gone) are not due
        // again: the consumer gives up on them.
        sqlx::query(
            "DELETE FROM bus_pending WHERE stream = ?1 AND durable = ?2 AND due_at <= ?3 AND \
             ((?4 > 0 AND deliveries >= ?4) OR NOT EXISTS (SELECT 1 FROM bus_messages m \
             WHERE m.stream = ?1 AND m.seq = bus_pending.seq))",
        )
        .bind(name)
        .bind(&self.durable)
        .bind(now)
        .bind(self.max_deliver)
        .execute(&mut *tx)
        .await
        .sq()?;

        let due: Vec<(i64, i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT p.seq, p.deliveries, m.subject, m.payload FROM bus_pending p \
             JOIN bus_messages m ON m.stream = p.stream AND m.seq = p.seq \
             WHERE p.stream = ? AND p.durable = ? AND p.due_at <= ? ORDER BY p.seq LIMIT ?",
        )
        .bind(name)
        .bind(&self.durable)
        .bind(now)
        .bind(max)
        .fetch_all(&mut *tx)
        .await
        .sq()?;
        if !due.is_empty() {
            // One statement for every redelivery taken.
            let seqs: Vec<i64> = due.iter().map(|(seq, ..)| *seq).collect();
            sqlx::query(
                "UPDATE bus_pending SET deliveries = deliveries + 1, due_at = ? \
                 WHERE stream = ? AND durable = ? AND seq IN (SELECT value FROM json_each(?))",
            )
            .bind(due_at)
            .bind(name)
            .bind(&self.durable)
            .bind(seq_list(&seqs))
            .execute(&mut *tx)
            .await
            .sq()?;
        }
        let mut taken: Vec<Taken> = due
            .into_iter()
            .map(|(seq, deliveries, subject, payload)| Taken {
                seq,
                subject,
                payload,
                delivered: (deliveries + 1) as u64,
                new: false,
            })
            .collect();

        let outstanding = count_unacked(&mut tx, name, &self.durable).await? as i64;
        let room = (max - taken.len() as i64).min(self.max_ack_pending - outstanding);
        let mut cursor: i64 =
            sqlx::query_scalar("SELECT cursor FROM bus_consumers WHERE stream = ? AND durable = ?")
                .bind(name)
                .bind(&self.durable)
                .fetch_one(&mut *tx)
                .await
                .sq()?;
        let start_cursor = cursor;
        let mut added = 0i64;
        while added < room {
            let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, subject, payload FROM bus_messages \
                 WHERE stream = ? AND seq > ? AND subject GLOB ? ORDER BY seq LIMIT ?",
            )
            .bind(name)
            .bind(cursor)
            .bind(&self.glob)
            .bind(room - added)
            .fetch_all(&mut *tx)
            .await
            .sq()?;
            let exhausted = (rows.len() as i64) < room - added;
            for (seq, subject, payload) in rows {
                // Every row read is either taken or skipped by the filter, so the cursor
                // moves past it either way.
                cursor = seq;
                if !subject_matches(&self.filter, &subject) {
                    continue;
                }
                taken.push(Taken {
                    seq,
                    subject,
                    payload,
                    delivered: 1,
                    new: true,
                });
                added += 1;
            }
            if exhausted {
                // Nothing past the cursor matches any more: skip to the stream's end, so
                // the next look does not scan the same non-matching messages again.
                let last_seq: i64 =
                    sqlx::query_scalar("SELECT last_seq FROM bus_streams WHERE name = ?")
                        .bind(name)
                        .fetch_one(&mut *tx)
                        .await
                        .sq()?;
                cursor = cursor.max(last_seq);
                break;
            }
        }
        let delivered: Vec<i64> = taken.iter().filter(|t| t.new).map(|t| t.seq).collect();
        if !delivered.is_empty() {
            // One statement for every first delivery taken.
            sqlx::query(
                "INSERT INTO bus_pending (stream, durable, seq, deliveries, due_at) \
                 SELECT ?, ?, value, 1, ? FROM json_each(?)",
            )
            .bind(name)
            .bind(&self.durable)
            .bind(due_at)
            .bind(seq_list(&delivered))
            .execute(&mut *tx)
            .await
            .sq()?;
        }
        if cursor != start_cursor {
            sqlx::query("UPDATE bus_consumers SET cursor = ? WHERE stream = ? AND durable = ?")
                .bind(cursor)
                .bind(name)
                .bind(&self.durable)
                .execute(&mut *tx)
                .await
                .sq()?;
        }

        let (remaining, next_due) = if taken.is_empty() {
            let next: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(due_at) FROM bus_pending WHERE stream = ? AND durable = ?",
            )
            .bind(name)
            .bind(&self.durable)
            .fetch_one(&mut *tx)
            .await
            .sq()?;
            (0, next)
        } else {
            (
                count_undelivered(&mut tx, name, cursor, &self.filter).await?,
                None,
            )
        };
        tx.commit().await.sq()?;
        Ok((taken, remaining, next_due))
    }
}

#[async_trait]
impl Subscription for LocalSubscription {
    async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Box<dyn Delivery>>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a publish between the look and the wait still
            // wakes it.
            let mut notified = pin!(self.stream().notify.notified());
            notified.as_mut().enable();
            let (taken, remaining, next_due) = self.take(max).await?;
            if !taken.is_empty() {
                let mut behind = remaining + taken.iter().filter(|t| t.new).count() as u64;
                let out = taken
                    .into_iter()
                    .map(|t| {
                        if t.new {
                            behind -= 1;
                        }
                        Box::new(LocalDelivery {
                            inner: self.inner.clone(),
                            stream: self.stream,
                            durable: self.durable.clone(),
                            seq: t.seq,
                            subject: t.subject,
                            payload: t.payload,
                            delivered: t.delivered,
                            pending: behind,
                        }) as Box<dyn Delivery>
                    })
                    .collect();
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline;
            if let Some(due) = next_due {
                let in_us = u64::try_from(due.saturating_sub(now_us())).unwrap_or(0);
                until = until.min(now + Duration::from_micros(in_us));
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

/// One message delivered by the local bus.
struct LocalDelivery {
    inner: Arc<Inner>,
    stream: usize,
    durable: String,
    seq: i64,
    subject: String,
    payload: Vec<u8>,
    delivered: u64,
    pending: u64,
}

impl LocalDelivery {
    fn stream(&self) -> &StreamInfo {
        &self.inner.streams[self.stream]
    }

    /// Settles the delivery for good: an ack or a term. A work-queue stream drops the
    /// message; a limits stream keeps it for other consumers.
    async fn settle(&self) -> Result<(), PortError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let gone = || PortError::Unavailable {
            service: super::Service::LocalBus.as_str(),
            message: "the bus is shutting down".into(),
        };
        self.inner
            .settle
            .send(Settle {
                stream: self.stream,
                durable: self.durable.clone(),
                seq: self.seq,
                done,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl Delivery for LocalDelivery {
    fn subject(&self) -> &str {
        &self.subject
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn delivered(&self) -> u64 {
        self.delivered
    }
    fn pending(&self) -> Option<u64> {
        Some(self.pending)
    }
    async fn ack(&self) -> Result<(), PortError> {
        self.settle().await
    }
    async fn nak(&self, delay: Duration) -> Result<(), PortError> {
        let s = self.stream();
        sqlx::query(
            "UPDATE bus_pending SET due_at = ? WHERE stream = ? AND durable = ? AND seq = ?",
        )
        .bind(now_us().saturating_add(micros(delay)))
        .bind(&s.name)
        .bind(&self.durable)
        .bind(self.seq)
        .execute(&self.inner.writer)
        .await
        .sq()?;
        // Waiting subscriptions recompute when the next redelivery is due.
        s.notify.notify_waiters();
        Ok(())
    }
    async fn term(&self) -> Result<(), PortError> {
        self.settle().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_cover_the_nats_filters() {
        assert_eq!(filter_glob("a.b.>"), "a.b.*");
        assert_eq!(filter_glob("a.*.c"), "a.*.c");
        assert_eq!(filter_glob("a?.[x"), "a[?].[[]x");
    }

    #[test]
    fn overlapping_filters() {
        assert!(filters_overlap("a.b", "a.b"));
        assert!(filters_overlap("a.>", "a.b.c"));
        assert!(filters_overlap("a.*", "a.b"));
        assert!(filters_overlap("a.*.c", "a.b.>"));
        assert!(!filters_overlap("a.b", "a.c"));
        assert!(!filters_overlap("a.*", "a.b.c"));
        assert!(!filters_overlap("a.>", "a"));
    }
}

//! Group commit: one thread owns the entry file and appends every write that is waiting in
//! one `write` and one `fsync`, then adds the entries to the tree and answers each writer.
//! Under concurrent submissions this turns one fsync per entry into one per batch, while
//! each entry is still durable before it is acknowledged.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, RwLock};

use actors::domain::log::LogError;
use actors::domain::merkle::Hash;
use tokio::sync::oneshot;

use super::Log;
use super::store::EntryFile;

/// The most entries committed by one fsync.
const MAX_BATCH: usize = 256;

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// The log refused the entry (already logged, too large).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The entry could not be made durable.
    #[error("cannot store the entry: {0}")]
    Store(String),
    /// The writer thread is gone (the log is shutting down or a lock was poisoned).
    #[error("the log's writer has stopped")]
    Stopped,
}

/// One write waiting for the writer thread.
pub(crate) struct WriteRequest {
    body: Vec<u8>,
    reply: oneshot::Sender<Result<u64, CommitError>>,
}

/// The async side of the writer thread.
pub(crate) struct Writer {
    tx: Sender<WriteRequest>,
}

impl Writer {
    /// Starts the writer thread over `file` and `log`; it stops when the `Writer` is dropped.
    pub(crate) fn start(file: EntryFile, log: Arc<RwLock<Log>>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dev-log-writer".into())
            .spawn(move || run(file, &log, &rx))?;
        Ok(Self { tx })
    }

    /// Appends `body` durably and returns its index; a body already logged (or written
    /// earlier in the same batch) is [`LogError::Duplicate`].
    pub(crate) async fn commit(&self, body: Vec<u8>) -> Result<u64, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(WriteRequest { body, reply })
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
    }
}

/// What the batch decided for one request.
enum Fate {
    /// A new entry at this index.
    New(u64),
    /// Already in the log before this batch.
    Logged(u64),
    /// The same body as an earlier request of this batch, at this index.
    SameBatch(u64),
    /// Refused.
    Refused(LogError),
}

fn run(mut file: EntryFile, log: &RwLock<Log>, rx: &Receiver<WriteRequest>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let Ok(tree) = log.read() else { return };
        let mut next = tree.tree.size();
        let mut seen: HashMap<Hash, u64> = HashMap::new();
        let fates: Vec<Fate> = batch
            .iter()
            .map(|req| match tree.tree.check_new(&req.body) {
                Err(LogError::Duplicate { index }) => Fate::Logged(index),
                Err(e) => Fate::Refused(e),
                Ok(leaf) => match seen.get(&leaf) {
                    Some(&index) => Fate::SameBatch(index),
                    None => {
                        seen.insert(leaf, next);
                        next += 1;
                        Fate::New(next - 1)
                    }
                },
            })
            .collect();
        drop(tree);

        let time = chrono::Utc::now().timestamp();
        let new: Vec<&[u8]> = batch
            .iter()
            .zip(&fates)
            .filter(|(_, f)| matches!(f, Fate::New(_)))
            .map(|(r, _)| r.body.as_slice())
            .collect();
        let stored = if new.is_empty() {
            Ok(())
        } else {
            file.append_all(time, &new).map_err(|e| e.to_string())
        };
        if stored.is_ok() && !new.is_empty() {
            let Ok(mut tree) = log.write() else { return };
            for body in new {
                // The batch was checked against this tree, and only this thread appends.
                if let Err(e) = tree.append(body.to_vec(), time) {
                    tracing::error!(error = %e, "dev log: append after a checked batch failed");
                }
            }
        }
        for (req, fate) in batch.into_iter().zip(fates) {
            let answer = match (fate, &stored) {
                (Fate::Logged(index), _) => Err(LogError::Duplicate { index }.into()),
                (Fate::Refused(e), _) => Err(e.into()),
                (Fate::New(index), Ok(())) => Ok(index),
                (Fate::SameBatch(index), Ok(())) => Err(LogError::Duplicate { index }.into()),
                (Fate::New(_) | Fate::SameBatch(_), Err(e)) => Err(CommitError::Store(e.clone())),
            };
            // A writer that gave up waiting needs no answer; its entry stays committed.
            let _ = req.reply.send(answer);
        }
    }
}

//! The local Rekor-compatible log behind `provd dev-log serve`: a lab and test tool, not a
//! production log.
//!
//! One append-only Merkle tree ([`actors::domain::log::LogTree`]) persisted in a data
//! directory is served through both APIs:
//! - Rekor v1 (`/api/v1/log/...`): entries keyed by `%016x(tree ID) ‖ UUID`, checkpoints with
//!   origin `<origin> - <tree ID>` signed by the ECDSA P-256 log key under the name
//!   `<origin>`, SETs by the same key, `logIndex` = shard index (one shard);
//! - Rekor v2 (`POST /api/v2/log/entries`) with C2SP tlog-tiles reads (`/checkpoint`,
//!   `/tile/...`): checkpoints with origin `<origin>` signed by the checkpoint key (Ed25519
//!   by default) under `<origin>`.
//!
//! Entries written through either API are leaves of the same tree, so a v1 reader and a
//! tiles reader see the same size and root under two origins and two keys. Fault modes
//! ([`faults::Faults`]) are only available with `allow_faults`.

mod api;
mod conn;
pub mod faults;
pub mod store;
mod writer;

use std::future::Future;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

pub(crate) use writer::CommitError;

use actors::domain::keys::{Algorithm, PrivateKey, PublicKey};
use actors::domain::log::{LogError, LogTree, forged_note, signed_checkpoint};
use actors::domain::note::Signer;
use actors::domain::receipt::TrustedLog;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

pub use conn::ConnHandle;
pub use faults::{Faults, ForkFault};

/// How to run the dev log.
#[derive(Debug, Clone, Default)]
pub struct DevLogConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// The origin (v2 checkpoint origin, key name of both checkpoints). Fixed when the data
    /// directory is created; default `localhost`.
    pub origin: Option<String>,
    /// The Rekor v1 log key (PKCS#8 PEM, ECDSA P-256), for checkpoints and SETs. Default:
    /// the one stored in the data directory, generated on first start.
    pub key_pem: Option<String>,
    /// The Rekor v2 checkpoint key (PKCS#8 PEM, Ed25519 or P-256). Default: the one stored
    /// in the data directory, an Ed25519 key generated on first start.
    pub checkpoint_key_pem: Option<String>,
    /// Whether fault modes may be used (at start and through `/__faults`).
    pub allow_faults: bool,
    /// The faults active from the start.
    pub faults: Faults,
}

/// Why the dev log could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DevLogError {
    /// A file in the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key could not be loaded or generated, or is of the wrong kind.
    #[error("key: {0}")]
    Key(String),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// Fault modes were requested without `allow_faults`.
    #[error(
        "fault modes are disabled: pass --allow-faults to use fault flags (this is a lab \
         tool; never enable faults on a log anyone relies on)"
    )]
    FaultsNotAllowed,
    /// The data directory holds something that cannot be read back.
    #[error("corrupt data directory: {0}")]
    Corrupt(String),
    /// The HTTP server failed.
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// The public identity of a running dev log: what a client must trust.
#[derive(Debug, Clone)]
pub struct DevLogInfo {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The origin and key name.
    pub origin: String,
    /// The Rekor v1 tree ID.
    pub tree_id: u64,
    /// The Rekor v1 checkpoint origin, `<origin> - <tree ID>`.
    pub v1_origin: String,
    /// The Rekor v1 public key (SPKI PEM).
    pub v1_public_key_pem: String,
    /// The Rekor v1 log ID: SHA-256 of the key's DER SPKI.
    pub v1_log_id: [u8; 32],
    /// The Rekor v1 checkpoint verifier key (C2SP vkey).
    pub v1_vkey: String,
    /// The Rekor v2 checkpoint public key (SPKI PEM).
    pub v2_public_key_pem: String,
    /// The Rekor v2 `logId.keyId`: the full 32-byte checkpoint key ID.
    pub v2_log_id: [u8; 32],
    /// The Rekor v2 checkpoint verifier key (C2SP vkey).
    pub v2_vkey: String,
    /// The v1 public key.
    pub v1_key: PublicKey,
    /// The v2 checkpoint public key.
    pub v2_key: PublicKey,
}

impl DevLogInfo {
    /// The trust anchor for receipts from the v1 API.
    pub fn trusted_v1(&self) -> TrustedLog {
        TrustedLog {
            log_id: self.v1_log_id.to_vec(),
            key: self.v1_key.clone(),
            host: self.origin.clone(),
        }
    }

    /// The trust anchor for receipts from the v2 API.
    pub fn trusted_v2(&self) -> TrustedLog {
        TrustedLog {
            log_id: self.v2_log_id.to_vec(),
            key: self.v2_key.clone(),
            host: self.origin.clone(),
        }
    }
}

/// A tree and the integrated time of each of its entries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Log {
    pub(crate) tree: LogTree,
    pub(crate) times: Vec<i64>,
}

impl Log {
    fn append(&mut self, body: Vec<u8>, time: i64) -> Result<u64, LogError> {
        let index = self.tree.append(body)?;
        self.times.push(time);
        Ok(index)
    }
}

/// Run-time fault state: the settings and the forked tree they imply.
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    pub(crate) fork: Option<Arc<Log>>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub(crate) info: DevLogInfo,
    pub(crate) v1_key: PrivateKey,
    pub(crate) v1_signer: Signer,
    pub(crate) v2_signer: Signer,
    /// Keys the wrong-key fault signs with.
    pub(crate) wrong_v1: PrivateKey,
    pub(crate) wrong_v2: PrivateKey,
    pub(crate) log: Arc<RwLock<Log>>,
    /// The group-commit writer: the only path that appends.
    writer: writer::Writer,
    pub(crate) allow_faults: bool,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) reads: AtomicU64,
}

/// The tree a read request sees: the main log (read-locked; never hold across an await) or
/// the forked one.
pub(crate) enum View<'a> {
    Main(RwLockReadGuard<'a, Log>),
    Fork(Arc<Log>),
}

impl Deref for View<'_> {
    type Target = Log;

    fn deref(&self) -> &Log {
        match self {
            View::Main(guard) => guard,
            View::Fork(log) => log,
        }
    }
}

impl Shared {
    /// The main tree, read-locked.
    pub(crate) fn main(&self) -> RwLockReadGuard<'_, Log> {
        // A panic while appending leaves a consistent tree (the append is the last step).
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .lock()
            .map(|f| f.faults.clone())
            .unwrap_or_default()
    }

    /// The tree a read with these headers sees.
    pub(crate) fn view(&self, headers: &axum::http::HeaderMap) -> View<'_> {
        let Ok(state) = self.faults.lock() else {
            return View::Main(self.main());
        };
        let fork = match (&state.faults.fork, &state.fork) {
            (Some(ForkFault::Header { header }), Some(fork)) => {
                headers.contains_key(header.as_str()).then(|| fork.clone())
            }
            (Some(ForkFault::Alternate), Some(fork)) => {
                (self.reads.fetch_add(1, Ordering::SeqCst) % 2 == 1).then(|| fork.clone())
            }
            _ => None,
        };
        drop(state);
        match fork {
            Some(f) => View::Fork(f),
            None => View::Main(self.main()),
        }
    }

    /// The size checkpoints show for a tree: its size, or the rollback size if smaller.
    pub(crate) fn shown_size(&self, log: &Log) -> u64 {
        let size = log.tree.size();
        match self.faults().rollback_to {
            Some(old) => old.min(size),
            None => size,
        }
    }

    fn sign(&self, log: &Log, origin: &str, size: u64, v1: bool) -> Result<String, LogError> {
        let checkpoint = log.tree.checkpoint(origin, size)?;
        let (signer, wrong) = if v1 {
            (&self.v1_signer, &self.wrong_v1)
        } else {
            (&self.v2_signer, &self.wrong_v2)
        };
        if self.faults().wrong_key {
            forged_note(&checkpoint.to_text(), signer.verifier(), wrong)
        } else {
            signed_checkpoint(&checkpoint, &[signer])
        }
    }

    /// The signed Rekor v1 checkpoint of the first `size` entries.
    pub(crate) fn v1_checkpoint(&self, log: &Log, size: u64) -> Result<String, LogError> {
        self.sign(log, &self.info.v1_origin, size, true)
    }

    /// The signed Rekor v2 / tlog-tiles checkpoint of the first `size` entries.
    pub(crate) fn v2_checkpoint(&self, log: &Log, size: u64) -> Result<String, LogError> {
        self.sign(log, &self.info.origin, size, false)
    }

    /// Appends `body` durably (fsynced before this returns) and returns its index.
    pub(crate) async fn commit(&self, body: Vec<u8>) -> Result<u64, CommitError> {
        self.writer.commit(body).await
    }

    /// Replaces the fault settings, building or dropping the forked tree.
    pub(crate) fn set_faults(&self, faults: Faults) -> Result<Faults, String> {
        faults.validate()?;
        let fork = match faults.fork {
            Some(_) => Some(Arc::new(self.build_fork().map_err(|e| e.to_string())?)),
            None => None,
        };
        let mut state = self.faults.lock().map_err(|_| "fault state poisoned")?;
        // Keep an existing fork while the setting stays on, so the forked view is stable.
        let fork = match (&state.fork, fork) {
            (Some(old), Some(_)) if state.faults.fork.is_some() => Some(old.clone()),
            (_, new) => new,
        };
        state.faults = faults.clone();
        state.fork = fork;
        Ok(faults)
    }

    /// The forked tree: every entry but the last, then an entry the main log never had.
    fn build_fork(&self) -> Result<Log, LogError> {
        let main = self.main();
        let keep = main.tree.size().saturating_sub(1);
        let mut fork = Log {
            tree: main.tree.prefix(keep)?,
            times: main.times[..keep as usize].to_vec(),
        };
        let mut nonce = [0u8; 16];
        let _ = getrandom::fill(&mut nonce);
        let body = format!(
            r#"{{"apiVersion":"0.0.1","kind":"dev-log-fork","spec":{{"nonce":"{}"}}}}"#,
            hex::encode(nonce)
        );
        fork.append(body.into_bytes(), chrono::Utc::now().timestamp())?;
        Ok(fork)
    }
}

/// An opened dev log, ready to serve.
pub struct DevLog {
    shared: Arc<Shared>,
}

impl DevLog {
    /// Opens (or creates) the data directory: identity, keys, entries; writes the public
    /// keys. Refuses fault settings unless `allow_faults`.
    pub fn open(config: DevLogConfig) -> Result<Self, DevLogError> {
        if config.faults.any() && !config.allow_faults {
            return Err(DevLogError::FaultsNotAllowed);
        }
        config.faults.validate().map_err(DevLogError::Config)?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| DevLogError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut meta = store::load_meta(dir, config.origin.as_deref())?;
        let v1_loaded = store::load_key(
            dir,
            store::V1_KEY_FILE,
            config.key_pem.as_deref(),
            Algorithm::P256,
        )?;
        let v1_key = v1_loaded.key.clone();
        if v1_key.algorithm() != Algorithm::P256 {
            return Err(DevLogError::Key(
                "the Rekor v1 log key must be ECDSA P-256 (it signs SETs)".into(),
            ));
        }
        let v2_loaded = store::load_key(
            dir,
            store::V2_KEY_FILE,
            config.checkpoint_key_pem.as_deref(),
            Algorithm::Ed25519,
        )?;
        let v2_key = v2_loaded.key.clone();
        let key_err = |e: actors::domain::note::NoteError| DevLogError::Key(e.to_string());
        let v1_signer = Signer::new(&meta.origin, v1_key.clone()).map_err(key_err)?;
        let v2_signer = Signer::new(&meta.origin, v2_key.clone()).map_err(key_err)?;
        let pem = |k: &PublicKey| k.to_pem().map_err(|e| DevLogError::Key(e.to_string()));
        let v1_public = v1_key.public_key();
        let v2_public = v2_key.public_key();
        let info = DevLogInfo {
            data_dir: dir.clone(),
            origin: meta.origin.clone(),
            tree_id: meta.tree_id,
            v1_origin: format!("{} - {}", meta.origin, meta.tree_id),
            v1_public_key_pem: pem(&v1_public)?,
            v1_log_id: v1_public.spki_sha256(),
            v1_vkey: v1_signer.verifier().to_vkey(),
            v2_public_key_pem: pem(&v2_public)?,
            v2_log_id: v2_signer.verifier().key_id(),
            v2_vkey: v2_signer.verifier().to_vkey(),
            v1_key: v1_public,
            v2_key: v2_public,
        };
        store::check_keys(
            dir,
            &mut meta,
            &hex::encode(info.v1_log_id),
            &hex::encode(info.v2_log_id),
        )?;
        v1_loaded.store()?;
        v2_loaded.store()?;
        store::write_file(
            &dir.join(store::V1_PUB_FILE),
            info.v1_public_key_pem.as_bytes(),
            false,
        )?;
        store::write_file(
            &dir.join(store::V1_VKEY_FILE),
            format!("{}\n", info.v1_vkey).as_bytes(),
            false,
        )?;
        store::write_file(
            &dir.join(store::V2_PUB_FILE),
            info.v2_public_key_pem.as_bytes(),
            false,
        )?;
        store::write_file(
            &dir.join(store::V2_VKEY_FILE),
            format!("{}\n", info.v2_vkey).as_bytes(),
            false,
        )?;

        let (writer, records) = store::EntryFile::open(dir)?;
        let mut log = Log::default();
        for (i, (time, body)) in records.into_iter().enumerate() {
            log.append(body, time)
                .map_err(|e| DevLogError::Corrupt(format!("entry {i}: {e}")))?;
        }
        let log = Arc::new(RwLock::new(log));
        let writer = writer::Writer::start(writer, log.clone()).map_err(DevLogError::Serve)?;
        let random_key = |alg| {
            PrivateKey::generate(alg, &mut |buf| {
                getrandom::fill(buf).map_err(|e| e.to_string())
            })
            .map_err(|e| DevLogError::Key(e.to_string()))
        };
        let shared = Arc::new(Shared {
            info,
            v1_key,
            v1_signer,
            v2_signer,
            wrong_v1: random_key(Algorithm::P256)?,
            wrong_v2: random_key(v2_key.algorithm())?,
            log,
            writer,
            allow_faults: config.allow_faults,
            faults: Mutex::new(FaultState {
                faults: Faults::default(),
                fork: None,
            }),
            reads: AtomicU64::new(0),
        });
        shared
            .set_faults(config.faults)
            .map_err(DevLogError::Config)?;
        Ok(Self { shared })
    }

    /// The log's public identity.
    pub fn info(&self) -> &DevLogInfo {
        &self.shared.info
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.shared.main().tree.size()
    }

    /// A handle that reads the log's size and sets its faults while it is being served.
    pub fn control(&self) -> DevLogControl {
        DevLogControl {
            shared: self.shared.clone(),
        }
    }

    /// A one-paragraph description of the trust material, for the terminal.
    pub fn describe(&self) -> String {
        let i = self.info();
        format!(
            "origin: {origin}\ntree ID: {tree} (v1 checkpoint origin {v1o:?})\nentries: {size}\n\
             v1 log ID: {v1id}\nv1 checkpoint vkey: {v1vkey}\nv1 public key (also {dir}/{v1f}):\n{v1pem}\
             v2 log ID (base64): {v2id}\nv2 checkpoint vkey: {v2vkey}\nv2 public key (also {dir}/{v2f}):\n{v2pem}",
            origin = i.origin,
            tree = i.tree_id,
            v1o = i.v1_origin,
            size = self.size(),
            v1id = hex::encode(i.v1_log_id),
            v1vkey = i.v1_vkey,
            dir = i.data_dir.display(),
            v1f = store::V1_PUB_FILE,
            v1pem = i.v1_public_key_pem,
            v2id = B64.encode(i.v2_log_id),
            v2vkey = i.v2_vkey,
            v2f = store::V2_PUB_FILE,
            v2pem = i.v2_public_key_pem,
        )
    }

    /// Serves the log on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DevLogError> {
        // The path is cleaned before routing, as Rekor's router does, so a wrapper around
        // the router (not a route layer, which runs after routing) rewrites it.
        let app = tower::Layer::layer(
            &tower::util::MapRequestLayer::new(api::clean_request_path),
            api::router(self.shared),
        );
        axum::serve(
            conn::KillableListener(listener),
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                ConnHandle,
            >(app),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DevLogError::Serve)
    }
}

/// Controls a dev log from the process that serves it (tests): the same settings as
/// `POST /__faults`, without HTTP.
#[derive(Clone)]
pub struct DevLogControl {
    shared: Arc<Shared>,
}

impl DevLogControl {
    /// The number of entries in the real (not forked) tree.
    pub fn size(&self) -> u64 {
        self.shared.main().tree.size()
    }

    /// The root of the real tree.
    pub fn root(&self) -> [u8; 32] {
        self.shared.main().tree.root()
    }

    /// The current fault settings.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the fault settings; refused when the log was opened without `allow_faults`.
    pub fn set_faults(&self, faults: Faults) -> Result<Faults, DevLogError> {
        if !self.shared.allow_faults && faults.any() {
            return Err(DevLogError::FaultsNotAllowed);
        }
        self.shared.set_faults(faults).map_err(DevLogError::Config)
    }
}

/// Opens the log described by `config` and serves it on `listener` until `shutdown`.
pub async fn serve(
    config: DevLogConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DevLogError> {
    DevLog::open(config)?.serve(listener, shutdown).await
}

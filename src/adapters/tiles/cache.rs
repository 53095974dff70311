//! The filesystem tile cache behind the tile proxy and the tile-sync actor.
//!
//! Each configured tile log (a Rekor v2 backend) has a directory `<cache_dir>/<backend>/` in
//! the C2SP layout, so a cache directory is also a mirror `provd tiles verify` can check:
//!
//! * `checkpoint`: the latest checkpoint this cache verified (signature by a trusted key,
//!   origin, and consistency with the one before it, proven from tiles);
//! * `tile/<L>/<N>` and `tile/entries/<N>`: full tiles. Their content is fixed by their
//!   position in an append-only log, so each is written once (temp file + rename) and kept
//!   forever;
//! * `tile/<L>/<N>.p/<W>`: partial tiles, kept by width, removed when the full tile arrives.
//!
//! Nothing is stored or served before it is checked against the latest verified checkpoint:
//! a hash tile must lead to the checkpoint's root ([`verify_hash_tile`]), an entry bundle
//! must hash to its checked level-0 tile ([`verify_entry_bundle`]). A tile read back from
//! disk is checked again before it is served, so a file changed on disk is refused, removed
//! and fetched again. The other tiles such a check needs are read from disk or upstream and
//! need no trust: if the root matches, they were right.
//!
//! A size budget (`tiles.max_bytes`) caps what is stored; past it, tiles are still verified
//! and served, just not kept. Paths are built only from configured backend names and
//! canonical tile paths, and checked again before use, so no request reaches outside the
//! cache directory.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actors::domain::merkle::verify_consistency;
use actors::domain::note::Checkpoint;
use actors::domain::tile_check::{verify_entry_bundle, verify_hash_tile};
use actors::domain::tiles::{
    Tile, TileKind, TiledTree, entry_bundles_for_size, hash_tiles_for_size, tile_width,
};
use actors::ports::{PortError, PrefetchReport, RekorError, TilePrefetcher};
use async_trait::async_trait;
use futures::StreamExt;

use super::TilesError;
use super::client::{FetchedTiles, TileClient, TileSource, cut_to_width, with_tiles};
use crate::adapters::rekor::{BuildError, MAX_TILE_BYTES, Trust};
use crate::config::{RekorConfig, TilesConfig};

/// Tiles fetched at once by a prefetch.
const PREFETCH_CONCURRENCY: usize = 8;

/// A checkpoint this cache verified, with the signed note as received.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signed note, byte for byte as the log served it.
    pub note: Vec<u8>,
    /// Its parsed body.
    pub checkpoint: Checkpoint,
}

/// A tile ready to serve.
#[derive(Debug, Clone)]
pub struct Served {
    /// The bytes, verified.
    pub bytes: Vec<u8>,
    /// Whether it came from the cache.
    pub hit: bool,
}

/// The size budget shared by every log of a cache.
#[derive(Debug)]
struct Budget {
    max: u64,
    used: AtomicU64,
}

impl Budget {
    fn add(&self, n: u64) {
        let used = self.used.fetch_add(n, Ordering::SeqCst) + n;
        metrics::gauge!("provd_tile_cache_bytes").set(used as f64);
    }

    fn sub(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
        metrics::gauge!("provd_tile_cache_bytes").set(self.used.load(Ordering::SeqCst) as f64);
    }

    fn fits(&self, n: u64) -> bool {
        self.used.load(Ordering::SeqCst).saturating_add(n) <= self.max
    }
}

/// The tile cache of every configured tile log.
pub struct TileCache {
    logs: BTreeMap<String, Arc<CachedLog>>,
}

impl TileCache {
    /// Opens (creating) the cache directory for the configured tile logs and measures what
    /// it already holds.
    pub fn open(config: &TilesConfig, rekor: &RekorConfig) -> Result<TileCache, BuildError> {
        let io = |path: &Path, e: std::io::Error| BuildError::Http {
            backend: "tiles".into(),
            message: format!("tile cache {}: {e}", path.display()),
        };
        std::fs::create_dir_all(&config.cache_dir).map_err(|e| io(&config.cache_dir, e))?;
        let used = dir_size(&config.cache_dir).map_err(|e| io(&config.cache_dir, e))?;
        let budget = Arc::new(Budget {
            max: config.max_bytes,
            used: AtomicU64::new(0),
        });
        budget.add(used);
        let mut logs = BTreeMap::new();
        for name in &config.backends {
            let Some(backend) = rekor.backends.get(name) else {
                continue;
            };
            let dir = safe_join(&config.cache_dir, name).map_err(|e| BuildError::Http {
                backend: name.clone(),
                message: e.to_string(),
            })?;
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            for (metric, kind) in [
                ("provd_tile_cache_hits_total", "tile"),
                ("provd_tile_cache_misses_total", "tile"),
                ("provd_tile_cache_corrupt_total", "tile"),
                ("provd_tile_cache_budget_skips_total", "tile"),
            ] {
                metrics::counter!(metric, "backend" => name.clone(), "kind" => kind).absolute(0);
            }
            logs.insert(
                name.clone(),
                Arc::new(CachedLog {
                    name: name.clone(),
                    origin: backend.origin.clone(),
                    dir,
                    upstream: TileClient::for_backend(backend)?,
                    trust: Trust::new(name, &backend.origin, false, &backend.keys)?,
                    budget: budget.clone(),
                    verified: tokio::sync::Mutex::new(None),
                }),
            );
        }
        Ok(TileCache { logs })
    }

    /// The log named by a proxy path: a backend name, or the origin of one.
    pub fn log(&self, name_or_origin: &str) -> Result<Arc<CachedLog>, TilesError> {
        if let Some(log) = self.logs.get(name_or_origin) {
            return Ok(log.clone());
        }
        self.logs
            .values()
            .find(|l| l.origin == name_or_origin)
            .cloned()
            .ok_or_else(|| TilesError::UnknownLog(name_or_origin.chars().take(200).collect()))
    }

    /// The configured logs' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.logs.keys().map(String::as_str)
    }
}

/// Describes the cache's metrics for `/metrics`.
pub fn describe_metrics(backends: &[String]) {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "provd_tile_cache_hits_total",
        "Tiles and checkpoints served from the tile cache after verification"
    );
    describe_counter!(
        "provd_tile_cache_misses_total",
        "Tiles fetched upstream because the cache did not hold them"
    );
    describe_counter!(
        "provd_tile_cache_corrupt_total",
        "Cached tiles that failed verification and were removed"
    );
    describe_counter!(
        "provd_tile_cache_budget_skips_total",
        "Verified tiles served but not stored because the cache is at its size budget"
    );
    describe_gauge!(
        "provd_tile_cache_bytes",
        "Bytes held by the tile cache directory"
    );
    describe_counter!(
        "provd_tile_prefetch_total",
        "Checkpoints whose tiles the tile-sync actor prefetched, by outcome"
    );
    // The series whose labels are known at start, at zero.
    for b in backends {
        for kind in ["tile", "entries", "checkpoint"] {
            for name in [
                "provd_tile_cache_hits_total",
                "provd_tile_cache_misses_total",
                "provd_tile_cache_corrupt_total",
                "provd_tile_cache_budget_skips_total",
            ] {
                metrics::counter!(name, "backend" => b.clone(), "kind" => kind).increment(0);
            }
        }
    }
    metrics::gauge!("provd_tile_cache_bytes").increment(0.0);
    for outcome in ["ok", "retry", "refused"] {
        metrics::counter!("provd_tile_prefetch_total", "outcome" => outcome).increment(0);
    }
}

/// One tile log's part of the cache.
pub struct CachedLog {
    name: String,
    origin: String,
    dir: PathBuf,
    upstream: TileClient,
    trust: Trust,
    budget: Arc<Budget>,
    verified: tokio::sync::Mutex<Option<Verified>>,
}

/// Where the tiles a check needs come from: this cache's files (unverified, which is fine
/// for helpers), then the log.
struct Helpers<'a> {
    log: &'a CachedLog,
    use_disk: bool,
}

#[async_trait]
impl TileSource for Helpers<'_> {
    async fn fetch(&self, tile: &Tile) -> Result<Option<Vec<u8>>, RekorError> {
        if self.use_disk
            && let Ok(path) = self.log.tile_path(tile)
            && let Ok(bytes) = tokio::fs::read(&path).await
        {
            return Ok(Some(bytes));
        }
        self.log.upstream.fetch(tile).await
    }
}

impl CachedLog {
    /// The backend name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory of this log's tiles.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tiles as proofs read them: this cache's files, then the log. Unchecked; whatever
    /// is built from them must be checked against a verified checkpoint.
    pub fn source(&self) -> impl TileSource + '_ {
        Helpers {
            log: self,
            use_disk: true,
        }
    }

    /// The cache file of a tile, checked to stay inside the log's directory.
    fn tile_path(&self, tile: &Tile) -> Result<PathBuf, TilesError> {
        safe_join(&self.dir, &tile.path())
    }

    fn count(&self, metric: &'static str, kind: &'static str) {
        metrics::counter!(metric, "backend" => self.name.clone(), "kind" => kind).increment(1);
    }

    /// Verifies a signed note with the backend's keys and origin.
    fn open_note(&self, note: &[u8]) -> Result<Checkpoint, TilesError> {
        let text = std::str::from_utf8(note)
            .map_err(|_| TilesError::Unverified("checkpoint is not UTF-8".into()))?;
        let (checkpoint, _) = self
            .trust
            .checkpoint(text)
            .map_err(|e| TilesError::Unverified(e.to_string()))?;
        Ok(checkpoint)
    }

    /// The latest verified checkpoint held in memory or on disk (checked again when read
    /// from disk), without asking the log.
    pub async fn stored_checkpoint(&self) -> Option<Verified> {
        let mut guard = self.verified.lock().await;
        if guard.is_none() {
            let path = self.dir.join("checkpoint");
            if let Ok(note) = tokio::fs::read(&path).await {
                match self.open_note(&note) {
                    Ok(checkpoint) => *guard = Some(Verified { note, checkpoint }),
                    Err(e) => {
                        tracing::warn!(backend = %self.name, error = %e, "ignoring the cached checkpoint");
                    }
                }
            }
        }
        guard.clone()
    }

    /// The latest verified checkpoint: the stored one, or the log's when none is stored.
    pub async fn current(&self) -> Result<Verified, TilesError> {
        match self.stored_checkpoint().await {
            Some(v) => Ok(v),
            None => self.refresh().await,
        }
    }

    /// Fetches the log's checkpoint and accepts it (see [`CachedLog::accept`]).
    pub async fn refresh(&self) -> Result<Verified, TilesError> {
        let note = self.upstream.checkpoint().await?;
        self.accept(note).await
    }

    /// The checkpoint to serve: the log's latest once verified, or the stored one while the
    /// log cannot be reached (an offline mirror).
    pub async fn checkpoint_to_serve(&self) -> Result<(Vec<u8>, bool), TilesError> {
        match self.refresh().await {
            Ok(v) => Ok((v.note, false)),
            Err(e) if e.is_transient() => match self.stored_checkpoint().await {
                Some(v) => {
                    self.count("provd_tile_cache_hits_total", "checkpoint");
                    Ok((v.note, true))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Verifies a signed checkpoint and makes it the cache's latest: signed by a trusted key
    /// with the log's origin, and (when one was verified before) not smaller, with the same
    /// root at the same size, and consistent with it by a proof built from tiles.
    pub async fn accept(&self, note: Vec<u8>) -> Result<Verified, TilesError> {
        let checkpoint = self.open_note(&note)?;
        let previous = self.stored_checkpoint().await;
        if let Some(old) = &previous {
            let old = &old.checkpoint;
            if checkpoint.size < old.size {
                return Err(TilesError::Unverified(format!(
                    "the log's checkpoint has size {}, smaller than the verified {}",
                    checkpoint.size, old.size
                )));
            }
            if checkpoint.size == old.size && checkpoint.root != old.root {
                return Err(TilesError::Unverified(format!(
                    "the log's checkpoint of size {} has a different root than the verified one",
                    checkpoint.size
                )));
            }
            if checkpoint.size > old.size && old.size > 0 {
                self.check_consistency(old, &checkpoint).await?;
            }
        }
        let verified = Verified { note, checkpoint };
        let mut guard = self.verified.lock().await;
        // A concurrent accept may have stored a larger one meanwhile; keep the larger.
        if guard
            .as_ref()
            .is_some_and(|g| g.checkpoint.size > verified.checkpoint.size)
        {
            return Ok(guard.clone().expect("checked"));
        }
        write_atomic(&self.dir.join("checkpoint"), &verified.note).await?;
        *guard = Some(verified.clone());
        Ok(verified)
    }

    async fn check_consistency(
        &self,
        old: &Checkpoint,
        new: &Checkpoint,
    ) -> Result<(), TilesError> {
        let (size, old_size) = (new.size, old.size);
        let mut last = None;
        for use_disk in [true, false] {
            let helpers = Helpers {
                log: self,
                use_disk,
            };
            let mut fetched = FetchedTiles::default();
            let built = with_tiles(&helpers, &mut fetched, |f| {
                let mut tree = TiledTree::new(f, size);
                Ok((tree.root()?, tree.consistency_proof(old_size, size)?))
            })
            .await;
            match built {
                Ok((root, proof)) => {
                    let checked = if root != new.root {
                        Err("the tiles do not lead to the new checkpoint's root".to_owned())
                    } else {
                        verify_consistency(old_size, size, &proof, &old.root, &new.root)
                            .map_err(|e| e.to_string())
                    };
                    match checked {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            last = Some(TilesError::Unverified(format!(
                                "checkpoint of size {size} is not consistent with the verified one of size {old_size}: {e}"
                            )))
                        }
                    }
                }
                Err(e @ RekorError::Unverified(_)) => last = Some(e.into()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.expect("two attempts"))
    }

    /// Checks a tile against a verified checkpoint: first with helper tiles from disk, then,
    /// if that fails, from the log alone (a damaged helper on disk must not condemn a good
    /// tile).
    async fn verify(&self, tile: &Tile, bytes: &[u8], v: &Checkpoint) -> Result<(), TilesError> {
        let mut result = Ok(());
        for use_disk in [true, false] {
            let helpers = Helpers {
                log: self,
                use_disk,
            };
            let mut fetched = FetchedTiles::default();
            result = with_tiles(&helpers, &mut fetched, |f| match tile.kind() {
                TileKind::Hash(_) => verify_hash_tile(f, v.size, &v.root, tile, bytes).map(|_| ()),
                TileKind::Entries => verify_entry_bundle(f, v.size, &v.root, tile, bytes),
            })
            .await;
            match &result {
                Ok(()) => return Ok(()),
                Err(RekorError::Unverified(_)) => {}
                Err(_) => break,
            }
        }
        result.map_err(|e| match e {
            RekorError::Unverified(m) => TilesError::Unverified(format!("{}: {m}", tile.path())),
            other => other.into(),
        })
    }

    /// Reads a tile from disk: its own file, or the full tile cut to its width.
    async fn read_disk(&self, tile: &Tile) -> Result<Option<(Vec<u8>, PathBuf)>, TilesError> {
        let path = self.tile_path(tile)?;
        if let Some(bytes) = read_if_exists(&path).await? {
            return Ok(Some((bytes, path)));
        }
        if tile.is_full() {
            return Ok(None);
        }
        // A partial tile is a prefix of every wider one at its position: the full tile, or
        // a wider partial tile kept from a larger checkpoint.
        let full = self.tile_path(&tile.full())?;
        let mut wider = vec![full.clone()];
        let partials = PathBuf::from(format!("{}.p", full.display()));
        if let Ok(mut entries) = tokio::fs::read_dir(&partials).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let width = entry
                    .file_name()
                    .to_str()
                    .and_then(|w| w.parse::<u16>().ok());
                if width.is_some_and(|w| w > tile.width() && w < 256) {
                    wider.push(entry.path());
                }
            }
        }
        for path in wider {
            if let Some(bytes) = read_if_exists(&path).await? {
                return match cut_to_width(tile, &bytes) {
                    Ok(cut) => Ok(Some((cut, path))),
                    // Too short to hold the partial tile: damaged; the caller removes it.
                    Err(_) => Ok(Some((Vec::new(), path))),
                };
            }
        }
        Ok(None)
    }

    /// Whether the cache holds the tile (its own file or the full one), unchecked.
    async fn holds(&self, tile: &Tile) -> bool {
        let exists = |t: &Tile| {
            let path = self.tile_path(t);
            async move {
                match path {
                    Ok(p) => tokio::fs::try_exists(&p).await.unwrap_or(false),
                    Err(_) => false,
                }
            }
        };
        exists(tile).await || (!tile.is_full() && exists(&tile.full()).await)
    }

    /// A verified tile: from the cache when it holds one that verifies, otherwise from the
    /// log (falling back from a partial tile that is gone to the full one), verified, then
    /// stored. The tile must be implied by the latest verified checkpoint; a newer checkpoint
    /// is fetched and accepted when the stored one is too small.
    pub async fn tile(&self, tile: &Tile) -> Result<Served, TilesError> {
        let mut v = self.current().await?;
        if !implied(tile, v.checkpoint.size) {
            v = self.refresh().await?;
            if !implied(tile, v.checkpoint.size) {
                return Err(TilesError::NotFound(format!(
                    "{} is not part of the log as of its latest verified checkpoint (size {})",
                    tile.path(),
                    v.checkpoint.size
                )));
            }
        }
        let kind = kind_label(tile);
        if let Some((bytes, path)) = self.read_disk(tile).await? {
            match self.verify(tile, &bytes, &v.checkpoint).await {
                Ok(()) => {
                    self.count("provd_tile_cache_hits_total", kind);
                    return Ok(Served { bytes, hit: true });
                }
                Err(TilesError::Unverified(why)) => {
                    self.count("provd_tile_cache_corrupt_total", kind);
                    tracing::warn!(backend = %self.name, tile = %tile.path(), reason = %why, "cached tile failed verification; removing it and fetching it again");
                    self.remove(&path).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.count("provd_tile_cache_misses_total", kind);
        let bytes = self.upstream.tile_or_full(tile).await?.ok_or_else(|| {
            TilesError::NotFound(format!(
                "the log does not serve {} (nor its full tile)",
                tile.path()
            ))
        })?;
        self.verify(tile, &bytes, &v.checkpoint).await?;
        if let Err(e) = self.store(tile, &bytes).await {
            tracing::warn!(backend = %self.name, tile = %tile.path(), error = %e, "cannot store a verified tile");
        }
        Ok(Served { bytes, hit: false })
    }

    /// Stores a verified tile once; a full tile replaces the partial ones at its position.
    async fn store(&self, tile: &Tile, bytes: &[u8]) -> Result<(), TilesError> {
        let path = self.tile_path(tile)?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let len = bytes.len() as u64;
        if !self.budget.fits(len) {
            self.count("provd_tile_cache_budget_skips_total", kind_label(tile));
            return Ok(());
        }
        write_atomic(&path, bytes).await?;
        self.budget.add(len);
        if tile.is_full() {
            let partials = PathBuf::from(format!("{}.p", path.display()));
            if let Ok(freed) = dir_size(&partials)
                && tokio::fs::remove_dir_all(&partials).await.is_ok()
            {
                self.budget.sub(freed);
            }
        }
        Ok(())
    }

    async fn remove(&self, path: &Path) {
        if let Ok(meta) = tokio::fs::metadata(path).await
            && tokio::fs::remove_file(path).await.is_ok()
        {
            self.budget.sub(meta.len());
        }
    }

    /// Fetches, verifies and stores every tile and entry bundle of the verified checkpoint
    /// that the cache does not hold yet.
    pub async fn prefetch_all(&self, v: &Verified) -> Result<PrefetchReport, TilesError> {
        let size = v.checkpoint.size;
        let wanted: Vec<Tile> = hash_tiles_for_size(size)
            .into_iter()
            .chain(entry_bundles_for_size(size))
            .collect();
        let mut report = PrefetchReport::default();
        let mut results = futures::stream::iter(wanted)
            .map(|tile| async move {
                if self.holds(&tile).await {
                    return Ok(false);
                }
                self.tile(&tile).await.map(|_| true)
            })
            .buffer_unordered(PREFETCH_CONCURRENCY);
        while let Some(r) = results.next().await {
            if r? {
                report.fetched += 1;
            } else {
                report.cached += 1;
            }
        }
        Ok(report)
    }
}

/// Whether the checkpoint of `size` leaves implies `tile` (at least its width).
pub fn implied(tile: &Tile, size: u64) -> bool {
    let level = match tile.kind() {
        TileKind::Hash(level) => level,
        TileKind::Entries => 0,
    };
    tile_width(level, tile.index(), size).is_some_and(|w| tile.width() <= w)
}

fn kind_label(tile: &Tile) -> &'static str {
    match tile.kind() {
        TileKind::Hash(_) => "tile",
        TileKind::Entries => "entries",
    }
}

#[async_trait]
impl TilePrefetcher for TileCache {
    fn mirrors(&self, backend: &str) -> bool {
        self.logs.contains_key(backend)
    }

    async fn prefetch(&self, backend: &str, note: &str) -> Result<PrefetchReport, PortError> {
        let port = |e: TilesError| {
            if e.is_transient() {
                PortError::Unavailable {
                    service: "tile log",
                    message: e.to_string(),
                }
            } else {
                PortError::Rejected(e.to_string())
            }
        };
        let log = self.log(backend).map_err(port)?;
        let observed = log.open_note(note.as_bytes()).map_err(port)?;
        let current = log.stored_checkpoint().await;
        let v = match current {
            // Another node's older (or equal) observation: the cache is already past it.
            Some(v) if v.checkpoint.size >= observed.size => v,
            _ => log.accept(note.as_bytes().to_vec()).await.map_err(port)?,
        };
        log.prefetch_all(&v).await.map_err(port)
    }
}

/// `base/rel`, refusing any component of `rel` that is not a plain name (no `..`, no root,
/// no prefix), so the result stays inside `base`.
pub fn safe_join(base: &Path, rel: &str) -> Result<PathBuf, TilesError> {
    let bad = || {
        TilesError::BadPath(actors::domain::tiles::TileError::UnsafePath(
            rel.chars().take(200).collect(),
        ))
    };
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return Err(bad());
    }
    let mut out = base.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad());
        }
        // Each part must be one plain name on this platform too.
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(name)), None) => out.push(name),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

async fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, TilesError> {
    match tokio::fs::read(path).await {
        Ok(bytes) if bytes.len() <= MAX_TILE_BYTES => Ok(Some(bytes)),
        // Larger than any tile: damaged; verification refuses it and the caller removes it.
        Ok(_) => Ok(Some(Vec::new())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
        Err(source) => Err(TilesError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a file atomically: a temporary file in the same directory, then a rename.
pub async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TilesError> {
    let (path, bytes) = (path.to_owned(), bytes.to_vec());
    tokio::task::spawn_blocking(move || write_atomic_blocking(&path, &bytes))
        .await
        .map_err(|e| TilesError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
}

/// [`write_atomic`] for a caller already on a blocking thread (the mirror stages its tiles
/// from the threads that check them).
pub fn write_atomic_blocking(path: &Path, bytes: &[u8]) -> Result<(), TilesError> {
    let io = |source| TilesError::Io {
        path: path.to_owned(),
        source,
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io)?;
    let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// The bytes of the files under `dir` (0 when it does not exist).
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_stay_inside_the_base() {
        let base = Path::new("/cache/lab");
        assert_eq!(
            safe_join(base, "tile/0/x001/234.p/5").unwrap(),
            PathBuf::from("/cache/lab/tile/0/x001/234.p/5")
        );
        for bad in [
            "../x",
            "tile/../../etc/passwd",
            "/etc/passwd",
            "tile/./0",
            "",
            "a\\b",
            "tile/0/\u{0}",
        ] {
            assert!(safe_join(base, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn implied_tiles() {
        let t = |kind, index, width| Tile::new(kind, index, width).unwrap();
        assert!(implied(&t(TileKind::Hash(0), 0, 10), 300));
        assert!(implied(&t(TileKind::Hash(0), 1, 44), 300));
        assert!(!implied(&t(TileKind::Hash(0), 1, 45), 300));
        assert!(!implied(&t(TileKind::Hash(0), 1, 256), 300));
        assert!(implied(&t(TileKind::Entries, 0, 256), 300));
        assert!(implied(&t(TileKind::Hash(1), 0, 1), 300));
        assert!(!implied(&t(TileKind::Hash(1), 0, 2), 300));
    }
}

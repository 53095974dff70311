//! `provd tiles sync`: a verified mirror of a tile log in a directory, offline-ready.
//!
//! The directory has exactly the layout `provd tiles verify` reads: `checkpoint` (the signed
//! note as the log served it) and `tile/...` (hash tiles and entry bundles, C2SP paths). A
//! sync verifies the log's checkpoint with the trusted keys, then fetches every tile its tree
//! needs that the directory lacks into `.staging/` (each file written atomically, so an
//! interrupted sync resumes where it stopped) and checks the whole tree — every entry
//! against its leaf hash, every hash tile against the level below, the root against the
//! checkpoint — and the consistency of the new checkpoint with the one the directory held.
//! Each level-0 tile is checked with its entry bundle as soon as both are here, on a
//! blocking thread, so fetching, staging and hashing overlap on every core; the levels above
//! (1/256 of the tiles) are checked last. Only then are the staged tiles moved in (full
//! tiles replacing the partial ones at their position) and the checkpoint replaced, so the
//! directory always holds a verified log. A failed check empties the staging area, so the
//! next sync fetches afresh; a failed fetch keeps it, so the next sync resumes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use actors::domain::merkle::{Hash, verify_consistency};
use actors::domain::note::{Checkpoint, Verifier, verify_checkpoint};
use actors::domain::tiles::{
    LeafTile, ReadError, Stored, Tile, TileKind, TileReader, TiledTree, TilesReport,
    check_leaf_tile, entry_bundles_for_size, hash_tiles_for_size, verify_upper_tiles,
};
use futures::StreamExt;
use indicatif::ProgressBar;

use super::TilesError;
use super::cache::{write_atomic, write_atomic_blocking};
use super::client::{TileSource, cut_to_width};

/// The staging directory inside a mirror.
pub const STAGING: &str = ".staging";

/// What a sync did.
#[derive(Debug, Clone, Default)]
pub struct MirrorReport {
    /// The mirrored tree size.
    pub size: u64,
    /// The size the directory held before, if any.
    pub previous_size: Option<u64>,
    /// Tiles fetched by this run.
    pub fetched: u64,
    /// Tiles already present (in the mirror, or staged by an interrupted run).
    pub present: u64,
    /// Bytes fetched by this run.
    pub bytes_fetched: u64,
    /// What the final check read.
    pub verified: TilesReport,
}

/// How a sync reports progress: a bar (hidden when not on a terminal) and its phases.
pub trait Progress: Send + Sync {
    /// A new phase with `total` steps.
    fn phase(&self, name: &str, total: u64);
    /// `n` more steps done.
    fn inc(&self, n: u64);
}

impl Progress for ProgressBar {
    fn phase(&self, name: &str, total: u64) {
        self.set_message(name.to_owned());
        self.set_length(total);
        self.set_position(0);
    }

    fn inc(&self, n: u64) {
        ProgressBar::inc(self, n);
    }
}

/// No progress reporting.
pub struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _: &str, _: u64) {}
    fn inc(&self, _: u64) {}
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TilesError + '_ {
    move |source| TilesError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exists(path: &Path) -> bool {
    path.try_exists().unwrap_or(false)
}

/// Brings `dir` to the checkpoint `note` (signed by one of `verifiers`, with `origin`) from
/// `source`, fetching up to `concurrency` tiles at once. See the module documentation.
pub async fn sync_mirror<S: TileSource + ?Sized>(
    source: &S,
    verifiers: &[Verifier],
    origin: &str,
    note: Vec<u8>,
    dir: &Path,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<MirrorReport, TilesError> {
    let checkpoint = verify_checkpoint(&note, verifiers, Some(origin))
        .map_err(|e| TilesError::Unverified(format!("the log's checkpoint: {e}")))?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let previous = previous_checkpoint(dir, verifiers, origin)?;
    if let Some(old) = &previous {
        if checkpoint.size < old.size {
            return Err(TilesError::Unverified(format!(
                "the log's checkpoint has size {}, smaller than the mirror's {}",
                checkpoint.size, old.size
            )));
        }
        if checkpoint.size == old.size && checkpoint.root != old.root {
            return Err(TilesError::Unverified(format!(
                "the log's checkpoint of size {} has a different root than the mirror's",
                checkpoint.size
            )));
        }
    }
    let size = checkpoint.size;
    let staging = dir.join(STAGING);
    let mut report = MirrorReport {
        size,
        previous_size: previous.as_ref().map(|c| c.size),
        ..MirrorReport::default()
    };
    let local = Local::new(dir);
    let (hash_tiles, bundles) = (
        hash_tiles_for_size(size).len() as u64,
        entry_bundles_for_size(size).len() as u64,
    );
    progress.phase("fetching and checking tiles", hash_tiles + bundles);
    let checked =
        match fetch_and_check(source, &local, size, concurrency, progress, &mut report).await {
            Ok(leaf_tiles) => {
                let root = checkpoint.root;
                let old = previous.clone();
                // Level 0 has one tile per entry bundle.
                progress.phase("checking the levels above", hash_tiles - bundles);
                let layers = [staging.clone(), dir.to_owned()];
                tokio::task::spawn_blocking(move || {
                    check_tree(layers, size, root, leaf_tiles, old.as_ref())
                })
                .await
                .unwrap_or_else(|_| Err("the verification thread panicked".into()))
            }
            // A failed fetch keeps what is staged, so the next run resumes.
            Err(Failure::Fetch(e)) => return Err(e),
            Err(Failure::Check(e)) => Err(e),
        };
    match checked {
        Ok(r) => report.verified = r,
        Err(e) => {
            // Nothing unverified may be picked up by the next run.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(TilesError::Unverified(e));
        }
    }

    progress.phase("moving tiles into place", report.fetched);
    tokio::task::spawn_blocking(move || move_into_place(&local, size))
        .await
        .map_err(|e| TilesError::Io {
            path: dir.to_owned(),
            source: std::io::Error::other(e),
        })??;
    write_atomic(&dir.join("checkpoint"), &note).await?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(report)
}

/// Where the mirror already holds tiles, decided once per sync.
#[derive(Clone)]
struct Local {
    dir: PathBuf,
    staging: PathBuf,
    /// Whether anything is staged or mirrored at all: a first sync then checks no paths.
    any_staged: bool,
    any_mirrored: bool,
}

impl Local {
    fn new(dir: &Path) -> Self {
        let staging = dir.join(STAGING);
        Self {
            any_staged: exists(&staging),
            any_mirrored: exists(&dir.join("tile")),
            dir: dir.to_owned(),
            staging,
        }
    }

    /// Whether the tile is staged or mirrored (a partial tile also as its full tile).
    fn holds(&self, t: &Tile) -> bool {
        (self.any_staged && exists(&self.staging.join(t.path())))
            || (self.any_mirrored
                && (exists(&self.dir.join(t.path()))
                    || (!t.is_full() && exists(&self.dir.join(t.full().path())))))
    }

    /// Reads a held tile: staged, then mirrored, falling back from a partial tile to the full
    /// one. The bytes and whether they are the full tile.
    fn read(&self, tile: &Tile) -> Result<Option<(Vec<u8>, bool)>, TilesError> {
        let layers = [&self.staging, &self.dir];
        for (t, from_full) in [(*tile, false), (tile.full(), true)] {
            if from_full && tile.is_full() {
                break;
            }
            for layer in layers {
                let path = layer.join(t.path());
                match std::fs::read(&path) {
                    Ok(bytes) => return Ok(Some((bytes, from_full))),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                        ) => {}
                    Err(e) => return Err(io(&path)(e)),
                }
            }
        }
        Ok(None)
    }
}

/// A tile's bytes for a check: held already, or fetched by this run (staged once checked).
struct Got {
    bytes: Vec<u8>,
    from_full: bool,
    fetched: bool,
}

impl Got {
    fn stored(&self) -> Stored<'_> {
        Stored {
            bytes: &self.bytes,
            from_full: self.from_full,
        }
    }
}

/// Why getting and checking the tiles stopped: a fetch or a write failed (the staged tiles
/// stay, so the next run resumes), or a tile does not verify (the staging area goes).
enum Failure {
    Fetch(TilesError),
    Check(String),
}

/// Fetches `tile` from `source` unless the mirror holds it; a partial tile the log has
/// completed is cut from the full one.
async fn fetch_missing<S: TileSource + ?Sized>(
    source: &S,
    local: &Local,
    tile: &Tile,
) -> Result<Option<Vec<u8>>, TilesError> {
    if local.holds(tile) {
        return Ok(None);
    }
    let bytes = match source.fetch(tile).await? {
        Some(b) => b,
        None if !tile.is_full() => match source.fetch(&tile.full()).await? {
            Some(full) => cut_to_width(tile, &full)?,
            None => return Err(missing_tile(tile)),
        },
        None => return Err(missing_tile(tile)),
    };
    Ok(Some(bytes))
}

/// The fetched bytes, or the held tile read from the mirror.
fn fetched_or_read(
    local: &Local,
    tile: &Tile,
    fetched: Option<Vec<u8>>,
    size: u64,
) -> Result<Got, Failure> {
    if let Some(bytes) = fetched {
        return Ok(Got {
            bytes,
            from_full: false,
            fetched: true,
        });
    }
    match local.read(tile).map_err(Failure::Fetch)? {
        Some((bytes, from_full)) => Ok(Got {
            bytes,
            from_full,
            fetched: false,
        }),
        None => Err(Failure::Check(format!(
            "tiles for size {size}: missing tile {}",
            tile.path()
        ))),
    }
}

/// One level-0 tile and its entry bundle, checked: the check's result, and the tiles and
/// bytes this run fetched for it.
struct Pair {
    index: u64,
    leaf: LeafTile,
    fetched: u64,
    bytes: u64,
}

/// Gets a level-0 tile and its entry bundle (held, or fetched), checks them on a blocking
/// thread, and stages what was fetched (each file atomically, so an interrupted sync
/// resumes from it).
async fn get_and_check_pair<S: TileSource + ?Sized>(
    source: &S,
    local: &Local,
    size: u64,
    tile: Tile,
) -> Result<Pair, Failure> {
    let bundle = Tile::new(TileKind::Entries, tile.index(), tile.width())
        .map_err(|e| Failure::Fetch(e.into()))?;
    let hashes = fetch_missing(source, local, &tile)
        .await
        .map_err(Failure::Fetch)?;
    let entries = fetch_missing(source, local, &bundle)
        .await
        .map_err(Failure::Fetch)?;
    let local = local.clone();
    tokio::task::spawn_blocking(move || {
        let hashes = fetched_or_read(&local, &tile, hashes, size)?;
        let entries = fetched_or_read(&local, &bundle, entries, size)?;
        let leaf = check_leaf_tile(&tile, hashes.stored(), Some(entries.stored()))
            .map_err(|e| Failure::Check(format!("tiles for size {size}: {e}")))?;
        let mut pair = Pair {
            index: tile.index(),
            leaf,
            fetched: 0,
            bytes: 0,
        };
        for (t, got) in [(&tile, &hashes), (&bundle, &entries)] {
            if got.fetched {
                write_atomic_blocking(&local.staging.join(t.path()), &got.bytes)
                    .map_err(Failure::Fetch)?;
                pair.fetched += 1;
                pair.bytes += got.bytes.len() as u64;
            }
        }
        Ok(pair)
    })
    .await
    .unwrap_or_else(|e| {
        Err(Failure::Check(format!(
            "the verification thread failed: {e}"
        )))
    })
}

/// Gets every level-0 tile with its entry bundle and checks each pair as it arrives, so
/// fetching, staging and hashing overlap and use every core; then gets and stages the tiles
/// above level 0 (checked by [`check_tree`]). Returns the level-0 results in index order.
/// Every task started has finished when it returns, so the caller may empty the staging
/// area.
async fn fetch_and_check<S: TileSource + ?Sized>(
    source: &S,
    local: &Local,
    size: u64,
    concurrency: usize,
    progress: &dyn Progress,
    report: &mut MirrorReport,
) -> Result<Vec<LeafTile>, Failure> {
    // After a failure the pairs still queued do nothing.
    let failed = AtomicBool::new(false);
    let failed = &failed;
    let (level0, upper): (Vec<Tile>, Vec<Tile>) = hash_tiles_for_size(size)
        .into_iter()
        .partition(|t| t.kind() == TileKind::Hash(0));
    let mut leaf_tiles: Vec<Option<LeafTile>> = vec![None; level0.len()];
    let mut pairs = futures::stream::iter(level0)
        .map(|tile| async move {
            if failed.load(Ordering::Relaxed) {
                return Ok(None);
            }
            get_and_check_pair(source, local, size, tile)
                .await
                .map(Some)
        })
        .buffer_unordered(concurrency.max(1));
    let mut first_failure = None;
    while let Some(result) = pairs.next().await {
        match result {
            Ok(Some(pair)) => {
                report.fetched += pair.fetched;
                report.present += 2 - pair.fetched;
                report.bytes_fetched += pair.bytes;
                progress.inc(2);
                leaf_tiles[pair.index as usize] = Some(pair.leaf);
            }
            Ok(None) => {}
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                first_failure.get_or_insert(e);
            }
        }
    }
    drop(pairs);
    if let Some(e) = first_failure {
        return Err(e);
    }

    // The few tiles above level 0.
    let mut fetches = futures::stream::iter(upper)
        .map(|tile| async move {
            let Some(bytes) = fetch_missing(source, local, &tile).await? else {
                return Ok(None);
            };
            write_atomic(&local.staging.join(tile.path()), &bytes).await?;
            Ok::<_, TilesError>(Some(bytes.len() as u64))
        })
        .buffer_unordered(concurrency.max(1));
    let mut first_error = None;
    while let Some(fetched) = fetches.next().await {
        match fetched {
            Ok(Some(bytes)) => {
                report.bytes_fetched += bytes;
                report.fetched += 1;
            }
            Ok(None) => report.present += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        progress.inc(1);
    }
    if let Some(e) = first_error {
        return Err(Failure::Fetch(e));
    }
    Ok(leaf_tiles.into_iter().flatten().collect())
}

/// Checks the tiles above level 0 against the level-0 results and the checkpoint's root,
/// and the new checkpoint's consistency with the mirror's old one.
fn check_tree(
    layers: [PathBuf; 2],
    size: u64,
    root: Hash,
    leaf_tiles: Vec<LeafTile>,
    old: Option<&Checkpoint>,
) -> Result<TilesReport, String> {
    let mut reader = Overlay { layers };
    let mut r = verify_upper_tiles(&mut reader, size, &root, leaf_tiles)
        .map_err(|e| format!("tiles for size {size}: {e}"))?;
    r.entry_bundles = entry_bundles_for_size(size).len();
    if let Some(old) = old.filter(|o| o.size > 0 && o.size < size) {
        let mut tree = TiledTree::new(&mut reader, size);
        let proof = tree
            .consistency_proof(old.size, size)
            .map_err(|e| e.to_string())?;
        verify_consistency(old.size, size, &proof, &old.root, &root).map_err(|e| {
            format!(
                "the log's checkpoint of size {size} is not consistent with the mirror's of \
                 size {}: {e}",
                old.size
            )
        })?;
    }
    Ok(r)
}

/// Moves the staged tiles of a tree of `size` leaves into the mirror, a full tile replacing
/// the partial ones at its position.
///
/// When the mirror held no tiles and nothing was staged before this run, the staging area
/// holds exactly the tiles this run fetched and checked, so its `tile` directory becomes
/// the mirror's in one rename.
fn move_into_place(local: &Local, size: u64) -> Result<(), TilesError> {
    let (dir, staging) = (&local.dir, &local.staging);
    if !local.any_staged && !local.any_mirrored {
        let (from, to) = (staging.join("tile"), dir.join("tile"));
        return match std::fs::rename(&from, &to) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !exists(&from) => Ok(()),
            other => other.map_err(io(&to)),
        };
    }
    let mut made: HashSet<PathBuf> = HashSet::new();
    for tile in hash_tiles_for_size(size)
        .into_iter()
        .chain(entry_bundles_for_size(size))
    {
        let (staged, target) = (staging.join(tile.path()), dir.join(tile.path()));
        // One rename per tile; a tile that is not staged fails it with NotFound.
        let mut renamed = std::fs::rename(&staged, &target);
        if let Err(e) = &renamed
            && e.kind() == std::io::ErrorKind::NotFound
        {
            if !exists(&staged) {
                continue;
            }
            if let Some(parent) = target.parent()
                && made.insert(parent.to_owned())
            {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            renamed = std::fs::rename(&staged, &target);
        }
        renamed.map_err(io(&target))?;
        if tile.is_full() {
            let partials = PathBuf::from(format!("{}.p", target.display()));
            if exists(&partials) {
                let _ = std::fs::remove_dir_all(partials);
            }
        }
    }
    Ok(())
}

fn missing_tile(tile: &Tile) -> TilesError {
    TilesError::NotFound(format!(
        "the source serves neither {} nor its full tile",
        tile.path()
    ))
}

/// The mirror's checkpoint, verified; `None` when the directory has none yet.
fn previous_checkpoint(
    dir: &Path,
    verifiers: &[Verifier],
    origin: &str,
) -> Result<Option<Checkpoint>, TilesError> {
    let path = dir.join("checkpoint");
    match std::fs::read(&path) {
        Ok(note) => verify_checkpoint(&note, verifiers, Some(origin))
            .map(Some)
            .map_err(|e| {
                TilesError::Unverified(format!(
                    "the mirror's own checkpoint {}: {e}",
                    path.display()
                ))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Reads tiles from the staging area, then the mirror.
struct Overlay {
    layers: [PathBuf; 2],
}

impl TileReader for Overlay {
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError> {
        for layer in &self.layers {
            match std::fs::read(layer.join(tile.path())) {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

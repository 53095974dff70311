//! `provd tiles sync`: a verified mirror of a tile log in a directory, offline-ready.
//!
//! The directory has exactly the layout `provd tiles verify` reads: `checkpoint` (the signed
//! note as the log served it) and `tile/...` (hash tiles and entry bundles, C2SP paths). A
//! sync verifies the log's checkpoint with the trusted keys, fetches every tile its tree
//! needs that the directory lacks into `.staging/` (each file written atomically, so an
//! interrupted sync resumes where it stopped), then checks the whole tree — every hash tile
//! against the root, every entry against its leaf hash — and the consistency of the new
//! checkpoint with the one the directory held. Only then are the staged tiles moved in (full
//! tiles replacing the partial ones at their position) and the checkpoint replaced, so the
//! directory always holds a verified log. A failed check empties the staging area, so the
//! next sync fetches afresh.

use std::path::{Path, PathBuf};

use actors::domain::merkle::verify_consistency;
use actors::domain::note::{Checkpoint, Verifier, verify_checkpoint};
use actors::domain::tiles::{
    ReadError, Tile, TileReader, TiledTree, TilesReport, entry_bundles_for_size,
    hash_tiles_for_size, verify_tiles,
};
use futures::StreamExt;
use indicatif::ProgressBar;

use super::TilesError;
use super::cache::write_atomic;
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
    let needed: Vec<Tile> = hash_tiles_for_size(size)
        .into_iter()
        .chain(entry_bundles_for_size(size))
        .collect();
    let mut report = MirrorReport {
        size,
        previous_size: previous.as_ref().map(|c| c.size),
        ..MirrorReport::default()
    };
    let held = |t: &Tile| {
        exists(&staging.join(t.path()))
            || exists(&dir.join(t.path()))
            || (!t.is_full() && exists(&dir.join(t.full().path())))
    };
    let missing: Vec<Tile> = needed.iter().filter(|t| !held(t)).copied().collect();
    report.present = (needed.len() - missing.len()) as u64;

    progress.phase("fetching tiles", missing.len() as u64);
    let staging_ref = &staging;
    let mut fetches = futures::stream::iter(missing)
        .map(|tile| async move {
            let bytes = match source.fetch(&tile).await? {
                Some(b) => b,
                None if !tile.is_full() => match source.fetch(&tile.full()).await? {
                    Some(full) => cut_to_width(&tile, &full)?,
                    None => return Err(missing_tile(&tile)),
                },
                None => return Err(missing_tile(&tile)),
            };
            write_atomic(&staging_ref.join(tile.path()), &bytes).await?;
            Ok::<u64, TilesError>(bytes.len() as u64)
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(fetched) = fetches.next().await {
        report.bytes_fetched += fetched?;
        report.fetched += 1;
        progress.inc(1);
    }
    drop(fetches);

    progress.phase("verifying", needed.len() as u64);
    let root = checkpoint.root;
    let old = previous.clone();
    let (dir_owned, staging_owned) = (dir.to_owned(), staging.clone());
    let checked = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut reader = Overlay {
                    layers: [staging_owned.clone(), dir_owned.clone()],
                    progress,
                };
                let r = verify_tiles(&mut reader, size, &root, true)
                    .map_err(|e| format!("tiles for size {size}: {e}"))?;
                if let Some(old) = old.filter(|o| o.size > 0 && o.size < size) {
                    let mut tree = TiledTree::new(&mut reader, size);
                    let proof = tree
                        .consistency_proof(old.size, size)
                        .map_err(|e| e.to_string())?;
                    verify_consistency(old.size, size, &proof, &old.root, &root).map_err(|e| {
                        format!(
                            "the log's checkpoint of size {size} is not consistent with the \
                             mirror's of size {}: {e}",
                            old.size
                        )
                    })?;
                }
                Ok::<TilesReport, String>(r)
            })
            .join()
            .unwrap_or_else(|_| Err("the verification thread panicked".into()))
    });
    let verified = match checked {
        Ok(r) => r,
        Err(e) => {
            // Nothing unverified may be picked up by the next run.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(TilesError::Unverified(e));
        }
    };
    report.verified = verified;

    for tile in &needed {
        let staged = staging.join(tile.path());
        if !exists(&staged) {
            continue;
        }
        let target = dir.join(tile.path());
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::rename(&staged, &target).map_err(io(&target))?;
        if tile.is_full() {
            let partials = PathBuf::from(format!("{}.p", target.display()));
            let _ = std::fs::remove_dir_all(partials);
        }
    }
    write_atomic(&dir.join("checkpoint"), &note).await?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(report)
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
struct Overlay<'a> {
    layers: [PathBuf; 2],
    progress: &'a dyn Progress,
}

impl TileReader for Overlay<'_> {
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError> {
        for layer in &self.layers {
            match std::fs::read(layer.join(tile.path())) {
                Ok(bytes) => {
                    self.progress.inc(1);
                    return Ok(Some(bytes));
                }
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

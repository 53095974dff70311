//! `provd tiles`: offline checks of a C2SP tlog-tiles log kept in a local directory, and
//! `provd tiles sync` (in [`super::tiles_sync`]), which builds such a directory.
//!
//! `provd tiles verify <dir> --key <key>` checks, in this order: every `checkpoint*` file in
//! the directory is signed by the key and has the log's origin; no two checkpoints of one size
//! disagree; for each checkpoint, every hash tile and entry bundle its size implies matches
//! its root; and every checkpoint is consistent with the largest one, by a consistency proof
//! built from the largest one's tiles.
//!
//! Exit codes: 0 the log verified, 1 it did not (one-line reason on stderr), 2 it could not be
//! checked (usage errors, unreadable key or directory). With `--json` the result, valid or
//! not, is one JSON object on stdout instead.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{CliError, Exit};

use actors::domain::merkle::{Hash, verify_consistency};
use actors::domain::note::{Checkpoint, Verifier, verify_checkpoint};
use actors::domain::tiles::{ReadError, Tile, TileReader, TiledTree, TilesReport, verify_tiles};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::tiles_sync::out;

/// Checkpoint files larger than this are rejected unread; real ones are well under 1 KiB.
const MAX_CHECKPOINT_BYTES: u64 = 1 << 20;
/// The largest tile or entry bundle read: 256 entries of at most 65 535 bytes plus prefixes.
const MAX_TILE_BYTES: u64 = 256 * (2 + 65_535);

/// `provd tiles` commands.
#[derive(Debug, clap::Subcommand)]
pub enum TilesCommand {
    /// Build or extend a verified mirror of a configured tile log (Rekor v2 backend) in a
    /// directory, offline-ready, in the layout `provd tiles verify` reads. Resumable: an
    /// interrupted sync continues where it stopped.
    #[command(
        after_help = "Example:\n  provd --config provd.toml tiles sync --backend rekor2 --dir /srv/mirror/rekor2\n  provd tiles verify /srv/mirror/rekor2 --key rekor2.vkey"
    )]
    Sync(super::tiles_sync::SyncArgs),
    /// Verify a tiled log directory: its checkpoints, hash tiles and entry bundles.
    #[command(after_help = "Example:\n  provd tiles verify ./log --key \"$(cat log.vkey)\" --json")]
    Verify {
        /// The log directory, holding `checkpoint*` files and `tile/`.
        dir: PathBuf,
        /// The log's public key: a note verifier key (`name+hint+base64`), or a file holding
        /// one or a PEM public key. Repeat for several keys.
        #[arg(long = "key", required = true, value_name = "VKEY|FILE")]
        keys: Vec<String>,
        /// The signature name for PEM keys (default: the checkpoints' origin). Rekor v1 signs
        /// with the bare hostname, which differs from its origin.
        #[arg(long, value_name = "NAME")]
        key_name: Option<String>,
        /// The origin the checkpoints must have (default: the first checkpoint's, and all
        /// must agree).
        #[arg(long)]
        origin: Option<String>,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `provd tiles` command and returns the process exit code.
pub fn run(config: Option<&Path>, cmd: TilesCommand) -> ExitCode {
    match cmd {
        TilesCommand::Sync(args) => super::tiles_sync::sync(config, args),
        TilesCommand::Verify {
            dir,
            keys,
            key_name,
            origin,
            json,
        } => {
            let outcome = verify_dir(&dir, &keys, key_name.as_deref(), origin.as_deref());
            report(&dir, outcome, json)
        }
    }
}

/// One verified checkpoint file.
struct Checked {
    file: String,
    checkpoint: Checkpoint,
}

/// What a successful verification covered.
struct Summary {
    origin: String,
    checkpoints: Vec<Checked>,
    tiles: TilesReport,
    consistency_proofs: usize,
}

fn report(dir: &Path, outcome: Result<Summary, CliError>, json: bool) -> ExitCode {
    let (code, value) = match &outcome {
        Ok(s) => (
            ExitCode::SUCCESS,
            json!({
                "valid": true,
                "dir": dir.display().to_string(),
                "origin": s.origin,
                "checkpoints": s.checkpoints.iter().map(|c| json!({
                    "file": c.file,
                    "size": c.checkpoint.size,
                    "root": STANDARD.encode(c.checkpoint.root),
                })).collect::<Vec<_>>(),
                "hash_tiles": s.tiles.hash_tiles,
                "entry_bundles": s.tiles.entry_bundles,
                "consistency_proofs": s.consistency_proofs,
            }),
        ),
        Err(CliError::Failed(reason)) => (
            Exit::Failed.into(),
            json!({"valid": false, "dir": dir.display().to_string(), "reason": format!("{reason:#}")}),
        ),
        Err(e @ (CliError::Usage(reason) | CliError::Config(reason))) => (
            e.exit().into(),
            json!({"valid": false, "dir": dir.display().to_string(), "error": format!("{reason:#}")}),
        ),
    };
    if json {
        out(&value.to_string());
        return code;
    }
    match outcome {
        Ok(s) => {
            let largest = s.checkpoints.iter().map(|c| c.checkpoint.size).max();
            out(&format!(
                "valid: {} checkpoint(s) of {} up to size {}, {} hash tile(s), {} entry bundle(s), {} consistency proof(s)",
                s.checkpoints.len(),
                s.origin,
                largest.unwrap_or(0),
                s.tiles.hash_tiles,
                s.tiles.entry_bundles,
                s.consistency_proofs,
            ));
        }
        Err(CliError::Failed(reason)) => eprintln!("invalid: {reason}"),
        Err(CliError::Usage(reason) | CliError::Config(reason)) => eprintln!("error: {reason}"),
    }
    code
}

fn verify_dir(
    dir: &Path,
    keys: &[String],
    key_name: Option<&str>,
    origin: Option<&str>,
) -> Result<Summary, CliError> {
    let files = checkpoint_files(dir)?;
    if files.is_empty() {
        return Err(CliError::failed(format!(
            "no checkpoint files in {}",
            dir.display()
        )));
    }
    let notes = files
        .iter()
        .map(|(name, path)| Ok((name.clone(), read_capped(path, MAX_CHECKPOINT_BYTES)?)))
        .collect::<Result<Vec<_>, CliError>>()?;

    // The first checkpoint names the log unless the caller did; the signature check below
    // then holds every checkpoint to that origin.
    let origin = match origin {
        Some(o) => o.to_owned(),
        None => first_line(&notes[0].1)
            .ok_or_else(|| CliError::failed(format!("{}: no origin line", notes[0].0)))?,
    };
    let verifiers = keys
        .iter()
        .map(|k| load_key(k, key_name.unwrap_or(&origin)))
        .collect::<Result<Vec<_>, _>>()?;

    let mut checked = Vec::with_capacity(notes.len());
    for (file, note) in notes {
        let checkpoint = verify_checkpoint(&note, &verifiers, Some(&origin))
            .map_err(|e| CliError::failed(format!("{file}: {e}")))?;
        checked.push(Checked { file, checkpoint });
    }
    checked.sort_by_key(|c| c.checkpoint.size);
    for pair in checked.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.checkpoint.size == b.checkpoint.size && a.checkpoint.root != b.checkpoint.root {
            return Err(CliError::failed(format!(
                "{} and {} have size {} but different roots",
                a.file, b.file, a.checkpoint.size
            )));
        }
    }

    let mut reader = DirReader(dir.to_owned());
    let mut tiles = TilesReport::default();
    let mut last_size = None;
    for c in &checked {
        if last_size == Some(c.checkpoint.size) {
            continue;
        }
        last_size = Some(c.checkpoint.size);
        let r = verify_tiles(&mut reader, c.checkpoint.size, &c.checkpoint.root, true)
            .map_err(|e| CliError::failed(format!("tiles for {}: {e}", c.file)))?;
        tiles.size = tiles.size.max(r.size);
        tiles.hash_tiles += r.hash_tiles;
        tiles.entry_bundles += r.entry_bundles;
    }

    let largest = checked.last().expect("at least one checkpoint");
    let (size2, root2) = (largest.checkpoint.size, largest.checkpoint.root);
    let mut tree = TiledTree::new(&mut reader, size2);
    let mut consistency_proofs = 0;
    for c in &checked {
        let size1 = c.checkpoint.size;
        // The empty tree is a prefix of every tree; its root was checked with its tiles.
        if size1 == 0 || size1 == size2 {
            continue;
        }
        check_consistency(&mut tree, size1, &c.checkpoint.root, &root2).map_err(|e| {
            CliError::failed(format!(
                "{} (size {size1}) is not consistent with {} (size {size2}): {e}",
                c.file, largest.file
            ))
        })?;
        consistency_proofs += 1;
    }

    Ok(Summary {
        origin,
        checkpoints: checked,
        tiles,
        consistency_proofs,
    })
}

fn check_consistency<R: TileReader>(
    tree: &mut TiledTree<R>,
    size1: u64,
    root1: &Hash,
    root2: &Hash,
) -> Result<(), String> {
    let proof = tree
        .consistency_proof(size1, tree.size())
        .map_err(|e| e.to_string())?;
    verify_consistency(size1, tree.size(), &proof, root1, root2).map_err(|e| e.to_string())
}

/// The `checkpoint*` files of the directory, sorted by name.
fn checkpoint_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, CliError> {
    let entries = fs::read_dir(dir)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("checkpoint") && entry.path().is_file() {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

fn first_line(note: &[u8]) -> Option<String> {
    let line = note.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    (!line.is_empty()).then(|| line.to_owned())
}

/// A key given on the command line: a vkey string, or a file with a vkey or a PEM key.
fn load_key(arg: &str, pem_name: &str) -> Result<Verifier, CliError> {
    let path = Path::new(arg);
    let (text, source) = if path.is_file() {
        let bytes = read_capped(path, MAX_CHECKPOINT_BYTES)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| CliError::usage(format!("key file {arg} is not UTF-8")))?;
        (text, format!("key file {arg}"))
    } else {
        (arg.to_owned(), format!("key {arg:?}"))
    };
    let text = text.trim();
    let verifier = if text.starts_with("-----BEGIN") {
        Verifier::from_pem(pem_name, text)
    } else {
        Verifier::from_vkey(text)
    };
    verifier.map_err(|e| CliError::usage(format!("{source}: {e}")))
}

fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, CliError> {
    let trouble = |e: std::io::Error| CliError::usage(format!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    fs::File::open(path)
        .map_err(trouble)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(trouble)?;
    if bytes.len() as u64 > limit {
        return Err(CliError::failed(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Reads tiles from a log directory. Tile paths are canonical by construction (no `..`), so
/// joining them under the directory stays inside it.
struct DirReader(PathBuf);

impl TileReader for DirReader {
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError> {
        let path = self.0.join(tile.path());
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        file.take(MAX_TILE_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_TILE_BYTES {
            return Err(format!("larger than {MAX_TILE_BYTES} bytes").into());
        }
        Ok(Some(bytes))
    }
}

//! `provd tiles sync` (a verified mirror of a tile log in a directory) and
//! `provd rekor prove` (inclusion and consistency proofs built from tiles).
//!
//! Both load the configuration as `serve` does and work on a configured Rekor v2 backend
//! (`[rekor.backends.<name>]` with `api = "v2"`). `prove` reads through the tile cache when
//! `[tiles]` is configured (so proofs come from cached tiles), else straight from the log.
//! Exit codes: 0 done and verified, 1 the log failed or did not verify, 2 usage errors,
//! 78 a bad configuration.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{CliError, Exit};
use std::sync::Arc;
use std::time::Duration;

use actors::domain::note::Verifier;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::adapters::tiles::TilesError;
use crate::adapters::tiles::cache::{TileCache, Verified};
use crate::adapters::tiles::client::TileClient;
use crate::adapters::tiles::mirror::{MirrorReport, Progress, sync_mirror};
use crate::adapters::tiles::proof;
use crate::config::Config;
use crate::config::rekor::{ApiVersion, BackendKind, RekorBackendConfig};

/// `provd tiles sync` arguments.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The tile log: a `[rekor.backends.<name>]` with `api = "v2"`.
    #[arg(long)]
    pub backend: String,
    /// The mirror directory (created if missing; extended if it holds a mirror already).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Most tiles fetched at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `provd rekor prove` arguments.
#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The tile log: a `[rekor.backends.<name>]` with `api = "v2"`.
    #[arg(long)]
    pub backend: String,
    /// The entry's log index.
    #[arg(long, value_name = "N")]
    pub index: u64,
    /// The tree size the inclusion proof is for (default: the latest verified checkpoint's);
    /// a consistency proof then links it to the checkpoint.
    #[arg(long, value_name = "M")]
    pub size: Option<u64>,
}

impl From<TilesError> for CliError {
    fn from(e: TilesError) -> Self {
        CliError::failed(e)
    }
}

fn load(config_path: Option<&Path>, name: &str) -> Result<(Config, RekorBackendConfig), CliError> {
    let config = Config::load(config_path, std::env::vars(), |_| {})
        .map_err(|e| CliError::Config(e.into()))?;
    let backend = config.rekor.backends.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = config.rekor.backends.keys().map(String::as_str).collect();
        CliError::usage(format!(
            "unknown backend {name:?}; configured: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })?;
    if backend.api != ApiVersion::V2 || backend.kind == BackendKind::Stub {
        return Err(CliError::usage(format!(
            "backend {name:?} is not a tile log: tiles need api = \"v2\" and kind public or private"
        )));
    }
    Ok((config, backend))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    super::runtime().map_err(|e| CliError::usage(format!("cannot start the async runtime: {e}")))
}

/// Writes one line to stdout; a closed pipe (`| head`) ends the output quietly instead of
/// panicking.
pub fn out(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("provd: cannot write to stdout: {e}");
    }
}

fn finish(
    result: Result<Value, CliError>,
    json: bool,
    human: impl Fn(&Value) -> String,
) -> ExitCode {
    match result {
        Ok(v) => {
            out(&if json { v.to_string() } else { human(&v) });
            ExitCode::SUCCESS
        }
        Err(CliError::Failed(e)) => {
            if json {
                out(&json!({"error": e.to_string()}).to_string());
            } else {
                eprintln!("provd: {e}");
            }
            Exit::Failed.into()
        }
        Err(CliError::Usage(m)) => {
            eprintln!("provd: {m}");
            Exit::Usage.into()
        }
        Err(e @ CliError::Config(_)) => {
            eprintln!("provd: {e}");
            Exit::Config.into()
        }
    }
}

/// Progress on a terminal: a bar; elsewhere, one plain line per phase.
struct CliProgress {
    bar: ProgressBar,
    plain: bool,
}

impl CliProgress {
    fn new() -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        Self { bar, plain }
    }
}

impl Progress for CliProgress {
    fn phase(&self, name: &str, total: u64) {
        if self.plain {
            eprintln!("{name}: {total} tile(s)");
        }
        self.bar.phase(name, total);
    }

    fn inc(&self, n: u64) {
        self.bar.inc(n);
    }
}

fn report_json(backend: &str, dir: &Path, r: &MirrorReport) -> Value {
    json!({
        "backend": backend,
        "dir": dir.display().to_string(),
        "size": r.size,
        "previous_size": r.previous_size,
        "fetched": r.fetched,
        "present": r.present,
        "bytes_fetched": r.bytes_fetched,
        "hash_tiles": r.verified.hash_tiles,
        "entry_bundles": r.verified.entry_bundles,
    })
}

/// `provd tiles sync`.
pub fn sync(config_path: Option<&Path>, args: SyncArgs) -> ExitCode {
    let result = (|| {
        let (_, backend) = load(config_path, &args.backend)?;
        let client =
            TileClient::for_backend(&backend).map_err(|e| CliError::usage(e.to_string()))?;
        let verifiers = backend
            .keys
            .iter()
            .map(|k| Verifier::from_public_key(&k.name, k.key.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CliError::usage(format!("backend {:?}: {e}", backend.name)))?;
        let progress = CliProgress::new();
        let report = runtime()?.block_on(async {
            let note = client.checkpoint().await.map_err(TilesError::from)?;
            sync_mirror(
                &client,
                &verifiers,
                &backend.origin,
                note,
                &args.dir,
                usize::from(args.concurrency),
                &progress,
            )
            .await
        });
        progress.bar.finish_and_clear();
        Ok(report_json(&backend.name, &args.dir, &report?))
    })();
    finish(result, args.json, |v| {
        format!(
            "synced {}: size {} (was {}), fetched {} tile(s) ({} bytes), {} already present; \
             verified {} hash tile(s) and {} entry bundle(s)",
            v["dir"].as_str().unwrap_or(""),
            v["size"],
            v["previous_size"],
            v["fetched"],
            v["bytes_fetched"],
            v["present"],
            v["hash_tiles"],
            v["entry_bundles"],
        )
    })
}

/// `provd rekor prove`.
pub fn prove(config_path: Option<&Path>, args: ProveArgs) -> ExitCode {
    let result = (|| {
        let (config, backend) = load(config_path, &args.backend)?;
        let bundle = runtime()?.block_on(async {
            // Through the tile cache when it mirrors this log, else straight from the log
            // (a cache of its own in a temporary directory, which verifies the same way).
            let (cache, _tmp) = match &config.tiles {
                Some(tiles) if tiles.backends.contains(&backend.name) => {
                    (TileCache::open(tiles, &config.rekor), None)
                }
                _ => {
                    let tmp = tempdir()?;
                    let tiles = crate::config::TilesConfig {
                        cache_dir: tmp.clone(),
                        max_bytes: crate::config::tiles::DEFAULT_MAX_BYTES,
                        backends: vec![backend.name.clone()],
                        prefetch: false,
                        require_token: false,
                    };
                    (TileCache::open(&tiles, &config.rekor), Some(TempDir(tmp)))
                }
            };
            let cache = Arc::new(cache.map_err(|e| TilesError::Upstream(e.to_string()))?);
            let log = cache.log(&backend.name)?;
            let verified: Verified = log.refresh().await?;
            proof::build(&log.source(), &verified, args.index, args.size).await
        })?;
        serde_json::to_value(bundle).map_err(|e| CliError::usage(e.to_string()))
    })();
    finish(result, true, |v| v.to_string())
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<PathBuf, TilesError> {
    let dir = std::env::temp_dir().join(format!("provd-prove-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|source| TilesError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

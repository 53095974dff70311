//! `provd trust update | status | export | import`: Sigstore trust roots kept fresh through
//! TUF, cached in the data directory, carried across air gaps (`crate::trust`).
//!
//! The configuration is loaded as `serve` loads it (file, `PROVD_*` variables, then flags;
//! `--data-dir` overrides `data_dir`); `--staging` and `--tuf-url` override `trust.instance`
//! and `trust.tuf_url` for one run. Exit codes: 0 done, 1 refused or failed (one line naming
//! why), 2 usage, 78 a bad configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Exit;

use clap::{Args, Subcommand};
use jiff::Timestamp;
use serde_json::json;

use crate::config::Config;
use crate::config::trust::TrustConfig;
use crate::trust::freshness::{compact_duration, describe_age};
use crate::trust::{self, Instance, RootSource, TrustError};

/// `provd trust ...`.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Fetch the instance's TUF metadata, verify it, and cache `trusted_root.json` (and
    /// `signing_config.v0.2.json` when the repository has it) in the data directory.
    #[command(
        after_help = "Nothing is cached unless every TUF check passes; on failure the previous cache stays.\n\nExample:\n  provd trust update\n  provd trust update --tuf-url https://tuf.example.internal --tuf-root root.json --data-dir /var/lib/provd"
    )]
    Update(UpdateArgs),
    /// Show the trusted root verification would use: its source, repository, TUF root
    /// version, when it was fetched, its age and whether it is fresh.
    #[command(
        after_help = "With --check, exit 1 when verification would refuse the root (stale with trust.refuse_stale).\n\nExample:\n  provd trust status\n  provd trust status --staging --json\n  provd trust status --check"
    )]
    Status(StatusArgs),
    /// Write the instance's TUF cache as one file, to carry to a machine with no network.
    #[command(after_help = "Example:\n  provd trust export /mnt/usb/sigstore-trust.json")]
    Export(ExportArgs),
    /// Verify an export by the TUF rules with no network, then replace the cache with it.
    #[command(
        after_help = "A production or staging export is verified from provd's embedded TUF root; a custom\nrepository's from --tuf-root (or trust.tuf_root when trust.tuf_url is its repository).\n\nExample:\n  provd trust import /mnt/usb/sigstore-trust.json --data-dir /var/lib/provd"
    )]
    Import(ImportArgs),
}

/// Which instance a command works on, over the configuration's.
#[derive(Debug, Clone, Args)]
pub struct InstanceFlags {
    /// Sigstore's staging instance (https://tuf-repo-cdn.sigstage.dev) instead of
    /// `trust.instance`.
    #[arg(long, conflicts_with = "tuf_url")]
    pub staging: bool,
    /// A custom TUF repository instead of `trust.instance` / `trust.tuf_url`.
    #[arg(long, value_name = "URL")]
    pub tuf_url: Option<String>,
}

/// `provd trust update` flags.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// The instance.
    #[command(flatten)]
    pub instance: InstanceFlags,
    /// The custom repository's initial root.json (with --tuf-url; default `trust.tuf_root`
    /// when `trust.tuf_url` is the same repository).
    #[arg(long, value_name = "FILE", requires = "tuf_url")]
    pub tuf_root: Option<PathBuf>,
    /// The data directory (overrides `data_dir` and `PROVD_DATA_DIR`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

/// `provd trust status` flags.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The instance.
    #[command(flatten)]
    pub instance: InstanceFlags,
    /// A trusted_root.json file, as verification's `--trusted-root` would use it.
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when verification would refuse the root (stale with `trust.refuse_stale`).
    #[arg(long)]
    pub check: bool,
    /// The data directory (overrides `data_dir` and `PROVD_DATA_DIR`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

/// `provd trust export` flags.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The instance.
    #[command(flatten)]
    pub instance: InstanceFlags,
    /// Where to write the export.
    pub file: PathBuf,
    /// The data directory (overrides `data_dir` and `PROVD_DATA_DIR`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

/// `provd trust import` flags.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The export, written by `provd trust export`.
    pub file: PathBuf,
    /// The initial root.json a custom repository's export is verified from.
    #[arg(long, value_name = "FILE")]
    pub tuf_root: Option<PathBuf>,
    /// The data directory (overrides `data_dir` and `PROVD_DATA_DIR`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

/// How a command failed.
enum Failure {
    /// Refused or failed (exit 1), or a usage error (exit 2): the trust layer says which.
    Trust(TrustError),
    /// A usage error found here (exit 2).
    Usage(String),
    /// The configuration is invalid (exit 78, already reported).
    Config,
}

impl From<TrustError> for Failure {
    fn from(e: TrustError) -> Self {
        Failure::Trust(e)
    }
}

/// Runs `provd trust ...`.
pub fn run(config_path: Option<&Path>, cmd: TrustCommand) -> ExitCode {
    let (name, result) = match cmd {
        TrustCommand::Update(a) => ("update", update(config_path, a)),
        TrustCommand::Status(a) => ("status", status(config_path, a)),
        TrustCommand::Export(a) => ("export", export(config_path, a)),
        TrustCommand::Import(a) => ("import", import(config_path, a)),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Config) => Exit::Config.into(),
        Err(Failure::Usage(m)) => {
            eprintln!("provd trust {name}: {m}");
            Exit::Usage.into()
        }
        Err(Failure::Trust(e)) => {
            let kept = if matches!(name, "update" | "import") {
                "; the cache was not changed"
            } else {
                ""
            };
            eprintln!("provd trust {name}: {e}{kept}");
            match e {
                TrustError::BadInput(_) => Exit::Usage.into(),
                _ => Exit::Failed.into(),
            }
        }
    }
}

fn load(path: Option<&Path>, data_dir: Option<&String>) -> Result<Config, Failure> {
    Config::load(path, std::env::vars(), |raw| {
        if let Some(d) = data_dir {
            raw.data_dir = Some(d.clone());
        }
    })
    .map_err(|e| {
        eprintln!("provd: {e}");
        Failure::Config
    })
}

/// The instance the flags name, else the configured one.
fn instance(flags: &InstanceFlags, config: &TrustConfig) -> Result<Instance, Failure> {
    if flags.staging {
        return Ok(Instance::Staging);
    }
    match &flags.tuf_url {
        Some(url) => Instance::custom(url)
            .map_err(|e| Failure::Usage(format!("--tuf-url {url:?}: expected {e}"))),
        None => Ok(config.instance.clone()),
    }
}

/// The custom repository's initial root: the flag's file, else the configured one when the
/// configuration names the same repository.
fn custom_root(
    instance: &Instance,
    flag: Option<&Path>,
    config: &TrustConfig,
) -> Result<Option<Vec<u8>>, Failure> {
    let path = match (flag, instance) {
        (Some(p), _) => Some(p.to_owned()),
        (None, Instance::Custom { .. }) if *instance == config.instance => config.tuf_root.clone(),
        _ => None,
    };
    path.map(|p| {
        std::fs::read(&p).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", p.display())))
    })
    .transpose()
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    super::runtime().map_err(|e| Failure::Usage(format!("cannot start the async runtime: {e}")))
}

fn update(path: Option<&Path>, args: UpdateArgs) -> Result<ExitCode, Failure> {
    let config = load(path, args.data_dir.as_ref())?;
    let instance = instance(&args.instance, &config.trust)?;
    let root = custom_root(&instance, args.tuf_root.as_deref(), &config.trust)?;
    let http = trust::http_client()?;
    let out = runtime()?.block_on(trust::update(
        &config.data_dir,
        &instance,
        root.as_deref(),
        http,
        Timestamp::now(),
    ))?;
    println!(
        "updated {instance}: TUF root version {}, trusted_root.json sha256:{}, signing_config.v0.2.json {}",
        out.root_version,
        out.trusted_root_sha256,
        if out.signing_config {
            "cached"
        } else {
            "not in the repository (fine)"
        }
    );
    println!("cache: {}", out.dir.display());
    Ok(ExitCode::SUCCESS)
}

fn status(path: Option<&Path>, args: StatusArgs) -> Result<ExitCode, Failure> {
    let config = load(path, args.data_dir.as_ref())?;
    let trust_config = TrustConfig {
        instance: instance(&args.instance, &config.trust)?,
        ..config.trust.clone()
    };
    let now = Timestamp::now();
    let explicit = args.trusted_root.as_deref();
    if args.check {
        // Exactly what verification does: refused here means refused there.
        let root = trust::load_root(&config.data_dir, &trust_config, explicit, now)?;
        if let Some(w) = root.warning() {
            eprintln!("provd trust status: warning: {w}");
        }
    }
    let root = trust::inspect(&config.data_dir, &trust_config, explicit, now)?;
    let freshness = root.freshness();
    if args.json {
        let mut j = json!({
            "source": root.source.kind(),
            "since": root.source.since().to_string(),
            "age_seconds": root.age.as_secs(),
            "max_age_seconds": root.policy.max_age.as_secs(),
            "refuse_stale": root.policy.refuse_stale,
            "freshness": freshness.as_str(),
            "warning": root.warning(),
        });
        match &root.source {
            RootSource::File { path, .. } => j["path"] = path.display().to_string().into(),
            RootSource::TufCache {
                dir,
                repository,
                instance,
                root_version,
                updated_at,
                imported_at,
                signing_config,
            } => {
                j["path"] = dir.display().to_string().into();
                j["repository"] = repository.clone().into();
                j["instance"] = instance.clone().into();
                j["root_version"] = (*root_version).into();
                j["updated_at"] = updated_at.to_string().into();
                j["imported_at"] = imported_at.map(|t| t.to_string()).into();
                j["signing_config"] = (*signing_config).into();
            }
            RootSource::Embedded { instance, .. } => {
                j["instance"] = (*instance).into();
                j["repository"] = trust_config.instance.url().into();
            }
        }
        println!("{j}");
    } else {
        println!("source: {}", root.source);
        println!(
            "age: {} (max_age {}): {}{}",
            describe_age(root.age),
            compact_duration(root.policy.max_age),
            freshness.as_str(),
            match (freshness, root.policy.refuse_stale) {
                (trust::freshness::Freshness::Fresh, _) => "",
                (_, true) =>
                    "; verification refuses it (trust.refuse_stale); run `provd trust update`",
                (_, false) => "; run `provd trust update`",
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn export(path: Option<&Path>, args: ExportArgs) -> Result<ExitCode, Failure> {
    let config = load(path, args.data_dir.as_ref())?;
    let instance = instance(&args.instance, &config.trust)?;
    let out = trust::export(&config.data_dir, &instance, &args.file, Timestamp::now())?;
    println!(
        "exported {} files of {instance} (TUF root version {}, updated_at {}) to {}",
        out.files,
        out.root_version,
        out.updated_at,
        out.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn import(path: Option<&Path>, args: ImportArgs) -> Result<ExitCode, Failure> {
    let config = load(path, args.data_dir.as_ref())?;
    let carried = trust::read_export(&args.file)?;
    let root = custom_root(&carried.instance, args.tuf_root.as_deref(), &config.trust)?;
    let out = runtime()?.block_on(trust::import(
        &config.data_dir,
        &carried,
        root.as_deref(),
        Timestamp::now(),
    ))?;
    println!(
        "imported {}: verified by TUF from {}, TUF root version {}, updated_at {}, trusted_root.json sha256:{}",
        out.instance,
        if root.is_some() {
            "the given initial root"
        } else {
            "the embedded initial root"
        },
        out.root_version,
        out.updated_at,
        out.trusted_root_sha256,
    );
    println!("cache: {}", out.dir.display());
    Ok(ExitCode::SUCCESS)
}

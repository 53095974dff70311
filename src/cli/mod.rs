//! The command line: `provd <command>`.
//!
//! Each command group lives in its own module; this one declares the top level and
//! dispatches, and holds what every command shares: [`Exit`], the one place exit codes are
//! decided (0 done, 1 failed, 2 usage, 78 configuration), [`CliError`], the one error type
//! whose kind picks the exit code, the one async runtime, and the
//! one HTTP client that carries the bearer token to a running provd. Commands that talk to
//! services load the configuration exactly as `serve` does (file, then `PROVD_*`
//! variables, then flags).

pub mod bundle;
pub mod devlog;
pub mod evaluate;
pub mod policy;
pub mod rekor_log;
pub mod replay;
mod service;
pub mod sigstore;
pub mod status;
mod submit;
pub mod tiles;
pub mod tiles_sync;
pub mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod tlog;

pub use service::{ConfigCommand, EventsCommand, ServeArgs};

/// provd: Rekor transparency-log anchoring and a provenance cache of policy verdicts.
#[derive(Debug, Parser)]
#[command(
    name = "provd",
    version,
    about,
    long_about = None,
    after_help = "Example:\n  provd --config provd.toml serve\n  provd status --server http://127.0.0.1:8080"
)]
pub struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, global = true, env = "PROVD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every top-level command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: HTTP API, event consumers and actors.
    #[command(
        after_help = "Example:\n  PROVD_ADMIN_TOKEN=$(openssl rand -hex 16) provd serve --listen 127.0.0.1:8080"
    )]
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    #[command(
        after_help = "Example:\n  provd migrate --database-url postgres://postgres@127.0.0.1:5432/provd"
    )]
    Migrate(service::MigrateArgs),
    /// Replay the revocation ledger from this node's checkpoint (or `--since`) into
    /// PostgreSQL and this node's Valkey/Redis tier.
    #[command(
        after_help = "Re-applies every revocation after the checkpoint (idempotent: entries accepted after a\nrevocation stay), saves the checkpoint after each batch, and ends with\n`replayed <N> revocations, <M> entries invalidated, checkpoint <seq>`.\n\nExample:\n  provd replay --since 0 --batch-size 5000\n  provd replay --dry-run"
    )]
    Replay(replay::ReplayArgs),
    /// Inspect the configuration.
    #[command(
        subcommand,
        after_help = "Example:\n  provd --config provd.toml config check"
    )]
    Config(ConfigCommand),
    /// Publish events to provd's subjects.
    #[command(
        subcommand,
        after_help = "Example:\n  provd events publish docs/examples/invalidate.json"
    )]
    Events(EventsCommand),
    /// Rekor transparency-log tools: submit through provd, read a live log, verify bundles
    /// and checkpoints offline.
    #[command(
        after_help = "Example:\n  provd rekor submit envelope.json --verifier signer.pub --wait\n  provd rekor verify-bundle artifact.sigstore.json --trusted-root trusted_root.json"
    )]
    Rekor {
        /// The rekor subcommand.
        #[command(subcommand)]
        command: tlog::RekorCommand,
    },
    /// Sigstore bundles: complete, offline verification (signature, certificate chain, SCT,
    /// timestamps, transparency log, identity).
    #[command(
        after_help = "Example:\n  provd sigstore verify-bundle --bundle a.txt.sigstore.json \\\n    --certificate-identity me@example.com --certificate-oidc-issuer https://accounts.google.com a.txt"
    )]
    Sigstore {
        /// The sigstore subcommand.
        #[command(subcommand)]
        command: sigstore::SigstoreCommand,
    },
    /// DSSE envelopes: sign and verify.
    #[command(
        after_help = "Example:\n  provd dsse sign --payload statement.json --key signer.key > envelope.json"
    )]
    Dsse {
        /// The dsse subcommand.
        #[command(subcommand)]
        command: tlog::DsseCommand,
    },
    /// Key management: generate P-256 or Ed25519 key pairs.
    #[command(after_help = "Example:\n  provd keys generate --alg p256 --out signer")]
    Keys {
        /// The keys subcommand.
        #[command(subcommand)]
        command: tlog::KeysCommand,
    },
    /// C2SP tlog-tiles log directories: verify one offline, or sync a verified mirror.
    #[command(
        after_help = "Example:\n  provd tiles sync --backend rekor2 --dir ./mirror\n  provd tiles verify ./mirror --key \"$(cat log.vkey)\""
    )]
    Tiles {
        /// The `tiles` command to run.
        #[command(subcommand)]
        cmd: tiles::TilesCommand,
    },
    /// Ask a running provd whether an artifact is acceptable under a stored policy, given
    /// its attestations: the cached verdict, or one decided now by verifying them.
    Evaluate(evaluate::EvaluateArgs),
    /// Export a verdict and its evidence as an air-gap proof bundle (from a running provd).
    #[command(
        after_help = "Densities: lite (no chunks), standard (first 10 %), strict (all). With --chunks-dir, every\nchunk is also written there for `provd import --lazy-fetch --chunks-dir`.\n\nExample:\n  provd export --server http://10.0.0.5:8080 --verikey sha256:3f…9a --density strict \\\n    --sign --key exporter.key.pem --output verdict.bundle.json --chunks-dir /mnt/usb/chunks"
    )]
    Export(bundle::ExportArgs),
    /// Verify a proof bundle offline: signature, digest, manifest, chunks, Merkle root,
    /// Rekor receipt. Exit 0 valid, 1 invalid (the failing check named), 2 usage.
    #[command(
        after_help = "Example:\n  provd verify verdict.bundle.json --trusted-key exporter.pub.pem\n  provd verify verdict.bundle.json --json"
    )]
    Verify(bundle::VerifyArgs),
    /// Import a proof bundle into this node's database (verified first; nothing stored from
    /// a bundle that fails), then optionally fetch the chunks it left out.
    #[command(
        after_help = "Run it again to resume an interrupted fetch: only missing chunks are fetched.\n\nExample:\n  provd import verdict.bundle.json --trusted-key exporter.pub.pem \\\n    --lazy-fetch --chunks-dir /mnt/usb/chunks --backend http://10.0.0.5:8080 --batch-size 50"
    )]
    Import(bundle::ImportArgs),
    /// Print a running provd's status report; exit 0 when healthy, 1 when not.
    #[command(
        after_help = "Exit status: 0 healthy, 1 unhealthy or unreachable (for scripts and cron).\n\nExample:\n  provd status --server http://127.0.0.1:8080\n  provd status --json | jq .divergences"
    )]
    Status(status::StatusArgs),
    /// The local Rekor-compatible log: a lab and test tool, not a production log.
    #[command(
        after_help = "Example:\n  provd dev-log serve --listen 127.0.0.1:3030 --data ./devlog"
    )]
    DevLog {
        /// The dev-log subcommand.
        #[command(subcommand)]
        command: devlog::DevLogCommand,
    },
    /// Sigstore trust roots: update through TUF, show status, export and import across an
    /// air gap.
    #[command(
        after_help = "Example:\n  provd trust update && provd trust status\n  provd trust export /mnt/usb/trust.json   # then, offline: provd trust import /mnt/usb/trust.json"
    )]
    Trust {
        /// The trust subcommand.
        #[command(subcommand)]
        command: trust::TrustCommand,
    },
    /// Policies as stored, versioned documents, through a running provd: apply one (a new
    /// version; the old one's verdicts are invalidated), get one, list them.
    #[command(
        after_help = "Example:\n  provd policy apply release.json --server http://127.0.0.1:8080 --token $PROVD_TOKEN\n  provd policy list"
    )]
    Policy {
        /// The policy subcommand.
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
}

/// How a command ends: the one place its exit code is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; a check passed (0).
    Ok,
    /// A check failed, provd refused, or a dependency could not be reached (1).
    Failed,
    /// Bad arguments or input: flags, unreadable files, malformed documents (2).
    Usage,
    /// The configuration cannot be used (78, `EX_CONFIG` of sysexits.h).
    Config,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Ok => ExitCode::SUCCESS,
            Exit::Failed => ExitCode::from(1),
            Exit::Usage => ExitCode::from(2),
            Exit::Config => ExitCode::from(78),
        }
    }
}

/// Why a command did not succeed: one error type for every command, whose kind decides the
/// exit code ([`CliError::exit`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A check failed, provd refused, or a dependency could not be reached (exit 1).
    #[error("{0:#}")]
    Failed(anyhow::Error),
    /// Bad arguments or input: flags, unreadable files, malformed documents (exit 2).
    #[error("{0:#}")]
    Usage(anyhow::Error),
    /// The configuration cannot be used (exit 78).
    #[error("{0:#}")]
    Config(anyhow::Error),
}

impl CliError {
    /// A failed check or a refusal, from its message.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        CliError::Failed(anyhow::anyhow!("{message}"))
    }

    /// Bad arguments or input, from its message.
    pub fn usage(message: impl std::fmt::Display) -> Self {
        CliError::Usage(anyhow::anyhow!("{message}"))
    }

    /// How the command ends.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Failed(_) => Exit::Failed,
            CliError::Usage(_) => Exit::Usage,
            CliError::Config(_) => Exit::Config,
        }
    }
}

/// Ends a command: its error, if any, on stderr after `what` (`provd policy apply`), and
/// the exit code its kind decides.
pub(crate) fn finish(what: &str, result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("{what}: {e}");
            e.exit().into()
        }
    }
}

/// The one async runtime every command runs on: multi-threaded, I/O and timers on.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The one HTTP client for a running provd: a 5 s connect timeout, `timeout` for a whole
/// request, and the bearer token, when given, on every request.
pub(crate) fn http_client(
    token: Option<&str>,
    timeout: std::time::Duration,
) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .context("the token is not a valid header value")?;
        // Never printed by the client's debug output.
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .context("cannot build the HTTP client")
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let config_path = cli.config;
    match cli.command {
        Command::Serve(args) => service::serve(config_path.as_deref(), args),
        Command::Migrate(args) => service::migrate(config_path.as_deref(), args),
        Command::Replay(args) => replay::run(config_path.as_deref(), args),
        Command::Config(cmd) => service::config(config_path.as_deref(), cmd),
        Command::Events(cmd) => service::events(config_path.as_deref(), cmd),
        Command::Rekor { command } => tlog::run_rekor(config_path.as_deref(), command),
        Command::Sigstore { command } => sigstore::run(config_path.as_deref(), command),
        Command::Dsse { command } => tlog::run_dsse(command),
        Command::Keys { command } => tlog::run_keys(command),
        Command::Tiles { cmd } => tiles::run(config_path.as_deref(), cmd),
        Command::DevLog { command } => devlog::run(command),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Export(args) => bundle::export(config_path.as_deref(), args),
        Command::Verify(args) => bundle::verify(config_path.as_deref(), args),
        Command::Import(args) => bundle::import(config_path.as_deref(), args),
        Command::Status(args) => status::run(args),
        Command::Trust { command } => trust::run(config_path.as_deref(), command),
        Command::Policy { command } => policy::run(command),
    }
}

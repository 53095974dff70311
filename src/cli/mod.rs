//! The command line: `provd <command>`.
//!
//! Each command group lives in its own module; this one declares the top level and
//! dispatches. Commands that talk to services load the configuration exactly as `serve`
//! does (file, then `PROVD_*` variables, then flags).

pub mod devlog;
pub mod rekor_log;
pub mod replay;
mod service;
pub mod status;
mod submit;
pub mod tiles;

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
    /// Offline checks of a C2SP tlog-tiles log directory.
    #[command(after_help = "Example:\n  provd tiles verify ./log --key \"$(cat log.vkey)\"")]
    Tiles {
        /// The `tiles` command to run.
        #[command(subcommand)]
        cmd: tiles::TilesCommand,
    },
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
        Command::Dsse { command } => tlog::run_dsse(command),
        Command::Keys { command } => tlog::run_keys(command),
        Command::Tiles { cmd } => tiles::run(cmd),
        Command::DevLog { command } => devlog::run(command),
        Command::Status(args) => status::run(args),
    }
}

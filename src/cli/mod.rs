//! The command line: `provd <command>`.
//!
//! Each command group lives in its own module; this one only declares the top level.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod tlog;

/// provd: Rekor transparency-log anchoring and a provenance cache of policy verdicts.
#[derive(Debug, Parser)]
#[command(name = "provd", version, about, long_about = None)]
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
    /// Run the service (HTTP API, actors, event consumers).
    Serve,
    /// Rekor transparency-log tools: verify bundles and checkpoints offline.
    Rekor {
        /// The rekor subcommand.
        #[command(subcommand)]
        command: tlog::RekorCommand,
    },
    /// DSSE envelopes: sign and verify.
    Dsse {
        /// The dsse subcommand.
        #[command(subcommand)]
        command: tlog::DsseCommand,
    },
    /// Key management: generate P-256 or Ed25519 key pairs.
    Keys {
        /// The keys subcommand.
        #[command(subcommand)]
        command: tlog::KeysCommand,
    },
}

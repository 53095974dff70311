//! The command line: `provd <command>`.
//!
//! Each command group lives in its own module; this one only declares the top level.

pub mod tiles;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    /// Offline checks of a C2SP tlog-tiles log directory.
    Tiles {
        /// The `tiles` command to run.
        #[command(subcommand)]
        cmd: tiles::TilesCommand,
    },
}

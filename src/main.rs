//! The `provd` binary: parse, load config, init telemetry, run.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve => std::process::ExitCode::SUCCESS,
        cli::Command::Tiles { cmd } => cli::tiles::run(cmd),
    }
}

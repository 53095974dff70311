//! The `provd` binary: parse, load config, init telemetry, run.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve => std::process::ExitCode::SUCCESS,
        cli::Command::Rekor { command } => cli::tlog::run_rekor(command),
        cli::Command::Dsse { command } => cli::tlog::run_dsse(command),
        cli::Command::Keys { command } => cli::tlog::run_keys(command),
    }
}

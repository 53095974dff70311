//! The `provd` binary: parse, load config, init telemetry, run.

mod cli;

use clap::Parser;

fn main() {
    let _cli = cli::Cli::parse();
}

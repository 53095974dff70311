//! The `provd` binary: parse the command line and run it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // One rustls crypto provider for the whole process; a second install is a no-op.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    provd::cli::run(provd::cli::Cli::parse())
}

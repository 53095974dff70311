//! `provd dev-log serve`: the local Rekor-compatible log for tests, demos and air-gapped
//! labs (see [`crate::devlog`]). It is not a production transparency log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::Exit;

use clap::{Args, Subcommand};

use crate::config::LogFormat;
use crate::devlog::{DevLog, DevLogConfig, Faults, ForkFault};
use crate::telemetry;

/// `provd dev-log` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevLogCommand {
    /// Run a local Rekor-compatible transparency log (LAB/TEST TOOL, NOT A PRODUCTION LOG).
    ///
    /// Speaks the Rekor v1 API (/api/v1/log/..., ECDSA P-256 checkpoints and SETs) and the
    /// Rekor v2 write API (POST /api/v2/log/entries) with C2SP tlog-tiles reads
    /// (/checkpoint, /tile/...; Ed25519 checkpoints by default), over one append-only tree
    /// persisted in --data. Keys are generated on first start and kept in the data
    /// directory; the public keys (PEM and C2SP vkeys) are written there and printed at
    /// start so provd backends can trust them.
    ///
    /// Fault modes for tests (latency, 429/503 bursts, commit-then-drop, forked view,
    /// rollback, wrong-key checkpoints, down) need --allow-faults, at start and for
    /// POST /__faults at run time. It offers no authentication and no witnessing: never
    /// anchor anything that matters in it.
    #[command(after_help = "Examples:\n  \
        provd dev-log serve --listen 127.0.0.1:3030 --data ./devlog\n  \
        provd dev-log serve --listen 127.0.0.1:3030 --data ./devlog --allow-faults --fail-next 3 --fail-status 503\n  \
        curl -X POST http://127.0.0.1:3030/__faults -d '{\"drop_next_writes\": 2}'")]
    Serve(ServeArgs),
}

/// Flags of `provd dev-log serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3030")]
    pub listen: SocketAddr,
    /// Data directory: entries, keys and identity (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Rekor v1 log key (PKCS#8 PEM file, ECDSA P-256) for checkpoints and SETs; default:
    /// the key in the data directory, generated on first start.
    #[arg(long, value_name = "PEM_FILE")]
    pub key: Option<PathBuf>,
    /// Rekor v2 checkpoint key (PKCS#8 PEM file, Ed25519 or P-256); default: the key in the
    /// data directory, an Ed25519 key generated on first start.
    #[arg(long, value_name = "PEM_FILE")]
    pub checkpoint_key: Option<PathBuf>,
    /// Log origin and checkpoint key name: a bare host name such as `localhost` or
    /// `rekor.lab.example` (Rekor v1 clients use the host as the signature name). Fixed when
    /// the data directory is created; default `localhost`. The v1 checkpoint origin is
    /// `<origin> - <tree ID>`.
    #[arg(long)]
    pub origin: Option<String>,
    /// Allow fault modes (flags below and POST /__faults). Lab use only.
    #[arg(long)]
    pub allow_faults: bool,
    /// Fault: added latency per request, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        help_heading = "Fault modes (need --allow-faults)"
    )]
    pub latency_ms: Option<u64>,
    /// Fault: the next N requests fail with --fail-status and Retry-After.
    #[arg(
        long,
        value_name = "N",
        help_heading = "Fault modes (need --allow-faults)"
    )]
    pub fail_next: Option<u32>,
    /// Fault: status of the failure burst, 429 or 503.
    #[arg(
        long,
        value_name = "STATUS",
        help_heading = "Fault modes (need --allow-faults)"
    )]
    pub fail_status: Option<u16>,
    /// Fault: Retry-After seconds of failure and down responses (default 1).
    #[arg(
        long,
        value_name = "SECS",
        help_heading = "Fault modes (need --allow-faults)"
    )]
    pub retry_after: Option<u32>,
    /// Fault: commit the next N writes, then drop their connections without answering.
    #[arg(
        long,
        value_name = "N",
        help_heading = "Fault modes (need --allow-faults)"
    )]
    pub drop_next_writes: Option<u32>,
    /// Fault: every request fails with 503 until cleared through /__faults.
    #[arg(long, help_heading = "Fault modes (need --allow-faults)")]
    pub down: bool,
    /// Fault: serve a forked tree to requests carrying this header.
    #[arg(
        long,
        value_name = "HEADER",
        help_heading = "Fault modes (need --allow-faults)"
    )]
    pub fork_header: Option<String>,
    /// Fault: serve a forked tree to every other read request.
    #[arg(long, help_heading = "Fault modes (need --allow-faults)")]
    pub fork_alternate: bool,
    /// Fault: checkpoints show this older tree size (rollback).
    #[arg(
        long,
        value_name = "SIZE",
        help_heading = "Fault modes (need --allow-faults)"
    )]
    pub rollback_to: Option<u64>,
    /// Fault: sign checkpoints with a wrong key under the log's name and key hint.
    #[arg(long, help_heading = "Fault modes (need --allow-faults)")]
    pub wrong_key: bool,
}

impl ServeArgs {
    /// The faults the flags ask for, and whether any fault flag was given.
    fn faults(&self) -> (Faults, bool) {
        let mut f = Faults::default();
        let mut any = false;
        let mut set = |given: bool| any |= given;
        if let Some(v) = self.latency_ms {
            f.latency_ms = v;
            set(true);
        }
        if let Some(v) = self.fail_next {
            f.fail_next = v;
            set(true);
        }
        if let Some(v) = self.fail_status {
            f.fail_status = v;
            set(true);
        }
        if let Some(v) = self.retry_after {
            f.retry_after_secs = v;
            set(true);
        }
        if let Some(v) = self.drop_next_writes {
            f.drop_next_writes = v;
            set(true);
        }
        if self.down {
            f.down = true;
            set(true);
        }
        if let Some(h) = &self.fork_header {
            f.fork = Some(ForkFault::Header { header: h.clone() });
            set(true);
        }
        if self.fork_alternate {
            f.fork = Some(ForkFault::Alternate);
            set(true);
        }
        if let Some(v) = self.rollback_to {
            f.rollback_to = Some(v);
            set(true);
        }
        if self.wrong_key {
            f.wrong_key = true;
            set(true);
        }
        (f, any)
    }
}

/// Runs a `provd dev-log` command.
pub fn run(cmd: DevLogCommand) -> ExitCode {
    match cmd {
        DevLogCommand::Serve(args) => serve(args),
    }
}

fn read_pem(path: &Option<PathBuf>) -> Result<Option<String>, String> {
    path.as_ref()
        .map(|p| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()
}

fn serve(args: ServeArgs) -> ExitCode {
    let (faults, any_fault_flag) = args.faults();
    if any_fault_flag && !args.allow_faults {
        eprintln!(
            "provd dev-log: fault flags need --allow-faults (a lab safety switch: a log with \
             faults lies to its clients on purpose)"
        );
        return Exit::Usage.into();
    }
    let (key_pem, checkpoint_key_pem) = match (read_pem(&args.key), read_pem(&args.checkpoint_key))
    {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("provd dev-log: {e}");
            return Exit::Usage.into();
        }
    };
    telemetry::init_logs(LogFormat::Text);
    let config = DevLogConfig {
        data_dir: args.data.clone(),
        origin: args.origin.clone(),
        key_pem,
        checkpoint_key_pem,
        allow_faults: args.allow_faults,
        faults,
    };
    let log = match DevLog::open(config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("provd dev-log: {e}");
            return Exit::Failed.into();
        }
    };
    let rt = match super::service::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!(
            "provd dev-log: LAB/TEST log (not for production) listening on http://{addr}\n{}",
            log.describe()
        );
        if args.allow_faults {
            println!("fault injection: enabled (GET/POST http://{addr}/__faults)");
        }
        log.serve(listener, super::service::shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provd dev-log: {e}");
            Exit::Failed.into()
        }
    }
}

//! `provd replay`: catch this node up from the revocation ledger on demand.
//!
//! It runs the same replay as start-up and reconnects ([`actors::ledger_replay`]): rows
//! after `--since` (default: this node's checkpoint) in batches, each re-applied to
//! PostgreSQL (idempotently: only entries accepted before the revocation go) and to this
//! node's Valkey/Redis tier by criterion, with the checkpoint saved after each batch. A
//! running provd's in-process tier is not reachable from here; it is swept by that
//! process's own ledger consumer.

use std::path::Path;
use std::process::ExitCode;

use super::Exit;
use std::sync::Arc;

use actors::ledger_replay::{ReplayOptions, ReplayProgress, ReplayReport, Replayer};
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::service::ConnectionFlags;
use crate::adapters::hot_sweep::HotTiers;
use crate::adapters::redis::RedisCache;
use crate::app;
use crate::config::{Config, RawConfig, mask_url};

/// `provd replay` flags.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Replay the ledger rows after this `seq_no` (default: this node's checkpoint); `0`
    /// replays the whole ledger. The checkpoint never moves backwards.
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(i64).range(0..))]
    pub since: Option<i64>,
    /// Rows per batch; the checkpoint is saved after each batch.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Read and count only: delete nothing and leave the checkpoint where it is.
    #[arg(long)]
    pub dry_run: bool,
    /// The node whose checkpoint and hot tier are replayed (overrides `node_id`).
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
    /// Service URLs.
    #[command(flatten)]
    pub connections: ConnectionFlags,
}

/// The one-line summary `provd replay` ends with.
pub fn summary(report: &ReplayReport, dry_run: bool) -> String {
    let line = format!(
        "replayed {} revocations, {} entries invalidated, checkpoint {}",
        report.revocations, report.entries_invalidated, report.checkpoint
    );
    if dry_run {
        format!("dry run (nothing changed): {line}")
    } else {
        line
    }
}

/// Replays the ledger for `config.node_id` over PostgreSQL and Valkey/Redis. `progress`
/// is called after each batch.
pub async fn replay(
    config: &Config,
    options: ReplayOptions,
    progress: impl FnMut(ReplayProgress),
) -> anyhow::Result<ReplayReport> {
    let store = Arc::new(app::open_store(config).await?);
    // The in-process tier lives in the server; its own ledger consumer sweeps it.
    let redis = match &config.redis_url {
        Some(url) => Some(
            RedisCache::new(url, &config.redis_prefix)
                .with_context(|| format!("invalid Redis URL {}", mask_url(url)))?,
        ),
        None => None,
    };
    let replayer = Replayer::new(
        store,
        Arc::new(HotTiers::new(None, redis)),
        config.node_id.clone(),
    );
    replayer
        .replay(options, progress)
        .await
        .context("replay stopped; the checkpoint holds the last complete batch, run it again")
}

fn bar() -> ProgressBar {
    let target = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying the ledger [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// `provd replay`.
pub fn run(path: Option<&Path>, args: ReplayArgs) -> ExitCode {
    let config = match Config::load(path, std::env::vars(), |raw: &mut RawConfig| {
        args.connections.apply(raw);
        if let Some(n) = &args.node_id {
            raw.node_id = Some(n.clone());
        }
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("provd: {e}");
            return Exit::Config.into();
        }
    };
    crate::telemetry::init_logs(config.log_format);
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provd: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let options = ReplayOptions {
        since: args.since,
        batch_size: args.batch_size as usize,
        dry_run: args.dry_run,
    };
    let bar = bar();
    let result = rt.block_on(replay(&config, options, |p| {
        bar.set_length(u64::try_from(p.head - p.from).unwrap_or(0));
        bar.set_position(u64::try_from(p.at - p.from).unwrap_or(0));
    }));
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            println!("{}", summary(&report, args.dry_run));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("provd: {e:#}");
            Exit::Failed.into()
        }
    }
}

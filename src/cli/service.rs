//! Commands that run or prepare the service: `serve`, `migrate`, `config check`,
//! `events publish`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Exit;

use anyhow::Context;
use clap::{Args, Subcommand};
use events::{Subjects, decode};

use crate::app;
use crate::config::{Config, RawConfig};
use crate::telemetry;

/// Connection flags shared by commands that reach services.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectionFlags {
    /// PostgreSQL URL (overrides `database_url` and `PROVD_DATABASE_URL`); without one, the
    /// SQLite file in the data directory.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis / Valkey URL (overrides `redis_url` and `PROVD_REDIS_URL`); without one, the
    /// in-process tier only.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// NATS URL (overrides `nats_url` and `PROVD_NATS_URL`); without one, the in-process bus.
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Embedded mode's data directory (overrides `data_dir` and `PROVD_DATA_DIR`; default
    /// `./provd-data`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

impl ConnectionFlags {
    pub(crate) fn apply(&self, raw: &mut RawConfig) {
        if let Some(v) = &self.database_url {
            raw.database_url = Some(v.clone());
        }
        if let Some(v) = &self.redis_url {
            raw.redis_url = Some(v.clone());
        }
        if let Some(v) = &self.nats_url {
            raw.nats_url = Some(v.clone());
        }
        if let Some(v) = &self.data_dir {
            raw.data_dir = Some(v.clone());
        }
    }
}

/// `provd serve` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides `listen` and `PROVD_LISTEN`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// This node's name (overrides `node_id` and `PROVD_NODE_ID`).
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
    /// Log format, `text` or `json` (overrides `log_format` and `PROVD_LOG_FORMAT`; default:
    /// text on a terminal, JSON otherwise).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Service URLs.
    #[command(flatten)]
    pub connections: ConnectionFlags,
}

/// `provd migrate` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct MigrateArgs {
    /// Service URLs.
    #[command(flatten)]
    pub connections: ConnectionFlags,
}

/// `provd config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets masked.
    #[command(after_help = "Example:\n  provd --config provd.toml config check")]
    Check,
}

/// `provd events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Publish a CloudEvent (JSON file, or `-` for stdin) on the subject its type belongs to.
    #[command(after_help = "Example:\n  provd events publish docs/examples/invalidate.json")]
    Publish {
        /// The CloudEvents JSON file.
        file: PathBuf,
        /// Service URLs.
        #[command(flatten)]
        connections: ConnectionFlags,
    },
}

fn load(path: Option<&Path>, f: impl FnOnce(&mut RawConfig)) -> Result<Config, ExitCode> {
    Config::load(path, std::env::vars(), f).map_err(|e| {
        eprintln!("provd: {e}");
        Exit::Config.into()
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    super::runtime().map_err(|e| {
        eprintln!("provd: cannot start the async runtime: {e}");
        Exit::Failed.into()
    })
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    super::finish("provd", r.map_err(super::CliError::Failed))
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// `provd serve`.
pub fn serve(path: Option<&Path>, args: ServeArgs) -> ExitCode {
    let config = match load(path, |raw| {
        if let Some(v) = &args.listen {
            raw.listen = Some(v.clone());
        }
        if let Some(v) = &args.node_id {
            raw.node_id = Some(v.clone());
        }
        if let Some(v) = &args.log_format {
            raw.log_format = Some(v.clone());
        }
        args.connections.apply(raw);
    }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _traces =
        match telemetry::init_logs_and_traces(config.log_format, &config.otel, &config.node_id) {
            Ok(guard) => guard,
            Err(e) => return super::finish("provd", Err(super::CliError::Config(e.into()))),
        };
    // Through the log, so it is one more JSON line when the logs are JSON.
    for (part, mode) in app::describe_modes(&config) {
        tracing::info!("{part}: {mode}");
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let r = rt.block_on(app::run(config, shutdown_signal()));
    super::finish(
        "provd",
        r.map_err(|e| match e {
            // Fixed in the configuration: `nats_prefix` or `database_url`.
            e @ app::AppError::ForeignDeployment(_) => super::CliError::Config(e.into()),
            e => super::CliError::Failed(e.into()),
        }),
    )
}

/// `provd migrate`.
pub fn migrate(path: Option<&Path>, args: MigrateArgs) -> ExitCode {
    let config = match load(path, |raw| args.connections.apply(raw)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    telemetry::init_logs(config.log_format);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    report(rt.block_on(async {
        app::open_store(&config).await?;
        println!("migrations applied");
        Ok(())
    }))
}

/// `provd config check`.
pub fn config(path: Option<&Path>, cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Check => match load(path, |_| {}) {
            Ok(c) => {
                print!("{}", c.to_masked_toml());
                eprintln!("provd: configuration is valid");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

/// `provd events ...`.
pub fn events(path: Option<&Path>, cmd: EventsCommand) -> ExitCode {
    match cmd {
        EventsCommand::Publish { file, connections } => {
            let config = match load(path, |raw| connections.apply(raw)) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            report(rt.block_on(publish(config, file)))
        }
    }
}

async fn publish(config: Config, file: PathBuf) -> anyhow::Result<()> {
    let bytes = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
        buf
    } else {
        std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
    };
    let (kind, event) = decode(&bytes).map_err(|e| anyhow::anyhow!("not a valid event: {e}"))?;
    let subjects = Subjects::new(config.nats_prefix.clone());
    let subject = subjects.subject(kind);
    drop(subjects);
    // Embedded mode publishes into the SQLite file the server reads its bus from.
    let mut sqlite = None;
    // It only publishes and creates no consumer; streams it creates are adopted by the
    // deployment that starts on them.
    let bus = app::open_bus(&config, &mut sqlite, None).await?;
    // Keyed by source + id like every inbound event, so a repeat is one event.
    let key = events::event_key(&event.source, &event.id).to_string();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        bus.publish(&subject, &key, bytes),
    )
    .await
    .with_context(|| format!("the {} bus did not answer within 10s", bus.kind()))?
    .context("publishing")?;
    println!("published {} on {subject}", event.id);
    Ok(())
}

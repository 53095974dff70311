//! `provd rekor get` and `provd rekor checkpoint`: read straight from a configured
//! transparency-log backend, verified with its trusted keys.
//!
//! Both load the configuration as `serve` does (file, `PROVD_*` variables) and go through
//! the same client code as the service, resilient wrapper included. Exit codes: 0 verified,
//! 1 the log failed or its answer did not verify (reason on stderr, or JSON on stdout with
//! `--json`), 2 usage errors (an unknown backend), 78 a bad configuration.

use std::path::Path;
use std::process::ExitCode;

use super::{CliError, Exit};

use actors::domain::receipt::Receipt;
use actors::ports::{LogCheckpoint, RekorClient, RekorError};
use clap::Args;
use serde_json::{Value, json};

use crate::adapters::rekor::build_backend;
use crate::config::Config;

/// `provd rekor get` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["index", "uuid"])))]
pub struct GetArgs {
    /// The backend name (`[rekor.backends.<name>]`); default: `rekor.default_backend`.
    #[arg(long)]
    pub backend: Option<String>,
    /// The entry's log index (Rekor v1: the virtual index across shards).
    #[arg(long, value_name = "N")]
    pub index: Option<u64>,
    /// The entry's 64-hex UUID or 80-hex entry ID (Rekor v1 only).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Print the verified receipt as JSON (with the bundle `TransparencyLogEntry`).
    #[arg(long)]
    pub json: bool,
}

/// `provd rekor checkpoint` arguments.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The backend name (`[rekor.backends.<name>]`); default: `rekor.default_backend`.
    #[arg(long)]
    pub backend: Option<String>,
    /// Print the verified checkpoint as JSON, with the signed note.
    #[arg(long)]
    pub json: bool,
}

/// Loads the config and builds the named backend.
fn backend(
    config_path: Option<&Path>,
    name: Option<&str>,
) -> Result<std::sync::Arc<dyn RekorClient>, CliError> {
    let config = Config::load(config_path, std::env::vars(), |_| {})
        .map_err(|e| CliError::Config(e.into()))?;
    let rekor = &config.rekor;
    let name = name
        .map(str::to_owned)
        .or_else(|| rekor.default_backend.clone())
        .ok_or_else(|| {
            CliError::Usage(anyhow::anyhow!(
                "no transparency-log backend is configured: add [rekor.backends.<name>] to the \
                 config file"
            ))
        })?;
    let backend = rekor.backends.get(&name).ok_or_else(|| {
        let known = rekor
            .backends
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        CliError::Usage(anyhow::anyhow!(
            "unknown backend {name:?}; configured: {}",
            if known.is_empty() { "none" } else { &known }
        ))
    })?;
    build_backend(backend).map_err(|e| CliError::Usage(e.into()))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    super::runtime()
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

/// The JSON form of a checkpoint.
fn checkpoint_json(cp: &LogCheckpoint) -> Value {
    json!({
        "origin": cp.checkpoint.origin,
        "size": cp.checkpoint.size,
        "root": hex::encode(cp.checkpoint.root),
        "note": cp.note,
    })
}

/// The JSON form of a verified receipt.
pub fn receipt_json(backend: &str, receipt: &Receipt) -> Value {
    let proof = receipt.inclusion_proof.as_ref();
    json!({
        "backend": backend,
        "uuid": receipt.uuid(),
        "entry_id": receipt.entry_id(),
        "log_id": hex::encode(&receipt.log_id),
        "log_index": receipt.log_index,
        "integrated_time": receipt.integrated_time,
        "kind_version": receipt.kind_version,
        "inclusion_proof": proof.map(|p| json!({
            "log_index": p.log_index,
            "tree_size": p.tree_size,
            "root_hash": hex::encode(p.root_hash),
            "hashes": p.hashes.iter().map(hex::encode).collect::<Vec<_>>(),
            "checkpoint": p.checkpoint,
        })),
        "transparency_log_entry": receipt.to_tle(),
    })
}

fn finish(
    result: Result<Value, CliError>,
    json: bool,
    human: impl Fn(&Value) -> String,
) -> ExitCode {
    match result {
        Ok(v) => {
            if json {
                println!("{v}");
            } else {
                println!("{}", human(&v));
            }
            ExitCode::SUCCESS
        }
        // A failed check in JSON mode is an answer on stdout too.
        Err(CliError::Failed(e)) if json => {
            println!("{}", json!({"error": format!("{e:#}")}));
            Exit::Failed.into()
        }
        Err(e) => {
            eprintln!("provd: {e}");
            e.exit().into()
        }
    }
}

/// `provd rekor get`.
pub fn get(config_path: Option<&Path>, args: GetArgs) -> ExitCode {
    let result = (|| {
        let client = backend(config_path, args.backend.as_deref())?;
        let receipt = runtime()?
            .block_on(async {
                match (&args.uuid, args.index) {
                    (Some(uuid), _) => client.entry_by_uuid(uuid).await,
                    (None, Some(index)) => client.entry_by_index(index).await,
                    (None, None) => Err(RekorError::Invalid("give --index or --uuid".into())),
                }
            })
            .map_err(|e| CliError::Failed(e.into()))?;
        Ok(receipt_json(client.backend(), &receipt))
    })();
    finish(result, args.json, |v| {
        let proof = &v["inclusion_proof"];
        let mut out = format!(
            "OK: entry verified\nbackend:         {}\nuuid:            {}\nlog index:       {}\n",
            v["backend"].as_str().unwrap_or(""),
            v["uuid"].as_str().unwrap_or(""),
            v["log_index"],
        );
        if let Some(t) = v["integrated_time"].as_i64() {
            let when = chrono::DateTime::from_timestamp(t, 0)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default();
            out.push_str(&format!("integrated time: {t} ({when})\n"));
        }
        out.push_str(&format!(
            "proof:           leaf {} of {} under root {}",
            proof["log_index"],
            proof["tree_size"],
            proof["root_hash"].as_str().unwrap_or("")
        ));
        out
    })
}

/// `provd rekor checkpoint`.
pub fn checkpoint(config_path: Option<&Path>, args: CheckpointArgs) -> ExitCode {
    let result = (|| {
        let client = backend(config_path, args.backend.as_deref())?;
        let cp = runtime()?
            .block_on(client.checkpoint())
            .map_err(|e| CliError::Failed(e.into()))?;
        let mut v = checkpoint_json(&cp);
        v["backend"] = json!(client.backend());
        Ok(v)
    })();
    finish(result, args.json, |v| {
        format!(
            "OK: checkpoint verified\nbackend: {}\norigin:  {}\nsize:    {}\nroot:    {}",
            v["backend"].as_str().unwrap_or(""),
            v["origin"].as_str().unwrap_or(""),
            v["size"],
            v["root"].as_str().unwrap_or("")
        )
    })
}

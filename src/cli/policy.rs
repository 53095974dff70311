//! `provd policy apply | get | list`: policy documents through a running provd
//! (`docs/policies.md`).
//!
//! Like `provd export`, these never touch a database: they call the HTTP API of the node at
//! `--server` (`PROVD_SERVER`) with `--token` (`PROVD_TOKEN`; `admin` to apply, `read`
//! otherwise), so they work from any host that can reach it.
//!
//! Exit codes: 0 done, 1 refused or failed (provd's message is printed), 2 usage (bad
//! arguments or an unreadable file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Exit;
use std::time::Duration;

use actors::domain::policy;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

/// The `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Store a policy document as the next version of its name (replacing a policy
    /// invalidates every verdict decided under the old one).
    #[command(
        after_help = "Prints `created`, `replaced` (with the old hash) or `unchanged`, the version and the hash.\n\nExample:\n  provd policy apply release.json --server http://127.0.0.1:8080 --token $PROVD_TOKEN\n  provd policy apply ./policies/v2.json --name release"
    )]
    Apply(ApplyArgs),
    /// Print the current version of a policy with its document, as JSON.
    #[command(
        after_help = "Example:\n  provd policy get release --server http://127.0.0.1:8080\n  provd policy get release --document > release.json"
    )]
    Get(GetArgs),
    /// List the current version of every policy.
    #[command(after_help = "Example:\n  provd policy list\n  provd policy list --json")]
    List(ListArgs),
}

/// Where provd is and how to authenticate.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The running provd's base URL.
    #[arg(long, env = "PROVD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A bearer token (`admin` scope to apply, `read` to get and list).
    #[arg(long, env = "PROVD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Arguments of `provd policy apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The policy document (JSON).
    pub file: PathBuf,
    /// The policy's name; the file name without its extension when absent.
    #[arg(long)]
    pub name: Option<String>,
    /// Print provd's JSON answer.
    #[arg(long)]
    pub json: bool,
    /// Where provd is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `provd policy get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The policy's name.
    pub name: String,
    /// Print only the document (what `apply` takes).
    #[arg(long)]
    pub document: bool,
    /// Where provd is.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Arguments of `provd policy list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print provd's JSON answer.
    #[arg(long)]
    pub json: bool,
    /// Where provd is.
    #[command(flatten)]
    pub server: ServerArgs,
}

use super::CliError;

/// Runs a `provd policy` command.
pub fn run(command: PolicyCommand) -> ExitCode {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provd: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let (what, result) = match command {
        PolicyCommand::Apply(args) => ("apply", rt.block_on(apply(&args))),
        PolicyCommand::Get(args) => ("get", rt.block_on(get(&args))),
        PolicyCommand::List(args) => ("list", rt.block_on(list(&args))),
    };
    super::finish(&format!("provd policy {what}"), result)
}

/// The name `apply` uses: `--name`, or the file's stem.
fn name_of(file: &Path, name: Option<&str>) -> Result<String, CliError> {
    let name = match name {
        Some(n) => n.to_owned(),
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                CliError::Usage(anyhow::anyhow!(
                    "cannot take a policy name from {}: give --name",
                    file.display()
                ))
            })?,
    };
    policy::check_name(&name).map_err(|e| CliError::Usage(e.into()))?;
    Ok(name)
}

/// Sends a request to provd: its JSON answer on success, or provd's own message.
async fn call(
    server: &ServerArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), CliError> {
    let base = server.server.trim_end_matches('/');
    let client = super::http_client(server.token.as_deref(), Duration::from_secs(30))
        .map_err(CliError::Usage)?;
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach provd at {base}"))
        .map_err(CliError::Failed)?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        return Err(CliError::Failed(anyhow::anyhow!(
            "provd answered {status}: {message}"
        )));
    }
    Ok((status.as_u16(), body))
}

async fn apply(args: &ApplyArgs) -> Result<(), CliError> {
    let name = name_of(&args.file, args.name.as_deref())?;
    let document = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))
        .map_err(CliError::Usage)?;
    let (status, answer) = call(
        &args.server,
        reqwest::Method::PUT,
        &format!("/api/v1/policies/{name}"),
        Some(document),
    )
    .await?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let (version, hash) = (
        &answer["version"],
        answer["policy_hash"].as_str().unwrap_or("?"),
    );
    if status == 201 {
        println!("created policy {name} version {version} {hash}");
    } else if answer["unchanged"] == true {
        println!("unchanged policy {name} version {version} {hash}");
    } else {
        println!(
            "replaced policy {name} version {version} {hash} (was {}; its verdicts are being invalidated)",
            answer["previous_policy_hash"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

async fn get(args: &GetArgs) -> Result<(), CliError> {
    policy::check_name(&args.name).map_err(|e| CliError::Usage(e.into()))?;
    let (_, answer) = call(
        &args.server,
        reqwest::Method::GET,
        &format!("/api/v1/policies/{}", args.name),
        None,
    )
    .await?;
    let shown = if args.document {
        &answer["document"]
    } else {
        &answer
    };
    println!("{shown:#}");
    Ok(())
}

async fn list(args: &ListArgs) -> Result<(), CliError> {
    let (_, answer) = call(&args.server, reqwest::Method::GET, "/api/v1/policies", None).await?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    let policies = answer["policies"].as_array().cloned().unwrap_or_default();
    if policies.is_empty() {
        println!("no policies");
    }
    for p in policies {
        println!(
            "{}\tversion {}\t{}\t{}",
            p["name"].as_str().unwrap_or("?"),
            p["version"],
            p["policy_hash"].as_str().unwrap_or("?"),
            p["created_at"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

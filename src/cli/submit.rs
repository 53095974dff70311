//! `provd rekor submit`: queue a DSSE envelope for the transparency log through a running
//! provd, and optionally wait for its receipt and write its Sigstore bundle.
//!
//! Exit codes: 0 queued (or, with `--wait`, logged), 1 dead-lettered or not logged in time,
//! 2 unreadable inputs or a request provd refused.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Exit;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

/// Arguments of `provd rekor submit`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  provd rekor submit attestation.dsse.json --verifier signer.pub.pem \
                        --server http://127.0.0.1:8080 --token $PROVD_TOKEN --wait\n  \
                        provd rekor submit env.json --verifier a.pem --verifier b.pem --backend private\n  \
                        provd rekor submit attestation.dsse.json --verifier signer.pub.pem --wait \
                        --bundle-out attestation.sigstore.json"
)]
pub struct SubmitArgs {
    /// The DSSE envelope JSON file (`payloadType`, `payload`, `signatures`).
    pub envelope: PathBuf,
    /// A PEM public key file that verifies the envelope's signature; repeat for several.
    #[arg(long = "verifier", value_name = "PEM_FILE", required = true)]
    pub verifiers: Vec<PathBuf>,
    /// The configured backend to log to; provd's default backend when absent.
    #[arg(long)]
    pub backend: Option<String>,
    /// The running provd's base URL.
    #[arg(long, env = "PROVD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A bearer token with the `submit` scope (and `read` for `--wait`).
    #[arg(long, env = "PROVD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Wait until the submission is logged or dead-lettered, and print the receipt.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: once logged, write the submission's Sigstore bundle (v0.3, JSON) to
    /// this file.
    #[arg(long, value_name = "FILE", requires = "wait")]
    pub bundle_out: Option<PathBuf>,
    /// How long `--wait` waits, e.g. `2m`.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `provd rekor submit`.
pub fn run(args: SubmitArgs) -> ExitCode {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provd: cannot start the async runtime: {e}");
            return Exit::Usage.into();
        }
    };
    match rt.block_on(submit(&args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provd rekor submit: {e:#}");
            Exit::Usage.into()
        }
    }
}

/// The body of a provd answer, or an error carrying provd's own message.
async fn answer(resp: reqwest::Response) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("provd answered {status}: {message}");
    }
    Ok((status, body))
}

async fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let envelope: Value = serde_json::from_slice(
        &std::fs::read(&args.envelope)
            .with_context(|| format!("cannot read {}", args.envelope.display()))?,
    )
    .with_context(|| format!("{} is not JSON", args.envelope.display()))?;
    let verifiers = args
        .verifiers
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = args.server.trim_end_matches('/');
    let client = super::http_client(args.token.as_deref(), Duration::from_secs(30))?;
    let mut body = json!({"envelope": envelope, "verifiers": verifiers});
    if let Some(b) = &args.backend {
        body["backend"] = json!(b);
    }
    let resp = client
        .request(
            reqwest::Method::POST,
            format!("{base}/api/v1/rekor/submissions"),
        )
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach provd at {base}"))?;
    let (_, queued) = answer(resp).await?;
    let id = queued["id"].as_str().unwrap_or_default().to_owned();
    if !args.wait {
        if args.json {
            println!("{queued}");
        } else {
            println!("{id} {}", queued["status"].as_str().unwrap_or("?"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + args.timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let resp = client
            .request(
                reqwest::Method::GET,
                format!("{base}/api/v1/rekor/submissions/{id}"),
            )
            .send()
            .await
            .with_context(|| format!("cannot reach provd at {base}"))?;
        let (_, sub) = answer(resp).await?;
        let status = sub["status"].as_str().unwrap_or_default();
        let done = matches!(status, "logged" | "dead_lettered");
        if done || Instant::now() >= deadline {
            if args.json {
                println!("{sub}");
            } else if status == "logged" {
                let r = &sub["receipt"];
                println!(
                    "{id} logged: uuid {} log index {}{}",
                    r["uuid"].as_str().unwrap_or("?"),
                    r["log_index"],
                    r["integrated_time"]
                        .as_i64()
                        .map(|t| format!(" integrated at {t}"))
                        .unwrap_or_default()
                );
            } else {
                println!(
                    "{id} {status} after {} attempts: {}",
                    sub["attempts"],
                    sub["last_error"].as_str().unwrap_or("-")
                );
            }
            if status == "logged"
                && let Some(path) = &args.bundle_out
            {
                write_bundle(&client, base, &id, path).await?;
                if !args.json {
                    println!("{id} bundle written to {}", path.display());
                }
            }
            return Ok(if status == "logged" {
                ExitCode::SUCCESS
            } else {
                if !done {
                    eprintln!(
                        "provd rekor submit: not logged within {}",
                        humantime::format_duration(args.timeout)
                    );
                }
                Exit::Failed.into()
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Fetches the logged submission's Sigstore bundle and writes it, as provd served it.
async fn write_bundle(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let resp = client
        .request(
            reqwest::Method::GET,
            format!("{base}/api/v1/rekor/submissions/{id}/bundle"),
        )
        .send()
        .await
        .with_context(|| format!("cannot reach provd at {base}"))?;
    let (_, bundle) = answer(resp).await?;
    let mut text = serde_json::to_string_pretty(&bundle).context("bundle JSON")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

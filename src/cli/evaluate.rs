//! `provd evaluate`: asks a running provd whether an artifact is acceptable under a stored
//! policy, given attestations (`POST /api/v1/provcache/evaluate`), and prints the verdict.
//!
//! Exit codes: 0 allow, 1 deny, 2 usage errors, unreadable files and refusals by provd.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Exit;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

/// `provd evaluate` flags.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 0 allow, 1 deny, 2 usage or a refused request.\n\nExample:\n  \
                  provd evaluate --policy release --bundle app.sigstore.json \\\n    \
                  --server http://127.0.0.1:8080 --token $PROVD_TOKEN sha256:3f…9a"
)]
pub struct EvaluateArgs {
    /// The stored policy's name.
    #[arg(long)]
    pub policy: String,
    /// A Sigstore bundle attesting the artifact; repeat for several.
    #[arg(long = "bundle", value_name = "FILE", required = true)]
    pub bundles: Vec<PathBuf>,
    /// The SBOM's digest, when the verdict depends on one.
    #[arg(long, value_name = "DIGEST")]
    pub sbom_digest: Option<String>,
    /// A VEX document's digest; repeat for several.
    #[arg(long = "vex-digest", value_name = "DIGEST")]
    pub vex_digests: Vec<String>,
    /// The vulnerability feed the verdict is decided at.
    #[arg(long, requires = "feed_epoch")]
    pub feed_id: Option<String>,
    /// The feed's epoch.
    #[arg(long)]
    pub feed_epoch: Option<String>,
    /// The running provd's base URL.
    #[arg(long, env = "PROVD_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A bearer token with the `write` scope.
    #[arg(long, env = "PROVD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print provd's whole answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// The artifact's digest, `sha256:<hex>` or `sha512:<hex>`.
    #[arg(value_name = "DIGEST")]
    pub artifact_digest: String,
}

/// Runs `provd evaluate`.
pub fn run(args: EvaluateArgs) -> ExitCode {
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("provd: cannot start the async runtime: {e}");
            return Exit::Usage.into();
        }
    };
    match rt.block_on(evaluate(&args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provd evaluate: {e:#}");
            Exit::Usage.into()
        }
    }
}

async fn evaluate(args: &EvaluateArgs) -> anyhow::Result<ExitCode> {
    let attestations = args
        .bundles
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            // A bundle that is not JSON goes as text: provd refuses it by name.
            Ok(serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
        })
        .collect::<anyhow::Result<Vec<Value>>>()?;
    let mut body = json!({
        "artifact_digest": args.artifact_digest,
        "policy": args.policy,
        "attestations": attestations,
        "vex_digests": args.vex_digests,
    });
    for (key, value) in [
        ("sbom_digest", &args.sbom_digest),
        ("feed_id", &args.feed_id),
        ("feed_epoch", &args.feed_epoch),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    let base = args.server.trim_end_matches('/');
    let client = super::http_client(args.token.as_deref(), Duration::from_secs(120))?;
    let resp = client
        .post(format!("{base}/api/v1/provcache/evaluate"))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach provd at {base}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "provd answered {status}: {}",
            answer["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    let allow = answer["decision"] == "allow";
    if args.json {
        println!("{answer}");
    } else {
        println!(
            "{}{}: {}",
            answer["decision"].as_str().unwrap_or("?"),
            if answer["cached"] == true {
                " (cached)"
            } else {
                ""
            },
            answer["veri_key"].as_str().unwrap_or("?")
        );
        for reason in answer["reasons"].as_array().into_iter().flatten() {
            println!("  {}", reason.as_str().unwrap_or_default());
        }
    }
    Ok(if allow {
        ExitCode::SUCCESS
    } else {
        Exit::Failed.into()
    })
}

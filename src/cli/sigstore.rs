//! `provd sigstore verify-bundle`: complete, offline verification of a Sigstore bundle, with
//! the flags cosign and sigstore-python users know and the sigstore-conformance CLI
//! protocol's verify form, so the conformance harness drives provd through a two-line
//! wrapper (`scripts/conformance-entrypoint`).
//!
//! Exit codes: 0 valid; 1 invalid, with the failed check named in one line on stderr
//! (`signature check failed: …`), or the whole report on stdout with `--json`; 2 usage
//! errors and unreadable inputs; 78 a configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Exit;

use actors::domain::verification::{
    self, Artifact, ArtifactDigest, IdentityPolicy, Matcher, Report, Request, SignerPolicy,
    SignerSummary, Thresholds, TrustMaterial, VerificationError, WorkflowClaims,
};
use clap::{Args, Subcommand};
use jiff::Timestamp;

use crate::config::Config;
use crate::config::trust::TrustConfig;
use crate::trust::freshness::Freshness;
use crate::trust::{self, Instance, RootSource, TrustError};

/// `provd sigstore` subcommands.
#[derive(Debug, Subcommand)]
pub enum SigstoreCommand {
    /// Verify a Sigstore bundle (v0.1-v0.3) completely and offline: the signature over the
    /// artifact or DSSE envelope, the Fulcio certificate chain (or your key), the SCT, RFC
    /// 3161 timestamps, the transparency-log entries and that they are about this bundle, the
    /// signing time inside every validity window, and the signer's identity.
    #[command(
        after_help = "FILE_OR_DIGEST is the artifact, or its digest `sha256:<hex>` \
        (`sha512:<hex>` for an in-toto subject) when no such file exists.\n\nThe trusted \
        root is --trusted-root, else `trust.trusted_root`, else the TUF cache of `provd trust \
        update` in the data directory, else the root embedded in provd. Without --offline, a \
        missing or stale TUF cache is refreshed first.\n\nExit status: 0 valid, 1 invalid \
        (the failed check named), 2 usage.\n\nExamples:\n  provd sigstore verify-bundle \
        --bundle a.txt.sigstore.json \\\n    --certificate-identity \
        https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main \\\n    \
        --certificate-oidc-issuer https://token.actions.githubusercontent.com a.txt\n  provd \
        sigstore verify-bundle --bundle b.json --key cosign.pub --offline \
        sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf\n  provd \
        sigstore verify-bundle --bundle b.json --certificate-identity-regexp \
        'https://github.com/org/.*' \\\n    --certificate-oidc-issuer \
        https://token.actions.githubusercontent.com --json a.txt"
    )]
    VerifyBundle(VerifyBundleArgs),
}

/// `provd sigstore verify-bundle` flags.
#[derive(Debug, Clone, Args)]
pub struct VerifyBundleArgs {
    /// Use Sigstore's staging instance (its trusted root) instead of production.
    #[arg(long)]
    pub staging: bool,
    /// The Sigstore bundle to verify.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// The certificate's subject alternative name (email or URI) must be exactly this.
    #[arg(long, value_name = "ID", conflicts_with = "key")]
    pub certificate_identity: Option<String>,
    /// The whole subject alternative name must match this regular expression.
    #[arg(long, value_name = "RE", conflicts_with_all = ["key", "certificate_identity"])]
    pub certificate_identity_regexp: Option<String>,
    /// The certificate's OIDC issuer must be exactly this.
    #[arg(long, value_name = "URL", conflicts_with = "key")]
    pub certificate_oidc_issuer: Option<String>,
    /// The whole OIDC issuer must match this regular expression.
    #[arg(long, value_name = "RE", conflicts_with_all = ["key", "certificate_oidc_issuer"])]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// The GitHub repository the certificate was issued to (`owner/repo` or its URL).
    #[arg(long, value_name = "REPO", conflicts_with = "key")]
    pub certificate_github_workflow_repository: Option<String>,
    /// The git ref the workflow ran on, e.g. `refs/heads/main`.
    #[arg(long, value_name = "REF", conflicts_with = "key")]
    pub certificate_github_workflow_ref: Option<String>,
    /// The workflow file that signed (`.github/workflows/release.yml` or its URL).
    #[arg(long, value_name = "PATH", conflicts_with = "key")]
    pub certificate_github_workflow: Option<String>,
    /// The event that triggered the workflow, e.g. `push`.
    #[arg(long, value_name = "EVENT", conflicts_with = "key")]
    pub certificate_github_workflow_trigger: Option<String>,
    /// The runner environment: `github-hosted` or `self-hosted`.
    #[arg(long, value_name = "ENV", conflicts_with = "key")]
    pub certificate_github_runner_environment: Option<String>,
    /// Verify a bundle signed with a managed key: the PEM public key.
    #[arg(long, value_name = "PEM_FILE")]
    pub key: Option<PathBuf>,
    /// A `trusted_root.json` to verify against.
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// Never use the network: verify with the cached or embedded trusted root as it is.
    #[arg(long)]
    pub offline: bool,
    /// Where the TUF cache lives (`data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// How many transparency-log entries must verify.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub tlog_threshold: usize,
    /// How many timestamps (log integrated times or RFC 3161 timestamps) must verify.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub timestamp_threshold: usize,
    /// Print every check, the verified identity, signing time and log entries as JSON.
    #[arg(long)]
    pub json: bool,
    /// The artifact file, or its digest `sha256:<hex>`.
    #[arg(value_name = "FILE_OR_DIGEST")]
    pub artifact: String,
}

/// A failure before verification could run.
enum Failure {
    /// Bad flags or unreadable input: exit 2.
    Usage(String),
    /// A configuration error: exit 78.
    Config(String),
}

/// Runs a `provd sigstore` subcommand.
pub fn run(config: Option<&Path>, command: SigstoreCommand) -> ExitCode {
    match command {
        SigstoreCommand::VerifyBundle(args) => match verify_bundle(config, &args) {
            Ok(outcome) => print_report(&outcome, args.json),
            Err(Failure::Usage(msg)) => {
                eprintln!("error: {msg}");
                Exit::Usage.into()
            }
            Err(Failure::Config(msg)) => {
                eprintln!("error: {msg}");
                Exit::Config.into()
            }
        },
    }
}

/// A verification's report with the trusted root it used.
struct Outcome {
    report: Report,
    /// Where the trusted root came from, when one was loaded.
    trusted_root: Option<String>,
    /// Freshness warnings (also printed on stderr).
    warnings: Vec<String>,
}

impl From<Report> for Outcome {
    fn from(report: Report) -> Self {
        Outcome {
            report,
            trusted_root: None,
            warnings: Vec::new(),
        }
    }
}

/// Prints the report: one line, or the JSON report (the same document as
/// `POST /api/v1/verify`); the exit code follows the verdict.
fn print_report(outcome: &Outcome, json: bool) -> ExitCode {
    let report = &outcome.report;
    if json {
        let mut doc = serde_json::to_value(report).unwrap_or_default();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(
                "trusted_root".into(),
                outcome
                    .trusted_root
                    .clone()
                    .map_or(serde_json::Value::Null, serde_json::Value::String),
            );
            obj.insert("warnings".into(), serde_json::json!(outcome.warnings));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
        );
    } else if let Some(error) = report.failure() {
        eprintln!("{error}");
    } else {
        println!("{}", ok_line(report));
    }
    if report.valid {
        ExitCode::SUCCESS
    } else {
        Exit::Failed.into()
    }
}

/// `OK: signed by <who> at <time>; <n> log entries (<where>)`.
fn ok_line(report: &Report) -> String {
    let who = match &report.signer {
        Some(SignerSummary::Certificate { san, issuer, .. }) => {
            format!("{san} (issuer {})", issuer.as_deref().unwrap_or("unknown"))
        }
        Some(SignerSummary::Key { fingerprint }) => format!("the key {fingerprint}"),
        None => "an unknown signer".into(),
    };
    let entries: Vec<String> = report
        .log_entries
        .iter()
        .map(|e| {
            format!(
                "{} index {}",
                e.log_url.as_deref().unwrap_or("an unnamed log"),
                e.log_index
            )
        })
        .collect();
    format!(
        "OK: signed by {who} at {}; log: {}",
        report.signing_time.as_deref().unwrap_or("an unknown time"),
        if entries.is_empty() {
            "none".into()
        } else {
            entries.join(", ")
        }
    )
}

/// Parses the flags, loads the trusted root and the bundle, and verifies.
fn verify_bundle(config_path: Option<&Path>, args: &VerifyBundleArgs) -> Result<Outcome, Failure> {
    let signer = match signer_policy(args)? {
        Ok(signer) => signer,
        Err(refusal) => return Ok(Report::refused(refusal).into()),
    };
    let bundle = std::fs::read(&args.bundle)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.bundle.display())))?;
    let digest;
    let bytes;
    let artifact = match artifact_input(&args.artifact) {
        Some(d) => {
            digest = d;
            Artifact::Digest(&digest)
        }
        None => {
            bytes = std::fs::read(&args.artifact)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", args.artifact)))?;
            Artifact::Bytes(&bytes)
        }
    };
    let (root, source, warning) = match load_trusted_root(config_path, args)? {
        Ok(loaded) => loaded,
        Err(refusal) => return Ok(Report::refused(refusal).into()),
    };
    if let Some(warning) = &warning {
        eprintln!("warning: {warning}");
    }
    let outcome = |report| Outcome {
        report,
        trusted_root: Some(source.clone()),
        warnings: warning.iter().cloned().collect(),
    };
    let trust = match TrustMaterial::from_json(&root) {
        Ok(t) => t,
        Err(e) => return Ok(outcome(Report::refused(e))),
    };
    let thresholds = Thresholds {
        tlog_entries: args.tlog_threshold,
        timestamps: args.timestamp_threshold,
    };
    Ok(outcome(verification::verify(
        &trust,
        &Request {
            bundle: &bundle,
            artifact,
            signer: &signer,
            thresholds,
        },
    )))
}

/// The digest form of FILE_OR_DIGEST, as the conformance protocol defines it: a
/// well-formed digest that is not the path of a file.
fn artifact_input(arg: &str) -> Option<ArtifactDigest> {
    if Path::new(arg).exists() {
        return None;
    }
    arg.parse().ok()
}

/// The signer policy from the flags: a key, or an identity and an issuer. A key file that
/// cannot be read is a usage error; one that is not a public key refuses the bundle (the
/// key check).
fn signer_policy(
    args: &VerifyBundleArgs,
) -> Result<Result<SignerPolicy, VerificationError>, Failure> {
    if let Some(path) = &args.key {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        return Ok(verification::key_from_pem(&pem)
            .map(SignerPolicy::Key)
            .map_err(|e| VerificationError::Key(format!("{}: {e}", path.display()))));
    }
    let san = match (
        &args.certificate_identity,
        &args.certificate_identity_regexp,
    ) {
        (Some(id), None) => Matcher::Exact(id.clone()),
        (None, Some(re)) => Matcher::regex(re).map_err(Failure::Usage)?,
        _ => {
            return Err(Failure::Usage(
                "give --certificate-identity (or --certificate-identity-regexp) and \
                 --certificate-oidc-issuer, or --key for a bundle signed with a managed key"
                    .into(),
            ));
        }
    };
    let issuer = match (
        &args.certificate_oidc_issuer,
        &args.certificate_oidc_issuer_regexp,
    ) {
        (Some(i), None) => Matcher::Exact(i.clone()),
        (None, Some(re)) => Matcher::regex(re).map_err(Failure::Usage)?,
        _ => {
            return Err(Failure::Usage(
                "give --certificate-oidc-issuer (or --certificate-oidc-issuer-regexp) with the \
                 identity"
                    .into(),
            ));
        }
    };
    Ok(Ok(SignerPolicy::Identity(IdentityPolicy {
        san,
        issuer,
        workflow: WorkflowClaims {
            repository: args.certificate_github_workflow_repository.clone(),
            git_ref: args.certificate_github_workflow_ref.clone(),
            workflow: args.certificate_github_workflow.clone(),
            trigger: args.certificate_github_workflow_trigger.clone(),
            runner_environment: args.certificate_github_runner_environment.clone(),
        },
    })))
}

/// A loaded trusted root: its JSON, where it came from, and a freshness warning.
type RootAtHand = (Vec<u8>, String, Option<String>);

/// The trusted root's JSON, where it came from, and a freshness warning, if any. A root
/// verification must not use (stale with `trust.refuse_stale`, or missing) refuses the
/// bundle at the trusted-root check.
fn load_trusted_root(
    config_path: Option<&Path>,
    args: &VerifyBundleArgs,
) -> Result<Result<RootAtHand, VerificationError>, Failure> {
    let config = Config::load(config_path, std::env::vars(), |raw| {
        if let Some(dir) = &args.data_dir {
            raw.data_dir = Some(dir.display().to_string());
        }
    })
    .map_err(|e| Failure::Config(e.to_string()))?;
    let mut trust_config = config.trust.clone();
    if args.staging {
        trust_config.instance = Instance::Staging;
        trust_config.tuf_root = None;
    }
    let explicit = args.trusted_root.as_deref();
    if !args.offline && explicit.is_none() && trust_config.trusted_root.is_none() {
        refresh_if_needed(&config.data_dir, &trust_config);
    }
    match trust::load_root(&config.data_dir, &trust_config, explicit, Timestamp::now()) {
        Ok(root) => Ok(Ok((
            root.bytes.clone(),
            root.source.to_string(),
            root.warning(),
        ))),
        Err(TrustError::BadInput(msg)) => Err(Failure::Usage(msg)),
        Err(e) => Ok(Err(VerificationError::TrustedRoot(e.to_string()))),
    }
}

/// Refreshes the instance's TUF cache when it is missing or stale, as sigstore-python does
/// unless `--offline`. A failure is a warning: verification goes on with the root it has.
fn refresh_if_needed(data_dir: &Path, config: &TrustConfig) {
    let fresh_cache = trust::inspect(data_dir, config, None, Timestamp::now()).is_ok_and(|root| {
        matches!(root.source, RootSource::TufCache { .. }) && root.freshness() == Freshness::Fresh
    });
    if fresh_cache {
        return;
    }
    let instance = &config.instance;
    let initial = match &config.tuf_root {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                eprintln!(
                    "warning: cannot read trust.tuf_root {}: {e}",
                    path.display()
                );
                return;
            }
        },
        None => None,
    };
    let result = trust::http_client().and_then(|http| {
        super::runtime()
            .map_err(|e| TrustError::BadInput(format!("cannot start the async runtime: {e}")))?
            .block_on(trust::update(
                data_dir,
                instance,
                initial.as_deref(),
                http,
                Timestamp::now(),
            ))
    });
    if let Err(e) = result {
        eprintln!(
            "warning: the trusted root was not refreshed ({e}); verifying with the one at hand \
             (--offline skips the refresh)"
        );
    }
}

//! `provd export`, `provd verify` and `provd import`: air-gap proof bundles on the command
//! line.
//!
//! - `export` reads from a running provd (`--server`, the connected side) — the entry,
//!   manifest and receipt from the bundle endpoint, the chunks one by one from the proofs
//!   API — and writes the bundle streaming (canonical JSON, signed on the way with
//!   `--sign --key`), optionally also the whole evidence as a chunks directory.
//! - `verify` runs every offline check; exit 0 valid, 1 invalid (the failing check named),
//!   2 usage.
//! - `import` writes into this node's PostgreSQL (from the configuration, like `replay`):
//!   verify, store in one transaction, then with `--lazy-fetch` fetch what is missing from
//!   `--chunks-dir` and/or `--backend`. Running it again resumes the fetch.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Exit;

use actors::domain::bundle::{
    Bundle, BundleError, BundleLimits, BundleWriter, Density, SignatureStatus,
    check_chunk_against_manifest, verify_bundle, verify_bundle_from,
};
use actors::domain::keys::{PrivateKey, PublicKey};
use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::service::ConnectionFlags;
use crate::airgap::fetch::{ChunkSource, ChunksDirWriter, DirSource, HttpSource, lazy_fetch};
use crate::airgap::{BundleStore, import_bundle};
use crate::config::bundles::{BundlesConfig, load_public_key};
use crate::config::{Config, RawConfig};

/// `provd export` flags.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The entry's VeriKey (`sha256:<hex>`).
    #[arg(long = "verikey", value_name = "KEY")]
    pub veri_key: String,
    /// How much evidence to include: lite (none), standard (first 10 %), strict (all).
    #[arg(long, value_name = "DENSITY", default_value = "standard",
          value_parser = ["lite", "standard", "strict"])]
    pub density: String,
    /// Where to write the bundle; standard output when absent.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Sign the bundle (needs `--key`).
    #[arg(long, requires = "key")]
    pub sign: bool,
    /// PKCS#8 PEM private key (ECDSA P-256 or Ed25519) to sign with.
    #[arg(long, value_name = "PEM", requires = "sign")]
    pub key: Option<PathBuf>,
    /// The connected provd to export from.
    #[arg(long, env = "PROVD_SERVER", value_name = "URL")]
    pub server: String,
    /// Bearer token with the `read` scope.
    #[arg(long, env = "PROVD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also write every chunk of the evidence into this directory (sneakernet layout).
    #[arg(long, value_name = "DIR")]
    pub chunks_dir: Option<PathBuf>,
}

/// `provd verify` flags.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The bundle file.
    pub file: PathBuf,
    /// The signer's public key (PEM); the signature must verify with it.
    #[arg(long, value_name = "PEM", conflicts_with = "signer_cert")]
    pub trusted_key: Option<PathBuf>,
    /// The signer's public key as PEM, under the seed's flag name. X.509 certificates are
    /// not read: extract the key with `openssl x509 -pubkey -noout -in cert.pem`.
    #[arg(long, value_name = "PEM")]
    pub signer_cert: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// FILE is an explanation of a verdict provd decided
    /// (`GET /api/v1/provcache/entries/{veri_key}/explain`): replay it offline — policy
    /// hash, signer set, VeriKey, evidence root, and the decision and identities by
    /// evaluating the policy again.
    #[arg(long, conflicts_with_all = ["trusted_key", "signer_cert"])]
    pub explain: bool,
    /// With `--explain`: verify against this `trusted_root.json` instead of the one the
    /// explanation carries.
    #[arg(long, value_name = "FILE", requires = "explain")]
    pub trusted_root: Option<PathBuf>,
}

/// `provd import` flags.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The bundle file.
    pub file: PathBuf,
    /// Fetch the chunks the bundle left out, from `--chunks-dir` and/or `--backend`.
    #[arg(long)]
    pub lazy_fetch: bool,
    /// A connected provd to fetch missing chunks from.
    #[arg(long, value_name = "URL", requires = "lazy_fetch")]
    pub backend: Option<String>,
    /// Bearer token (scope `read`) for `--backend`.
    #[arg(long, env = "PROVD_BACKEND_TOKEN", hide_env_values = true)]
    pub backend_token: Option<String>,
    /// A chunks directory (written by `provd export --chunks-dir`) to fetch from.
    #[arg(long, value_name = "DIR", requires = "lazy_fetch")]
    pub chunks_dir: Option<PathBuf>,
    /// A public key (PEM) the bundle must be signed by; adds to `bundles.trusted_keys`.
    #[arg(long, value_name = "PEM")]
    pub trusted_key: Vec<PathBuf>,
    /// Chunks fetched and stored per batch.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Database connection overrides.
    #[command(flatten)]
    pub connections: ConnectionFlags,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    super::runtime().context("cannot start the async runtime")
}

fn bar(what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} chunks ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Checks a bundle file's size before it is read (the read itself stops at the limit too).
fn check_bundle_file(
    path: &Path,
    limits: &BundleLimits,
) -> anyhow::Result<Result<(), BundleError>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .len();
    Ok(limits.check_size(size))
}

/// The `[bundles]` section when a configuration is around, else the defaults.
fn bundles_config(path: Option<&Path>) -> anyhow::Result<BundlesConfig> {
    Ok(Config::load(path, std::env::vars(), |_| {})
        .map(|c| c.bundles)
        .or_else(|e| {
            if path.is_some() {
                Err(e)
            } else {
                Ok(BundlesConfig::default())
            }
        })?)
}

// ---------------------------------------------------------------------------------------------
// verify

/// Runs `provd verify`.
pub fn verify(config: Option<&Path>, args: VerifyArgs) -> ExitCode {
    let usage = |e: anyhow::Error| {
        eprintln!("provd verify: {e:#}");
        Exit::Usage.into()
    };
    if args.explain {
        return match replay_explanation(&args) {
            Ok(code) => code,
            Err(e) => usage(e),
        };
    }
    let bundles = match bundles_config(config) {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    let key_path = args.trusted_key.as_ref().or(args.signer_cert.as_ref());
    let key = match key_path.map(|p| read_public_key(p)).transpose() {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    let result = match check_bundle_file(&args.file, &bundles.limits) {
        Err(e) => return usage(e),
        Ok(Err(e)) => Err(e),
        // Streamed from the file: memory holds one chunk and the manifest.
        Ok(Ok(())) => verify_bundle_from(
            || std::fs::File::open(&args.file),
            &bundles.limits,
            key.as_slice(),
        ),
    };
    let result = match result {
        Err(BundleError::Read(e)) => {
            return usage(anyhow::anyhow!("cannot read {}: {e}", args.file.display()));
        }
        r => r,
    };
    match result {
        Ok(v) => {
            if args.json {
                let mut j = serde_json::to_value(&v).unwrap_or_default();
                j["valid"] = true.into();
                println!("{j}");
            } else {
                println!("valid: {}", args.file.display());
                println!("  veri_key:   {}", v.veri_key);
                println!("  proof_root: {}", v.proof_root);
                println!(
                    "  density:    {} ({} of {} chunks{})",
                    v.density.as_str(),
                    v.included_chunks,
                    v.total_chunks,
                    if v.complete { ", complete" } else { "" }
                );
                println!("  signature:  {}", describe_signature(&v.signature));
                println!(
                    "  rekor:      {}",
                    if v.rekor_receipt {
                        "receipt verified"
                    } else {
                        "no receipt"
                    }
                );
                println!("  checks:     {}", v.checks.join(", "));
            }
            Exit::Ok.into()
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "check": e.check(), "error": e.to_string()})
                );
            } else {
                println!("invalid: {}: {e}", args.file.display());
            }
            Exit::Failed.into()
        }
    }
}

fn describe_signature(s: &SignatureStatus) -> String {
    match s {
        SignatureStatus::Unsigned => "unsigned".into(),
        SignatureStatus::NotChecked { key_id } => {
            format!("signature not checked (signed by key {key_id}; pass --trusted-key)")
        }
        SignatureStatus::Verified { key_id, algorithm } => {
            format!("verified ({algorithm}, key {key_id})")
        }
    }
}

fn read_public_key(path: &Path) -> anyhow::Result<PublicKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.contains("BEGIN CERTIFICATE") {
        bail!(
            "{}: X.509 certificates are not read; pass the public key: \
             openssl x509 -pubkey -noout -in {}",
            path.display(),
            path.display()
        );
    }
    load_public_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// export

/// Runs `provd export`.
pub fn export(_config: Option<&Path>, args: ExportArgs) -> ExitCode {
    let key = match &args.key {
        None => None,
        Some(p) => match std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))
            .and_then(|t| {
                PrivateKey::from_pem(&t).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            }) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("provd export: {e:#}");
                return Exit::Usage.into();
            }
        },
    };
    let result = runtime().and_then(|rt| rt.block_on(export_async(&args, key.as_ref())));
    match result {
        Ok(summary) => {
            eprintln!("{summary}");
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!("provd export: {e:#}");
            Exit::Failed.into()
        }
    }
}

async fn export_async(args: &ExportArgs, key: Option<&PrivateKey>) -> anyhow::Result<String> {
    let density = Density::parse(&args.density)?;
    let base = args.server.trim_end_matches('/');
    let client = super::http_client(args.token.as_deref(), std::time::Duration::from_secs(3600))?;
    let get = |url: String| client.get(url);
    // The head: entry, manifest and receipt, as a lite bundle (verified like any other).
    let url = format!(
        "{base}/api/v1/provcache/entries/{}/bundle?density=lite",
        args.veri_key
    );
    let resp = get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let limits = BundleLimits {
        max_bundle_bytes: u64::MAX,
        max_chunks: u64::from(u32::MAX),
    };
    let mut head: Bundle = verify_bundle(&body, &limits, None)
        .context("the server's bundle head does not verify")?
        .bundle;
    head.density = density;
    head.exported_at = actors::domain::bundle::rfc3339(chrono::Utc::now());
    let manifest = head.manifest.to_manifest();
    let want = density.included_chunks(manifest.total_chunks);
    let fetch_to = if args.chunks_dir.is_some() {
        manifest.total_chunks
    } else {
        want
    };

    // Write next to the target and rename at the end, so a failed export leaves no
    // half-written bundle under the final name.
    let (out, partial): (Box<dyn std::io::Write>, Option<PathBuf>) = match &args.output {
        Some(p) => {
            let tmp = p.with_extension("partial");
            let f = std::fs::File::create(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            (Box::new(std::io::BufWriter::new(f)), Some(tmp))
        }
        None => (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            None,
        ),
    };
    let mut writer = BundleWriter::new(out, key)?;
    let mut dir = match &args.chunks_dir {
        Some(d) => Some(
            ChunksDirWriter::new(d, &manifest.proof_root)
                .with_context(|| format!("cannot write chunks directory {}", d.display()))?,
        ),
        None => None,
    };
    let source = HttpSource::new(base, args.token.clone())?;
    let bar = bar("exporting");
    bar.set_length(fetch_to);
    for index in 0..fetch_to {
        let size = manifest.chunks[index as usize].size;
        let data = source
            .fetch(&manifest.proof_root, index, size)
            .await
            .map_err(|e| anyhow::anyhow!("chunk {index}: {e}"))?;
        check_chunk_against_manifest(&manifest, index, &data)?;
        if index < want {
            writer.write_chunk(index, &data)?;
        }
        if let Some(d) = &mut dir {
            d.write_chunk(index, &data)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let written = writer.bytes_written();
    let (mut out, signature) = writer.finish(&head, chrono::Utc::now())?;
    out.flush()?;
    drop(out);
    if let (Some(tmp), Some(target)) = (&partial, &args.output) {
        std::fs::rename(tmp, target)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), target.display()))?;
    }
    if let Some(d) = dir {
        d.finish()?;
    }
    Ok(format!(
        "exported {} bundle of {} ({} of {} chunks, about {} bytes){}{}",
        density.as_str(),
        args.veri_key,
        want,
        manifest.total_chunks,
        written,
        match &signature {
            Some(s) => format!(", signed by key {}", s.key_id),
            None => String::new(),
        },
        match &args.chunks_dir {
            Some(d) => format!(", all chunks in {}", d.display()),
            None => String::new(),
        }
    ))
}

// ---------------------------------------------------------------------------------------------
// import

/// Runs `provd import`.
pub fn import(path: Option<&Path>, args: ImportArgs) -> ExitCode {
    if args.lazy_fetch && args.backend.is_none() && args.chunks_dir.is_none() {
        eprintln!("provd import: --lazy-fetch needs --backend <URL> and/or --chunks-dir <DIR>");
        return Exit::Usage.into();
    }
    let config = match Config::load(path, std::env::vars(), |raw: &mut RawConfig| {
        args.connections.apply(raw);
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("provd import: {e}");
            return Exit::Usage.into();
        }
    };
    let mut trusted = config.bundles.trusted_keys.clone();
    for p in &args.trusted_key {
        match read_public_key(p) {
            Ok(k) => trusted.push(k),
            Err(e) => {
                eprintln!("provd import: {e:#}");
                return Exit::Usage.into();
            }
        }
    }
    match check_bundle_file(&args.file, &config.bundles.limits) {
        Err(e) => {
            eprintln!("provd import: {e:#}");
            return Exit::Usage.into();
        }
        Ok(Err(e)) => {
            println!("refused, nothing stored: {}: {e}", args.file.display());
            return Exit::Failed.into();
        }
        Ok(Ok(())) => {}
    }
    let result = runtime().and_then(|rt| rt.block_on(import_async(&config, &args, &trusted)));
    match result {
        Ok(true) => Exit::Ok.into(),
        Ok(false) => Exit::Failed.into(),
        Err(e) => {
            eprintln!("provd import: {e:#}");
            Exit::Failed.into()
        }
    }
}

/// Imports, then fetches; `Ok(false)` when the bundle was refused or chunks are still
/// missing after a lazy fetch.
async fn import_async(
    config: &Config,
    args: &ImportArgs,
    trusted: &[PublicKey],
) -> anyhow::Result<bool> {
    let store = crate::app::open_store(config).await?;
    let outcome =
        match import_bundle(&store, &args.file, &config.bundles.limits, trusted, None).await {
            Ok((_, o)) => o,
            Err(crate::airgap::AirgapError::Bundle(e)) => {
                println!("refused, nothing stored: {}: {e}", args.file.display());
                return Ok(false);
            }
            Err(e @ crate::airgap::AirgapError::Refused(_)) => {
                println!("refused, nothing stored: {}: {e}", args.file.display());
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
    println!(
        "imported {} ({} bundle): {} of {} chunks stored{}; signature {}",
        outcome.veri_key,
        outcome.density,
        outcome.stored_chunks,
        outcome.total_chunks,
        if outcome.complete { ", complete" } else { "" },
        describe_signature(&outcome.signature),
    );
    if outcome.complete || !args.lazy_fetch {
        if !outcome.complete {
            println!(
                "missing chunks: {}; run again with --lazy-fetch to fetch them",
                outcome.missing_chunks.len()
            );
        }
        return Ok(true);
    }
    let mut sources: Vec<Box<dyn ChunkSource>> = Vec::new();
    if let Some(d) = &args.chunks_dir {
        sources.push(Box::new(DirSource::new(d)?));
    }
    if let Some(b) = &args.backend {
        sources.push(Box::new(HttpSource::new(b, args.backend_token.clone())?));
    }
    let mut complete = false;
    for source in &sources {
        let bar = bar("fetching");
        let report = lazy_fetch(
            &store as &dyn BundleStore,
            &outcome.proof_root,
            source.as_ref(),
            args.batch_size as usize,
            &|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            },
        )
        .await?;
        bar.finish_and_clear();
        println!(
            "fetched {} chunks from {}; {} refused; {} still missing",
            report.fetched,
            report.source,
            report.refused.len(),
            report.missing_chunks.len()
        );
        for r in &report.refused {
            println!("  refused chunk {}: {}", r.index, r.reason);
        }
        complete = report.complete;
        if complete {
            println!(
                "complete: every chunk of {} is stored and verified",
                report.proof_root
            );
            break;
        }
    }
    Ok(complete)
}

/// `provd verify --explain FILE`: replays an explanation offline and prints each check.
fn replay_explanation(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    use actors::domain::policy::replay;
    use actors::domain::verification::TrustMaterial;
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let explanation: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an explanation (JSON)", args.file.display()))?;
    let root = match &args.trusted_root {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let doc = &explanation["trusted_root"]["document"];
            if doc.is_null() {
                bail!("the explanation carries no trusted root: give --trusted-root");
            }
            serde_json::to_vec(doc)?
        }
    };
    let trust = TrustMaterial::from_json(&root).map_err(|e| anyhow::anyhow!("{e}"))?;
    let checks = replay(&explanation, &trust);
    let ok = !checks.is_empty() && checks.iter().all(|c| c.ok);
    if args.json {
        println!("{}", serde_json::json!({"valid": ok, "checks": checks}));
    } else {
        for c in &checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.check,
                c.detail
            );
        }
        println!(
            "{}: {} ({})",
            if ok { "replayed" } else { "does not replay" },
            explanation["veri_key"].as_str().unwrap_or("?"),
            explanation["verdict"]["decision"]
        );
    }
    Ok(if ok {
        Exit::Ok.into()
    } else {
        Exit::Failed.into()
    })
}

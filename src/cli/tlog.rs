//! `provd rekor …`, `provd dsse …` and `provd keys …`: offline transparency-log, DSSE and key
//! tools over the pure domain code in `actors::domain`.
//!
//! Exit codes: 0 valid, 1 invalid (one-line reason on stderr, or JSON on stdout with
//! `--json`), 2 usage errors (clap) and unreadable inputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{CliError, Exit};

use actors::domain::dsse::Envelope;
use actors::domain::keys::{Algorithm, PrivateKey, PublicKey};
use actors::domain::note::{self, Checkpoint, Note, Verifier};
use actors::domain::sigstore::{self, Bundle, TrustedRoot};
use clap::{Subcommand, ValueEnum};

/// `provd rekor` subcommands.
#[derive(Debug, Subcommand)]
pub enum RekorCommand {
    /// Queue a DSSE envelope for the transparency log through a running provd.
    Submit(super::submit::SubmitArgs),
    /// Verify only the transparency-log part of a Sigstore bundle (v0.1-v0.3) offline:
    /// inclusion proof, checkpoint signature and origin, checkpoint root, the SET for Rekor
    /// v1, and that every entry is about the bundle's content (its digest, envelope,
    /// signature and signer). The signature and the signer (Fulcio chain, CT, TSA, identity)
    /// are out of scope: `provd sigstore verify-bundle` checks everything.
    #[command(
        after_help = "Example:\n  provd rekor verify-bundle artifact.sigstore.json \
                            --trusted-root trusted_root.json --json"
    )]
    VerifyBundle {
        /// The Sigstore bundle JSON file.
        bundle: PathBuf,
        /// The Sigstore `trusted_root.json` whose `tlogs` are trusted.
        #[arg(long, value_name = "FILE")]
        trusted_root: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Verify a signed checkpoint (C2SP signed note) with a trusted key.
    #[command(
        after_help = "Examples:\n  provd rekor verify-checkpoint checkpoint.txt \
                            --key rekor.sigstore.dev.pub.pem\n  provd rekor verify-checkpoint \
                            checkpoint --key 'example.com/log+33d7b496+AeHT…' \
                            --origin example.com/log"
    )]
    VerifyCheckpoint {
        /// The signed checkpoint file.
        file: PathBuf,
        /// A verifier key string (`name+hint+base64`), a file holding one, or a PEM public
        /// key file.
        #[arg(long, value_name = "VKEY|PEM_FILE")]
        key: String,
        /// The origin the checkpoint must have.
        #[arg(long)]
        origin: Option<String>,
        /// Signature name for a PEM key; by default the checkpoint origin, or its host part
        /// for a Rekor v1 origin `<host> - <tree ID>`.
        #[arg(long)]
        name: Option<String>,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Commands that read a live transparency log.
    #[command(flatten)]
    Log(RekorLogCommand),
}

/// `provd rekor` subcommands that read a live log: see [`super::rekor_log`].
#[derive(Debug, Subcommand)]
pub enum RekorLogCommand {
    /// Read one entry straight from a configured log (`[rekor.backends.<name>]`) and verify
    /// it: inclusion proof, signed checkpoint from a trusted key, origin, and the SET for
    /// Rekor v1. Prints the receipt.
    #[command(
        after_help = "Examples:\n  provd --config provd.toml rekor get --backend sigstore \
                            --index 79571823\n  provd rekor get --backend sigstore --uuid \
                            <64-hex UUID or 80-hex entry ID> --json\n  provd rekor get \
                            --backend rekor2 --index 735   # Rekor v2: by index only"
    )]
    Get(super::rekor_log::GetArgs),
    /// Fetch a configured log's latest checkpoint, verify its signature and origin, and
    /// print its origin, size and root.
    #[command(after_help = "Example:\n  provd --config provd.toml rekor checkpoint \
                            --backend sigstore")]
    Checkpoint(super::rekor_log::CheckpointArgs),
    /// Build an inclusion proof of one entry (and a consistency proof to the latest
    /// checkpoint) from a tile log's tiles (through the tile cache when `[tiles]` has it),
    /// check both, and print them with the entry and the signed checkpoint as JSON that a
    /// third party can check with the log's key.
    #[command(
        after_help = "Example:\n  provd --config provd.toml rekor prove --backend rekor2 \
                            --index 735 --size 800"
    )]
    Prove(super::tiles_sync::ProveArgs),
}

/// `provd dsse` subcommands.
#[derive(Debug, Subcommand)]
pub enum DsseCommand {
    /// Sign a payload and print the DSSE envelope JSON on stdout.
    #[command(after_help = "Example:\n  provd dsse sign --payload statement.json \
                            --payload-type application/vnd.in-toto+json --key signer.key \
                            > envelope.json")]
    Sign {
        /// The payload file.
        #[arg(long, value_name = "FILE")]
        payload: PathBuf,
        /// The payload type, e.g. `application/vnd.in-toto+json`.
        #[arg(long)]
        payload_type: String,
        /// PKCS#8 PEM private key (P-256 or Ed25519).
        #[arg(long, value_name = "PEM_FILE")]
        key: PathBuf,
        /// Optional key ID to record in the signature.
        #[arg(long, default_value = "")]
        keyid: String,
    },
    /// Verify a DSSE envelope with a public key.
    #[command(after_help = "Example:\n  provd dsse verify envelope.json --key signer.pub")]
    Verify {
        /// The envelope JSON file.
        envelope: PathBuf,
        /// PEM public key (P-256 or Ed25519).
        #[arg(long, value_name = "PEM_FILE")]
        key: PathBuf,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// Key algorithms on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AlgArg {
    /// ECDSA P-256 with SHA-256.
    P256,
    /// Ed25519.
    Ed25519,
}

/// `provd keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key pair: `<prefix>.key` (PKCS#8 PEM), `<prefix>.pub` (PEM), and for
    /// Ed25519 `<prefix>.vkey` (C2SP verifier key under `--name`). Existing files are never
    /// overwritten.
    #[command(
        after_help = "Examples:\n  provd keys generate --alg p256 --out signer\n  \
                            provd keys generate --alg ed25519 --name log.example.com \
                            --out log"
    )]
    Generate {
        /// The algorithm.
        #[arg(long, value_enum)]
        alg: AlgArg,
        /// Output path prefix.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Key name for the note verifier key (required for ed25519), e.g. the log origin.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Prints the outcome and maps it to an exit code.
fn finish(
    result: Result<serde_json::Value, CliError>,
    json: bool,
    ok_line: impl Fn(&serde_json::Value) -> String,
) -> ExitCode {
    match result {
        Ok(value) => {
            if json {
                println!("{}", serde_json::json!({"valid": true, "result": value}));
            } else {
                println!("{}", ok_line(&value));
            }
            ExitCode::SUCCESS
        }
        Err(CliError::Failed(reason)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "error": format!("{reason:#}")})
                );
            } else {
                eprintln!("invalid: {reason}");
            }
            Exit::Failed.into()
        }
        Err(e @ (CliError::Usage(_) | CliError::Config(_))) => {
            eprintln!("error: {e}");
            e.exit().into()
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))
}

fn read_text(path: &Path) -> Result<String, CliError> {
    String::from_utf8(read_file(path)?)
        .map_err(|_| CliError::usage(format!("{} is not UTF-8 text", path.display())))
}

/// Runs a `provd rekor` subcommand; commands that reach a log load the configuration
/// from `config` as `serve` does.
pub fn run_rekor(config: Option<&Path>, command: RekorCommand) -> ExitCode {
    match command {
        RekorCommand::Submit(args) => super::submit::run(args),
        RekorCommand::Log(RekorLogCommand::Get(args)) => super::rekor_log::get(config, args),
        RekorCommand::Log(RekorLogCommand::Checkpoint(args)) => {
            super::rekor_log::checkpoint(config, args)
        }
        RekorCommand::Log(RekorLogCommand::Prove(args)) => super::tiles_sync::prove(config, args),
        RekorCommand::VerifyBundle {
            bundle,
            trusted_root,
            json,
        } => finish(verify_bundle(&bundle, &trusted_root), json, |v| {
            let n = v["entries"].as_array().map_or(0, Vec::len);
            format!(
                "OK: {n} tlog entr{} verified and about this bundle's content ({TLOG_ONLY}; \
                 `provd sigstore verify-bundle` checks them)",
                if n == 1 { "y" } else { "ies" }
            )
        }),
        RekorCommand::VerifyCheckpoint {
            file,
            key,
            origin,
            name,
            json,
        } => finish(
            verify_checkpoint(&file, &key, origin.as_deref(), name.as_deref()),
            json,
            |v| {
                format!(
                    "OK: {} size {} root {}",
                    v["origin"].as_str().unwrap_or(""),
                    v["size"],
                    v["root"].as_str().unwrap_or("")
                )
            },
        ),
    }
}

fn verify_bundle(bundle: &Path, trusted_root: &Path) -> Result<serde_json::Value, CliError> {
    // A root that cannot be read is a usage error; one that is malformed refuses the bundle,
    // as `sigstore verify-bundle` does.
    let root = TrustedRoot::from_json(&read_file(trusted_root)?).map_err(|e| {
        CliError::failed(format!(
            "trusted root check failed: {}: {e}",
            trusted_root.display()
        ))
    })?;
    let bundle =
        Bundle::from_json(&read_file(bundle)?).map_err(|e| CliError::failed(e.to_string()))?;
    let entries = sigstore::verify_bundle_tlog(&bundle, &root)
        .map_err(|e| CliError::failed(e.to_string()))?;
    let entries: Vec<_> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "log_url": e.log_url,
                "log_index": e.log_index,
                "checkpoint": e.checkpoint.as_ref().map(checkpoint_json),
                "integrated_time": e.integrated_time,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "scope": TLOG_ONLY,
        "media_type": bundle.media_type,
        "entries": entries,
    }))
}

/// What `rekor verify-bundle` does not check, said in its output.
const TLOG_ONLY: &str = "transparency log only: the signature and the signer were not checked";

fn checkpoint_json(cp: &Checkpoint) -> serde_json::Value {
    serde_json::json!({ "origin": cp.origin, "size": cp.size, "root": hex::encode(cp.root) })
}

/// Builds the checkpoint verifier from `--key`: a vkey string, a file holding one, or a PEM
/// public key file (named by `--name`, or after the checkpoint origin).
fn checkpoint_verifier(key: &str, name: Option<&str>, note: &[u8]) -> Result<Verifier, CliError> {
    let path = Path::new(key);
    let text = if path.is_file() {
        read_text(path)?
    } else {
        key.to_owned()
    };
    if text.contains("-----BEGIN") {
        let name = match name {
            Some(n) => n.to_owned(),
            None => {
                let parsed = Note::parse(note).map_err(|e| CliError::failed(e.to_string()))?;
                let origin = parsed.text().split('\n').next().unwrap_or_default();
                // Rekor v1 signs under the bare host name, not the `<host> - <tree>` origin.
                origin
                    .split_once(" - ")
                    .map_or(origin, |(host, _)| host)
                    .to_owned()
            }
        };
        Verifier::from_pem(&name, &text).map_err(|e| CliError::usage(format!("--key: {e}")))
    } else {
        Verifier::from_vkey(text.trim()).map_err(|e| CliError::usage(format!("--key: {e}")))
    }
}

fn verify_checkpoint(
    file: &Path,
    key: &str,
    origin: Option<&str>,
    name: Option<&str>,
) -> Result<serde_json::Value, CliError> {
    let note = read_file(file)?;
    let verifier = checkpoint_verifier(key, name, &note)?;
    let cp = note::verify_checkpoint(&note, &[verifier], origin)
        .map_err(|e| CliError::failed(e.to_string()))?;
    Ok(checkpoint_json(&cp))
}

/// Runs a `provd dsse` subcommand.
pub fn run_dsse(command: DsseCommand) -> ExitCode {
    match command {
        DsseCommand::Sign {
            payload,
            payload_type,
            key,
            keyid,
        } => {
            let result = (|| -> Result<Envelope, CliError> {
                let payload = read_file(&payload)?;
                let key = PrivateKey::from_pem(&read_text(&key)?)
                    .map_err(|e| CliError::usage(format!("--key: {e}")))?;
                Ok(Envelope::sign(&payload_type, &payload, &key, &keyid))
            })();
            match result {
                Ok(envelope) => {
                    println!("{}", envelope.to_json());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit().into()
                }
            }
        }
        DsseCommand::Verify {
            envelope,
            key,
            json,
        } => {
            let result = (|| {
                let key = PublicKey::from_pem(&read_text(&key)?)
                    .map_err(|e| CliError::usage(format!("--key: {e}")))?;
                let env = Envelope::from_json(&read_file(&envelope)?)
                    .map_err(|e| CliError::failed(e.to_string()))?;
                let valid = env
                    .verify(&[key])
                    .map_err(|e| CliError::failed(e.to_string()))?;
                Ok(
                    serde_json::json!({ "payload_type": env.payload_type, "verified_signatures": valid }),
                )
            })();
            finish(result, json, |v| {
                format!(
                    "OK: payloadType {} signed",
                    v["payload_type"].as_str().unwrap_or("")
                )
            })
        }
    }
}

/// Runs a `provd keys` subcommand.
pub fn run_keys(command: KeysCommand) -> ExitCode {
    let KeysCommand::Generate { alg, out, name } = command;
    match generate(alg, &out, name.as_deref()) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage.into()
        }
    }
}

/// `<prefix><suffix>` as a path.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn generate(alg: AlgArg, out: &Path, name: Option<&str>) -> Result<Vec<PathBuf>, String> {
    let algorithm = match alg {
        AlgArg::P256 => Algorithm::P256,
        AlgArg::Ed25519 => Algorithm::Ed25519,
    };
    let key = PrivateKey::generate(algorithm, &mut |buf| {
        getrandom::fill(buf).map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?;
    let mut files = vec![
        (
            with_suffix(out, ".key"),
            key.to_pem().map_err(|e| e.to_string())?,
        ),
        (
            with_suffix(out, ".pub"),
            key.public_key().to_pem().map_err(|e| e.to_string())?,
        ),
    ];
    if algorithm == Algorithm::Ed25519 {
        let name =
            name.ok_or("--name is required for ed25519 (the note key name, e.g. the log origin)")?;
        let verifier =
            Verifier::from_public_key(name, key.public_key()).map_err(|e| e.to_string())?;
        files.push((
            with_suffix(out, ".vkey"),
            format!("{}\n", verifier.to_vkey()),
        ));
    }
    if let Some((path, _)) = files.iter().find(|(p, _)| p.exists()) {
        return Err(format!(
            "{} already exists; not overwriting keys",
            path.display()
        ));
    }
    for (i, (path, content)) in files.iter().enumerate() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if i == 0 {
            // The private key is readable by its owner only.
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, content.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

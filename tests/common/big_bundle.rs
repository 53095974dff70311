//! A large strict bundle for the memory measurements (`tests/bundle_memory.rs`) and the
//! chaos suite (`tests/chaos.rs`): written with provd's own writer, signed with a key from
//! `provd keys generate`, and `provd verify`'s peak memory read by GNU time.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use actors::domain::bundle::{Bundle, BundleWriter, Density};
use actors::domain::entry::{Entry, verdict_hash};
use actors::domain::evidence::{EvidenceLimits, chunk_all};
use actors::domain::keys::PrivateKey;

/// The chunk size of the bundles written here (the importing node must use it too).
pub const MIB: u64 = 1024 * 1024;

/// Writes a strict bundle of `chunks` 1 MiB chunks, signed with `key`, to `path`.
pub fn write_strict_bundle(path: &Path, chunks: usize, key: &PrivateKey) {
    // Bytes that do not repeat with the chunk size, so every chunk differs.
    let data: Vec<u8> = (0..chunks as u64 * MIB)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let limits = EvidenceLimits::new(MIB, 10_000).expect("limits");
    let (parts, manifest) = chunk_all(limits, "application/octet-stream", &data).expect("chunks");
    drop(data);
    let now = chrono::Utc::now();
    let verdict = serde_json::json!({"decision": "pass", "findings": 0});
    let entry = Entry {
        veri_key: super::fresh_veri_key(),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: Some(manifest.proof_root.clone()),
        trust_score: 90,
        policy_hash: "sha256:policy-memory".into(),
        signer_set_hash: "sha256:signers-memory".into(),
        signer_key_ids: vec!["key-a".into()],
        feed_id: None,
        feed_epoch: None,
        created_at: now,
        expires_at: now + chrono::Duration::hours(24),
    };
    let head = Bundle::head(&entry, &manifest, Density::Strict, now, None).expect("head");
    let file = std::fs::File::create(path).expect("create bundle");
    let mut w = BundleWriter::new(std::io::BufWriter::new(file), Some(key)).expect("writer");
    for c in &parts {
        w.write_chunk(c.index, &c.data).expect("chunk");
    }
    let (mut out, _) = w.finish(&head, now).expect("finish");
    out.flush().expect("flush");
}

/// Runs `provd keys generate`; returns (private key, public key path).
pub fn ed25519_key(dir: &Path) -> (PrivateKey, std::path::PathBuf) {
    let status = Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(["keys", "generate", "--alg", "ed25519", "--name", "mem"])
        .arg("--out")
        .arg(dir.join("mem"))
        .stdout(Stdio::null())
        .status()
        .expect("provd keys generate");
    assert!(status.success());
    let pem = std::fs::read_to_string(dir.join("mem.key")).expect("key");
    (
        PrivateKey::from_pem(&pem).expect("private key"),
        dir.join("mem.pub"),
    )
}

/// Peak RSS in KiB of `provd verify` on `bundle`, from GNU time; `None` without it.
pub fn verify_peak_kib(bundle: &Path, public: &Path) -> Option<(u64, String)> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        eprintln!("no /usr/bin/time: skipping the verify measurement");
        return None;
    }
    let out = Command::new(time)
        .args(["-f", "maxrss_kib=%M"])
        .arg(env!("CARGO_BIN_EXE_provd"))
        .arg("verify")
        .arg(bundle)
        .arg("--trusted-key")
        .arg(public)
        .output()
        .expect("provd verify runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("GNU time prints the peak");
    Some((kib, stdout))
}

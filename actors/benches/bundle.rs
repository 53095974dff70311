//! Proof bundles: writing (canonical JSON, base64, ECDSA P-256 signature) and verifying
//! (every offline check) a strict bundle, against SHA-256 of the same evidence as the
//! baseline, both measured in this run.
//!
//! Run with `cargo bench -p actors --bench bundle`. `PROVD_BENCH_MIB` sets the evidence size
//! (default 64, i.e. 1024 chunks of 64 KiB).

use std::time::{Duration, Instant};

use actors::domain::bundle::{Bundle, BundleLimits, Density, verify_bundle, write_bundle};
use actors::domain::entry::{Entry, verdict_hash};
use actors::domain::evidence::{EvidenceLimits, chunk_all, chunk_digest};
use actors::domain::keys::{Algorithm, PrivateKey};

/// Timed runs per side; the best one counts, which filters out noise from other jobs.
const RUNS: usize = 3;

fn best(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn rate(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn main() {
    let mib: usize = std::env::var("PROVD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..mib * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let limits = EvidenceLimits::new(64 * 1024, 1 << 20).expect("limits");
    let (chunks, manifest) = chunk_all(limits, "application/octet-stream", &data).expect("chunks");
    let verdict = serde_json::json!({"decision": "pass"});
    let now = chrono::Utc::now();
    let entry = Entry {
        veri_key: format!("sha256:{}", "ab".repeat(32)),
        verdict_hash: verdict_hash(&verdict),
        verdict,
        proof_root: Some(manifest.proof_root.clone()),
        trust_score: 90,
        policy_hash: "sha256:p".into(),
        signer_set_hash: "sha256:s".into(),
        signer_key_ids: vec![],
        feed_id: None,
        feed_epoch: None,
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
    };
    let head = Bundle::head(&entry, &manifest, Density::Strict, now, None).expect("head");
    let carried: Vec<(u64, Vec<u8>)> = chunks.iter().map(|c| (c.index, c.data.clone())).collect();
    let key = PrivateKey::generate(Algorithm::P256, &mut |b: &mut [u8]| {
        getrandom::fill(b).map_err(|e| e.to_string())
    })
    .expect("key");
    let bundle_limits = BundleLimits {
        max_bundle_bytes: u64::MAX,
        max_chunks: u64::MAX,
    };

    let mut bytes = Vec::new();
    let write = best(|| bytes = write_bundle(&head, &carried, Some(&key), now).expect("write"));
    let public = key.public_key();
    let verify = best(|| {
        verify_bundle(&bytes, &bundle_limits, Some(&public)).expect("valid");
    });
    let baseline = best(|| {
        for c in data.chunks(64 * 1024) {
            std::hint::black_box(chunk_digest(c));
        }
    });
    println!(
        "strict bundle of {mib} MiB evidence ({} chunks, {} bundle bytes)",
        manifest.total_chunks,
        bytes.len()
    );
    println!(
        "  write + sign (P-256): {write:?} ({:.0} MiB/s of evidence)",
        rate(data.len(), write)
    );
    println!(
        "  verify (all checks):  {verify:?} ({:.0} MiB/s of evidence)",
        rate(data.len(), verify)
    );
    println!(
        "  baseline SHA-256 of the evidence: {baseline:?} ({:.0} MiB/s)",
        rate(data.len(), baseline)
    );
}

//! Tile sync + full verification of a 1 000 000-entry tile log from a local source, printed
//! as leaves per second beside a plain SHA-256 pass over the same leaf data in the same run.
//!
//! The log is built with the dev log's `LogTree` and written as a C2SP tile directory (hash
//! tiles, entry bundles, a signed checkpoint). The measured run is `provd tiles sync`'s
//! engine (`sync_mirror`) from that directory into an empty mirror: every tile and bundle is
//! read, staged, checked (each entry's leaf hash against its level-0 tile, every tile level
//! against the one below, the root against the signed checkpoint) and moved into place. The
//! baseline is the least any full verification must do: one SHA-256 per entry (the RFC 6962
//! leaf hash `SHA-256(0x00 || entry)`), with the same `sha2` crate, over the same entries.
//!
//! Run: `cargo bench --bench tiles_sync` (`TILES_BENCH_ENTRIES` changes the size).

use std::time::Instant;

use actors::domain::keys::{Algorithm, PrivateKey};
use actors::domain::log::{LogTree, signed_checkpoint};
use actors::domain::note::Signer;
use actors::domain::tiles::{entry_bundles_for_size, hash_tiles_for_size};
use provd::adapters::tiles::client::DirSource;
use provd::adapters::tiles::mirror::{Progress, sync_mirror};
use sha2::{Digest, Sha256};

const ORIGIN: &str = "bench.provd.invalid/log";

/// Records when each phase of the sync starts, for the breakdown.
#[derive(Default)]
struct Phases(std::sync::Mutex<Vec<(String, Instant)>>);

impl Progress for Phases {
    fn phase(&self, name: &str, _total: u64) {
        if let Ok(mut p) = self.0.lock() {
            p.push((name.to_owned(), Instant::now()));
        }
    }
    fn inc(&self, _n: u64) {}
}

fn main() {
    let n: u64 = std::env::var("TILES_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let work = tempfile::tempdir().expect("tempdir");
    let source = work.path().join("source");

    let started = Instant::now();
    let mut log = LogTree::new();
    let mut bodies = Vec::with_capacity(n as usize);
    for i in 0..n {
        // About the size of a small hashedrekord body.
        let body = format!(
            r#"{{"apiVersion":"0.0.2","kind":"bench","spec":{{"n":{i},"digest":"{:064x}"}}}}"#,
            u128::from(i) * 0x9e37_79b9_7f4a_7c15
        )
        .into_bytes();
        bodies.push(body.clone());
        log.append(body).expect("append");
    }
    for tile in hash_tiles_for_size(n)
        .into_iter()
        .chain(entry_bundles_for_size(n))
    {
        let path = source.join(tile.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, log.tile(&tile).expect("tile")).expect("write tile");
    }
    let key = PrivateKey::generate(Algorithm::Ed25519, &mut |buf: &mut [u8]| {
        getrandom::fill(buf).map_err(|e| e.to_string())
    })
    .expect("key");
    let signer = Signer::new(ORIGIN, key).expect("signer");
    let note = signed_checkpoint(&log.checkpoint(ORIGIN, n).expect("checkpoint"), &[&signer])
        .expect("signed");
    let leaf_bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    println!(
        "tile sync benchmark: {n} entries ({:.1} MiB of leaf data) built and written in {:.1?}",
        leaf_bytes as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );
    drop(log);

    // Baseline: one SHA-256 over every leaf, nothing else.
    let started = Instant::now();
    let mut acc = [0u8; 32];
    for body in &bodies {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(body);
        let d: [u8; 32] = h.finalize().into();
        acc[0] ^= d[0];
    }
    let baseline = started.elapsed();
    std::hint::black_box(acc);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let verifiers = [signer.verifier().clone()];
    let mirror = work.path().join("mirror");
    let phases = Phases::default();
    let started = Instant::now();
    let report = rt
        .block_on(sync_mirror(
            &DirSource(source.clone()),
            &verifiers,
            ORIGIN,
            note.into_bytes(),
            &mirror,
            16,
            &phases,
        ))
        .expect("sync verifies");
    let ours = started.elapsed();
    let ended = Instant::now();
    assert_eq!(report.size, n);
    assert_eq!(report.verified.entry_bundles as u64, n.div_ceil(256));

    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!("(ours | baseline from the same run | ours ÷ baseline)");
    println!(
        "tile sync + full verification, {n} leaves ({} tiles fetched, {:.1} MiB): {:.2?} = {:.0} leaves/s | plain SHA-256 of the leaves: {:.2?} = {:.0} leaves/s | {:.2}x the baseline's time",
        report.fetched,
        report.bytes_fetched as f64 / (1024.0 * 1024.0),
        ours,
        rate(ours),
        baseline,
        rate(baseline),
        ours.as_secs_f64() / baseline.as_secs_f64(),
    );
    // Where the time went: fetching and staging every tile (file I/O), then the full check
    // (every leaf hashed once, every tile level checked), then moving the tiles in.
    let phases = phases.0.into_inner().unwrap_or_default();
    let mut marks: Vec<(String, Instant)> = vec![("checkpoint".into(), started)];
    marks.extend(phases);
    marks.push(("done".into(), ended));
    let breakdown: Vec<String> = marks
        .windows(2)
        .map(|w| format!("{} {:.2?}", w[0].0, w[1].1 - w[0].1))
        .collect();
    println!("  phases: {}", breakdown.join(", "));
}

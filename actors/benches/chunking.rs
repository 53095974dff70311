//! Evidence chunking + Merkle root of a 1 GiB file against `sha256sum` of the same file,
//! both measured in this run.
//!
//! Run with `cargo bench -p actors --bench chunking`. `PROVD_BENCH_MIB` changes the file size
//! (default 1024). The file is written to the system temporary directory and removed at the
//! end; it is read once before timing so both sides read from the page cache.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use actors::domain::evidence::{ChunkBuilder, EvidenceLimits};

const CHUNK_SIZE: u64 = 64 * 1024;
const READ_BUF: usize = 1024 * 1024;
/// Timed runs per side; the best one counts, which filters out noise from other jobs.
const RUNS: usize = 3;
/// Bytes read per `push` in the parallel run: 64 chunks, so every thread gets whole chunks.
const PARALLEL_READ: usize = 4 * 1024 * 1024;

/// Removes the file when the benchmark ends, however it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_file(path: &PathBuf, mib: u64) {
    let mut f = File::create(path).expect("create the benchmark file");
    let mut block = vec![0u8; READ_BUF];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..mib {
        // Pseudo-random bytes, so nothing along the way can take a shortcut on them.
        for b in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).expect("write the benchmark file");
    }
    f.sync_all().expect("sync the benchmark file");
}

fn read_all(path: &PathBuf) {
    let mut f = File::open(path).expect("open");
    let mut buf = vec![0u8; READ_BUF];
    while f.read(&mut buf).expect("read") > 0 {}
}

fn ours(path: &PathBuf, limits: EvidenceLimits, threads: usize) -> (Duration, String, u64) {
    let start = Instant::now();
    let mut f = File::open(path).expect("open");
    let mut buf = vec![0u8; if threads > 1 { PARALLEL_READ } else { READ_BUF }];
    let mut builder = ChunkBuilder::new(limits, "application/octet-stream").with_threads(threads);
    let mut chunks = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        // The chunks are dropped at once, as a server drops them after storing.
        chunks += builder.push(&buf[..n]).expect("within limits").len() as u64;
    }
    let (last, manifest) = builder.finish().expect("non-empty");
    chunks += u64::from(last.is_some());
    (start.elapsed(), manifest.proof_root, chunks)
}

fn sha256sum(path: &PathBuf) -> Option<(Duration, String)> {
    let start = Instant::now();
    let out = Command::new("sha256sum").arg(path).output().ok()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some((elapsed, text.split_whitespace().next()?.to_owned()))
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn main() {
    let mib: u64 = std::env::var("PROVD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bytes = mib * 1024 * 1024;
    let path = std::env::temp_dir().join(format!("provd-chunking-{}.bin", std::process::id()));
    let _guard = TempFile(path.clone());
    println!("chunking: writing {mib} MiB to {}", path.display());
    write_file(&path, mib);
    read_all(&path);

    let limits =
        EvidenceLimits::new(CHUNK_SIZE, bytes.div_ceil(CHUNK_SIZE).max(1)).expect("valid limits");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut best_ours: Option<(Duration, String, u64)> = None;
    let mut best_par: Option<(Duration, String, u64)> = None;
    let mut best_base: Option<(Duration, String)> = None;
    for _ in 0..RUNS {
        let o = ours(&path, limits, 1);
        if best_ours.as_ref().is_none_or(|b| o.0 < b.0) {
            best_ours = Some(o);
        }
        let p = ours(&path, limits, threads);
        if best_par.as_ref().is_none_or(|b| p.0 < b.0) {
            best_par = Some(p);
        }
        match sha256sum(&path) {
            Some(s) if best_base.as_ref().is_none_or(|b| s.0 < b.0) => best_base = Some(s),
            Some(_) => {}
            None => println!("chunking: sha256sum is not available; no baseline"),
        }
    }
    let (ours_t, root, chunks) = best_ours.expect("at least one run");
    let (par_t, par_root, _) = best_par.expect("at least one run");
    assert_eq!(root, par_root, "threads must not change the root");
    let ours_rate = mib_per_s(bytes, ours_t);
    let par_rate = mib_per_s(bytes, par_t);
    println!(
        "chunking: ours, 1 thread   chunk {CHUNK_SIZE} B + SHA-256 per chunk + RFC 6962 root: \
         {:.3} s, {ours_rate:.0} MiB/s ({chunks} chunks, root {root})",
        ours_t.as_secs_f64()
    );
    println!(
        "chunking: ours, {threads} threads  same, chunk hashes in parallel: {:.3} s, {par_rate:.0} MiB/s",
        par_t.as_secs_f64()
    );
    if let Some((base_t, digest)) = best_base {
        let base_rate = mib_per_s(bytes, base_t);
        println!(
            "chunking: baseline sha256sum of the same file (one core): {:.3} s, {base_rate:.0} MiB/s \
             (digest {digest})",
            base_t.as_secs_f64()
        );
        println!(
            "chunking: ratio ours/sha256sum throughput: 1 thread {:.2}, {threads} threads {:.2} \
             (at least 1.00 is the goal)",
            ours_rate / base_rate,
            par_rate / base_rate
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "chunking: load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

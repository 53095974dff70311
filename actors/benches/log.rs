//! The dev log's append path: what `provd dev-log` does per write (append the entry, then
//! build the root and the new entry's inclusion proof at the new size), on our `LogTree`
//! against `ct-merkle`'s memory-backed tree doing the same in the same run.
//!
//! Run with `cargo bench -p actors --bench log`. Each side runs three times; the best run
//! counts. A ratio below 1 means ours is faster.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actors::domain::log::LogTree;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use sha2::Sha256;

/// Entries appended per run.
const ENTRIES: usize = 20_000;

fn entries() -> Vec<Vec<u8>> {
    (0..ENTRIES)
        .map(|i| {
            format!("{{\"entry\":{i},\"pad\":\"0123456789abcdef0123456789abcdef\"}}").into_bytes()
        })
        .collect()
}

fn best(mut run: impl FnMut() -> Duration) -> Duration {
    (0..3).map(|_| run()).min().unwrap_or_default()
}

fn main() {
    let entries = entries();
    let ours = best(|| {
        let start = Instant::now();
        let mut log = LogTree::new();
        for e in &entries {
            let i = log.append(e.clone()).unwrap();
            let size = log.size();
            black_box(log.root_at(size).unwrap());
            black_box(log.inclusion_proof(i, size).unwrap());
        }
        start.elapsed()
    });
    let theirs = best(|| {
        let start = Instant::now();
        let mut tree = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        for (i, e) in entries.iter().enumerate() {
            tree.push(e.clone());
            black_box(tree.root());
            black_box(tree.prove_inclusion(i));
        }
        start.elapsed()
    });
    let rate = |d: Duration| ENTRIES as f64 / d.as_secs_f64();
    println!(
        "append + root + inclusion proof, {ENTRIES} entries: ours {:.0}/s ({:.2} µs each), \
         ct-merkle {:.0}/s ({:.2} µs each), ratio ours/ct-merkle time = {:.2}",
        rate(ours),
        ours.as_secs_f64() * 1e6 / ENTRIES as f64,
        rate(theirs),
        theirs.as_secs_f64() * 1e6 / ENTRIES as f64,
        ours.as_secs_f64() / theirs.as_secs_f64(),
    );
}

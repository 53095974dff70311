//! Merkle proof verification and root computation: ours against `ct-merkle` on the same
//! inputs, with a ratio line per benchmark (below 1 means ours is faster).
//!
//! Run with `cargo bench -p actors --bench merkle` (add `-- --measurement-time 2` for a quick
//! run). The ratios come from the mean estimates criterion saves for each run.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use actors::domain::merkle::{
    Hash, inclusion_proof, leaf_hash, root_from_leaf_hashes, verify_inclusion,
};
use criterion::{Criterion, Throughput};
use ct_merkle::InclusionProof;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use sha2::Sha256;

/// Leaves in the tree whose proofs are verified: proofs are 17 hashes long.
const PROOF_TREE_SIZE: usize = 100_000;
/// Proofs verified per iteration, spread over the tree.
const PROOFS: usize = 64;
/// Leaves whose root is computed.
const ROOT_TREE_SIZE: usize = 4_096;

fn entries(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{{\"entry\":{i},\"pad\":\"0123456789abcdef\"}}").into_bytes())
        .collect()
}

fn inclusion_verify(c: &mut Criterion) {
    let entries = entries(PROOF_TREE_SIZE);
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let root = root_from_leaf_hashes(&leaves);
    let mut tree = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    for e in &entries {
        tree.push(e.clone());
    }
    let their_root = tree.root();
    assert_eq!(their_root.as_bytes().as_slice(), root);

    let indices: Vec<usize> = (0..PROOFS)
        .map(|i| i * PROOF_TREE_SIZE / PROOFS + i)
        .collect();
    let ours: Vec<Vec<Hash>> = indices
        .iter()
        .map(|&i| inclusion_proof(&leaves, i as u64).unwrap())
        .collect();
    let theirs: Vec<InclusionProof<Sha256>> =
        indices.iter().map(|&i| tree.prove_inclusion(i)).collect();

    // Both sides start from the entry, so both hash the leaf and then the path.
    let mut group = c.benchmark_group("inclusion_verify");
    group.throughput(Throughput::Elements(PROOFS as u64));
    group.bench_function("ours", |b| {
        b.iter(|| {
            for (k, &i) in indices.iter().enumerate() {
                let leaf = leaf_hash(black_box(&entries[i]));
                verify_inclusion(&leaf, i as u64, PROOF_TREE_SIZE as u64, &ours[k], &root).unwrap();
            }
        })
    });
    group.bench_function("ct-merkle", |b| {
        b.iter(|| {
            for (k, &i) in indices.iter().enumerate() {
                their_root
                    .verify_inclusion(black_box(&entries[i]), i as u64, &theirs[k])
                    .unwrap();
            }
        })
    });
    group.finish();
}

fn root_compute(c: &mut Criterion) {
    let entries = entries(ROOT_TREE_SIZE);
    let mut group = c.benchmark_group("root_compute");
    group.throughput(Throughput::Elements(ROOT_TREE_SIZE as u64));
    // Both sides start from the entries and end with the root of all of them.
    group.bench_function("ours", |b| {
        b.iter(|| {
            let leaves: Vec<Hash> = black_box(&entries).iter().map(|e| leaf_hash(e)).collect();
            root_from_leaf_hashes(&leaves)
        })
    });
    group.bench_function("ct-merkle", |b| {
        b.iter(|| {
            let mut tree = MemoryBackedTree::<Sha256, &[u8]>::new();
            for e in black_box(&entries) {
                tree.push(e.as_slice());
            }
            tree.root()
        })
    });
    group.finish();
}

/// Where criterion writes its results: the same places it looks itself.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // The bench binary lives in <target>/<profile>/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

fn mean_ns(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    inclusion_verify(&mut c);
    root_compute(&mut c);
    c.final_summary();

    for group in ["inclusion_verify", "root_compute"] {
        match (
            mean_ns(&dir, group, "ours"),
            mean_ns(&dir, group, "ct-merkle"),
        ) {
            (Some(ours), Some(theirs)) => {
                println!("ratio {group} ours/ct-merkle = {:.2}", ours / theirs)
            }
            _ => println!("ratio {group} ours/ct-merkle = unavailable (benchmark filtered out?)"),
        }
    }
}

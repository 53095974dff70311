//! RFC 6962 / 9162 Merkle code against the transparency-dev/merkle probes and the RFC 6962
//! reference tree.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use actors::domain::merkle::{
    Hash, leaf_hash, root_from_leaf_hashes, verify_consistency_raw, verify_inclusion_raw,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
    out.sort();
}

fn b64(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("valid base64")
}

/// A probe's proof, as raw byte strings: values of the wrong length are the verifier's to
/// reject.
fn proof(v: &Value) -> Vec<Vec<u8>> {
    // Go writes an empty (nil) proof as `null`.
    if v.is_null() {
        return Vec::new();
    }
    v.as_array()
        .expect("proof is an array or null")
        .iter()
        .map(b64)
        .collect()
}

fn probes(kind: &str) -> Vec<(PathBuf, Value)> {
    let dir = common::vectors_dir()
        .join("transparency-dev-merkle")
        .join(kind);
    let mut files = Vec::new();
    json_files(&dir, &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let value = serde_json::from_str(&text).unwrap();
            (path, value)
        })
        .collect()
}

#[test]
fn inclusion_probes() {
    let probes = probes("inclusion");
    assert_eq!(probes.len(), 98, "expected 98 inclusion probes");
    let mut failures = Vec::new();
    for (path, p) in &probes {
        let result = verify_inclusion_raw(
            &b64(&p["leafHash"]),
            p["leafIdx"].as_u64().unwrap(),
            p["treeSize"].as_u64().unwrap(),
            &proof(&p["proof"]),
            &b64(&p["root"]),
        );
        let want_err = p["wantErr"].as_bool().unwrap();
        if result.is_err() != want_err {
            failures.push(format!(
                "{}: wantErr={want_err}, got {result:?}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn consistency_probes() {
    let probes = probes("consistency");
    assert_eq!(probes.len(), 98, "expected 98 consistency probes");
    let mut failures = Vec::new();
    for (path, p) in &probes {
        let result = verify_consistency_raw(
            p["size1"].as_u64().unwrap(),
            p["size2"].as_u64().unwrap(),
            &proof(&p["proof"]),
            &b64(&p["root1"]),
            &b64(&p["root2"]),
        );
        let want_err = p["wantErr"].as_bool().unwrap();
        if result.is_err() != want_err {
            failures.push(format!(
                "{}: wantErr={want_err}, got {result:?}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rfc6962_reference_tree_roots() {
    let path = common::vectors_dir().join("transparency-dev-merkle/rfc6962_reference_tree.txt");
    let text = fs::read_to_string(&path).unwrap();
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    let mut roots: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("leaf[") {
            let value = rest.split('=').nth(1).unwrap().trim();
            // The first leaf is written as `""  (empty)`.
            let value = if value.starts_with("\"\"") { "" } else { value };
            leaves.push(hex::decode(value).unwrap());
        } else if let Some(rest) = line.strip_prefix("root[") {
            let (n, rest) = rest.split_once(']').unwrap();
            let hex_root = rest
                .split('=')
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            roots.push((n.parse().unwrap(), hex_root.to_owned()));
        }
    }
    assert_eq!(leaves.len(), 8);
    let mut seen: Vec<usize> = roots.iter().map(|(n, _)| *n).collect();
    seen.sort();
    assert_eq!(seen, (0..=8).collect::<Vec<_>>(), "roots for n = 0..8");
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    for (n, want) in roots {
        assert_eq!(
            hex::encode(root_from_leaf_hashes(&hashes[..n])),
            want,
            "n = {n}"
        );
    }
}

//! Tile code against a real tlog-tiles log written by Tessera (testdata/log: 15 entries,
//! a checkpoint for every size, a partial tile and entry bundle for every size).

mod common;

use std::fs;
use std::path::PathBuf;

use actors::domain::merkle::{Hash, empty_root, leaf_hash, verify_consistency, verify_inclusion};
use actors::domain::tiles::{
    ReadError, Tile, TileReader, TiledTree, decode_entry_bundle, verify_tiles,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const SIZES: u64 = 15;

fn log_dir() -> PathBuf {
    common::vectors_dir().join("tessera-testdata-log")
}

/// Reads tiles from the log directory; only parsed (so safe) tile paths reach the disk.
struct DirReader(PathBuf);

impl TileReader for DirReader {
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError> {
        match fs::read(self.0.join(tile.path())) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The size and root of `checkpoint.<n>`: lines two and three of the note. Signature checks
/// belong to the note module's tests.
fn checkpoint(n: u64) -> (u64, Hash) {
    let text = fs::read_to_string(log_dir().join(format!("checkpoint.{n}"))).unwrap();
    let mut lines = text.lines();
    let _origin = lines.next().unwrap();
    let size = lines.next().unwrap().parse().unwrap();
    let root = STANDARD.decode(lines.next().unwrap()).unwrap();
    (size, root.try_into().unwrap())
}

#[test]
fn entry_bundles_hash_to_the_level_0_tiles() {
    for n in 1..=SIZES {
        let bundle = fs::read(log_dir().join(format!("tile/entries/000.p/{n}"))).unwrap();
        let tile = fs::read(log_dir().join(format!("tile/0/000.p/{n}"))).unwrap();
        let entries = decode_entry_bundle(&bundle).unwrap();
        assert_eq!(entries.len() as u64, n);
        let hashes: Vec<u8> = entries.iter().flat_map(|e| leaf_hash(e)).collect();
        assert_eq!(hashes, tile, "size {n}");
    }
}

#[test]
fn roots_from_tiles_match_the_checkpoints() {
    let mut latest = TiledTree::new(DirReader(log_dir()), SIZES);
    for n in 0..=SIZES {
        let (size, root) = checkpoint(n);
        assert_eq!(size, n);
        if n == 0 {
            assert_eq!(root, empty_root());
        }
        assert_eq!(
            latest.root_at(n).unwrap(),
            root,
            "size {n} from the latest tiles"
        );
        let mut own = TiledTree::new(DirReader(log_dir()), n);
        assert_eq!(own.root().unwrap(), root, "size {n} from its own tiles");
        let report = verify_tiles(&mut DirReader(log_dir()), n, &root, true).unwrap();
        assert_eq!(report.entry_bundles, usize::from(n > 0));
    }
}

#[test]
fn proofs_from_tiles_verify_against_the_checkpoints() {
    let mut latest = TiledTree::new(DirReader(log_dir()), SIZES);
    let mut checked = 0;
    for size2 in 1..=SIZES {
        let (_, root2) = checkpoint(size2);
        let mut own = TiledTree::new(DirReader(log_dir()), size2);
        for index in 0..size2 {
            let leaf = latest.leaf_hash(index).unwrap();
            for tree in [&mut latest, &mut own] {
                let proof = tree.inclusion_proof(index, size2).unwrap();
                verify_inclusion(&leaf, index, size2, &proof, &root2).unwrap();
                checked += 1;
            }
        }
        for size1 in 1..=size2 {
            let (_, root1) = checkpoint(size1);
            for tree in [&mut latest, &mut own] {
                let proof = tree.consistency_proof(size1, size2).unwrap();
                verify_consistency(size1, size2, &proof, &root1, &root2)
                    .unwrap_or_else(|e| panic!("{size1} -> {size2}: {e}"));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * (120 + 120));
}

//! Checking one tile on its own against a verified checkpoint.
//!
//! [`verify_tiles`](super::tiles::verify_tiles) checks a whole log; a tile cache or proxy
//! needs to check a single tile before it stores or serves it. A hash tile at level `L` and
//! index `N` with `W` hashes holds the roots of `W` consecutive, aligned perfect subtrees of
//! height `8 * L`, which are nodes of every RFC 6962 tree at least as large as their leaves.
//! [`verify_hash_tile`] recomputes the checkpoint's root from *every* hash in the tile plus
//! the fewest other nodes it needs (read through a [`TiledTree`] from any, untrusted, reader):
//! if that root equals the signed one, collision resistance makes every hash of the tile the
//! log's. An entry bundle is checked against its level-0 tile, itself checked the same way
//! ([`verify_entry_bundle`]).
//!
//! Everything is synchronous and I/O-free; the other tiles come from the caller's reader.

use super::merkle::{HASH_LEN, Hash, leaf_hash, node_hash, root_from_leaf_hashes};
use super::tiles::{
    TILE_HEIGHT, TILE_WIDTH, Tile, TileError, TileKind, TileReader, TiledTree, decode_entry_bundle,
    tile_width,
};

/// Checks that `bytes` are the hash tile `tile` of the tree of `size` leaves whose root is
/// `root`. The tile's width must be implied by `size` (a narrower partial tile is a prefix
/// of the tile `size` implies, and is checked as such). `reader` supplies the other tiles the
/// root needs; they need not be trusted.
pub fn verify_hash_tile<R: TileReader>(
    reader: R,
    size: u64,
    root: &Hash,
    tile: &Tile,
    bytes: &[u8],
) -> Result<Vec<Hash>, TileError> {
    let TileKind::Hash(level) = tile.kind() else {
        return Err(TileError::NotATilePath(tile.path()));
    };
    let hashes = tile_hashes(tile, bytes)?;
    let implied = tile_width(level, tile.index(), size).ok_or(TileError::SizeTooLarge {
        requested: tile_end(tile),
        size,
    })?;
    if tile.width() > implied {
        return Err(TileError::SizeTooLarge {
            requested: tile_end(tile),
            size,
        });
    }
    let height = u32::from(level) * TILE_HEIGHT;
    let begin = tile.index() << (height + TILE_HEIGHT);
    let end = begin + (u64::from(tile.width()) << height);
    let mut check = Check {
        tree: TiledTree::new(reader, size),
        hashes: &hashes,
        height,
        begin,
        end,
    };
    if check.range(0, size)? != *root {
        return Err(TileError::RootMismatch(size));
    }
    Ok(hashes)
}

/// Checks that `bytes` are the entry bundle `bundle` of the tree of `size` leaves whose root
/// is `root`: the level-0 tile at the same position (from `reader`) is checked with
/// [`verify_hash_tile`], and every entry must hash to its leaf hash there.
pub fn verify_entry_bundle<R: TileReader>(
    mut reader: R,
    size: u64,
    root: &Hash,
    bundle: &Tile,
    bytes: &[u8],
) -> Result<(), TileError> {
    if bundle.kind() != TileKind::Entries {
        return Err(TileError::NotATilePath(bundle.path()));
    }
    let entries = decode_entry_bundle(bytes)?;
    if entries.len() != usize::from(bundle.width()) {
        return Err(TileError::WrongEntryCount {
            tile: bundle.path(),
            expected: usize::from(bundle.width()),
            actual: entries.len(),
        });
    }
    let level0 = Tile::new(TileKind::Hash(0), bundle.index(), bundle.width())?;
    let leaves = super::tiles::read_hash_tile(&mut reader, &level0)?;
    let leaf_bytes: Vec<u8> = leaves.concat();
    let leaves = verify_hash_tile(&mut reader, size, root, &level0, &leaf_bytes)?;
    let first = bundle.index() * u64::from(TILE_WIDTH);
    for (i, (entry, leaf)) in entries.iter().zip(&leaves).enumerate() {
        if leaf_hash(entry) != *leaf {
            return Err(TileError::LeafMismatch {
                index: first + i as u64,
            });
        }
    }
    Ok(())
}

/// The leaf index just past the tile, for error messages.
fn tile_end(tile: &Tile) -> u64 {
    let height = match tile.kind() {
        TileKind::Hash(level) => u32::from(level) * TILE_HEIGHT,
        TileKind::Entries => 0,
    };
    let first = u128::from(tile.index()) << (height + TILE_HEIGHT);
    let end = first + (u128::from(tile.width()) << height);
    u64::try_from(end).unwrap_or(u64::MAX)
}

/// Splits a hash tile into its hashes, checking its length.
fn tile_hashes(tile: &Tile, bytes: &[u8]) -> Result<Vec<Hash>, TileError> {
    let expected = usize::from(tile.width()) * HASH_LEN;
    if bytes.len() != expected {
        return Err(TileError::WrongTileLength {
            tile: tile.path(),
            expected,
            actual: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(HASH_LEN)
        .map(|c| c.try_into().expect("chunks_exact gives 32 bytes"))
        .collect())
}

/// The root computation with one tile's hashes standing in for the nodes they cover.
struct Check<'a, R> {
    tree: TiledTree<R>,
    hashes: &'a [Hash],
    /// The height of the tile's hashes.
    height: u32,
    /// The leaves the tile covers: `[begin, end)`.
    begin: u64,
    end: u64,
}

impl<R: TileReader> Check<'_, R> {
    /// The RFC 6962 hash of leaves `[a, b)`, descending only where the tile's leaves and
    /// others meet, so every hash of the tile is used and nothing else is read needlessly.
    fn range(&mut self, a: u64, b: u64) -> Result<Hash, TileError> {
        let n = b - a;
        if n == 0 {
            return Ok(root_from_leaf_hashes(&[]));
        }
        let perfect = n.is_power_of_two() && a.is_multiple_of(n);
        if perfect {
            let h = n.trailing_zeros();
            if a >= self.begin && b <= self.end && h >= self.height {
                let first = ((a - self.begin) >> self.height) as usize;
                let last = ((b - self.begin) >> self.height) as usize;
                return Ok(root_from_leaf_hashes(&self.hashes[first..last]));
            }
            if b <= self.begin || a >= self.end {
                return self.tree.node(h, a >> h);
            }
        }
        // The largest power of two smaller than n: RFC 6962's split.
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        let left = self.range(a, a + k)?;
        let right = self.range(a + k, b)?;
        Ok(node_hash(&left, &right))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::log::LogTree;
    use crate::domain::tiles::{entry_bundles_for_size, hash_tiles_for_size};

    fn log(size: u64) -> (LogTree, HashMap<String, Vec<u8>>) {
        let mut log = LogTree::new();
        for i in 0..size {
            log.append(format!("entry {i}").into_bytes()).unwrap();
        }
        let mut store = HashMap::new();
        for t in hash_tiles_for_size(size)
            .into_iter()
            .chain(entry_bundles_for_size(size))
        {
            store.insert(t.path(), log.tile(&t).unwrap());
        }
        (log, store)
    }

    #[test]
    fn every_tile_of_a_log_verifies_and_any_flipped_byte_fails() {
        let size = 70_000;
        let (log, mut store) = log(size);
        let root = log.root();
        for tile in hash_tiles_for_size(size) {
            let bytes = store[&tile.path()].clone();
            verify_hash_tile(&mut store, size, &root, &tile, &bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", tile.path()));
            for pos in [0, bytes.len() / 2, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[pos] ^= 1;
                assert!(
                    verify_hash_tile(&mut store, size, &root, &tile, &bad).is_err(),
                    "{} with byte {pos} flipped",
                    tile.path()
                );
            }
        }
        for bundle in entry_bundles_for_size(size).into_iter().step_by(50) {
            let bytes = store[&bundle.path()].clone();
            verify_entry_bundle(&mut store, size, &root, &bundle, &bytes).unwrap();
            let mut bad = bytes.clone();
            bad[5] ^= 1;
            assert!(verify_entry_bundle(&mut store, size, &root, &bundle, &bad).is_err());
        }
    }

    #[test]
    fn older_tiles_verify_against_a_newer_checkpoint_and_not_the_reverse() {
        let (log, mut store) = log(1100);
        // A partial tile of size 300 is a prefix of size 1100's full tile 1.
        let old = Tile::new(TileKind::Hash(0), 1, 44).unwrap();
        let bytes = log.tile(&old).unwrap();
        verify_hash_tile(&mut store, 1100, &log.root(), &old, &bytes).unwrap();
        // A full tile is not implied by a checkpoint that has only part of it.
        let full = Tile::new(TileKind::Hash(0), 3, 256).unwrap();
        let bytes = log.tile(&full).unwrap();
        let root_900 = log.root_at(900).unwrap();
        assert!(matches!(
            verify_hash_tile(&mut store, 900, &root_900, &full, &bytes),
            Err(TileError::SizeTooLarge { .. })
        ));
        // A wrong root fails.
        let tile = Tile::new(TileKind::Hash(0), 0, 256).unwrap();
        let bytes = log.tile(&tile).unwrap();
        assert!(matches!(
            verify_hash_tile(&mut store, 1100, &[7; 32], &tile, &bytes),
            Err(TileError::RootMismatch(1100))
        ));
    }
}

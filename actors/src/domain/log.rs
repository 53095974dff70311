//! An append-only transparency log kept in memory: the core of the local Rekor-compatible
//! log (`provd dev-log serve`).
//!
//! [`LogTree`] holds the entries (canonical bodies, the exact Merkle leaf bytes) and every
//! complete node of the RFC 6962 tree, level by level. Appending hashes one leaf and, on
//! average, one inner node; roots at any size, inclusion and consistency proofs, C2SP hash
//! tiles and entry bundles are then read from the stored nodes without rehashing the tree.
//! Memory is about two hashes per entry plus the entries themselves.
//!
//! Duplicates are found by leaf hash, the way Rekor v1 (Trillian) and Rekor v2 (Tessera's
//! antispam) deduplicate: the same canonical body is never logged twice.
//!
//! Signing helpers produce checkpoints for any size with the existing note code, including a
//! deliberately forged one ([`forged_note`]) for the log's fault modes.

use std::collections::HashMap;

use thiserror::Error;

use super::keys::PrivateKey;
use super::merkle::{
    Hash, MerkleError, consistency_proof_with, empty_root, inclusion_proof_with, leaf_hash,
    node_hash, range_hash_with,
};
use super::note::{Checkpoint, Note, NoteError, NoteSignature, Signer, Verifier, sign_note};
use super::tiles::{MAX_ENTRY_LEN, TILE_HEIGHT, TILE_WIDTH, Tile, TileError, TileKind};

/// Why a log operation failed.
#[derive(Debug, Error)]
pub enum LogError {
    /// The entry is already in the log, at this index.
    #[error("an equivalent entry already exists at index {index}")]
    Duplicate {
        /// The index of the existing entry.
        index: u64,
    },
    /// The entry is larger than an entry bundle can carry.
    #[error("entry has {0} bytes, more than the {MAX_ENTRY_LEN} a tile entry bundle can hold")]
    EntryTooLarge(usize),
    /// An index or size beyond the log's current size was asked for.
    #[error("{what} {requested} is beyond the log's size {size}")]
    OutOfRange {
        /// What was asked for (an index or a tree size).
        what: &'static str,
        /// The requested value.
        requested: u64,
        /// The log's size.
        size: u64,
    },
    /// The tile is not (yet) part of the log.
    #[error("tile {0} does not exist in this log")]
    NoSuchTile(String),
    /// A Merkle proof could not be built.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// A note could not be signed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A tile could not be built.
    #[error(transparent)]
    Tile(#[from] TileError),
}

/// An append-only Merkle tree log with its entries.
#[derive(Debug, Clone, Default)]
pub struct LogTree {
    entries: Vec<Vec<u8>>,
    /// `levels[h][i]` is the root of the perfect subtree of height `h` over leaves
    /// `[i << h, (i + 1) << h)`; only complete subtrees are stored.
    levels: Vec<Vec<Hash>>,
    by_leaf: HashMap<Hash, u64>,
}

impl LogTree {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of entries.
    pub fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The entry (canonical body) at `index`.
    pub fn entry(&self, index: u64) -> Option<&[u8]> {
        self.entries
            .get(usize::try_from(index).ok()?)
            .map(Vec::as_slice)
    }

    /// The leaf hash of the entry at `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.node(0, index)
    }

    /// The index of the entry whose leaf hash is `leaf`.
    pub fn find(&self, leaf: &Hash) -> Option<u64> {
        self.by_leaf.get(leaf).copied()
    }

    /// Checks that `body` could be appended: not too large for an entry bundle, not already
    /// logged. Returns its leaf hash.
    pub fn check_new(&self, body: &[u8]) -> Result<Hash, LogError> {
        if body.len() > MAX_ENTRY_LEN {
            return Err(LogError::EntryTooLarge(body.len()));
        }
        let leaf = leaf_hash(body);
        match self.find(&leaf) {
            Some(index) => Err(LogError::Duplicate { index }),
            None => Ok(leaf),
        }
    }

    /// Appends an entry and returns its index; a body already logged is refused with
    /// [`LogError::Duplicate`] naming the existing index.
    pub fn append(&mut self, body: Vec<u8>) -> Result<u64, LogError> {
        let leaf = self.check_new(&body)?;
        let index = self.size();
        self.entries.push(body);
        self.by_leaf.insert(leaf, index);
        // Like a binary increment: each completed pair of siblings adds one node above.
        let mut hash = leaf;
        let mut height = 0;
        loop {
            if self.levels.len() == height {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[height];
            level.push(hash);
            let count = level.len();
            if count % 2 == 1 {
                break;
            }
            hash = node_hash(&level[count - 2], &level[count - 1]);
            height += 1;
        }
        Ok(index)
    }

    /// The root of the perfect subtree of height `height` at `index`, if it is complete.
    pub fn node(&self, height: u32, index: u64) -> Option<Hash> {
        let level = self.levels.get(usize::try_from(height).ok()?)?;
        level.get(usize::try_from(index).ok()?).copied()
    }

    fn stored(&self, height: u32, index: u64) -> Result<Hash, LogError> {
        self.node(height, index).ok_or(LogError::OutOfRange {
            what: "subtree",
            requested: index << height,
            size: self.size(),
        })
    }

    fn range_hash(&self, begin: u64, end: u64) -> Result<Hash, LogError> {
        range_hash_with(begin, end, |h, i| self.stored(h, i))
    }

    fn check_size(&self, what: &'static str, requested: u64) -> Result<(), LogError> {
        if requested > self.size() {
            return Err(LogError::OutOfRange {
                what,
                requested,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// The root of the whole log.
    pub fn root(&self) -> Hash {
        // The current size is always in range.
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// The root of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        self.check_size("tree size", size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        self.range_hash(0, size)
    }

    /// The inclusion proof of entry `index` in the tree of the first `tree_size` entries.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size("tree size", tree_size)?;
        inclusion_proof_with(index, tree_size, |b, e| self.range_hash(b, e))
    }

    /// The consistency proof from the first `size1` to the first `size2` entries.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size("tree size", size2)?;
        consistency_proof_with(size1, size2, |b, e| self.range_hash(b, e))
    }

    /// The checkpoint of the first `size` entries under `origin`.
    pub fn checkpoint(&self, origin: &str, size: u64) -> Result<Checkpoint, LogError> {
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root: self.root_at(size)?,
            extensions: Vec::new(),
        })
    }

    /// The bytes of a hash tile or entry bundle, if the log holds at least `tile.width()`
    /// items at its position. A partial tile is a prefix of the final full tile, so any
    /// width up to what exists is served.
    pub fn tile(&self, tile: &Tile) -> Result<Vec<u8>, LogError> {
        let width = u64::from(tile.width());
        let first = tile.index().checked_mul(u64::from(TILE_WIDTH));
        let missing = || LogError::NoSuchTile(tile.path());
        let first = first.ok_or_else(missing)?;
        match tile.kind() {
            TileKind::Hash(level) => {
                let height = u32::from(level) * TILE_HEIGHT;
                let hashes = self
                    .levels
                    .get(height as usize)
                    .ok_or_else(missing)?
                    .get(first as usize..(first + width) as usize)
                    .ok_or_else(missing)?;
                Ok(hashes.concat())
            }
            TileKind::Entries => {
                let entries = self
                    .entries
                    .get(first as usize..(first + width) as usize)
                    .ok_or_else(missing)?;
                Ok(super::tiles::encode_entry_bundle(entries)?)
            }
        }
    }

    /// A copy of the first `size` entries: an older view of this log.
    pub fn prefix(&self, size: u64) -> Result<LogTree, LogError> {
        self.check_size("tree size", size)?;
        let mut tree = LogTree::new();
        for entry in &self.entries[..size as usize] {
            tree.append(entry.clone())?;
        }
        Ok(tree)
    }
}

/// Signs the checkpoint with every signer and returns the signed note.
pub fn signed_checkpoint(checkpoint: &Checkpoint, signers: &[&Signer]) -> Result<String, LogError> {
    Ok(sign_note(&checkpoint.to_text(), signers)?)
}

/// A note that claims to be signed by `genuine` (same name and key hint) but whose signature
/// is made with `wrong`: what a log that lost or swapped its key would publish. Verifiers
/// that trust `genuine` must reject it.
pub fn forged_note(text: &str, genuine: &Verifier, wrong: &PrivateKey) -> Result<String, LogError> {
    let signature = NoteSignature {
        name: genuine.name().to_owned(),
        key_hint: genuine.key_hint(),
        signature: wrong.sign(text.as_bytes()),
    };
    Ok(Note::new(text, vec![signature])?.to_text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::{Algorithm, os_random};
    use crate::domain::merkle::{
        consistency_proof, inclusion_proof, root_from_leaf_hashes, verify_consistency,
        verify_inclusion,
    };
    use crate::domain::note::verify_checkpoint;
    use crate::domain::tiles::{TiledTree, decode_entry_bundle, hash_tiles_for_size};

    fn body(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    fn log_of(n: u64) -> (LogTree, Vec<Hash>) {
        let mut log = LogTree::new();
        let mut leaves = Vec::new();
        for i in 0..n {
            assert_eq!(log.append(body(i)).unwrap(), i);
            leaves.push(leaf_hash(&body(i)));
        }
        (log, leaves)
    }

    #[test]
    fn roots_and_proofs_match_the_reference_builders() {
        let (log, leaves) = log_of(70);
        for size in 0..=70u64 {
            let prefix = &leaves[..size as usize];
            assert_eq!(log.root_at(size).unwrap(), root_from_leaf_hashes(prefix));
            for index in 0..size {
                let proof = log.inclusion_proof(index, size).unwrap();
                assert_eq!(proof, inclusion_proof(prefix, index).unwrap());
                verify_inclusion(
                    &leaves[index as usize],
                    index,
                    size,
                    &proof,
                    &log.root_at(size).unwrap(),
                )
                .unwrap();
            }
            for size1 in 1..=size {
                let proof = log.consistency_proof(size1, size).unwrap();
                assert_eq!(proof, consistency_proof(prefix, size1).unwrap());
                verify_consistency(
                    size1,
                    size,
                    &proof,
                    &log.root_at(size1).unwrap(),
                    &log.root_at(size).unwrap(),
                )
                .unwrap();
            }
        }
        assert!(log.root_at(71).is_err());
        assert!(log.inclusion_proof(70, 70).is_err());
    }

    #[test]
    fn duplicates_are_refused_with_the_existing_index() {
        let (mut log, _) = log_of(5);
        assert!(matches!(
            log.append(body(3)),
            Err(LogError::Duplicate { index: 3 })
        ));
        assert_eq!(log.size(), 5);
        assert!(matches!(
            log.append(vec![0; MAX_ENTRY_LEN + 1]),
            Err(LogError::EntryTooLarge(_))
        ));
    }

    #[test]
    fn tiles_rebuild_the_tree() {
        let (log, _) = log_of(600);
        let mut map = HashMap::new();
        for tile in hash_tiles_for_size(600) {
            map.insert(tile.path(), log.tile(&tile).unwrap());
        }
        for tile in super::super::tiles::entry_bundles_for_size(600) {
            let bytes = log.tile(&tile).unwrap();
            let entries = decode_entry_bundle(&bytes).unwrap();
            assert_eq!(entries.len(), usize::from(tile.width()));
            assert_eq!(entries[0], body(tile.index() * 256).as_slice());
            map.insert(tile.path(), bytes);
        }
        let report = super::super::tiles::verify_tiles(&mut map, 600, &log.root(), true).unwrap();
        assert_eq!(report.entry_bundles, 3);
        let mut tiled = TiledTree::new(map, 600);
        assert_eq!(tiled.root().unwrap(), log.root());
        assert_eq!(
            tiled.inclusion_proof(300, 600).unwrap(),
            log.inclusion_proof(300, 600).unwrap()
        );
        // A tile beyond the log is refused; a narrower partial prefix is served.
        let beyond = Tile::new(TileKind::Hash(1), 0, 3).unwrap();
        assert!(log.tile(&beyond).is_err());
        let prefix = Tile::new(TileKind::Hash(0), 2, 10).unwrap();
        assert_eq!(log.tile(&prefix).unwrap().len(), 320);
    }

    #[test]
    fn checkpoints_sign_and_forgeries_fail() {
        let (log, _) = log_of(9);
        let key = PrivateKey::generate(Algorithm::Ed25519, &mut os_random).unwrap();
        let signer = Signer::new("dev.log", key).unwrap();
        let cp = log.checkpoint("dev.log", 9).unwrap();
        let note = signed_checkpoint(&cp, &[&signer]).unwrap();
        let verifiers = [signer.verifier().clone()];
        assert_eq!(
            verify_checkpoint(note.as_bytes(), &verifiers, Some("dev.log")).unwrap(),
            cp
        );
        let wrong = PrivateKey::generate(Algorithm::Ed25519, &mut os_random).unwrap();
        let forged = forged_note(&cp.to_text(), signer.verifier(), &wrong).unwrap();
        assert!(matches!(
            verify_checkpoint(forged.as_bytes(), &verifiers, None),
            Err(NoteError::InvalidSignature { .. })
        ));
        let id = signer.verifier().key_id();
        assert_eq!(
            u32::from_be_bytes(id[..4].try_into().unwrap()),
            signer.verifier().key_hint()
        );
    }

    #[test]
    fn prefix_is_an_older_view() {
        let (log, _) = log_of(20);
        let old = log.prefix(7).unwrap();
        assert_eq!(old.root(), log.root_at(7).unwrap());
        assert_eq!(old.size(), 7);
    }
}

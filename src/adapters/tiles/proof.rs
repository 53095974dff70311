//! The proof builder: inclusion and consistency proofs built from tiles and checked before
//! they are handed out.
//!
//! [`build`] takes a verified checkpoint of size `S`, a leaf index and a tree size `M <= S`,
//! reads the tiles it needs (from the cache, or the log), and returns a [`ProofBundle`]: the
//! entry, its inclusion proof in the tree of `M` leaves, the root of that tree, and the
//! consistency proof from `M` to `S`. Before returning, it checks that the tiles lead to the
//! checkpoint's root, that the inclusion proof leads from the entry's leaf hash to the root
//! of `M`, and that the consistency proof links that root to the signed one — so a third
//! party holding the log's key can check the same with any RFC 6962/9162 verifier.

use actors::domain::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use actors::domain::tiles::{Tile, TileKind, TiledTree, read_entry_bundle, tile_width};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::TilesError;
use super::cache::Verified;
use super::client::{FetchedTiles, TileSource, tile_of, with_tiles};

/// An inclusion proof of one entry in a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionPart {
    /// The entry's index.
    pub log_index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// That tree's root, hex.
    pub root_hash: String,
    /// The audit path, leaf to root, hex.
    pub hashes: Vec<String>,
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyPart {
    /// The smaller size.
    pub from_size: u64,
    /// The larger size (the checkpoint's).
    pub to_size: u64,
    /// The proof, hex.
    pub hashes: Vec<String>,
}

/// Everything a third party needs to check that an entry is in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofBundle {
    /// The checkpoint's origin.
    pub origin: String,
    /// The signed checkpoint, as the log served it.
    pub checkpoint: String,
    /// The checkpoint's tree size.
    pub checkpoint_size: u64,
    /// The checkpoint's root, hex.
    pub checkpoint_root: String,
    /// The entry, base64.
    pub entry: String,
    /// `SHA-256(0x00 || entry)`, hex.
    pub leaf_hash: String,
    /// The inclusion proof in the tree of `inclusion.tree_size` leaves.
    pub inclusion: InclusionPart,
    /// The consistency proof from that tree to the checkpoint's (absent when they are the
    /// same).
    pub consistency: Option<ConsistencyPart>,
}

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// Builds and checks the proofs of entry `index` in the tree of `size` leaves (default: the
/// checkpoint's), linked to the verified checkpoint `v`.
pub async fn build<S: TileSource + ?Sized>(
    source: &S,
    v: &Verified,
    index: u64,
    size: Option<u64>,
) -> Result<ProofBundle, TilesError> {
    let cp = &v.checkpoint;
    let big = cp.size;
    let small = size.unwrap_or(big);
    if small == 0 || small > big || index >= small {
        return Err(TilesError::NotFound(format!(
            "no entry {index} in a tree of size {small}: need index < size <= {big} (the \
             latest verified checkpoint's size)"
        )));
    }
    let mut fetched = FetchedTiles::default();
    let (root, small_root, inclusion, leaf, consistency) = with_tiles(source, &mut fetched, |f| {
        let mut tree = TiledTree::new(f, big);
        let consistency = if small < big {
            tree.consistency_proof(small, big)?
        } else {
            Vec::new()
        };
        Ok((
            tree.root()?,
            tree.root_at(small)?,
            tree.inclusion_proof(index, small)?,
            tree.leaf_hash(index)?,
            consistency,
        ))
    })
    .await?;
    let unverified = |m: String| TilesError::Unverified(m);
    if root != cp.root {
        return Err(unverified(
            "the tiles do not lead to the checkpoint's root".into(),
        ));
    }
    verify_inclusion(&leaf, index, small, &inclusion, &small_root)
        .map_err(|e| unverified(format!("inclusion proof built from tiles: {e}")))?;
    if small < big {
        verify_consistency(small, big, &consistency, &small_root, &cp.root)
            .map_err(|e| unverified(format!("consistency proof built from tiles: {e}")))?;
    }
    let (bundle_index, offset) = tile_of(index);
    let width = tile_width(0, bundle_index, big)
        .ok_or_else(|| TilesError::NotFound(format!("entry {index}")))?;
    let bundle = Tile::new(TileKind::Entries, bundle_index, width)?;
    let entries = with_tiles(source, &mut fetched, |f| read_entry_bundle(f, &bundle)).await?;
    let entry = entries
        .get(offset)
        .ok_or_else(|| unverified(format!("entry bundle {} is short", bundle.path())))?;
    if leaf_hash(entry) != leaf {
        return Err(unverified(format!(
            "entry {index} does not hash to its leaf hash"
        )));
    }
    Ok(ProofBundle {
        origin: cp.origin.clone(),
        checkpoint: String::from_utf8_lossy(&v.note).into_owned(),
        checkpoint_size: big,
        checkpoint_root: hex::encode(cp.root),
        entry: B64.encode(entry),
        leaf_hash: hex::encode(leaf),
        inclusion: InclusionPart {
            log_index: index,
            tree_size: small,
            root_hash: hex::encode(small_root),
            hashes: hexes(&inclusion),
        },
        consistency: (small < big).then(|| ConsistencyPart {
            from_size: small,
            to_size: big,
            hashes: hexes(&consistency),
        }),
    })
}

//! RFC 6962 / RFC 9162 Merkle trees over SHA-256.
//!
//! The tree is the one every Certificate-Transparency-style log uses (Rekor v1, Rekor v2,
//! Tessera): a leaf hashes as `SHA256(0x00 || data)`, an inner node as
//! `SHA256(0x01 || left || right)`, the empty tree as `SHA256("")`, and a tree of `n > 1`
//! leaves splits at the largest power of two below `n`.
//!
//! This module offers:
//! - the hashers ([`leaf_hash`], [`node_hash`], [`empty_root`]) and the tree hash of a list of
//!   leaf hashes ([`root_from_leaf_hashes`]);
//! - inclusion proofs: building ([`inclusion_proof`]) and verifying ([`verify_inclusion`],
//!   [`root_from_inclusion_proof`]) with the RFC 9162 §2.1.3.2 algorithm;
//! - consistency proofs: building ([`consistency_proof`]) and verifying ([`verify_consistency`],
//!   [`root_from_consistency_proof`]) with the RFC 9162 §2.1.4.2 algorithm;
//! - the same verifiers for hashes that arrive as raw bytes ([`verify_inclusion_raw`],
//!   [`verify_consistency_raw`]), which reject values that are not 32 bytes;
//! - proof builders that take the hash of any subtree from a caller's closure
//!   ([`inclusion_proof_with`], [`consistency_proof_with`], [`range_hash_with`]), which is how
//!   proofs are built from stored tiles instead of from all leaves;
//! - [`CompactRange`], an append-only tree that keeps only the roots of its perfect subtrees.
//!
//! # Size 0
//!
//! The empty tree has root [`empty_root`] and no leaves, so no inclusion proof exists for it.
//! A consistency proof from size 0 is rejected with [`MerkleError::EmptyOldTree`], even from 0
//! to 0: this matches transparency-dev/merkle (and so Rekor and Tessera clients), for which
//! such a proof proves nothing. C2SP tlog-witness takes the opposite view (an empty proof from
//! size 0 is always consistent); a caller that speaks that protocol handles size 0 itself.
//!
//! Verification checks the exact proof length before hashing, so a proof with extra or
//! missing hashes fails with [`MerkleError::WrongProofLength`] rather than with a root mismatch.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 digest: a leaf hash, an inner node hash or a tree root.
pub type Hash = [u8; 32];

/// The length in bytes of a [`Hash`].
pub const HASH_LEN: usize = 32;

/// Why a Merkle operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// A byte string that should be a hash does not have 32 bytes.
    #[error("a hash must be {HASH_LEN} bytes, got {0}")]
    BadHashLength(usize),
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {tree_size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The size of the tree.
        tree_size: u64,
    },
    /// The proof has more or fewer hashes than the sizes and index require.
    #[error("the proof has {actual} hashes, but {expected} are required")]
    WrongProofLength {
        /// The number of hashes the proof must have.
        expected: usize,
        /// The number of hashes it has.
        actual: usize,
    },
    /// The root computed from the proof differs from the expected root.
    #[error("the root computed from the proof does not match the expected root")]
    RootMismatch,
    /// A consistency proof was asked for from a larger tree to a smaller one.
    #[error("the first tree size {size1} is larger than the second tree size {size2}")]
    SizeDecreased {
        /// The first (older) tree size.
        size1: u64,
        /// The second (newer) tree size.
        size2: u64,
    },
    /// A consistency proof was asked for from the empty tree, which proves nothing.
    #[error("a consistency proof from the empty tree is meaningless")]
    EmptyOldTree,
    /// Two trees of the same size have different roots.
    #[error("trees of the same size {0} have different roots")]
    SameSizeDifferentRoots(u64),
    /// Subtree hashes given to rebuild a tree do not match its size.
    #[error("a tree of size {size} has {expected} perfect subtrees, got {actual} hashes")]
    WrongSubtreeCount {
        /// The size of the tree.
        size: u64,
        /// The number of perfect subtrees a tree of this size has.
        expected: usize,
        /// The number of hashes given.
        actual: usize,
    },
    /// A tree of this size cannot be represented (more than 2^63 leaves).
    #[error("the tree is full")]
    TreeFull,
}

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Hashes a log entry into its leaf hash, `SHA256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([LEAF_PREFIX])
        .chain_update(data)
        .finalize()
        .into()
}

/// The SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Hashes two child hashes into their parent, `SHA256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    // The 65 bytes always fill exactly two padded blocks, so they are laid out here and
    // compressed directly (with SHA-NI where the CPU has it): tile roots and tree checks
    // hash as many nodes as leaves, and this skips the streaming hasher's buffering.
    let mut blocks = [[0u8; 64]; 2];
    blocks[0][0] = NODE_PREFIX;
    blocks[0][1..=HASH_LEN].copy_from_slice(left);
    blocks[0][1 + HASH_LEN..].copy_from_slice(&right[..HASH_LEN - 1]);
    blocks[1][0] = right[HASH_LEN - 1];
    blocks[1][1] = 0x80;
    blocks[1][56..].copy_from_slice(&((1 + 2 * HASH_LEN as u64) * 8).to_be_bytes());
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &blocks);
    let mut out = [0u8; HASH_LEN];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// The root of the empty tree, `SHA256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Converts a byte slice into a [`Hash`], failing unless it has exactly 32 bytes.
pub fn hash_from_slice(bytes: &[u8]) -> Result<Hash, MerkleError> {
    bytes
        .try_into()
        .map_err(|_| MerkleError::BadHashLength(bytes.len()))
}

/// The Merkle tree hash of a list of leaf hashes (`MTH` in RFC 6962 §2.1).
///
/// Returns [`empty_root`] for an empty list.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    let mut range = CompactRange::new();
    for leaf in leaves {
        // A slice never holds 2^63 hashes, so the range cannot fill up.
        range
            .push(*leaf)
            .expect("a slice is smaller than a full tree");
    }
    range.root()
}

/// The largest power of two strictly below `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of the subtree over leaves `[begin, end)`, with `begin < end`, computed from the
/// roots of the perfect subtrees that cover it.
///
/// `node(height, index)` must return the root of the perfect subtree of `2^height` leaves that
/// starts at leaf `index << height`. The range must be one that occurs in the RFC 6962 tree
/// (every range used by proofs does): `begin` is a multiple of a power of two at least as large
/// as `end - begin`.
pub fn range_hash_with<E>(
    begin: u64,
    end: u64,
    mut node: impl FnMut(u32, u64) -> Result<Hash, E>,
) -> Result<Hash, E> {
    debug_assert!(begin < end);
    // Collect the perfect subtrees left to right (largest first), then fold right to left,
    // which is how RFC 6962 combines the ragged right edge of a tree.
    let mut parts: Vec<Hash> = Vec::with_capacity(64);
    let mut pos = begin;
    while pos < end {
        let remaining = end - pos;
        let mut height = 63 - remaining.leading_zeros();
        if pos != 0 {
            height = height.min(pos.trailing_zeros());
        }
        parts.push(node(height, pos >> height)?);
        pos += 1 << height;
    }
    let mut acc = parts.pop().expect("begin < end gives at least one subtree");
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The number of hashes in an inclusion proof for `index` in a tree of `tree_size`, split into
/// the hashes below the point where the leaf's path meets the tree's right edge (`inner`) and
/// those along that edge (`border`).
fn inclusion_shape(index: u64, tree_size: u64) -> (u32, u32) {
    let inner = 64 - (index ^ (tree_size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner, border)
}

/// Builds the inclusion proof (RFC 9162 §2.1.3.1) for leaf `index` in a tree of `tree_size`
/// leaves, asking `range_hash(begin, end)` for the hash of each subtree `[begin, end)` the
/// proof needs.
///
/// The proof lists sibling hashes from the leaf up to the root.
pub fn inclusion_proof_with<E: From<MerkleError>>(
    index: u64,
    tree_size: u64,
    mut range_hash: impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size }.into());
    }
    // Walk from the root down to the leaf; the siblings come out root first.
    let (mut begin, mut end) = (0u64, tree_size);
    let mut proof = Vec::with_capacity(64);
    while end - begin > 1 {
        let mid = begin + split_point(end - begin);
        if index < mid {
            proof.push(range_hash(mid, end)?);
            end = mid;
        } else {
            proof.push(range_hash(begin, mid)?);
            begin = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Builds the inclusion proof for leaf `index` in the tree made of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    inclusion_proof_with(index, leaves.len() as u64, |b, e| {
        Ok(root_from_leaf_hashes(&leaves[b as usize..e as usize]))
    })
}

/// Computes the root that an inclusion proof implies for `leaf_hash` at `index` in a tree of
/// `tree_size` leaves (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size });
    }
    let (inner, border) = inclusion_shape(index, tree_size);
    let expected = (inner + border) as usize;
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    // Below `inner` the leaf's position decides the side; above it the path runs along the
    // right edge, where every sibling is on the left.
    let mut hash = *leaf_hash;
    for (level, sibling) in proof.iter().enumerate() {
        hash = if level < inner as usize && (index >> level) & 1 == 0 {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
    }
    Ok(hash)
}

/// Verifies that `leaf_hash` is the leaf at `index` in the tree of `tree_size` leaves whose
/// root is `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)?;
    if computed == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// Checks the sizes of a consistency proof request; `Ok(true)` means the sizes are equal.
fn check_consistency_sizes(size1: u64, size2: u64) -> Result<bool, MerkleError> {
    if size1 > size2 {
        return Err(MerkleError::SizeDecreased { size1, size2 });
    }
    if size1 == 0 {
        return Err(MerkleError::EmptyOldTree);
    }
    Ok(size1 == size2)
}

/// Builds the consistency proof (RFC 9162 §2.1.4.1) between the first `size1` leaves and the
/// first `size2` leaves of a log, asking `range_hash(begin, end)` for the hash of each subtree
/// `[begin, end)` the proof needs. Equal sizes give an empty proof.
pub fn consistency_proof_with<E: From<MerkleError>>(
    size1: u64,
    size2: u64,
    mut range_hash: impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    if check_consistency_sizes(size1, size2)? {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[begin:end], at_start) unrolled into a loop; the hashes come out root first.
    let (mut begin, mut end) = (0u64, size2);
    let mut at_start = true;
    let mut proof = Vec::with_capacity(64);
    while size1 != end {
        let mid = begin + split_point(end - begin);
        if size1 <= mid {
            proof.push(range_hash(mid, end)?);
            end = mid;
        } else {
            proof.push(range_hash(begin, mid)?);
            begin = mid;
            at_start = false;
        }
    }
    // The old tree is a whole subtree here; its hash is only sent when the verifier cannot
    // know it, i.e. when it is not the old root itself.
    if !at_start {
        proof.push(range_hash(begin, end)?);
    }
    proof.reverse();
    Ok(proof)
}

/// Builds the consistency proof between the first `size1` leaves of `leaves` and all of them.
pub fn consistency_proof(leaves: &[Hash], size1: u64) -> Result<Vec<Hash>, MerkleError> {
    consistency_proof_with(size1, leaves.len() as u64, |b, e| {
        Ok(root_from_leaf_hashes(&leaves[b as usize..e as usize]))
    })
}

/// Computes the root of the tree of `size2` leaves that a consistency proof implies, given
/// the root `root1` of the first `size1` leaves (RFC 9162 §2.1.4.2).
///
/// The proof also has to reproduce `root1`; if it does not, this fails with
/// [`MerkleError::RootMismatch`].
pub fn root_from_consistency_proof(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
) -> Result<Hash, MerkleError> {
    if check_consistency_sizes(size1, size2)? {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                expected: 0,
                actual: proof.len(),
            });
        }
        return Ok(*root1);
    }
    // The old tree's last leaf is a leaf of the new tree; its path splits like an inclusion
    // path. Levels below `shift` are inside the largest perfect subtree that ends the old
    // tree, whose hash is the proof's seed (or root1 itself when the old tree is perfect).
    let (inner, border) = inclusion_shape(size1 - 1, size2);
    let shift = size1.trailing_zeros();
    let inner = inner - shift;
    let old_is_perfect = size1 == 1 << shift;
    let start = usize::from(!old_is_perfect);
    let expected = start + (inner + border) as usize;
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    let seed = if old_is_perfect { *root1 } else { proof[0] };
    let path = &proof[start..];
    let mask = (size1 - 1) >> shift;

    // Rebuild both roots at once: hashes on the left of the path feed both, hashes on the
    // right only belong to the new tree.
    let (mut old, mut new) = (seed, seed);
    for (level, sibling) in path[..inner as usize].iter().enumerate() {
        if (mask >> level) & 1 == 1 {
            old = node_hash(sibling, &old);
            new = node_hash(sibling, &new);
        } else {
            new = node_hash(&new, sibling);
        }
    }
    for sibling in &path[inner as usize..] {
        old = node_hash(sibling, &old);
        new = node_hash(sibling, &new);
    }
    if old != *root1 {
        return Err(MerkleError::RootMismatch);
    }
    Ok(new)
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1`.
///
/// Equal sizes need an empty proof and equal roots; size 0 is rejected (see the module
/// documentation).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), MerkleError> {
    let computed = root_from_consistency_proof(size1, size2, proof, root1)?;
    if computed == *root2 {
        Ok(())
    } else if size1 == size2 {
        Err(MerkleError::SameSizeDifferentRoots(size1))
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// Converts raw proof hashes into [`Hash`]es, rejecting any that is not 32 bytes.
fn hashes_from_slices<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, MerkleError> {
    proof.iter().map(|p| hash_from_slice(p.as_ref())).collect()
}

/// [`verify_inclusion`] for hashes given as raw byte strings (as decoded from JSON, hex or
/// base64); any value that is not 32 bytes fails with [`MerkleError::BadHashLength`].
pub fn verify_inclusion_raw<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    tree_size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), MerkleError> {
    // Checking the leaf length matters: an empty leaf hash with an empty root and an empty
    // proof would otherwise "verify" a tree of size 1.
    let leaf = hash_from_slice(leaf_hash)?;
    let root = hash_from_slice(root)?;
    verify_inclusion(&leaf, index, tree_size, &hashes_from_slices(proof)?, &root)
}

/// [`verify_consistency`] for hashes given as raw byte strings, with the byte-level contract
/// of transparency-dev/merkle's `VerifyConsistency`.
///
/// When both sizes are equal (and not 0) nothing is hashed: the proof must be empty and the
/// two roots byte-identical, whatever their length. Otherwise every value must be 32 bytes.
pub fn verify_consistency_raw<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    proof: &[P],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), MerkleError> {
    if check_consistency_sizes(size1, size2)? {
        if !proof.is_empty() {
            return Err(MerkleError::WrongProofLength {
                expected: 0,
                actual: proof.len(),
            });
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(MerkleError::SameSizeDifferentRoots(size1))
        };
    }
    let root1 = hash_from_slice(root1)?;
    let root2 = hash_from_slice(root2)?;
    verify_consistency(size1, size2, &hashes_from_slices(proof)?, &root1, &root2)
}

/// An append-only Merkle tree that stores only the roots of its perfect subtrees: the compact
/// range `[0, size)`.
///
/// A tree of `size` leaves has one perfect subtree per set bit of `size`, largest (leftmost)
/// first, so the state is at most 64 hashes. Appending costs one leaf and, amortised, one
/// node hash; the root folds the subtrees right to left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRange {
    size: u64,
    subtrees: Vec<Hash>,
}

impl CompactRange {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a tree from its size and the roots of its perfect subtrees, largest first
    /// (for instance read from stored tiles).
    pub fn from_subtrees(size: u64, subtrees: Vec<Hash>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if size > 1 << 63 {
            return Err(MerkleError::TreeFull);
        }
        if subtrees.len() != expected {
            return Err(MerkleError::WrongSubtreeCount {
                size,
                expected,
                actual: subtrees.len(),
            });
        }
        Ok(Self { size, subtrees })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the perfect subtrees, largest (leftmost) first.
    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        if self.size >= 1 << 63 {
            return Err(MerkleError::TreeFull);
        }
        // Each trailing one bit of the old size is a perfect subtree of the same height as
        // the one being carried, so the two merge, exactly like a binary increment.
        let mut carry = leaf;
        let mut bits = self.size;
        while bits & 1 == 1 {
            let left = self.subtrees.pop().expect("one subtree per set bit");
            carry = node_hash(&left, &carry);
            bits >>= 1;
        }
        self.subtrees.push(carry);
        self.size += 1;
        Ok(())
    }

    /// Appends several leaf hashes in order.
    pub fn extend<'a>(
        &mut self,
        leaves: impl IntoIterator<Item = &'a Hash>,
    ) -> Result<(), MerkleError> {
        leaves.into_iter().try_for_each(|leaf| self.push(*leaf))
    }

    /// The root hash of the tree; [`empty_root`] when it has no leaves.
    pub fn root(&self) -> Hash {
        root_from_subtrees_unchecked(&self.subtrees)
    }
}

/// Folds perfect-subtree roots (largest first) into the tree root.
fn root_from_subtrees_unchecked(subtrees: &[Hash]) -> Hash {
    let mut iter = subtrees.iter().rev();
    match iter.next() {
        None => empty_root(),
        Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
    }
}

/// The root of a tree of `size` leaves from the roots of its perfect subtrees, largest first.
pub fn root_from_subtrees(size: u64, subtrees: &[Hash]) -> Result<Hash, MerkleError> {
    let expected = size.count_ones() as usize;
    if subtrees.len() != expected {
        return Err(MerkleError::WrongSubtreeCount {
            size,
            expected,
            actual: subtrees.len(),
        });
    }
    Ok(root_from_subtrees_unchecked(subtrees))
}

/// The perfect subtrees that make up a tree of `size` leaves, largest first, as
/// `(height, index)`: subtree `index` of height `height` covers leaves
/// `[index << height, (index + 1) << height)`.
pub fn perfect_subtrees(size: u64) -> impl Iterator<Item = (u32, u64)> {
    (0..64u32).rev().filter_map(move |height| {
        if (size >> height) & 1 == 1 {
            // The subtrees before this one cover the higher bits of size.
            let begin = size & !(2u64 << height).wrapping_sub(1);
            Some((height, begin >> height))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The RFC 6962 definition, written recursively, as an oracle for the iterative code.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn hasher_vectors() {
        assert_eq!(
            hex::encode(leaf_hash(b"L123456")),
            "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
        );
        let mut l = [0u8; 32];
        let mut r = [0u8; 32];
        // The Go test hashes 4-byte children; ours are fixed-width, so check the layout
        // with raw SHA-256 instead.
        l[..4].copy_from_slice(b"N123");
        r[..4].copy_from_slice(b"N456");
        let mut buf = vec![1u8];
        buf.extend_from_slice(&l);
        buf.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), <[u8; 32]>::from(Sha256::digest(&buf)));
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn roots_match_the_recursive_definition() {
        for n in 0..70 {
            let l = leaves(n);
            assert_eq!(root_from_leaf_hashes(&l), mth(&l), "n = {n}");
            let subtrees: Vec<Hash> = perfect_subtrees(n)
                .map(|(h, i)| mth(&l[(i << h) as usize..((i + 1) << h) as usize]))
                .collect();
            assert_eq!(root_from_subtrees(n, &subtrees).unwrap(), mth(&l));
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..40u64 {
            let l = leaves(n);
            let root = mth(&l);
            for i in 0..n {
                let proof = inclusion_proof(&l, i).unwrap();
                verify_inclusion(&l[i as usize], i, n, &proof, &root).unwrap();
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = leaf_hash(first);
                    assert!(verify_inclusion(&l[i as usize], i, n, &bad, &root).is_err());
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert!(matches!(
                    verify_inclusion(&l[i as usize], i, n, &longer, &root),
                    Err(MerkleError::WrongProofLength { .. })
                ));
            }
            assert!(inclusion_proof(&l, n).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies() {
        for n in 1..40u64 {
            let l = leaves(n);
            let root2 = mth(&l);
            for m in 1..=n {
                let root1 = mth(&l[..m as usize]);
                let proof = consistency_proof(&l, m).unwrap();
                verify_consistency(m, n, &proof, &root1, &root2)
                    .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
                if m < n {
                    assert!(verify_consistency(m, n, &proof, &root2, &root2).is_err());
                }
            }
            assert_eq!(consistency_proof(&l, 0), Err(MerkleError::EmptyOldTree));
        }
    }

    #[test]
    fn size_zero_consistency_is_rejected() {
        let e = empty_root();
        assert_eq!(
            verify_consistency(0, 0, &[], &e, &e),
            Err(MerkleError::EmptyOldTree)
        );
    }

    #[test]
    fn range_hash_matches_slices() {
        let l = leaves(37);
        let node = |h: u32, i: u64| -> Result<Hash, MerkleError> {
            Ok(mth(&l[(i << h) as usize..((i + 1) << h) as usize]))
        };
        assert_eq!(range_hash_with(0, 37, node).unwrap(), mth(&l));
        assert_eq!(range_hash_with(32, 37, node).unwrap(), mth(&l[32..]));
        assert_eq!(range_hash_with(16, 32, node).unwrap(), mth(&l[16..32]));
    }

    #[test]
    fn compact_range_restores() {
        let l = leaves(23);
        let mut a = CompactRange::new();
        a.extend(&l).unwrap();
        let b = CompactRange::from_subtrees(23, a.subtrees().to_vec()).unwrap();
        assert_eq!(a, b);
        assert!(CompactRange::from_subtrees(23, vec![]).is_err());
        assert_eq!(a.root(), mth(&l));
    }
}

//! The divergence rules of log monitoring: how a newly fetched checkpoint relates to the
//! last verified one, how a stored receipt is re-verified against a verified tree, and the
//! key that makes one divergence be raised once.
//!
//! A log is trusted to stay append-only and to show every reader the same tree. The rules:
//! two checkpoints of one origin with the same size and different roots are a *fork* (a
//! *split view* when different nodes saw them); a size smaller than one already verified is
//! a *rollback*; a bigger tree must come with a consistency proof from the verified one;
//! a checkpoint must carry a trusted signature; and every stored receipt must be included
//! in the verified tree.

use sha2::{Digest, Sha256};

use super::merkle::{self, Hash};
use super::receipt::InclusionProof;

/// What kind of misbehaviour a divergence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DivergenceKind {
    /// Two signed checkpoints of one origin with the same size and different roots.
    Fork,
    /// A checkpoint smaller than one already verified.
    Rollback,
    /// A bigger checkpoint whose consistency proof with the verified one fails.
    ConsistencyFailed,
    /// A checkpoint whose signature (or origin) does not verify with the trusted keys.
    BadSignature,
    /// A stored receipt that is not included in the verified tree.
    InclusionFailed,
}

impl DivergenceKind {
    /// Every kind, for metrics that start at zero.
    pub const ALL: [DivergenceKind; 5] = [
        DivergenceKind::Fork,
        DivergenceKind::Rollback,
        DivergenceKind::ConsistencyFailed,
        DivergenceKind::BadSignature,
        DivergenceKind::InclusionFailed,
    ];

    /// The stored and published spelling (a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            DivergenceKind::Fork => "fork",
            DivergenceKind::Rollback => "rollback",
            DivergenceKind::ConsistencyFailed => "consistency_failed",
            DivergenceKind::BadSignature => "bad_signature",
            DivergenceKind::InclusionFailed => "inclusion_failed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The parts of a checkpoint the rules compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    /// The origin line.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root: Hash,
}

/// How a fetched checkpoint relates to the last verified one of its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing verified for this origin yet (a new log or a new shard): trusted on first use.
    First,
    /// The same size and root as the verified one: nothing to do.
    Unchanged,
    /// The tree grew from `from` to `to` leaves: a consistency proof must show it.
    Grew {
        /// The verified size.
        from: u64,
        /// The fetched size.
        to: u64,
    },
    /// The verified tree was empty: every tree extends it, no proof needed.
    GrewFromEmpty,
    /// The same size with another root.
    Fork,
    /// A smaller size than verified.
    Rollback,
}

/// Compares a fetched tree head with the last verified one of the same origin.
pub fn classify(verified: Option<&TreeHead>, fetched: &TreeHead) -> Step {
    let Some(v) = verified else {
        return Step::First;
    };
    match fetched.size.cmp(&v.size) {
        std::cmp::Ordering::Less => Step::Rollback,
        std::cmp::Ordering::Equal if fetched.root == v.root => Step::Unchanged,
        std::cmp::Ordering::Equal => Step::Fork,
        std::cmp::Ordering::Greater if v.size == 0 => Step::GrewFromEmpty,
        std::cmp::Ordering::Greater => Step::Grew {
            from: v.size,
            to: fetched.size,
        },
    }
}

/// Verifies that `new` extends `old` with `proof` (sizes as given, `old.size < new.size`).
pub fn check_consistency(
    old: &TreeHead,
    new: &TreeHead,
    proof: &[Hash],
) -> Result<(), merkle::MerkleError> {
    if old.size == 0 {
        return Ok(());
    }
    merkle::verify_consistency(old.size, new.size, proof, &old.root, &new.root)
}

/// Why a stored receipt does not re-verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InclusionFailure {
    /// The receipt's own proof does not lead from its body to its root.
    #[error("the receipt's inclusion proof does not lead to its root: {0}")]
    Proof(merkle::MerkleError),
    /// The receipt's tree has the verified tree's size but another root.
    #[error("the receipt's tree of size {0} has another root than the verified checkpoint")]
    OtherRoot(u64),
    /// The receipt's tree is not consistent with the verified tree.
    #[error(
        "the receipt's tree of size {receipt_size} is not consistent with the verified tree of size {verified_size}: {error}"
    )]
    Inconsistent {
        /// The receipt's tree size.
        receipt_size: u64,
        /// The verified tree size.
        verified_size: u64,
        /// What failed.
        error: merkle::MerkleError,
    },
}

/// What re-verifying a receipt needs besides its own proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptCheck {
    /// Its tree is the verified one: compare roots.
    SameTree,
    /// A consistency proof between the receipt's tree and the verified one, smaller first.
    Consistency {
        /// The smaller size.
        from: u64,
        /// The bigger size.
        to: u64,
    },
}

/// What proof re-verifying a receipt whose proof is for `receipt_size` needs against a
/// verified tree of `verified_size`.
pub fn receipt_check(receipt_size: u64, verified_size: u64) -> ReceiptCheck {
    match receipt_size.cmp(&verified_size) {
        std::cmp::Ordering::Equal => ReceiptCheck::SameTree,
        std::cmp::Ordering::Less => ReceiptCheck::Consistency {
            from: receipt_size,
            to: verified_size,
        },
        std::cmp::Ordering::Greater => ReceiptCheck::Consistency {
            from: verified_size,
            to: receipt_size,
        },
    }
}

/// Re-verifies a stored receipt against a verified tree: its body is included in its own
/// proof's tree (leaf hash, index, sibling hashes), and that tree and the verified one are
/// the same log (equal roots, or `consistency` between them as [`receipt_check`] asked).
/// Together: the entry is in the verified tree, since the index is below both sizes.
pub fn reverify_receipt(
    body: &[u8],
    proof: &InclusionProof,
    verified: &TreeHead,
    consistency: &[Hash],
) -> Result<(), InclusionFailure> {
    let leaf = merkle::leaf_hash(body);
    merkle::verify_inclusion(
        &leaf,
        proof.log_index,
        proof.tree_size,
        &proof.hashes,
        &proof.root_hash,
    )
    .map_err(InclusionFailure::Proof)?;
    match receipt_check(proof.tree_size, verified.size) {
        ReceiptCheck::SameTree if proof.root_hash == verified.root => Ok(()),
        ReceiptCheck::SameTree => Err(InclusionFailure::OtherRoot(proof.tree_size)),
        ReceiptCheck::Consistency { from, to } => {
            let (old, new) = if from == proof.tree_size {
                (proof.root_hash, verified.root)
            } else {
                (verified.root, proof.root_hash)
            };
            merkle::verify_consistency(from, to, consistency, &old, &new).map_err(|error| {
                InclusionFailure::Inconsistent {
                    receipt_size: proof.tree_size,
                    verified_size: verified.size,
                    error,
                }
            })
        }
    }
}

/// The key under which a divergence is stored once: the kind and what identifies the
/// evidence. The same fork seen on every tick or by several nodes has one key.
pub fn dedupe_key(kind: DivergenceKind, origin: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(origin.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    format!("{}:{}", kind.as_str(), hex::encode(h.finalize()))
}

/// The dedupe key of a fork: the origin, size and the two roots in either order.
pub fn fork_key(origin: &str, size: u64, a: &Hash, b: &Hash) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    dedupe_key(
        DivergenceKind::Fork,
        origin,
        &[&size.to_string(), &hex::encode(lo), &hex::encode(hi)],
    )
}

/// The text of a signed note without its signature lines: the part a log cannot vary
/// between fetches of the same tree (ECDSA signatures differ on every signing).
pub fn note_body(note: &str) -> &str {
    note.split_once("\n\n").map_or(note, |(body, _)| body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(size: u64, root: u8) -> TreeHead {
        TreeHead {
            origin: "log.example".into(),
            size,
            root: [root; 32],
        }
    }

    #[test]
    fn classify_covers_every_relation() {
        assert_eq!(classify(None, &head(5, 1)), Step::First);
        assert_eq!(classify(Some(&head(5, 1)), &head(5, 1)), Step::Unchanged);
        assert_eq!(classify(Some(&head(5, 1)), &head(5, 2)), Step::Fork);
        assert_eq!(classify(Some(&head(5, 1)), &head(4, 1)), Step::Rollback);
        assert_eq!(
            classify(Some(&head(5, 1)), &head(9, 2)),
            Step::Grew { from: 5, to: 9 }
        );
        assert_eq!(
            classify(Some(&head(0, 0)), &head(3, 2)),
            Step::GrewFromEmpty
        );
    }

    fn leaves(n: usize, tag: u8) -> Vec<Hash> {
        (0..n).map(|i| merkle::leaf_hash(&[tag, i as u8])).collect()
    }

    #[test]
    fn consistency_holds_for_an_extension_and_fails_for_a_fork() {
        let l = leaves(9, 0);
        let old = TreeHead {
            origin: "o".into(),
            size: 5,
            root: merkle::root_from_leaf_hashes(&l[..5]),
        };
        let new = TreeHead {
            origin: "o".into(),
            size: 9,
            root: merkle::root_from_leaf_hashes(&l),
        };
        let proof = merkle::consistency_proof(&l, 5).unwrap();
        check_consistency(&old, &new, &proof).unwrap();
        let mut forked = l.clone();
        forked[2] = merkle::leaf_hash(b"other");
        let new_forked = TreeHead {
            root: merkle::root_from_leaf_hashes(&forked),
            ..new
        };
        let proof = merkle::consistency_proof(&forked, 5).unwrap();
        assert!(check_consistency(&old, &new_forked, &proof).is_err());
        check_consistency(&head(0, 0), &new_forked, &[]).unwrap();
    }

    #[test]
    fn receipts_reverify_against_older_same_and_newer_trees() {
        let bodies: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 3]).collect();
        let l: Vec<Hash> = bodies.iter().map(|b| merkle::leaf_hash(b)).collect();
        let proof_at = |index: usize, size: usize| InclusionProof {
            log_index: index as u64,
            tree_size: size as u64,
            root_hash: merkle::root_from_leaf_hashes(&l[..size]),
            hashes: merkle::inclusion_proof(&l[..size], index as u64).unwrap(),
            checkpoint: None,
        };
        let tree = |size: usize| TreeHead {
            origin: "o".into(),
            size: size as u64,
            root: merkle::root_from_leaf_hashes(&l[..size]),
        };
        // Same tree.
        reverify_receipt(&bodies[3], &proof_at(3, 8), &tree(8), &[]).unwrap();
        // The receipt's tree is older than the verified one.
        let c = merkle::consistency_proof(&l[..12], 8).unwrap();
        assert_eq!(
            receipt_check(8, 12),
            ReceiptCheck::Consistency { from: 8, to: 12 }
        );
        reverify_receipt(&bodies[3], &proof_at(3, 8), &tree(12), &c).unwrap();
        // The receipt's tree is newer than the verified one.
        let c = merkle::consistency_proof(&l[..12], 6).unwrap();
        reverify_receipt(&bodies[3], &proof_at(3, 12), &tree(6), &c).unwrap();
        // A tampered body, another root, an inconsistent tree.
        assert!(matches!(
            reverify_receipt(b"tampered", &proof_at(3, 8), &tree(8), &[]),
            Err(InclusionFailure::Proof(_))
        ));
        let mut other = tree(8);
        other.root = [7; 32];
        assert_eq!(
            reverify_receipt(&bodies[3], &proof_at(3, 8), &other, &[]),
            Err(InclusionFailure::OtherRoot(8))
        );
        let mut other = tree(12);
        other.root = [7; 32];
        let c = merkle::consistency_proof(&l[..12], 8).unwrap();
        assert!(matches!(
            reverify_receipt(&bodies[3], &proof_at(3, 8), &other, &c),
            Err(InclusionFailure::Inconsistent { .. })
        ));
    }

    #[test]
    fn keys_identify_the_evidence_not_the_order_or_the_signature() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(fork_key("o", 5, &a, &b), fork_key("o", 5, &b, &a));
        assert_ne!(fork_key("o", 5, &a, &b), fork_key("o", 6, &a, &b));
        assert!(fork_key("o", 5, &a, &b).starts_with("fork:"));
        assert_eq!(
            note_body("o\n5\nroot\n\n\u{2014} o sig1\n"),
            note_body("o\n5\nroot\n\n\u{2014} o sig2\n")
        );
        for k in DivergenceKind::ALL {
            assert_eq!(DivergenceKind::parse(k.as_str()), Some(k));
        }
    }
}

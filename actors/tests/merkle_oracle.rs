//! Property tests of the Merkle code against `ct-merkle`, an independent RFC 6962
//! implementation: on random trees both must agree on roots, inclusion proofs and
//! consistency proofs, and each must accept the other's proofs.

use actors::domain::merkle::{
    CompactRange, Hash, consistency_proof, inclusion_proof, leaf_hash, root_from_leaf_hashes,
    verify_consistency, verify_inclusion,
};
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use proptest::prelude::*;
use sha2::Sha256;

fn oracle(entries: &[Vec<u8>]) -> MemoryBackedTree<Sha256, Vec<u8>> {
    let mut tree = MemoryBackedTree::new();
    for e in entries {
        tree.push(e.clone());
    }
    tree
}

fn hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks(32)
        .map(|c| c.try_into().expect("32-byte chunks"))
        .collect()
}

fn entries() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 1..130)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn roots_agree(entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..130)) {
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let ours = root_from_leaf_hashes(&leaves);
        let theirs: Hash = oracle(&entries).root().as_bytes().as_slice().try_into().unwrap();
        prop_assert_eq!(ours, theirs);
        let mut range = CompactRange::new();
        range.extend(&leaves).unwrap();
        prop_assert_eq!(range.root(), ours);
    }

    #[test]
    fn inclusion_proofs_agree(entries in entries(), pick in any::<prop::sample::Index>()) {
        let n = entries.len();
        let index = pick.index(n);
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let tree = oracle(&entries);
        let root = root_from_leaf_hashes(&leaves);

        let ours = inclusion_proof(&leaves, index as u64).unwrap();
        let theirs = tree.prove_inclusion(index);
        prop_assert_eq!(&ours, &hashes(theirs.as_bytes()));

        verify_inclusion(&leaves[index], index as u64, n as u64, &ours, &root).unwrap();
        let ours_for_them = InclusionProof::<Sha256>::from_digests(
            ours.iter().map(|h| h.into()),
        );
        tree.root()
            .verify_inclusion(&entries[index], index as u64, &ours_for_them)
            .unwrap();
    }

    #[test]
    fn consistency_proofs_agree(entries in entries(), pick in any::<prop::sample::Index>()) {
        let n = entries.len();
        let size1 = pick.index(n) + 1;
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let tree = oracle(&entries);
        let old_tree = oracle(&entries[..size1]);
        let root1 = root_from_leaf_hashes(&leaves[..size1]);
        let root2 = root_from_leaf_hashes(&leaves);

        let ours = consistency_proof(&leaves, size1 as u64).unwrap();
        verify_consistency(size1 as u64, n as u64, &ours, &root1, &root2).unwrap();
        // ct-merkle only proves strict extensions.
        if size1 < n {
            let theirs = tree.prove_consistency(n - size1);
            prop_assert_eq!(&ours, &hashes(theirs.as_bytes()));
            let ours_for_them = ConsistencyProof::<Sha256>::from_digests(
                ours.iter().map(|h| h.into()),
            );
            let old_root: RootHash<Sha256> = old_tree.root();
            tree.root().verify_consistency(&old_root, &ours_for_them).unwrap();
        } else {
            prop_assert!(ours.is_empty());
        }
    }
}

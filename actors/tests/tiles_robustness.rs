//! Random and mutated inputs to tile-path parsing and entry-bundle decoding: they must never
//! panic, and whatever they accept must be canonical.

use actors::domain::tiles::{Tile, TileKind, decode_entry_bundle, encode_entry_bundle};
use proptest::prelude::*;

fn valid_tile() -> impl Strategy<Value = Tile> {
    (
        prop_oneof![(0u8..=63).prop_map(TileKind::Hash), Just(TileKind::Entries)],
        prop_oneof![0u64..2000, any::<u64>()],
        1u16..=256,
    )
        .prop_map(|(kind, index, width)| Tile::new(kind, index, width).unwrap())
}

/// Edits that tend to hit parser edge cases: separators, dots, digits, `x`, `.p`.
fn mutation() -> impl Strategy<Value = (prop::sample::Index, u8, String)> {
    let fragments = prop_oneof![
        Just("/".to_owned()),
        Just("..".to_owned()),
        Just(".p/".to_owned()),
        Just("x".to_owned()),
        Just("0".to_owned()),
        Just("9".to_owned()),
        Just("\\".to_owned()),
        Just("\u{0}".to_owned()),
        Just("é".to_owned()),
        "[0-9x./p]{1,4}",
    ];
    (any::<prop::sample::Index>(), 0u8..3, fragments)
}

fn mutate(path: &str, (at, op, fragment): &(prop::sample::Index, u8, String)) -> String {
    let mut chars: Vec<char> = path.chars().collect();
    let i = at.index(chars.len() + 1);
    match op {
        0 => {
            chars.splice(i..i, fragment.chars());
        }
        1 if i < chars.len() => {
            chars.remove(i);
        }
        _ if i < chars.len() => {
            chars.splice(i..=i, fragment.chars());
        }
        _ => chars.extend(fragment.chars()),
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(path in ".{0,80}") {
        if let Ok(tile) = Tile::parse(&path) {
            prop_assert_eq!(tile.path(), path);
        }
    }

    #[test]
    fn tile_like_strings_never_panic(path in "(/|tile/)?(entries|[0-9]{1,3})?(/x?[0-9]{1,4}){0,8}(\\.p/[0-9]{1,4})?/?") {
        if let Ok(tile) = Tile::parse(&path) {
            prop_assert_eq!(tile.path(), path);
        }
    }

    #[test]
    fn mutated_paths_never_panic_and_stay_canonical(
        tile in valid_tile(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let path = tile.path();
        prop_assert_eq!(Tile::parse(&path).unwrap(), tile);
        let mut mutated = path;
        for m in &mutations {
            mutated = mutate(&mutated, m);
        }
        // Whatever still parses must print back to exactly the same path: one tile, one path.
        if let Ok(parsed) = Tile::parse(&mutated) {
            prop_assert_eq!(parsed.path(), mutated);
        }
    }

    #[test]
    fn arbitrary_bundles_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(entries) = decode_entry_bundle(&bytes) {
            prop_assert_eq!(encode_entry_bundle(&entries).unwrap(), bytes);
        }
    }

    #[test]
    fn mutated_bundles_never_panic(
        entries in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..20),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let bundle = encode_entry_bundle(&entries).unwrap();
        prop_assert_eq!(decode_entry_bundle(&bundle).unwrap(), entries);
        if !bundle.is_empty() {
            let mut flipped = bundle.clone();
            flipped[flip.index(bundle.len())] ^= 1 << bit;
            let _ = decode_entry_bundle(&flipped);
            let truncated = &bundle[..cut.index(bundle.len())];
            let _ = decode_entry_bundle(truncated);
        }
    }
}

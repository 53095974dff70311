//! C2SP tlog-tiles: tile paths, entry bundles, and tree hashes and proofs computed from tiles.
//!
//! A tiled log publishes its Merkle tree as *hash tiles*: the tile at level `L` and index `N`
//! holds up to 256 consecutive hashes of height `8 * L` (level 0 holds leaf hashes), 32 bytes
//! each. The log entries themselves are published in *entry bundles*, one per level-0 tile,
//! each a sequence of `u16` big-endian length-prefixed entries.
//!
//! Paths are `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, where `<N>` is written in
//! 3-digit groups, most significant first, each but the last prefixed with `x`
//! (1234067 → `x001/x234/067`), and `.p/<W>` marks a partial tile of `W` (1..=255) hashes or
//! entries. [`Tile::parse`] accepts only the canonical form, so one tile has one path, and
//! rejects anything that could escape the log's directory.
//!
//! Everything here is synchronous and I/O-free: tiles come from a caller's [`TileReader`].
//! [`TiledTree`] computes roots and builds inclusion and consistency proofs from tiles, and
//! [`verify_tiles`] checks every tile and entry bundle a tree size implies against a root.
//!
//! A partial tile holds only complete subtrees, so every hash in it is final; but partial
//! tiles are never hashed into the level above, since that would be a subtree that does not
//! exist yet.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::domain::merkle::{
    HASH_LEN, Hash, MerkleError, consistency_proof_with, inclusion_proof_with, leaf_hash,
    range_hash_with, root_from_leaf_hashes,
};

/// The height of a tile: each tile level spans 8 levels of the Merkle tree.
pub const TILE_HEIGHT: u32 = 8;

/// The number of hashes in a full tile, and of entries in a full entry bundle.
pub const TILE_WIDTH: u16 = 1 << TILE_HEIGHT;

/// The highest tile level a path may name.
pub const MAX_LEVEL: u8 = 63;

/// The largest entry an entry bundle can hold (its length prefix is a `u16`).
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// Paths longer than this are rejected before parsing; the longest valid path is 52 bytes.
const MAX_PATH_LEN: usize = 64;

/// An error reported by a [`TileReader`].
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// Why a tile path, an entry bundle, a tile, or a check against tiles was rejected.
#[derive(Debug, Error)]
pub enum TileError {
    /// The path is longer than any valid tile path.
    #[error("tile path is too long ({0} bytes)")]
    PathTooLong(usize),
    /// The path has empty, `.` or `..` components, a leading `/`, a backslash, or characters
    /// outside printable ASCII, any of which could escape the log's directory.
    #[error("unsafe tile path {0:?}")]
    UnsafePath(String),
    /// The path does not start with `tile/`.
    #[error("not a tile path: {0:?}")]
    NotATilePath(String),
    /// The level is not a decimal 0..=63 without leading zeros.
    #[error("bad tile level {0:?}")]
    BadLevel(String),
    /// The index is missing or a group is not `xDDD` (or `DDD` for the last group).
    #[error("bad tile index {0:?}")]
    BadIndex(String),
    /// The index starts with a zero group (`x000/...`), so it is not the one canonical path.
    #[error("non-canonical tile index {0:?}")]
    NonCanonicalIndex(String),
    /// The index does not fit in 64 bits.
    #[error("tile index {0:?} is too large")]
    IndexOverflow(String),
    /// The partial width is not a decimal 1..=255 without leading zeros.
    #[error("bad partial tile width {0:?}")]
    BadWidth(String),
    /// The path has components after the index (or after the partial width).
    #[error("unexpected trailing components in tile path {0:?}")]
    TrailingComponents(String),
    /// A tile was constructed with a width outside 1..=256.
    #[error("tile width {0} is outside 1..=256")]
    WidthOutOfRange(u16),
    /// An entry bundle ends in the middle of a length prefix.
    #[error("entry bundle truncated in the length prefix of entry {index} at byte {offset}")]
    TruncatedLength {
        /// The position of the entry in the bundle.
        index: usize,
        /// The byte offset of the incomplete prefix.
        offset: usize,
    },
    /// An entry bundle ends before the bytes an entry's prefix announces.
    #[error("entry bundle truncated: entry {index} declares {declared} bytes, {available} remain")]
    TruncatedEntry {
        /// The position of the entry in the bundle.
        index: usize,
        /// The length the prefix declares.
        declared: usize,
        /// The bytes left in the bundle.
        available: usize,
    },
    /// An entry bundle holds more entries than a bundle may (256).
    #[error("entry bundle holds more than {TILE_WIDTH} entries")]
    TooManyEntries,
    /// An entry is too large for the `u16` length prefix.
    #[error("entry {index} has {len} bytes, more than {MAX_ENTRY_LEN}")]
    EntryTooLarge {
        /// The position of the entry.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// An entry bundle holds a different number of entries than its tile's width.
    #[error("entry bundle {tile} holds {actual} entries, expected {expected}")]
    WrongEntryCount {
        /// The bundle's path.
        tile: String,
        /// The width the tree size implies.
        expected: usize,
        /// The number of entries found.
        actual: usize,
    },
    /// A hash tile does not have the length its width implies.
    #[error("hash tile {tile} has {actual} bytes, expected {expected}")]
    WrongTileLength {
        /// The tile's path.
        tile: String,
        /// The length its width implies.
        expected: usize,
        /// Its length.
        actual: usize,
    },
    /// Neither the tile nor (for a partial tile) the full tile exists.
    #[error("missing tile {0}")]
    MissingTile(String),
    /// The reader failed.
    #[error("reading {tile}: {source}")]
    Read {
        /// The tile being read.
        tile: String,
        /// The reader's error.
        source: ReadError,
    },
    /// A node outside the tree was asked for.
    #[error("subtree {index} of height {height} is not complete in a tree of size {size}")]
    NodeOutOfRange {
        /// The subtree's height.
        height: u32,
        /// The subtree's index at that height.
        index: u64,
        /// The size of the tree the tiles describe.
        size: u64,
    },
    /// A proof was asked for a tree larger than the one the tiles describe.
    #[error("tree size {requested} is larger than the tiled tree size {size}")]
    SizeTooLarge {
        /// The requested tree size.
        requested: u64,
        /// The size of the tree the tiles describe.
        size: u64,
    },
    /// An entry does not hash to the leaf hash in the level-0 tile.
    #[error("entry {index} does not match its leaf hash in the hash tile")]
    LeafMismatch {
        /// The entry's index in the log.
        index: u64,
    },
    /// A hash in a tile above level 0 is not the root of the full tile below it.
    #[error("hash {position} of tile {tile} does not match the tile below it")]
    LevelMismatch {
        /// The tile holding the bad hash.
        tile: String,
        /// The position of the hash in the tile.
        position: usize,
    },
    /// The root computed from the tiles differs from the expected root.
    #[error("the tiles give a different root for tree size {0}")]
    RootMismatch(u64),
    /// A Merkle computation failed.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
}

/// What a tile holds: hashes at a level, or log entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    /// A hash tile at the given level (0..=63).
    Hash(u8),
    /// An entry bundle.
    Entries,
}

/// One tile or entry bundle: its kind, index and width.
///
/// The width is 1..=256; 256 is a full tile, which has no `.p/` suffix in its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    kind: TileKind,
    index: u64,
    width: u16,
}

impl Tile {
    /// A tile, checking that the level is at most 63 and the width is 1..=256.
    pub fn new(kind: TileKind, index: u64, width: u16) -> Result<Self, TileError> {
        if let TileKind::Hash(level) = kind
            && level > MAX_LEVEL
        {
            return Err(TileError::BadLevel(level.to_string()));
        }
        if !(1..=TILE_WIDTH).contains(&width) {
            return Err(TileError::WidthOutOfRange(width));
        }
        Ok(Self { kind, index, width })
    }

    /// What the tile holds.
    pub fn kind(&self) -> TileKind {
        self.kind
    }

    /// The tile's index at its level.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The number of hashes or entries in the tile.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Whether the tile holds all 256 hashes or entries.
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// The full tile at the same position, which a log serves once the partial one is complete.
    pub fn full(&self) -> Self {
        Self {
            width: TILE_WIDTH,
            ..*self
        }
    }

    /// The tile's path relative to the log's prefix, e.g. `tile/0/x001/234.p/5`.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// Parses a canonical tile path (see the module documentation).
    pub fn parse(path: &str) -> Result<Self, TileError> {
        if path.len() > MAX_PATH_LEN {
            return Err(TileError::PathTooLong(path.len()));
        }
        let unsafe_path = || TileError::UnsafePath(path.to_owned());
        if !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains('\\') {
            return Err(unsafe_path());
        }
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(unsafe_path());
        }
        if parts.len() < 3 || parts[0] != "tile" {
            return Err(TileError::NotATilePath(path.to_owned()));
        }
        let kind = if parts[1] == "entries" {
            TileKind::Entries
        } else {
            TileKind::Hash(parse_level(parts[1])?)
        };

        // The index runs up to the first group that ends in `.p` (followed by exactly one
        // width component) or to the end of the path.
        let groups = &parts[2..];
        let (groups, width) = match groups.iter().position(|g| g.ends_with(".p")) {
            Some(pos) => {
                if groups.len() != pos + 2 {
                    return Err(TileError::TrailingComponents(path.to_owned()));
                }
                let mut g = groups[..=pos].to_vec();
                g[pos] = &g[pos][..g[pos].len() - 2];
                (g, parse_width(groups[pos + 1])?)
            }
            None => (groups.to_vec(), TILE_WIDTH),
        };
        let index = parse_index(&groups, path)?;
        Ok(Self { kind, index, width })
    }
}

/// Parses a decimal without leading zeros, up to `max` digits, as a `u64`.
fn parse_decimal(s: &str, max_digits: usize) -> Option<u64> {
    let digits_only =
        !s.is_empty() && s.len() <= max_digits && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn parse_level(s: &str) -> Result<u8, TileError> {
    match parse_decimal(s, 2) {
        Some(level) if level <= u64::from(MAX_LEVEL) => Ok(level as u8),
        _ => Err(TileError::BadLevel(s.to_owned())),
    }
}

fn parse_width(s: &str) -> Result<u16, TileError> {
    match parse_decimal(s, 3) {
        Some(w) if (1..u64::from(TILE_WIDTH)).contains(&w) => Ok(w as u16),
        _ => Err(TileError::BadWidth(s.to_owned())),
    }
}

fn parse_index(groups: &[&str], path: &str) -> Result<u64, TileError> {
    let bad = || TileError::BadIndex(path.to_owned());
    let (last, leading) = groups.split_last().ok_or_else(bad)?;
    let group_value = |g: &str| -> Option<u64> {
        (g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit())).then(|| g.parse().ok())?
    };
    let mut values = Vec::with_capacity(groups.len());
    for g in leading {
        let digits = g.strip_prefix('x').ok_or_else(bad)?;
        values.push(group_value(digits).ok_or_else(bad)?);
    }
    values.push(group_value(last).ok_or_else(bad)?);
    if values.len() > 1 && values[0] == 0 {
        return Err(TileError::NonCanonicalIndex(path.to_owned()));
    }
    values
        .iter()
        .try_fold(0u64, |n, v| n.checked_mul(1000)?.checked_add(*v))
        .ok_or_else(|| TileError::IndexOverflow(path.to_owned()))
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TileKind::Hash(level) => write!(f, "tile/{level}/")?,
            TileKind::Entries => f.write_str("tile/entries/")?,
        }
        let mut groups = Vec::with_capacity(7);
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        let (last, leading) = groups.split_first().expect("at least one group");
        for g in leading.iter().rev() {
            write!(f, "x{g:03}/")?;
        }
        write!(f, "{last:03}")?;
        if !self.is_full() {
            write!(f, ".p/{}", self.width)?;
        }
        Ok(())
    }
}

impl FromStr for Tile {
    type Err = TileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The number of complete hashes at tile level `level` in a tree of `size` leaves.
fn hashes_at_level(level: u8, size: u64) -> u64 {
    size.checked_shr(TILE_HEIGHT * u32::from(level))
        .unwrap_or(0)
}

/// The width of hash tile `index` at `level` in a tree of `size` leaves, or `None` if the tree
/// has no such tile (entry bundles have the widths of the level-0 tiles).
pub fn tile_width(level: u8, index: u64, size: u64) -> Option<u16> {
    let count = hashes_at_level(level, size);
    let start = u128::from(index) * u128::from(TILE_WIDTH);
    let remaining = u128::from(count).checked_sub(start).filter(|r| *r > 0)?;
    Some(remaining.min(u128::from(TILE_WIDTH)) as u16)
}

/// Every hash tile a tree of `size` leaves needs, level by level, full tiles before the
/// partial one at each level.
pub fn hash_tiles_for_size(size: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for level in 0..=MAX_LEVEL {
        let count = hashes_at_level(level, size);
        if count == 0 {
            break;
        }
        tiles.extend(tiles_at(TileKind::Hash(level), count));
    }
    tiles
}

/// Every entry bundle a tree of `size` leaves needs, in order.
pub fn entry_bundles_for_size(size: u64) -> Vec<Tile> {
    tiles_at(TileKind::Entries, size).collect()
}

/// The tiles of one kind that hold `count` items.
fn tiles_at(kind: TileKind, count: u64) -> impl Iterator<Item = Tile> {
    let width = u64::from(TILE_WIDTH);
    (0..count.div_ceil(width)).map(move |index| Tile {
        kind,
        index,
        width: (count - index * width).min(width) as u16,
    })
}

/// Splits an entry bundle into its entries.
pub fn decode_entry_bundle(bundle: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < bundle.len() {
        let index = entries.len();
        if index == usize::from(TILE_WIDTH) {
            return Err(TileError::TooManyEntries);
        }
        let prefix = bundle
            .get(offset..offset + 2)
            .ok_or(TileError::TruncatedLength { index, offset })?;
        let declared = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        offset += 2;
        let available = bundle.len() - offset;
        if declared > available {
            return Err(TileError::TruncatedEntry {
                index,
                declared,
                available,
            });
        }
        entries.push(&bundle[offset..offset + declared]);
        offset += declared;
    }
    Ok(entries)
}

/// Encodes entries into an entry bundle.
pub fn encode_entry_bundle<T: AsRef<[u8]>>(entries: &[T]) -> Result<Vec<u8>, TileError> {
    if entries.len() > usize::from(TILE_WIDTH) {
        return Err(TileError::TooManyEntries);
    }
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.as_ref().len() + 2).sum());
    for (index, entry) in entries.iter().enumerate() {
        let entry = entry.as_ref();
        let len = u16::try_from(entry.len()).map_err(|_| TileError::EntryTooLarge {
            index,
            len: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// A source of tiles: a directory, an HTTP client's cache, a map in a test.
pub trait TileReader {
    /// Returns the bytes of `tile` (read at [`Tile::path`]), or `Ok(None)` if the source has
    /// no such tile.
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError>;
}

impl TileReader for HashMap<String, Vec<u8>> {
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.get(&tile.path()).cloned())
    }
}

impl<R: TileReader + ?Sized> TileReader for &mut R {
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError> {
        (**self).read_tile(tile)
    }
}

/// Reads a tile, falling back from a missing partial tile to the full one, as a log may
/// already have replaced it. Returns the bytes and whether they came from the full tile.
fn read_with_fallback<R: TileReader + ?Sized>(
    reader: &mut R,
    tile: &Tile,
) -> Result<(Vec<u8>, bool), TileError> {
    let read = |reader: &mut R, t: &Tile| {
        reader.read_tile(t).map_err(|source| TileError::Read {
            tile: t.path(),
            source,
        })
    };
    if let Some(bytes) = read(reader, tile)? {
        return Ok((bytes, false));
    }
    if !tile.is_full()
        && let Some(bytes) = read(reader, &tile.full())?
    {
        return Ok((bytes, true));
    }
    Err(TileError::MissingTile(tile.path()))
}

/// Reads a hash tile and checks its length; a full tile read in place of a partial one is
/// cut to the partial width.
pub fn read_hash_tile<R: TileReader + ?Sized>(
    reader: &mut R,
    tile: &Tile,
) -> Result<Vec<Hash>, TileError> {
    let (bytes, from_full) = read_with_fallback(reader, tile)?;
    Ok(hashes_of(tile, &bytes, from_full)?
        .chunks_exact(HASH_LEN)
        .map(|c| c.try_into().expect("chunks_exact gives 32 bytes"))
        .collect())
}

/// The hash bytes of `tile` in `bytes` as stored (the full tile when `from_full`), after
/// checking the stored length; a full tile is cut to the partial width.
fn hashes_of<'a>(tile: &Tile, bytes: &'a [u8], from_full: bool) -> Result<&'a [u8], TileError> {
    let stored_width = if from_full { TILE_WIDTH } else { tile.width };
    let expected = usize::from(stored_width) * HASH_LEN;
    if bytes.len() != expected {
        let shown = if from_full { tile.full() } else { *tile };
        return Err(TileError::WrongTileLength {
            tile: shown.path(),
            expected,
            actual: bytes.len(),
        });
    }
    Ok(&bytes[..usize::from(tile.width) * HASH_LEN])
}

/// The entries of bundle `tile` in `bytes` as stored (the full bundle when `from_full`),
/// after checking the stored entry count; a full bundle is cut to the partial width.
fn entries_of<'a>(
    tile: &Tile,
    bytes: &'a [u8],
    from_full: bool,
) -> Result<Vec<&'a [u8]>, TileError> {
    let mut entries = decode_entry_bundle(bytes)?;
    let stored_width = usize::from(if from_full { TILE_WIDTH } else { tile.width });
    if entries.len() != stored_width {
        let shown = if from_full { tile.full() } else { *tile };
        return Err(TileError::WrongEntryCount {
            tile: shown.path(),
            expected: stored_width,
            actual: entries.len(),
        });
    }
    entries.truncate(usize::from(tile.width));
    Ok(entries)
}

/// Reads an entry bundle and checks its entry count; a full bundle read in place of a partial
/// one is cut to the partial width.
pub fn read_entry_bundle<R: TileReader + ?Sized>(
    reader: &mut R,
    tile: &Tile,
) -> Result<Vec<Vec<u8>>, TileError> {
    let (bytes, from_full) = read_with_fallback(reader, tile)?;
    Ok(entries_of(tile, &bytes, from_full)?
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect())
}

/// A tile's bytes as a reader returned them: the tile itself, or the full tile at its
/// position standing in for a partial one (`from_full`), which is cut to the partial width.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The bytes read.
    pub bytes: &'a [u8],
    /// Whether they are the full tile read in place of a partial one.
    pub from_full: bool,
}

/// What checking a level-0 tile with [`check_leaf_tile`] gives for the levels above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafTile {
    /// A full tile's root, which the level-1 tile above must hold.
    Full(Hash),
    /// A partial tile's leaf hashes, which only the tree's root covers.
    Partial(Vec<Hash>),
}

/// Checks level-0 tile `tile` (`hashes`) and, when given, its entry bundle (`bundle`): the
/// tile has the length its width implies, the bundle the number of entries, and every entry
/// hashes to its leaf hash. Needs no other tile, so level-0 tiles may be checked in any
/// order and on any thread before [`verify_upper_tiles`] checks the rest of the tree.
pub fn check_leaf_tile(
    tile: &Tile,
    hashes: Stored<'_>,
    bundle: Option<Stored<'_>>,
) -> Result<LeafTile, TileError> {
    if tile.kind != TileKind::Hash(0) {
        return Err(TileError::NotATilePath(tile.path()));
    }
    let leaves = hashes_of(tile, hashes.bytes, hashes.from_full)?;
    if let Some(bundle) = bundle {
        let bundle_tile = Tile {
            kind: TileKind::Entries,
            ..*tile
        };
        let entries = entries_of(&bundle_tile, bundle.bytes, bundle.from_full)?;
        let first = tile.index * u64::from(TILE_WIDTH);
        for (i, (entry, leaf)) in entries
            .iter()
            .zip(leaves.chunks_exact(HASH_LEN))
            .enumerate()
        {
            if leaf_hash(entry) != leaf {
                return Err(TileError::LeafMismatch {
                    index: first + i as u64,
                });
            }
        }
    }
    let leaves: Vec<Hash> = leaves
        .chunks_exact(HASH_LEN)
        .map(|c| c.try_into().expect("chunks_exact gives 32 bytes"))
        .collect();
    Ok(if tile.is_full() {
        LeafTile::Full(root_from_leaf_hashes(&leaves))
    } else {
        LeafTile::Partial(leaves)
    })
}

/// A Merkle tree of a given size whose hashes come from tiles: computes its root and builds
/// inclusion and consistency proofs for it and for any smaller tree of the same log.
///
/// Tiles are read once and cached. Nothing read is trusted: compare [`TiledTree::root`] with a
/// verified checkpoint, or check the built proofs, before relying on the result.
pub struct TiledTree<R> {
    reader: R,
    size: u64,
    cache: HashMap<(u8, u64), Vec<Hash>>,
}

impl<R: TileReader> TiledTree<R> {
    /// A tree of `size` leaves read from `reader`.
    pub fn new(reader: R, size: u64) -> Self {
        Self {
            reader,
            size,
            cache: HashMap::new(),
        }
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Gives the reader back.
    pub fn into_reader(self) -> R {
        self.reader
    }

    /// The root of the perfect subtree of height `height` whose leaves start at
    /// `index << height`.
    pub fn node(&mut self, height: u32, index: u64) -> Result<Hash, TileError> {
        let out_of_range = TileError::NodeOutOfRange {
            height,
            index,
            size: self.size,
        };
        if height >= 64 || (u128::from(index) + 1) << height > u128::from(self.size) {
            return Err(out_of_range);
        }
        // The node is the root of 2^rest consecutive hashes in one tile at `level`.
        let level = (height / TILE_HEIGHT) as u8;
        let rest = height % TILE_HEIGHT;
        let first = index << rest;
        let tile_index = first >> TILE_HEIGHT;
        let offset = (first % u64::from(TILE_WIDTH)) as usize;
        let hashes = self.tile_hashes(level, tile_index)?;
        let span = hashes
            .get(offset..offset + (1 << rest))
            .ok_or(out_of_range)?;
        Ok(root_from_leaf_hashes(span))
    }

    /// The leaf hash at `index`.
    pub fn leaf_hash(&mut self, index: u64) -> Result<Hash, TileError> {
        self.node(0, index)
    }

    fn tile_hashes(&mut self, level: u8, index: u64) -> Result<&[Hash], TileError> {
        if !self.cache.contains_key(&(level, index)) {
            let width = tile_width(level, index, self.size).ok_or(TileError::NodeOutOfRange {
                height: u32::from(level) * TILE_HEIGHT,
                index: index << TILE_HEIGHT,
                size: self.size,
            })?;
            let tile = Tile::new(TileKind::Hash(level), index, width)?;
            let hashes = read_hash_tile(&mut self.reader, &tile)?;
            self.cache.insert((level, index), hashes);
        }
        Ok(&self.cache[&(level, index)])
    }

    /// The hash of leaves `[begin, end)`, a subtree of the RFC 6962 tree.
    fn range_hash(&mut self, begin: u64, end: u64) -> Result<Hash, TileError> {
        range_hash_with(begin, end, |height, index| self.node(height, index))
    }

    fn check_size(&self, requested: u64) -> Result<(), TileError> {
        if requested > self.size {
            return Err(TileError::SizeTooLarge {
                requested,
                size: self.size,
            });
        }
        Ok(())
    }

    /// The root of the tree, from the tiles of the highest levels it needs.
    pub fn root(&mut self) -> Result<Hash, TileError> {
        self.root_at(self.size)
    }

    /// The root of the first `size` leaves, at most the tree's size.
    pub fn root_at(&mut self, size: u64) -> Result<Hash, TileError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(root_from_leaf_hashes(&[]));
        }
        self.range_hash(0, size)
    }

    /// The inclusion proof of leaf `index` in the first `tree_size` leaves.
    pub fn inclusion_proof(&mut self, index: u64, tree_size: u64) -> Result<Vec<Hash>, TileError> {
        self.check_size(tree_size)?;
        inclusion_proof_with(index, tree_size, |b, e| self.range_hash(b, e))
    }

    /// The consistency proof from the first `size1` to the first `size2` leaves.
    pub fn consistency_proof(&mut self, size1: u64, size2: u64) -> Result<Vec<Hash>, TileError> {
        self.check_size(size2)?;
        consistency_proof_with(size1, size2, |b, e| self.range_hash(b, e))
    }
}

/// What [`verify_tiles`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TilesReport {
    /// The tree size checked.
    pub size: u64,
    /// The hash tiles read.
    pub hash_tiles: usize,
    /// The entry bundles read (0 when entries were not checked).
    pub entry_bundles: usize,
}

/// Checks every hash tile a tree of `size` leaves needs against `root`, and, with
/// `check_entries`, every entry bundle against the level-0 tiles.
///
/// The leaf hashes must give `root`, every hash above level 0 must be the root of the full
/// tile below it, and every entry must hash to its leaf hash. This reads each tile once, one
/// level-0 tile and bundle at a time ([`check_leaf_tile`]), then the levels above
/// ([`verify_upper_tiles`]).
pub fn verify_tiles<R: TileReader + ?Sized>(
    reader: &mut R,
    size: u64,
    root: &Hash,
    check_entries: bool,
) -> Result<TilesReport, TileError> {
    let mut leaf_tiles = Vec::new();
    let mut entry_bundles = 0;
    for tile in tiles_at(TileKind::Hash(0), size) {
        let (hashes, hashes_full) = read_with_fallback(reader, &tile)?;
        let bundle = if check_entries {
            entry_bundles += 1;
            Some(read_with_fallback(
                reader,
                &Tile {
                    kind: TileKind::Entries,
                    ..tile
                },
            )?)
        } else {
            None
        };
        leaf_tiles.push(check_leaf_tile(
            &tile,
            Stored {
                bytes: &hashes,
                from_full: hashes_full,
            },
            bundle.as_ref().map(|(bytes, from_full)| Stored {
                bytes,
                from_full: *from_full,
            }),
        )?);
    }
    let mut report = verify_upper_tiles(reader, size, root, leaf_tiles)?;
    report.entry_bundles = entry_bundles;
    Ok(report)
}

/// Checks the hash tiles above level 0 of a tree of `size` leaves against `root`, given what
/// [`check_leaf_tile`] gave for every level-0 tile, in index order.
///
/// Every hash above level 0 must be the root of the full tile below it. Since every hash of
/// every tile is then the root of its subtree of the checked leaves, the tree's root follows
/// from the partial tile of each level alone (the subtrees they cover make up the tree), so
/// no leaf is hashed twice. The report counts the hash tiles of all levels and no entry
/// bundles.
pub fn verify_upper_tiles<R: TileReader + ?Sized>(
    reader: &mut R,
    size: u64,
    root: &Hash,
    leaf_tiles: Vec<LeafTile>,
) -> Result<TilesReport, TileError> {
    let mut report = TilesReport {
        size,
        hash_tiles: leaf_tiles.len(),
        entry_bundles: 0,
    };
    if leaf_tiles.len() as u64 != hashes_at_level(0, size).div_ceil(u64::from(TILE_WIDTH)) {
        return Err(TileError::MissingTile(format!(
            "level 0 of a tree of size {size}: {} tiles checked",
            leaf_tiles.len()
        )));
    }
    // The partial tiles, which give the root, by path (the form a `TileReader` reads).
    let mut partials: HashMap<String, Vec<u8>> = HashMap::new();
    // The roots of the full tiles of the level below, which this level's tiles must hold.
    let mut below: Vec<Hash> = Vec::with_capacity(leaf_tiles.len());
    for (index, leaf_tile) in leaf_tiles.into_iter().enumerate() {
        match leaf_tile {
            LeafTile::Full(root) => below.push(root),
            LeafTile::Partial(hashes) => {
                let width = hashes.len() as u16;
                partials.insert(
                    Tile::new(TileKind::Hash(0), index as u64, width)?.path(),
                    hashes.concat(),
                );
            }
        }
    }
    for level in 1..=MAX_LEVEL {
        let count = hashes_at_level(level, size);
        if count == 0 {
            break;
        }
        let mut roots = Vec::with_capacity(below.len() / usize::from(TILE_WIDTH));
        for tile in tiles_at(TileKind::Hash(level), count) {
            let hashes = read_hash_tile(reader, &tile)?;
            report.hash_tiles += 1;
            // Tiles come in index order, so `below` has a root for every hash here.
            let start = (tile.index * u64::from(TILE_WIDTH)) as usize;
            for (position, hash) in hashes.iter().enumerate() {
                if below.get(start + position) != Some(hash) {
                    return Err(TileError::LevelMismatch {
                        tile: tile.path(),
                        position,
                    });
                }
            }
            if tile.is_full() {
                roots.push(root_from_leaf_hashes(&hashes));
            } else {
                partials.insert(tile.path(), hashes.concat());
            }
        }
        below = roots;
    }
    if TiledTree::new(&mut partials, size).root()? != *root {
        return Err(TileError::RootMismatch(size));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::merkle::CompactRange;

    fn hash_tile(level: u8, index: u64, width: u16) -> Tile {
        Tile::new(TileKind::Hash(level), index, width).unwrap()
    }

    #[test]
    fn paths_format_as_in_the_spec() {
        assert_eq!(hash_tile(0, 1234067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(hash_tile(0, 0, 256).path(), "tile/0/000");
        assert_eq!(hash_tile(1, 455667, 256).path(), "tile/1/x455/667");
        assert_eq!(hash_tile(0, 0, 15).path(), "tile/0/000.p/15");
        assert_eq!(
            Tile::new(TileKind::Entries, 1000, 3).unwrap().path(),
            "tile/entries/x001/000.p/3"
        );
        assert_eq!(
            hash_tile(63, u64::MAX, 255).path(),
            "tile/63/x018/x446/x744/x073/x709/x551/615.p/255"
        );
    }

    #[test]
    fn paths_round_trip() {
        for index in [0, 1, 999, 1000, 1001, 999_999, 1_000_000, 1234067, u64::MAX] {
            for width in [1, 17, 255, 256] {
                for kind in [TileKind::Hash(0), TileKind::Hash(63), TileKind::Entries] {
                    let tile = Tile::new(kind, index, width).unwrap();
                    assert_eq!(Tile::parse(&tile.path()).unwrap(), tile);
                }
            }
        }
    }

    #[test]
    fn bad_paths_are_rejected_with_typed_errors() {
        use TileError as E;
        type Check = fn(&TileError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("tile/0/../../etc/passwd", |e| matches!(e, E::UnsafePath(_))),
            ("/tile/0/000", |e| matches!(e, E::UnsafePath(_))),
            ("tile//0/000", |e| matches!(e, E::UnsafePath(_))),
            ("tile/0/000/", |e| matches!(e, E::UnsafePath(_))),
            ("tile/0/./000", |e| matches!(e, E::UnsafePath(_))),
            ("tile\\0\\000", |e| matches!(e, E::UnsafePath(_))),
            ("tile/0/00\u{0}", |e| matches!(e, E::UnsafePath(_))),
            ("tile/0/０00", |e| matches!(e, E::UnsafePath(_))),
            ("tiles/0/000", |e| matches!(e, E::NotATilePath(_))),
            ("tile/0", |e| matches!(e, E::NotATilePath(_))),
            ("tile/00/000", |e| matches!(e, E::BadLevel(_))),
            ("tile/64/000", |e| matches!(e, E::BadLevel(_))),
            ("tile/-1/000", |e| matches!(e, E::BadLevel(_))),
            ("tile/0/00", |e| matches!(e, E::BadIndex(_))),
            ("tile/0/0000", |e| matches!(e, E::BadIndex(_))),
            ("tile/0/001/002", |e| matches!(e, E::BadIndex(_))),
            ("tile/0/x001", |e| matches!(e, E::BadIndex(_))),
            ("tile/0/+01", |e| matches!(e, E::BadIndex(_))),
            ("tile/0/x000/001", |e| matches!(e, E::NonCanonicalIndex(_))),
            ("tile/0/x018/x446/x744/x073/x709/x551/616", |e| {
                matches!(e, E::IndexOverflow(_))
            }),
            ("tile/0/000.p/0", |e| matches!(e, E::BadWidth(_))),
            ("tile/0/000.p/256", |e| matches!(e, E::BadWidth(_))),
            ("tile/0/000.p/05", |e| matches!(e, E::BadWidth(_))),
            ("tile/0/000.p/x", |e| matches!(e, E::BadWidth(_))),
            ("tile/0/000.p", |e| matches!(e, E::TrailingComponents(_))),
            ("tile/0/000.p/5/6", |e| {
                matches!(e, E::TrailingComponents(_))
            }),
            ("tile/0/x001.p/5/000", |e| {
                matches!(e, E::TrailingComponents(_))
            }),
            ("tile/0/x001.p/5", |e| matches!(e, E::BadIndex(_))),
        ];
        for (path, check) in cases {
            match Tile::parse(path) {
                Ok(t) => panic!("{path:?} parsed as {t:?}"),
                Err(e) => assert!(check(&e), "{path:?}: unexpected {e:?}"),
            }
        }
        let long = format!("tile/0/{}", "x001/".repeat(20));
        assert!(matches!(Tile::parse(&long), Err(TileError::PathTooLong(_))));
        assert!(Tile::new(TileKind::Hash(0), 0, 0).is_err());
        assert!(Tile::new(TileKind::Hash(0), 0, 257).is_err());
        assert!(Tile::new(TileKind::Hash(64), 0, 1).is_err());
    }

    #[test]
    fn tiles_for_size() {
        assert!(hash_tiles_for_size(0).is_empty());
        let paths =
            |size| -> Vec<String> { hash_tiles_for_size(size).iter().map(Tile::path).collect() };
        assert_eq!(paths(15), ["tile/0/000.p/15"]);
        assert_eq!(paths(256), ["tile/0/000", "tile/1/000.p/1"]);
        assert_eq!(
            paths(70_000),
            [
                (0..273)
                    .map(|i| hash_tile(0, i, 256).path())
                    .collect::<Vec<_>>(),
                vec![
                    "tile/0/273.p/112".into(),
                    "tile/1/000".into(),
                    "tile/1/001.p/17".into(),
                    "tile/2/000.p/1".into()
                ]
            ]
            .concat()
        );
        assert_eq!(tile_width(0, 273, 70_000), Some(112));
        assert_eq!(tile_width(0, 274, 70_000), None);
        assert_eq!(tile_width(2, 0, 70_000), Some(1));
        assert_eq!(tile_width(3, 0, u64::MAX), Some(256));
        assert_eq!(tile_width(63, 0, u64::MAX), None);
        assert_eq!(entry_bundles_for_size(257).len(), 2);
    }

    #[test]
    fn bundles_round_trip_and_reject_truncation() {
        let entries: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![], vec![7; 300]];
        let bundle = encode_entry_bundle(&entries).unwrap();
        assert_eq!(decode_entry_bundle(&bundle).unwrap(), entries);
        assert!(matches!(
            decode_entry_bundle(&bundle[..bundle.len() - 1]),
            Err(TileError::TruncatedEntry {
                index: 2,
                declared: 300,
                available: 299
            })
        ));
        assert!(matches!(
            decode_entry_bundle(&[0, 0, 0]),
            Err(TileError::TruncatedLength {
                index: 1,
                offset: 2
            })
        ));
        assert!(matches!(
            decode_entry_bundle(&[0u8; 2 * 257]),
            Err(TileError::TooManyEntries)
        ));
        assert!(decode_entry_bundle(&[0u8; 2 * 256]).is_ok());
        assert!(matches!(
            encode_entry_bundle(&[vec![0u8; 65536]]),
            Err(TileError::EntryTooLarge {
                index: 0,
                len: 65536
            })
        ));
        assert!(matches!(
            encode_entry_bundle(&vec![b"".as_slice(); 257]),
            Err(TileError::TooManyEntries)
        ));
    }

    type Store = HashMap<String, Vec<u8>>;

    /// A whole tiled log in memory, built the way a log writes it: the tile store, the leaf
    /// hashes and the entries.
    fn tiled_log(size: u64) -> (Store, Vec<Hash>, Vec<Vec<u8>>) {
        let entries: Vec<Vec<u8>> = (0..size)
            .map(|i| format!("entry {i}").into_bytes())
            .collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let mut store = HashMap::new();
        let mut level_hashes = leaves.clone();
        let mut level = 0u8;
        while !level_hashes.is_empty() {
            for (i, chunk) in level_hashes.chunks(256).enumerate() {
                let tile = hash_tile(level, i as u64, chunk.len() as u16);
                store.insert(tile.path(), chunk.concat());
            }
            level_hashes = level_hashes
                .chunks_exact(256)
                .map(root_from_leaf_hashes)
                .collect();
            level += 1;
        }
        for (i, chunk) in entries.chunks(256).enumerate() {
            let tile = Tile::new(TileKind::Entries, i as u64, chunk.len() as u16).unwrap();
            store.insert(tile.path(), encode_entry_bundle(chunk).unwrap());
        }
        (store, leaves, entries)
    }

    #[test]
    fn tiled_tree_matches_the_leaves() {
        use crate::domain::merkle::{inclusion_proof, verify_consistency, verify_inclusion};
        // Large enough for three tile levels; proofs are checked against roots of prefixes,
        // computed incrementally because SHA-256 is slow in unoptimised test builds.
        let size = 70_000u64;
        let (mut store, leaves, _) = tiled_log(size);
        let root = root_from_leaf_hashes(&leaves);
        let report = verify_tiles(&mut store, size, &root, true).unwrap();
        assert_eq!(report.hash_tiles, 277);
        assert_eq!(report.entry_bundles, 274);

        let mut tree = TiledTree::new(&mut store, size);
        assert_eq!(tree.root().unwrap(), root);
        let sizes = [1u64, 256, 257, 65_537, 69_999];
        let mut prefix = CompactRange::new();
        for (i, leaf) in leaves.iter().enumerate() {
            prefix.push(*leaf).unwrap();
            let smaller = i as u64 + 1;
            if !sizes.contains(&smaller) {
                continue;
            }
            let prefix_root = prefix.root();
            assert_eq!(tree.root_at(smaller).unwrap(), prefix_root);
            for index in [0, smaller / 3, smaller - 1] {
                let proof = tree.inclusion_proof(index, smaller).unwrap();
                verify_inclusion(
                    &leaves[index as usize],
                    index,
                    smaller,
                    &proof,
                    &prefix_root,
                )
                .unwrap();
            }
            let proof = tree.consistency_proof(smaller, size).unwrap();
            verify_consistency(smaller, size, &proof, &prefix_root, &root).unwrap();
        }
        // And exactly the proofs built from the leaves, on a smaller tree.
        assert_eq!(
            tree.inclusion_proof(300, 1000).unwrap(),
            inclusion_proof(&leaves[..1000], 300).unwrap()
        );
        assert!(matches!(
            tree.root_at(size + 1),
            Err(TileError::SizeTooLarge { .. })
        ));
    }

    #[test]
    fn verify_tiles_finds_tampering() {
        let size = 600u64;
        let (store, leaves, _) = tiled_log(size);
        let root = root_from_leaf_hashes(&leaves);

        let mut bad_leaf = store.clone();
        bad_leaf.get_mut("tile/0/001").unwrap()[40] ^= 1;
        assert!(matches!(
            verify_tiles(&mut bad_leaf, size, &root, false),
            Err(TileError::LevelMismatch { position: 1, .. })
        ));

        let mut bad_entry = store.clone();
        bad_entry.get_mut("tile/entries/002.p/88").unwrap()[5] ^= 1;
        assert!(matches!(
            verify_tiles(&mut bad_entry, size, &root, true),
            Err(TileError::LeafMismatch { index: 512 })
        ));

        let mut missing = store.clone();
        missing.remove("tile/1/000.p/2");
        assert!(matches!(
            verify_tiles(&mut missing, size, &root, false),
            Err(TileError::MissingTile(_))
        ));

        let mut wrong_root = root;
        wrong_root[0] ^= 1;
        let mut good = store.clone();
        assert!(matches!(
            verify_tiles(&mut good, size, &wrong_root, false),
            Err(TileError::RootMismatch(600))
        ));
    }

    #[test]
    fn partial_tiles_fall_back_to_full_ones() {
        let (mut store, leaves, entries) = tiled_log(512);
        // A reader of the tree at size 300 asks for `tile/0/001.p/44`, which the log has
        // replaced by the full tile.
        let root = root_from_leaf_hashes(&leaves[..300]);
        assert!(!store.contains_key("tile/0/001.p/44"));
        // Level 1 at size 300 is `tile/1/000.p/1`, which this fixture replaced by `.p/2`.
        store.insert(
            "tile/1/000.p/1".into(),
            store["tile/1/000.p/2"][..32].to_vec(),
        );
        verify_tiles(&mut store, 300, &root, true).unwrap();
        let bundle = Tile::new(TileKind::Entries, 1, 44).unwrap();
        assert_eq!(
            read_entry_bundle(&mut store, &bundle).unwrap(),
            entries[256..300]
        );

        store.insert("tile/0/001".into(), vec![0; 100]);
        assert!(matches!(
            verify_tiles(&mut store, 300, &root, false),
            Err(TileError::WrongTileLength {
                expected: 8192,
                actual: 100,
                ..
            })
        ));
    }
}

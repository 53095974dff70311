//! The tile client: reads a C2SP tlog-tiles log (the local log, or Rekor v2) over HTTP.
//!
//! It fetches the checkpoint, hash tiles and entry bundles exactly as the log serves them
//! (`/checkpoint`, `/tile/<L>/<N>[.p/<W>]`, `/tile/entries/<N>[.p/<W>]`), and falls back from a
//! partial tile that is gone (404, the log has completed it) to the full tile. Nothing it
//! returns is trusted: callers verify the checkpoint's signature and check tiles against it.
//!
//! [`FetchedTiles`] and [`with_tiles`] let the domain's synchronous tile code (which asks a
//! [`TileReader`] for tiles) run over an asynchronous [`TileSource`]: a tile the code asks for
//! that is not fetched yet is remembered, the computation stops, the tile is fetched, and the
//! computation runs again. The Rekor v2 client reads its proofs the same way.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use actors::domain::tiles::{ReadError, TILE_WIDTH, Tile, TileError, TileKind, TileReader};
use actors::ports::RekorError;
use async_trait::async_trait;

use crate::adapters::rekor::{
    BuildError, MAX_TILE_BYTES, http_client, read_body, status_error, transport_error,
};
use crate::config::rekor::RekorBackendConfig;

/// The largest checkpoint read; real ones are well under 1 KiB.
pub const MAX_CHECKPOINT_BYTES: usize = 1 << 20;

/// Most tiles one computation may ask for; a proof or a tile check in a 2^64 tree needs far
/// fewer.
pub const MAX_TILE_FETCHES: usize = 128;

/// Where tiles come from: the log over HTTP, a directory, or a cache in front of either.
#[async_trait]
pub trait TileSource: Send + Sync {
    /// The bytes stored at `tile`'s exact path, or `None` when there is no such tile.
    async fn fetch(&self, tile: &Tile) -> Result<Option<Vec<u8>>, RekorError>;
}

/// A C2SP tlog-tiles log over HTTP.
#[derive(Clone)]
pub struct TileClient {
    base: reqwest::Url,
    http: reqwest::Client,
    timeout: Duration,
}

impl TileClient {
    /// A client for the log at `base_url` (the prefix before `/checkpoint`).
    pub fn new(base_url: &str, http: reqwest::Client, timeout: Duration) -> Result<Self, String> {
        let base = format!("{}/", base_url.trim_end_matches('/'));
        let base = reqwest::Url::parse(&base).map_err(|e| format!("bad url {base_url:?}: {e}"))?;
        Ok(Self {
            base,
            http,
            timeout,
        })
    }

    /// The client for a configured backend's URL, connect and read timeouts.
    pub fn for_backend(backend: &RekorBackendConfig) -> Result<Self, BuildError> {
        Self::with_http(backend, http_client(backend)?)
    }

    /// [`TileClient::for_backend`] over an HTTP client the caller already built for the
    /// backend (the Rekor v2 client shares its connection pool).
    pub fn with_http(
        backend: &RekorBackendConfig,
        http: reqwest::Client,
    ) -> Result<Self, BuildError> {
        Self::new(&backend.url, http, backend.read_timeout).map_err(|message| BuildError::Http {
            backend: backend.name.clone(),
            message,
        })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, RekorError> {
        self.base
            .join(path)
            .map_err(|e| RekorError::Invalid(format!("bad request path {path:?}: {e}")))
    }

    /// GETs a resource of at most `limit` bytes; `Ok(None)` on 404.
    pub async fn get(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, RekorError> {
        let response = self
            .http
            .get(self.url(path)?)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(transport_error)?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(status_error(response, path).await);
        }
        read_body(response, limit).await.map(Some)
    }

    /// The log's latest signed checkpoint, as served (unverified).
    pub async fn checkpoint(&self) -> Result<Vec<u8>, RekorError> {
        self.get("checkpoint", MAX_CHECKPOINT_BYTES)
            .await?
            .ok_or_else(|| RekorError::NotFound("the log serves no checkpoint".into()))
    }

    /// A tile or entry bundle, falling back from a partial tile that is gone to the full one
    /// cut to the partial width. `None` when neither exists.
    pub async fn tile_or_full(&self, tile: &Tile) -> Result<Option<Vec<u8>>, RekorError> {
        if let Some(bytes) = self.fetch(tile).await? {
            return Ok(Some(bytes));
        }
        if tile.is_full() {
            return Ok(None);
        }
        match self.fetch(&tile.full()).await? {
            Some(full) => cut_to_width(tile, &full).map(Some),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl TileSource for TileClient {
    async fn fetch(&self, tile: &Tile) -> Result<Option<Vec<u8>>, RekorError> {
        self.get(&tile.path(), MAX_TILE_BYTES).await
    }
}

/// A log kept in a local directory in the C2SP layout (a mirror, or a sneakernet copy).
pub struct DirSource(pub PathBuf);

#[async_trait]
impl TileSource for DirSource {
    async fn fetch(&self, tile: &Tile) -> Result<Option<Vec<u8>>, RekorError> {
        // Tile paths are canonical (no `..`), so the join stays inside the directory.
        let path = self.0.join(tile.path());
        match tokio::fs::read(&path).await {
            Ok(bytes) if bytes.len() <= MAX_TILE_BYTES => Ok(Some(bytes)),
            Ok(_) => Err(RekorError::Unverified(format!(
                "{} is larger than any tile",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RekorError::Transient {
                message: format!("{}: {e}", path.display()),
                retry_after: None,
            }),
        }
    }
}

/// The first `tile.width()` hashes or entries of the full tile at the same position: what
/// the log served as the partial tile before completing it.
pub fn cut_to_width(tile: &Tile, full: &[u8]) -> Result<Vec<u8>, RekorError> {
    let short = || {
        RekorError::Unverified(format!(
            "full tile {} is too short for {}",
            tile.full().path(),
            tile.path()
        ))
    };
    let width = usize::from(tile.width());
    match tile.kind() {
        TileKind::Hash(_) => full.get(..width * 32).map(<[u8]>::to_vec).ok_or_else(short),
        TileKind::Entries => {
            let mut offset = 0usize;
            for _ in 0..width {
                let prefix = full.get(offset..offset + 2).ok_or_else(short)?;
                offset += 2 + usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
            }
            full.get(..offset).map(<[u8]>::to_vec).ok_or_else(short)
        }
    }
}

/// Tiles fetched so far for one computation. A tile that was asked for but not fetched yet
/// is remembered in `wanted`, and the computation is run again once it is here.
#[derive(Default)]
pub struct FetchedTiles {
    tiles: HashMap<String, Vec<u8>>,
    absent: HashSet<String>,
    wanted: Option<Tile>,
}

#[derive(Debug, thiserror::Error)]
#[error("tile {0} not fetched yet")]
struct NotFetched(String);

impl FetchedTiles {
    /// Adds a tile the caller already has.
    pub fn insert(&mut self, tile: &Tile, bytes: Vec<u8>) {
        self.tiles.insert(tile.path(), bytes);
    }

    /// The tile the last computation stopped at, taken.
    pub fn take_wanted(&mut self) -> Option<Tile> {
        self.wanted.take()
    }

    /// Fetches one tile from `source`; a missing tile is remembered as absent, so the
    /// domain's reader falls back from a partial tile to the full one.
    pub async fn fetch_from<S: TileSource + ?Sized>(
        &mut self,
        source: &S,
        tile: Tile,
    ) -> Result<(), RekorError> {
        let path = tile.path();
        match source.fetch(&tile).await? {
            Some(bytes) => {
                self.tiles.insert(path, bytes);
            }
            None => {
                self.absent.insert(path);
            }
        }
        Ok(())
    }
}

impl TileReader for FetchedTiles {
    fn read_tile(&mut self, tile: &Tile) -> Result<Option<Vec<u8>>, ReadError> {
        let path = tile.path();
        if let Some(bytes) = self.tiles.get(&path) {
            return Ok(Some(bytes.clone()));
        }
        if self.absent.contains(&path) {
            return Ok(None);
        }
        self.wanted = Some(*tile);
        Err(Box::new(NotFetched(path)))
    }
}

/// Runs `op` over `fetched`, fetching from `source` each tile it asks for until it succeeds
/// or fails for another reason.
pub async fn with_tiles<T, S: TileSource + ?Sized>(
    source: &S,
    fetched: &mut FetchedTiles,
    mut op: impl FnMut(&mut FetchedTiles) -> Result<T, TileError>,
) -> Result<T, RekorError> {
    for _ in 0..=MAX_TILE_FETCHES {
        match op(fetched) {
            Ok(v) => return Ok(v),
            Err(e) => match fetched.take_wanted() {
                Some(tile) => fetched.fetch_from(source, tile).await?,
                None => return Err(tile_error(e)),
            },
        }
    }
    Err(RekorError::Unverified(format!(
        "a read needed more than {MAX_TILE_FETCHES} tiles"
    )))
}

/// A tile that is missing though a verified checkpoint implies it may still be on its way
/// to object storage; anything else wrong with tiles is an unverifiable answer.
pub fn tile_error(e: TileError) -> RekorError {
    match e {
        TileError::MissingTile(path) => RekorError::Transient {
            message: format!("tile {path} is not served"),
            retry_after: None,
        },
        other => RekorError::Unverified(format!("tiles: {other}")),
    }
}

/// The leaf index's level-0 tile and the offset inside it.
pub fn tile_of(index: u64) -> (u64, usize) {
    (
        index / u64::from(TILE_WIDTH),
        (index % u64::from(TILE_WIDTH)) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::domain::tiles::encode_entry_bundle;

    #[test]
    fn partial_tiles_are_prefixes_of_full_ones() {
        let full: Vec<u8> = (0..256u32 * 32).map(|i| i as u8).collect();
        let tile = Tile::new(TileKind::Hash(0), 0, 3).unwrap();
        assert_eq!(cut_to_width(&tile, &full).unwrap(), full[..96]);
        let entries: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; i % 7]).collect();
        let bundle = encode_entry_bundle(&entries).unwrap();
        let tile = Tile::new(TileKind::Entries, 0, 5).unwrap();
        assert_eq!(
            cut_to_width(&tile, &bundle).unwrap(),
            encode_entry_bundle(&entries[..5]).unwrap()
        );
        assert!(cut_to_width(&tile, &bundle[..7]).is_err());
    }
}

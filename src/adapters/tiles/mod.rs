//! Tiles of C2SP tlog-tiles logs (the local log, Rekor v2): client, filesystem cache,
//! mirror and proof builder.
//!
//! * [`client`]: the HTTP tile client ([`client::TileClient`]) and the bridge that runs the
//!   domain's synchronous tile code over asynchronous sources ([`client::with_tiles`]),
//!   shared with the Rekor v2 client.
//! * [`cache`]: the filesystem tile cache behind the tile proxy: every tile checked against a
//!   verified checkpoint before it is stored or served.
//! * [`mirror`]: `provd tiles sync`: a verified, resumable mirror directory in the layout
//!   `provd tiles verify` reads.
//! * [`proof`]: inclusion and consistency proofs built from tiles, verified before use.

pub mod cache;
pub mod client;
pub mod mirror;
pub mod proof;

use actors::domain::tiles::TileError;
use actors::ports::RekorError;

/// Errors of the tile layer.
#[derive(Debug, thiserror::Error)]
pub enum TilesError {
    /// No tile log of that name is configured (the proxy answers 404).
    #[error("no tile log named {0:?} is configured")]
    UnknownLog(String),
    /// The request names no valid tile (the proxy answers 400).
    #[error("{0}")]
    BadPath(#[from] TileError),
    /// The tile is not part of the log as its latest verified checkpoint shows it, or the
    /// log does not serve it (the proxy answers 404).
    #[error("{0}")]
    NotFound(String),
    /// The log failed or could not be reached; trying again may help (the proxy answers 502).
    #[error("upstream: {0}")]
    Upstream(String),
    /// The log's answer does not verify against its trusted keys and checkpoints (the proxy
    /// answers 502 and serves nothing).
    #[error("not verified: {0}")]
    Unverified(String),
    /// The cache directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl From<RekorError> for TilesError {
    fn from(e: RekorError) -> Self {
        match e {
            RekorError::NotFound(m) => TilesError::NotFound(m),
            RekorError::Unverified(m) => TilesError::Unverified(m),
            other => TilesError::Upstream(other.to_string()),
        }
    }
}

impl TilesError {
    /// Whether trying again later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, TilesError::Upstream(_) | TilesError::Io { .. })
    }
}

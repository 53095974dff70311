//! The tile proxy: a C2SP tlog-tiles read API in front of the filesystem tile cache.
//!
//! `GET /tiles/<log>/checkpoint`, `GET /tiles/<log>/tile/<L>/<N>[.p/<W>]` and
//! `GET /tiles/<log>/tile/entries/<N>[.p/<W>]`, where `<log>` is the name of a configured
//! tile backend (`[rekor.backends.<name>]`, listed in `tiles.backends`) or, percent-encoded,
//! its checkpoint origin. So `https://provd.example/tiles/rekor2` is a tile-log prefix any
//! C2SP client can read from.
//!
//! Every tile is verified against the latest verified checkpoint before it is served, from
//! the cache or from the log on a miss. Full tiles are immutable
//! (`Cache-Control: public, max-age=31536000, immutable`); partial tiles and the checkpoint
//! are `no-cache`. The checkpoint is the log's latest once verified (signature, origin,
//! consistency with the previous one), or the cached one while the log is unreachable.
//! Errors are JSON with a stable code: 400 `bad_tile_path`, 404 `unknown_log` /
//! `tile_not_found`, 502 `upstream_unavailable` / `unverified`.

use std::sync::Arc;

use actors::domain::tiles::Tile;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::auth::scoped;
use crate::adapters::tiles::TilesError;
use crate::adapters::tiles::cache::TileCache;
use crate::config::{Scope, Token};

/// The proxy's routes over `cache`; behind the `read` scope when `require_token`.
pub fn router<S>(cache: Arc<TileCache>, tokens: &Arc<Vec<Token>>, require_token: bool) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let routes = Router::new()
        .route("/tiles/{log}/checkpoint", get(checkpoint))
        .route("/tiles/{log}/tile/{*path}", get(tile));
    let routes = if require_token {
        scoped(routes, tokens, Scope::Read)
    } else {
        routes
    };
    routes.with_state(cache)
}

fn error(e: TilesError) -> Response {
    let (status, code) = match &e {
        TilesError::UnknownLog(_) => (StatusCode::NOT_FOUND, "unknown_log"),
        TilesError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_tile_path"),
        TilesError::NotFound(_) => (StatusCode::NOT_FOUND, "tile_not_found"),
        TilesError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        TilesError::Unverified(_) => (StatusCode::BAD_GATEWAY, "unverified"),
        TilesError::Io { .. } => {
            tracing::error!(error = %e, "tile cache I/O failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"code": "internal", "message": "internal error"}})),
            )
                .into_response();
        }
    };
    if status == StatusCode::BAD_GATEWAY {
        tracing::warn!(error = %e, "tile proxy could not serve a verified answer");
    }
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": e.to_string()}})),
    )
        .into_response()
}

async fn checkpoint(State(cache): State<Arc<TileCache>>, Path(log): Path<String>) -> Response {
    let log = match cache.log(&log) {
        Ok(l) => l,
        Err(e) => return error(e),
    };
    match log.checkpoint_to_serve().await {
        Ok((note, _stale)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            note,
        )
            .into_response(),
        Err(e) => error(e),
    }
}

async fn tile(
    State(cache): State<Arc<TileCache>>,
    Path((log, path)): Path<(String, String)>,
) -> Response {
    let log = match cache.log(&log) {
        Ok(l) => l,
        Err(e) => return error(e),
    };
    let tile = match Tile::parse(&format!("tile/{path}")) {
        Ok(t) => t,
        Err(e) => return error(TilesError::BadPath(e)),
    };
    match log.tile(&tile).await {
        Ok(served) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CACHE_CONTROL,
                    if tile.is_full() {
                        "public, max-age=31536000, immutable"
                    } else {
                        "no-cache"
                    },
                ),
                (
                    header::HeaderName::from_static("x-provd-cache"),
                    if served.hit { "hit" } else { "miss" },
                ),
            ],
            served.bytes,
        )
            .into_response(),
        Err(e) => error(e),
    }
}

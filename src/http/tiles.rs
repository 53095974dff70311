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
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::security::SecurityRequirement;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::scoped_api;
use crate::adapters::tiles::TilesError;
use crate::adapters::tiles::cache::TileCache;
use crate::config::{Scope, Token};

/// The served path of the tile route: the C2SP tile path (`<L>/<N>[.p/<W>]`,
/// `entries/<N>[.p/<W>]`) spans several segments, so it is an axum wildcard.
const TILE_ROUTE: &str = "/tiles/{log}/tile/{*path}";
/// The same path in the OpenAPI document, where `{*path}` is no valid template.
const TILE_DOC_PATH: &str = "/tiles/{log}/tile/{path}";

/// The proxy's routes over `cache`, behind the `read` scope when `require_token`: an
/// [`OpenApiRouter`] for any state, to be merged into [`super::api`]'s before the document
/// is split off.
pub fn router<S>(
    cache: Arc<TileCache>,
    tokens: &Arc<Vec<Token>>,
    require_token: bool,
) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    // `routes!` registers each handler at its `#[utoipa::path]` path, so the tile route is
    // served as the wildcard and documented under it; the document's key is then renamed to
    // a plain template (the served route stays the wildcard).
    let mut routes = OpenApiRouter::new()
        .routes(routes!(checkpoint))
        .routes(routes!(tile));
    let paths = &mut routes.get_openapi_mut().paths.paths;
    if let Some(item) = paths.remove(TILE_ROUTE) {
        paths.insert(TILE_DOC_PATH.to_owned(), item);
    }
    let routes = if require_token {
        // The scope depends on the configuration, so it joins the document here.
        for item in routes.get_openapi_mut().paths.paths.values_mut() {
            if let Some(op) = item.get.as_mut() {
                op.security = Some(vec![SecurityRequirement::new("bearer", ["read"])]);
            }
        }
        scoped_api(routes, tokens, Scope::Read)
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

/// The log's latest verified checkpoint (C2SP tlog-tiles), or the cached one while the log
/// is unreachable.
#[utoipa::path(get, path = "/tiles/{log}/checkpoint", tag = "tiles",
    params(("log" = String, Path, description = "a configured tile backend's name or, percent-encoded, its checkpoint origin")),
    responses((status = 200, description = "the checkpoint note (`Cache-Control: no-cache`)", content_type = "text/plain"),
              (status = 404, description = "`unknown_log`"),
              (status = 502, description = "`upstream_unavailable` or `unverified`")))]
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

/// A tile or entry bundle (C2SP tlog-tiles), verified against the latest verified
/// checkpoint before it is served. Served as the wildcard route `/tiles/{log}/tile/{*path}`:
/// `path` spans several segments.
#[utoipa::path(get, path = "/tiles/{log}/tile/{*path}", tag = "tiles",
    params(("log" = String, Path, description = "a configured tile backend's name or, percent-encoded, its checkpoint origin"),
           ("path" = String, Path, description = "the rest of the C2SP tile path, `/` included: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`")),
    responses((status = 200, description = "the tile's bytes; full tiles are immutable, partial ones `no-cache`; `X-Provd-Cache: hit|miss`", content_type = "application/octet-stream"),
              (status = 400, description = "`bad_tile_path`"),
              (status = 404, description = "`unknown_log` or `tile_not_found`"),
              (status = 502, description = "`upstream_unavailable` or `unverified`")))]
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

//! The dev log's HTTP routes: Rekor v1, Rekor v2 writes, C2SP tlog-tiles reads, and the
//! fault controls. Response and error shapes follow real Rekor (see
//! `reference/rekor-facts.md` §1 and §3 in the workplace).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::log::LogError;
use actors::domain::receipt::{InclusionProof, KindVersion, Receipt, V1LogEntry};
use actors::domain::rekor_entry::{self, CanonicalEntry};
use actors::domain::tiles::{MAX_ENTRY_LEN, Tile};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CommitError, ConnHandle, Faults, Log, Shared};

type AppState = State<Arc<Shared>>;

/// Builds the router over the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/log", get(v1_log_info))
        .route("/api/v1/log/publicKey", get(v1_public_key))
        .route("/api/v1/log/proof", get(v1_proof))
        .route("/api/v1/log/entries", post(v1_create).get(v1_by_index))
        .route("/api/v1/log/entries/retrieve", post(v1_retrieve))
        .route("/api/v1/log/entries/{id}", get(v1_by_uuid))
        .route("/api/v2/log/entries", post(v2_create))
        .route("/checkpoint", get(tiles_checkpoint))
        .route("/tile/{*path}", get(tiles_tile))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(shared.clone(), fault_layer))
        .route("/__faults", get(faults_get).post(faults_post))
        .with_state(shared)
}

/// Go's `path.Clean` of a request path: repeated slashes, `.` and `..` elements and a
/// trailing slash removed. Rekor's router (go-openapi) matches the cleaned path, so
/// `/api/v1/log/entries/retrieve/` is the retrieve route there, and here.
pub(crate) fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Rewrites the request's path to its [`clean_path`], keeping the query.
pub(crate) fn clean_request_path(mut req: Request) -> Request {
    let path = req.uri().path();
    let cleaned = clean_path(path);
    if cleaned == path {
        return req;
    }
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{cleaned}?{q}"),
        None => cleaned,
    };
    let mut parts = req.uri().clone().into_parts();
    // A cleaned path of a valid path is valid; keep the request as it was otherwise.
    if let Ok(pq) = axum::http::uri::PathAndQuery::try_from(path_and_query) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

// ---------------------------------------------------------------------------------------------
// Error shapes.

/// Rekor v1 error: `{"code": <HTTP status>, "message": ...}`.
fn v1_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"code": status.as_u16(), "message": message.into()});
    (status, axum::Json(body)).into_response()
}

/// The gRPC code grpc-gateway reports for an HTTP status.
fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 3,
        404 => 5,
        409 => 6,
        429 => 8,
        503 => 14,
        _ => 13,
    }
}

/// Rekor v2 (grpc-gateway) error: `{"code": <gRPC code>, "message": ..., "details": []}`.
fn v2_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"code": grpc_code(status), "message": message.into(), "details": []});
    (status, axum::Json(body)).into_response()
}

/// An error in the shape the path's API uses.
fn error_for_path(path: &str, status: StatusCode, message: &str) -> Response {
    if path.starts_with("/api/v1/") {
        v1_error(status, message)
    } else if path.starts_with("/api/v2/") {
        v2_error(status, message)
    } else {
        (status, format!("{message}\n")).into_response()
    }
}

fn internal(path: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "dev log: internal error");
    error_for_path(path, StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// Latency, "down" and failure bursts, applied before any API route.
async fn fault_layer(State(shared): AppState, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let (latency, failure) = {
        let Ok(mut state) = shared.faults.lock() else {
            return next.run(req).await;
        };
        let f = &mut state.faults;
        let failure = if f.down {
            Some((
                StatusCode::SERVICE_UNAVAILABLE,
                f.retry_after_secs,
                "log is down",
            ))
        } else if f.fail_next > 0 {
            f.fail_next -= 1;
            let status =
                StatusCode::from_u16(f.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let msg = if status == StatusCode::TOO_MANY_REQUESTS {
                "rate limited; retry"
            } else {
                "reached max pushback; retry"
            };
            Some((status, f.retry_after_secs, msg))
        } else {
            None
        };
        (f.latency_ms, failure)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some((status, retry_after, message)) = failure {
        let mut resp = error_for_path(&path, status, message);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return resp;
    }
    next.run(req).await
}

fn faults_disabled() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({
            "code": 403,
            "message": "fault injection is disabled; start the dev log with --allow-faults",
        })),
    )
        .into_response()
}

async fn faults_get(State(shared): AppState) -> Response {
    if !shared.allow_faults {
        return faults_disabled();
    }
    axum::Json(shared.faults()).into_response()
}

async fn faults_post(State(shared): AppState, body: Bytes) -> Response {
    if !shared.allow_faults {
        return faults_disabled();
    }
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return v1_error(StatusCode::BAD_REQUEST, format!("invalid faults JSON: {e}"));
        }
    };
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || s.set_faults(faults)).await {
        Ok(Ok(f)) => {
            tracing::info!(faults = ?f, "dev log: faults set");
            axum::Json(f).into_response()
        }
        Ok(Err(e)) => v1_error(StatusCode::BAD_REQUEST, e),
        Err(e) => internal("/__faults", e),
    }
}

/// Takes one "commit then drop" token if any is left.
fn take_drop(shared: &Shared) -> bool {
    let Ok(mut state) = shared.faults.lock() else {
        return false;
    };
    if state.faults.drop_next_writes > 0 {
        state.faults.drop_next_writes -= 1;
        true
    } else {
        false
    }
}

/// Kills the connection: the response is never written.
fn dropped(conn: &ConnHandle) -> Response {
    tracing::info!(peer = %conn.remote, "dev log: entry committed, dropping the response");
    conn.kill();
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

// ---------------------------------------------------------------------------------------------
// Writes.

enum Committed {
    New(u64),
    Duplicate(u64),
}

async fn commit(shared: &Arc<Shared>, body: Vec<u8>) -> Result<Committed, String> {
    match shared.commit(body).await {
        Ok(index) => Ok(Committed::New(index)),
        Err(CommitError::Log(LogError::Duplicate { index })) => Ok(Committed::Duplicate(index)),
        Err(e) => Err(e.to_string()),
    }
}

async fn v1_create(
    State(shared): AppState,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    body: Bytes,
) -> Response {
    let entry: CanonicalEntry = match rekor_entry::canonicalize_v1(&body) {
        Ok(e) => e,
        Err(e) => return v1_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if entry.body.len() > MAX_ENTRY_LEN {
        return v1_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "entry is too large for this log",
        );
    }
    match commit(&shared, entry.body).await {
        Ok(Committed::New(index)) => {
            if take_drop(&shared) {
                return dropped(&conn);
            }
            let log = shared.main();
            match v1_entry(&shared, &log, index) {
                Ok((id, entry)) => {
                    let location = format!("/api/v1/log/entries/{id}");
                    let mut resp = (
                        StatusCode::CREATED,
                        axum::Json(BTreeMap::from([(id.clone(), entry)])),
                    )
                        .into_response();
                    let h = resp.headers_mut();
                    // Entry IDs and paths are ASCII hex, always valid header values.
                    if let (Ok(etag), Ok(loc)) =
                        (HeaderValue::from_str(&id), HeaderValue::from_str(&location))
                    {
                        h.insert(header::ETAG, etag);
                        h.insert(header::LOCATION, loc);
                    }
                    resp
                }
                Err(e) => internal("/api/v1/", e),
            }
        }
        Ok(Committed::Duplicate(index)) => {
            let id = {
                let log = shared.main();
                entry_id(&shared, &log, index)
            };
            let mut resp = v1_error(
                StatusCode::CONFLICT,
                format!(
                    "an equivalent entry already exists in the transparency log with UUID {id}"
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/log/entries/{id}")) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => internal("/api/v1/", e),
    }
}

async fn v2_create(
    State(shared): AppState,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    body: Bytes,
) -> Response {
    let entry = match rekor_entry::canonicalize_v2(&body) {
        Ok(e) => e,
        Err(e) => return v2_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if entry.body.len() > MAX_ENTRY_LEN {
        return v2_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "entry is too large for this log",
        );
    }
    match commit(&shared, entry.body).await {
        Ok(Committed::New(index)) => {
            if take_drop(&shared) {
                return dropped(&conn);
            }
            let log = shared.main();
            match v2_entry(&shared, &log, index) {
                Ok(tle) => (StatusCode::CREATED, axum::Json(tle)).into_response(),
                Err(e) => internal("/api/v2/", e),
            }
        }
        Ok(Committed::Duplicate(index)) => {
            let mut resp = v2_error(
                StatusCode::CONFLICT,
                "an equivalent entry already exists in the transparency log",
            );
            resp.headers_mut()
                .insert("x-log-index", HeaderValue::from(index));
            resp
        }
        Err(e) => internal("/api/v2/", e),
    }
}

// ---------------------------------------------------------------------------------------------
// Entry shapes.

fn entry_id(shared: &Shared, log: &Log, index: u64) -> String {
    let uuid = log
        .tree
        .leaf_hash(index)
        .map(hex::encode)
        .unwrap_or_default();
    format!("{:016x}{uuid}", shared.info.tree_id)
}

/// The Rekor v1 `LogEntry` for `index`, proven against the log's current size.
fn v1_entry(shared: &Shared, log: &Log, index: u64) -> Result<(String, V1LogEntry), LogError> {
    let size = log.tree.size();
    let body = log.tree.entry(index).ok_or(LogError::OutOfRange {
        what: "log index",
        requested: index,
        size,
    })?;
    let mut receipt = Receipt {
        log_id: shared.info.v1_log_id.to_vec(),
        log_index: index,
        tree_id: Some(shared.info.tree_id),
        integrated_time: Some(log.times[index as usize]),
        kind_version: None,
        canonical_body: body.to_vec(),
        inclusion_proof: Some(InclusionProof {
            log_index: index,
            tree_size: size,
            root_hash: log.tree.root_at(size)?,
            hashes: log.tree.inclusion_proof(index, size)?,
            checkpoint: Some(shared.v1_checkpoint(log, size)?),
        }),
        signed_entry_timestamp: None,
    };
    receipt.sign_set(&shared.v1_key);
    Ok(receipt.to_v1())
}

/// The Rekor v2 `TransparencyLogEntry` (protobuf-JSON, unpopulated fields emitted).
fn v2_entry(shared: &Shared, log: &Log, index: u64) -> Result<Value, LogError> {
    let size = log.tree.size();
    let body = log.tree.entry(index).ok_or(LogError::OutOfRange {
        what: "log index",
        requested: index,
        size,
    })?;
    let receipt = Receipt {
        log_id: shared.info.v2_log_id.to_vec(),
        log_index: index,
        tree_id: None,
        integrated_time: None,
        kind_version: Some(KindVersion {
            kind: "hashedrekord".into(),
            version: "0.0.2".into(),
        }),
        canonical_body: body.to_vec(),
        inclusion_proof: Some(InclusionProof {
            log_index: index,
            tree_size: size,
            root_hash: log.tree.root_at(size)?,
            hashes: log.tree.inclusion_proof(index, size)?,
            checkpoint: Some(shared.v2_checkpoint(log, size)?),
        }),
        signed_entry_timestamp: None,
    };
    let mut value = serde_json::to_value(receipt.to_tle()).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("inclusionPromise".into(), Value::Null);
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Rekor v1 reads.

#[derive(Deserialize)]
struct IndexQuery {
    #[serde(rename = "logIndex")]
    log_index: Option<String>,
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

async fn v1_by_index(
    State(shared): AppState,
    headers: HeaderMap,
    Query(q): Query<IndexQuery>,
) -> Response {
    let Some(raw) = q.log_index else {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "query parameter logIndex is required",
        );
    };
    let Ok(index) = raw.parse::<u64>() else {
        return v1_error(
            StatusCode::BAD_REQUEST,
            format!("logIndex {raw:?} must be a non-negative integer"),
        );
    };
    let log = shared.view(&headers);
    if index >= log.tree.size() {
        return not_found();
    }
    match v1_entry(&shared, &log, index) {
        Ok((id, entry)) => axum::Json(BTreeMap::from([(id, entry)])).into_response(),
        Err(e) => internal("/api/v1/", e),
    }
}

/// Finds an entry by 64-hex UUID or 80-hex entry ID (whose tree part must be this log's
/// tree or all zeros).
fn find_uuid(shared: &Shared, log: &Log, id: &str) -> Option<u64> {
    if !matches!(id.len(), 64 | 80) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = id.to_ascii_lowercase();
    let uuid = if id.len() == 80 {
        let tree = u64::from_str_radix(&id[..16], 16).ok()?;
        if tree != 0 && tree != shared.info.tree_id {
            return None;
        }
        &id[16..]
    } else {
        &id[..]
    };
    let leaf: [u8; 32] = hex::decode(uuid).ok()?.try_into().ok()?;
    log.tree.find(&leaf)
}

async fn v1_by_uuid(
    State(shared): AppState,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !matches!(id.len(), 64 | 80) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "entryUUID must be 64 hex digits (UUID) or 80 hex digits (entry ID)",
        );
    }
    let log = shared.view(&headers);
    let Some(index) = find_uuid(&shared, &log, &id) else {
        return not_found();
    };
    match v1_entry(&shared, &log, index) {
        Ok((id, entry)) => axum::Json(BTreeMap::from([(id, entry)])).into_response(),
        Err(e) => internal("/api/v1/", e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetrieveRequest {
    #[serde(default, rename = "entryUUIDs")]
    entry_uuids: Vec<String>,
    #[serde(default)]
    log_indexes: Vec<i64>,
    /// Proposed entries, found by the leaf hash of their canonical body.
    #[serde(default)]
    entries: Vec<Value>,
}

async fn v1_retrieve(State(shared): AppState, headers: HeaderMap, body: Bytes) -> Response {
    // JSON nulls are absent, as in entry requests (sigstore-python sends them).
    let parsed = serde_json::from_slice::<Value>(&body).and_then(|mut v| {
        rekor_entry::strip_nulls(&mut v);
        serde_json::from_value::<RetrieveRequest>(v)
    });
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            return v1_error(
                StatusCode::BAD_REQUEST,
                format!("invalid search request: {e}"),
            );
        }
    };
    if req.entry_uuids.len() + req.log_indexes.len() + req.entries.len() > 10 {
        return v1_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most 10 entryUUIDs, logIndexes and entries in total",
        );
    }
    let mut leaves = Vec::new();
    for (i, entry) in req.entries.iter().enumerate() {
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        match rekor_entry::canonicalize_v1(&bytes) {
            Ok(c) => leaves.push(actors::domain::merkle::leaf_hash(&c.body)),
            Err(e) => return v1_error(StatusCode::BAD_REQUEST, format!("entries[{i}]: {e}")),
        }
    }
    let log = shared.view(&headers);
    let mut indexes: Vec<u64> = req
        .entry_uuids
        .iter()
        .filter_map(|id| find_uuid(&shared, &log, id))
        .chain(leaves.iter().filter_map(|leaf| log.tree.find(leaf)))
        .collect();
    indexes.extend(
        req.log_indexes
            .iter()
            .filter_map(|&i| u64::try_from(i).ok())
            .filter(|&i| i < log.tree.size()),
    );
    let mut out = Vec::new();
    for index in indexes {
        match v1_entry(&shared, &log, index) {
            Ok((id, entry)) => out.push(BTreeMap::from([(id, entry)])),
            Err(e) => return internal("/api/v1/", e),
        }
    }
    axum::Json(out).into_response()
}

async fn v1_log_info(State(shared): AppState, headers: HeaderMap) -> Response {
    let log = shared.view(&headers);
    let size = shared.shown_size(&log);
    let result = log
        .tree
        .root_at(size)
        .and_then(|root| Ok((root, shared.v1_checkpoint(&log, size)?)));
    match result {
        Ok((root, sth)) => axum::Json(json!({
            "rootHash": hex::encode(root),
            "treeSize": size,
            "signedTreeHead": sth,
            "treeID": shared.info.tree_id.to_string(),
        }))
        .into_response(),
        Err(e) => internal("/api/v1/", e),
    }
}

async fn v1_public_key(State(shared): AppState) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        shared.info.v1_public_key_pem.clone(),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProofQuery {
    first_size: Option<String>,
    last_size: Option<String>,
}

async fn v1_proof(
    State(shared): AppState,
    headers: HeaderMap,
    Query(q): Query<ProofQuery>,
) -> Response {
    // Errors carry only the message; the response is built once below.
    let parse = |name: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{name} {v:?} must be a non-negative integer"))
    };
    let first = match q
        .first_size
        .as_deref()
        .map(|v| parse("firstSize", v))
        .transpose()
    {
        Ok(v) => v.unwrap_or(1),
        Err(m) => return v1_error(StatusCode::BAD_REQUEST, m),
    };
    let Some(last) = q.last_size.as_deref() else {
        return v1_error(
            StatusCode::BAD_REQUEST,
            "query parameter lastSize is required",
        );
    };
    let last = match parse("lastSize", last) {
        Ok(v) => v,
        Err(m) => return v1_error(StatusCode::BAD_REQUEST, m),
    };
    if first < 1 {
        return v1_error(StatusCode::BAD_REQUEST, "firstSize must be at least 1");
    }
    if first > last {
        return v1_error(
            StatusCode::BAD_REQUEST,
            format!("firstSize({first}) must be less than or equal to lastSize({last})"),
        );
    }
    let log = shared.view(&headers);
    let size = log.tree.size();
    if last > size {
        return v1_error(
            StatusCode::BAD_REQUEST,
            format!(
                "the tree size requested({last}) was greater than what is currently observable({size})"
            ),
        );
    }
    let result = log
        .tree
        .consistency_proof(first, last)
        .and_then(|p| Ok((p, log.tree.root_at(last)?)));
    match result {
        Ok((proof, root)) => axum::Json(json!({
            "rootHash": hex::encode(root),
            "hashes": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => internal("/api/v1/", e),
    }
}

// ---------------------------------------------------------------------------------------------
// C2SP tlog-tiles reads.

async fn tiles_checkpoint(State(shared): AppState, headers: HeaderMap) -> Response {
    let log = shared.view(&headers);
    let size = shared.shown_size(&log);
    match shared.v2_checkpoint(&log, size) {
        Ok(note) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            note,
        )
            .into_response(),
        Err(e) => internal("/checkpoint", e),
    }
}

async fn tiles_tile(
    State(shared): AppState,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    let tile = match Tile::parse(&format!("tile/{path}")) {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let log = shared.view(&headers);
    match log.tree.tile(&tile) {
        Ok(bytes) => {
            let cache = if tile.is_full() {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CACHE_CONTROL, cache),
                ],
                Body::from(bytes),
            )
                .into_response()
        }
        Err(LogError::NoSuchTile(_)) => not_found(),
        Err(e) => internal("/tile", e),
    }
}

//! The evidence API: upload (`POST /api/v1/proofs`), the seed's read endpoints (paged chunk
//! metadata, manifest, one chunk's bytes, verification) and per-chunk inclusion proofs.
//!
//! The exact hashing is in `docs/evidence.md`. Uploads are streamed: the body is chunked as it
//! arrives and only whole chunks are kept (once) until the single storing transaction.

use actors::domain::evidence::{
    Chunk, ChunkBuilder, EvidenceError, Manifest, ManifestVerifier, parse_digest,
};
use axum::Json;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::scoped_api;
use super::error::{ApiError, ApiQuery};
use crate::config::Scope;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Chunks read from the store per query while verifying.
const VERIFY_BATCH: u64 = 64;
/// Default and largest page of chunk metadata.
const DEFAULT_PAGE_SIZE: u64 = 100;
const MAX_PAGE_SIZE: u64 = 1000;
/// Longest content type the seed's column holds.
const MAX_CONTENT_TYPE: usize = 64;

/// Registers the evidence metrics' help texts.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "provd_evidence_bytes_total",
        metrics::Unit::Bytes,
        "Bytes of new evidence stored."
    );
    metrics::describe_counter!(
        "provd_evidence_uploads_total",
        "Evidence uploads by outcome (created, existing, too_large, invalid, error)."
    );
}

fn count_upload(outcome: &'static str) {
    metrics::counter!("provd_evidence_uploads_total", "outcome" => outcome).increment(1);
}

/// The evidence routes: upload needs `write`, everything else `read`.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    let write = scoped_api(
        OpenApiRouter::new().routes(routes!(upload)),
        &state.tokens,
        Scope::Write,
    );
    let read = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(page))
            .routes(routes!(manifest))
            .routes(routes!(chunk))
            .routes(routes!(proof))
            .routes(routes!(verify)),
        &state.tokens,
        Scope::Read,
    );
    write.merge(read)
}

fn too_large(e: &EvidenceError) -> ApiError {
    count_upload("too_large");
    ApiError::PayloadTooLarge(e.to_string())
}

/// The content type to store: the request's, or `application/octet-stream` without one.
fn content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok("application/octet-stream".into());
    };
    let ok = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_CONTENT_TYPE && t.contains('/'));
    ok.map(str::to_owned).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "Content-Type must be a media type of at most {MAX_CONTENT_TYPE} characters"
        ))
    })
}

#[utoipa::path(post, path = "/api/v1/proofs", tag = "evidence",
    request_body(content_type = "application/octet-stream", description = "the evidence bytes"),
    responses((status = 201, description = "stored; the manifest"), (status = 200, description = "already stored"),
              (status = 400, description = "empty body or bad content type"), (status = 413, description = "too large")),
    security(("bearer" = ["write"])))]
async fn upload(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = s.evidence_limits;
    let content_type = content_type(&headers).inspect_err(|_| count_upload("invalid"))?;
    // A declared length over the limit is refused before a byte is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes()) {
        return Err(too_large(&EvidenceError::TooLarge {
            max_chunks: limits.max_chunks(),
            chunk_size: limits.chunk_size(),
            max_bytes: limits.max_bytes(),
        }));
    }
    let mut builder = ChunkBuilder::new(limits, content_type);
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let bytes = frame.map_err(|e| {
            count_upload("invalid");
            ApiError::BadRequest(format!("cannot read the request body: {e}"))
        })?;
        match builder.push(&bytes) {
            Ok(done) => chunks.extend(done),
            Err(e @ EvidenceError::TooLarge { .. }) => return Err(too_large(&e)),
            Err(e) => return Err(ApiError::Internal(e.to_string())),
        }
    }
    let (last, manifest) = builder.finish().map_err(|e| match e {
        EvidenceError::Empty => {
            count_upload("invalid");
            ApiError::BadRequest(e.to_string())
        }
        e => ApiError::Internal(e.to_string()),
    })?;
    chunks.extend(last);
    let created = s
        .evidence
        .put_evidence(&manifest, &chunks)
        .await
        .map_err(|e| {
            count_upload("error");
            ApiError::from(e)
        })?;
    let status = if created {
        count_upload("created");
        metrics::counter!("provd_evidence_bytes_total").increment(manifest.total_size);
        StatusCode::CREATED
    } else {
        count_upload("existing");
        StatusCode::OK
    };
    let location = HeaderValue::from_str(&format!("/api/v1/proofs/{}", manifest.proof_root))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((status, [(header::LOCATION, location)], Json(manifest)).into_response())
}

/// Checks a proof root's spelling (400 otherwise).
fn root_param(proof_root: &str) -> Result<(), ApiError> {
    parse_digest(proof_root)
        .map(|_| ())
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn index_param(index: &str) -> Result<u64, ApiError> {
    index.parse::<u64>().map_err(|_| {
        ApiError::BadRequest(format!(
            "chunk index must be a non-negative integer, got {:?}",
            index.chars().take(40).collect::<String>()
        ))
    })
}

async fn load_manifest(s: &AppState, proof_root: &str) -> Result<Manifest, ApiError> {
    root_param(proof_root)?;
    s.evidence
        .manifest(proof_root)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound(format!("no evidence with proof root {proof_root}")))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<u64>,
    #[serde(rename = "pageSize", alias = "page_size")]
    page_size: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/proofs/{proof_root}", tag = "evidence",
    params(("proof_root" = String, Path, description = "sha256:<64 hex>"), ("page" = Option<u64>, Query, description = "page, from 0"),
           ("pageSize" = Option<u64>, Query, description = "1-1000, default 100")),
    responses((status = 200, description = "chunk metadata"), (status = 404, description = "unknown root")),
    security(("bearer" = ["read"])))]
async fn page(
    State(s): State<AppState>,
    Path(proof_root): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let page = q.page.unwrap_or(0);
    let page_size = q.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::BadRequest(format!(
            "`pageSize` must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    let m = load_manifest(&s, &proof_root).await?;
    let from = page.saturating_mul(page_size);
    let chunks = if from >= m.total_chunks {
        Vec::new()
    } else {
        s.evidence
            .chunk_infos(&proof_root, from, page_size)
            .await
            .map_err(ApiError::from)?
    };
    Ok(Json(json!({
        "proof_root": m.proof_root,
        "content_type": m.content_type,
        "total_chunks": m.total_chunks,
        "total_size": m.total_size,
        "chunk_size": m.chunk_size,
        "page": page,
        "page_size": page_size,
        "total_pages": m.total_chunks.div_ceil(page_size),
        "has_more": from.saturating_add(page_size) < m.total_chunks,
        "chunks": chunks,
    })))
}

#[utoipa::path(get, path = "/api/v1/proofs/{proof_root}/manifest", tag = "evidence",
    params(("proof_root" = String, Path, description = "sha256:<64 hex>")),
    responses((status = 200, description = "the manifest"), (status = 404, description = "unknown root")),
    security(("bearer" = ["read"])))]
async fn manifest(
    State(s): State<AppState>,
    Path(proof_root): Path<String>,
) -> Result<Json<Manifest>, ApiError> {
    Ok(Json(load_manifest(&s, &proof_root).await?))
}

#[utoipa::path(get, path = "/api/v1/proofs/{proof_root}/chunks/{index}", tag = "evidence",
    params(("proof_root" = String, Path, description = "sha256:<64 hex>"), ("index" = u64, Path, description = "chunk index")),
    responses((status = 200, description = "the chunk's bytes, with the content type given at upload", content_type = "*/*"), (status = 404, description = "unknown root or index")),
    security(("bearer" = ["read"])))]
async fn chunk(
    State(s): State<AppState>,
    Path((proof_root, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    root_param(&proof_root)?;
    let index = index_param(&index)?;
    let c = s
        .evidence
        .chunk(&proof_root, index)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no chunk {index} under proof root {proof_root}"))
        })?;
    let content_type = HeaderValue::from_str(&c.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let hash = HeaderValue::from_str(&c.hash).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::HeaderName::from_static("x-chunk-hash"), hash),
            (
                header::HeaderName::from_static("x-chunk-index"),
                HeaderValue::from(c.index),
            ),
        ],
        c.data,
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/proofs/{proof_root}/chunks/{index}/proof", tag = "evidence",
    params(("proof_root" = String, Path, description = "sha256:<64 hex>"), ("index" = u64, Path, description = "chunk index")),
    responses((status = 200, description = "the chunk's inclusion proof"), (status = 404, description = "unknown root or index")),
    security(("bearer" = ["read"])))]
async fn proof(
    State(s): State<AppState>,
    Path((proof_root, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    root_param(&proof_root)?;
    let index = index_param(&index)?;
    let m = load_manifest(&s, &proof_root).await?;
    match m.chunk_proof(index) {
        Ok(p) => Ok(Json(p).into_response()),
        Err(e @ EvidenceError::NoSuchChunk { .. }) => Err(ApiError::NotFound(e.to_string())),
        Err(e) => Err(ApiError::Internal(format!(
            "stored manifest {proof_root}: {e}"
        ))),
    }
}

#[utoipa::path(post, path = "/api/v1/proofs/{proof_root}/verify", tag = "evidence",
    params(("proof_root" = String, Path, description = "sha256:<64 hex>")),
    responses((status = 200, description = "valid, bad and missing chunks"), (status = 404, description = "unknown root")),
    security(("bearer" = ["read"])))]
async fn verify(
    State(s): State<AppState>,
    Path(proof_root): Path<String>,
) -> Result<Response, ApiError> {
    let m = load_manifest(&s, &proof_root).await?;
    let mut verifier = ManifestVerifier::new(m)
        .map_err(|e| ApiError::Internal(format!("stored manifest {proof_root}: {e}")))?;
    // Batches keep memory to a few MiB whatever the evidence size.
    let mut from = 0u64;
    loop {
        let batch = s
            .evidence
            .chunks(&proof_root, from, VERIFY_BATCH)
            .await
            .map_err(ApiError::from)?;
        let Some(last) = batch.last().map(|c| c.index) else {
            break;
        };
        for c in &batch {
            verifier.check_chunk(c.index, &c.hash, &c.data);
        }
        if (batch.len() as u64) < VERIFY_BATCH {
            break;
        }
        from = last + 1;
    }
    let report = verifier.finish();
    if !report.valid {
        tracing::warn!(
            proof_root = %report.proof_root,
            bad = ?report.bad_chunks,
            missing = ?report.missing_chunks,
            "evidence failed verification"
        );
    }
    Ok(Json(report).into_response())
}

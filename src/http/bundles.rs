//! Air-gap bundles over HTTP: export (`GET /api/v1/provcache/entries/{veriKey}/bundle`,
//! scope `read`), import (`POST /api/v1/provcache/import`, scope `write`), which chunks of a
//! root are stored (`GET /api/v1/proofs/{root}/status`, scope `read`), and linking an entry
//! to the stored Rekor receipt of its attestation
//! (`PUT /api/v1/provcache/entries/{veriKey}/receipt`, scope `write`).
//!
//! The format and the checks are in `actors::domain::bundle`; `docs/bundle-format.md` has
//! the bytes. An import is verified completely before anything is stored, and a body over
//! `bundles.max_bundle_bytes` is refused before it is read (declared length) or as soon as
//! it grows past the limit. Imports stream (body to a temporary file, then verified and
//! stored from it), and at most `bundles.max_concurrent_imports` run at once.

use std::sync::Arc;

use actors::domain::bundle::{
    Bundle, BundleError, BundleLimits, BundleRekor, BundleWriter, Density,
    check_chunk_against_manifest,
};
use actors::domain::evidence::parse_digest;
use actors::domain::verikey::parse_veri_key;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::scoped_api;
use super::error::{ApiError, ApiJson, ApiQuery};
use crate::airgap::{AirgapError, BundleStore, import_bundle, status};
use crate::config::Scope;
use crate::config::bundles::BundlesConfig;
use crate::config::rekor::TrustedLogKey;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Chunks read from the store per query while exporting.
const EXPORT_BATCH: u64 = 64;

/// What the bundle routes need beyond the shared state.
pub struct AirgapState {
    /// Import, chunk status and receipt links.
    pub store: Arc<dyn BundleStore>,
    /// Limits and trusted keys.
    pub config: BundlesConfig,
    /// Trusted keys of each configured Rekor backend, for the receipts bundles carry.
    pub log_keys: Vec<(String, TrustedLogKey)>,
    /// One permit per import allowed at once (`bundles.max_concurrent_imports`).
    imports: Arc<tokio::sync::Semaphore>,
}

impl AirgapState {
    /// The state for `config`, with room for its `max_concurrent_imports`.
    pub fn new(
        store: Arc<dyn BundleStore>,
        config: BundlesConfig,
        log_keys: Vec<(String, TrustedLogKey)>,
    ) -> Self {
        let imports = Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_imports as usize,
        ));
        AirgapState {
            store,
            config,
            log_keys,
            imports,
        }
    }
}

/// The routes of this module, each behind its scope.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let read = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(export))
            .routes(routes!(chunk_status)),
        &state.tokens,
        Scope::Read,
    );
    let write = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(import))
            .routes(routes!(link)),
        &state.tokens,
        Scope::Write,
    );
    read.merge(write)
}

fn refused(e: &BundleError) -> ApiError {
    match e {
        BundleError::TooLarge { .. } | BundleError::TooManyChunks { .. } => {
            ApiError::PayloadTooLarge(format!("bundle refused: {e}"))
        }
        // The spooled body could not be read back: this node's failure, not the bundle's.
        BundleError::Read(_) => ApiError::Internal(format!("bundle import: {e}")),
        _ => ApiError::BadRequest(format!("bundle refused, nothing stored: {e}")),
    }
}

impl From<AirgapError> for ApiError {
    fn from(e: AirgapError) -> Self {
        match e {
            AirgapError::Bundle(e) => refused(&e),
            AirgapError::Refused(m) => ApiError::Conflict(m),
            AirgapError::Store(e) => e.into(),
            AirgapError::NoManifest(_) => ApiError::NotFound(e.to_string()),
            AirgapError::Source(_) => ApiError::BadRequest(e.to_string()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ExportQuery {
    density: Option<String>,
}

/// Exports an entry, its evidence and its linked Rekor receipt as an air-gap bundle
/// (`docs/bundle-format.md`), streamed as it is read.
#[utoipa::path(get, path = "/api/v1/provcache/entries/{veri_key}/bundle", tag = "airgap",
    params(("veri_key" = String, Path, description = "sha256:<64 hex>"),
           ("density" = Option<String>, Query, description = "`lite`, `standard` (default) or `strict`: how many evidence chunks the bundle carries")),
    responses((status = 200, description = "the bundle", content_type = "application/json"),
              (status = 400, description = "bad VeriKey or density"),
              (status = 404, description = "no live entry, or no evidence stored for its proof root"),
              (status = 409, description = "the entry has no evidence, or a chunk the density needs is not stored here")),
    security(("bearer" = ["read"])))]
async fn export(
    State(s): State<AppState>,
    Path(veri_key): Path<String>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    parse_veri_key(&veri_key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let density = Density::parse(q.density.as_deref().unwrap_or("standard"))
        .map_err(|e| ApiError::BadRequest(format!("`density`: {e}")))?;
    let (entry, _) = s
        .cache
        .get(&veri_key)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound(format!("no live entry for {veri_key}")))?;
    let proof_root = entry.proof_root.clone().ok_or_else(|| {
        ApiError::Conflict(format!(
            "entry {veri_key} has no evidence (no proof root); a bundle needs one"
        ))
    })?;
    let manifest = s
        .evidence
        .manifest(&proof_root)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound(format!("no evidence stored for {proof_root}")))?;
    let rekor = bundled_receipt(&s, &veri_key).await?;
    let head = Bundle::head(&entry, &manifest, density, Utc::now(), rekor)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let want = density.included_chunks(manifest.total_chunks);
    // Every chunk the density needs must be here; checked before the answer starts.
    let stored = s
        .airgap
        .store
        .stored_indexes(&proof_root)
        .await
        .map_err(ApiError::from)?;
    if let Some(gap) = crate::airgap::missing_of(want, &stored).first() {
        return Err(ApiError::Conflict(format!(
            "chunk {gap} of {proof_root} is not stored here; a {} bundle needs chunks 0..{want}",
            density.as_str()
        )));
    }
    metrics::counter!("provd_bundle_exports_total", "density" => density.as_str()).increment(1);
    // The body is written batch by batch as it is read, so a strict bundle of any size
    // holds one batch of chunks in memory, not the whole bundle.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let evidence = s.evidence.clone();
    tokio::spawn(async move {
        if let Err(e) = stream_bundle(evidence.as_ref(), &head, &manifest, want, &tx).await {
            tracing::warn!(error = %e, "bundle export stopped");
            let _ = tx.send(Err(std::io::Error::other(e))).await;
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

/// Writes the bundle into `tx`, one batch of chunks at a time.
async fn stream_bundle(
    evidence: &dyn actors::ports::EvidenceStore,
    head: &Bundle,
    manifest: &actors::domain::evidence::Manifest,
    want: u64,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) -> Result<(), String> {
    let mut writer = BundleWriter::new(Vec::new(), None).map_err(|e| e.to_string())?;
    let mut next = 0u64;
    while next < want {
        let batch = evidence
            .chunks(&manifest.proof_root, next, EXPORT_BATCH.min(want - next))
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Err(format!("chunk {next} disappeared during the export"));
        }
        for c in &batch {
            if c.index != next {
                return Err(format!("chunk {next} disappeared during the export"));
            }
            // Never export bytes that do not match the manifest.
            check_chunk_against_manifest(manifest, c.index, &c.data)
                .map_err(|e| format!("stored chunk: {e}"))?;
            writer
                .write_chunk(c.index, &c.data)
                .map_err(|e| e.to_string())?;
            next += 1;
        }
        let part = std::mem::take(writer.get_mut());
        if tx.send(Ok(part)).await.is_err() {
            // The client went away.
            return Ok(());
        }
    }
    let (rest, _) = writer.finish(head, Utc::now()).map_err(|e| e.to_string())?;
    let _ = tx.send(Ok(rest)).await;
    Ok(())
}

/// The receipt linked to the entry, with its log's key, when one is linked and its log is
/// configured here.
async fn bundled_receipt(s: &AppState, veri_key: &str) -> Result<Option<BundleRekor>, ApiError> {
    let Some(uuid) = s
        .airgap
        .store
        .linked_receipt(veri_key)
        .await
        .map_err(ApiError::from)?
    else {
        return Ok(None);
    };
    let Some(stored) = s
        .submissions
        .stored_receipt(&uuid)
        .await
        .map_err(ApiError::from)?
    else {
        return Ok(None);
    };
    let key = s
        .airgap
        .log_keys
        .iter()
        .find(|(backend, k)| *backend == stored.backend && k.log_id == stored.receipt.log_id);
    let Some((_, key)) = key else {
        tracing::warn!(%uuid, backend = %stored.backend, "no configured key for the linked receipt's log; exporting without it");
        return Ok(None);
    };
    let pem = key
        .key
        .to_pem()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Some(BundleRekor {
        log_entry: stored.receipt.to_tle(),
        log_public_key: pem,
        log_host: key.name.clone(),
    }))
}

/// Imports an air-gap bundle: verified completely before anything is stored.
///
/// The body is spooled to a temporary file (removed afterwards, whatever happens) as it
/// arrives, then verified and stored by streaming that file, so an import holds a batch of
/// chunks and the manifest in memory, never the bundle. At most
/// `bundles.max_concurrent_imports` run at once; one more is answered 503 with
/// `Retry-After` (its body read and dropped, never stored).
#[utoipa::path(post, path = "/api/v1/provcache/import", tag = "airgap",
    request_body(content_type = "application/json", description = "a bundle (`docs/bundle-format.md`), at most `bundles.max_bundle_bytes`"),
    responses((status = 201, description = "imported; every chunk of the proof root is stored"),
              (status = 202, description = "imported; some chunks of the proof root are still missing"),
              (status = 400, description = "refused, nothing stored: names the failed check"),
              (status = 409, description = "refused: conflicts with what is stored"),
              (status = 413, description = "over the size or chunk limit"),
              (status = 503, description = "`bundles.max_concurrent_imports` imports are already running (the body is read and dropped); retry after `Retry-After` seconds")),
    security(("bearer" = ["write"])))]
async fn import(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = s.airgap.config.limits;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        limits.check_size(n).map_err(|e| refused(&e))?;
    }
    let Ok(permit) = s.airgap.imports.clone().try_acquire_owned() else {
        metrics::counter!("provd_bundle_imports_total", "outcome" => "busy").increment(1);
        let mut resp = ApiError::Unavailable(format!(
            "{} bundle imports are already running (bundles.max_concurrent_imports); try again",
            s.airgap.config.max_concurrent_imports
        ))
        .into_response();
        // The body is read and dropped before the answer (none of it is kept): a client
        // still sending it would otherwise see its connection reset instead of the 503.
        // One over the limit, or broken off, closes the connection instead.
        let mut stream = body.into_data_stream();
        let mut read = 0u64;
        let mut whole = true;
        while let Some(frame) = stream.next().await {
            read += frame.map_or(u64::MAX, |b| b.len() as u64);
            if read > limits.max_bundle_bytes {
                whole = false;
                break;
            }
        }
        if !whole {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Ok(resp);
    };
    let spool = spool_body(body, &limits).await?;
    match import_bundle(
        s.airgap.store.as_ref(),
        spool.path(),
        &limits,
        &s.airgap.config.trusted_keys,
        Some(permit),
    )
    .await
    {
        Ok((_, outcome)) => {
            let status = if outcome.complete {
                StatusCode::CREATED
            } else {
                StatusCode::ACCEPTED
            };
            Ok((status, Json(outcome)).into_response())
        }
        Err(e) => Err(ApiError::from(e)),
    }
}

/// Writes the request body to a temporary file as it arrives, refusing it as soon as it
/// grows past the limit. The file is removed when the handle is dropped.
async fn spool_body(
    body: Body,
    limits: &BundleLimits,
) -> Result<tempfile::NamedTempFile, ApiError> {
    use tokio::io::AsyncWriteExt as _;
    let internal = |e: std::io::Error| ApiError::Internal(format!("import spool: {e}"));
    let spool = tempfile::Builder::new()
        .prefix("provd-import-")
        .suffix(".json")
        .tempfile()
        .map_err(internal)?;
    // Buffered: body frames are small, and each write to a tokio file is a blocking task.
    let mut file = tokio::io::BufWriter::with_capacity(
        256 * 1024,
        tokio::fs::File::from_std(spool.reopen().map_err(internal)?),
    );
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let frame = frame
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        size += frame.len() as u64;
        limits.check_size(size).map_err(|e| refused(&e))?;
        file.write_all(&frame).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok(spool)
}

/// Which chunks of a proof root are stored here.
#[utoipa::path(get, path = "/api/v1/proofs/{proof_root}/status", tag = "airgap",
    params(("proof_root" = String, Path, description = "sha256:<64 hex>")),
    responses((status = 200, description = "total, stored and missing chunks, `complete`"),
              (status = 400, description = "bad proof root"),
              (status = 404, description = "unknown root")),
    security(("bearer" = ["read"])))]
async fn chunk_status(
    State(s): State<AppState>,
    Path(proof_root): Path<String>,
) -> Result<Response, ApiError> {
    parse_digest(&proof_root).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let manifest = s
        .evidence
        .manifest(&proof_root)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::NotFound(format!("no evidence with proof root {proof_root}")))?;
    let st = status(s.airgap.store.as_ref(), &manifest)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({
        "proof_root": st.proof_root,
        "total_chunks": st.total_chunks,
        "stored_chunks": st.stored_chunks,
        "missing_chunks": st.missing_chunks,
        "complete": st.complete,
    }))
    .into_response())
}

/// The body of `PUT /api/v1/provcache/entries/{veri_key}/receipt`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    /// The UUID of a stored Rekor receipt.
    rekor_uuid: String,
}

/// Links an entry to the stored Rekor receipt of its attestation, so exported bundles carry it.
#[utoipa::path(put, path = "/api/v1/provcache/entries/{veri_key}/receipt", tag = "airgap",
    params(("veri_key" = String, Path, description = "sha256:<64 hex>")),
    request_body(content = LinkBody, content_type = "application/json", description = "`{\"rekor_uuid\": \"<uuid>\"}`"),
    responses((status = 200, description = "linked; `veri_key` and `rekor_uuid`"),
              (status = 400, description = "bad VeriKey or body"),
              (status = 404, description = "no stored Rekor receipt with that UUID")),
    security(("bearer" = ["write"])))]
async fn link(
    State(s): State<AppState>,
    Path(veri_key): Path<String>,
    ApiJson(body): ApiJson<LinkBody>,
) -> Result<Response, ApiError> {
    parse_veri_key(&veri_key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let stored = s
        .submissions
        .stored_receipt(&body.rekor_uuid)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no stored Rekor receipt {:?}", body.rekor_uuid))
        })?;
    s.airgap
        .store
        .link_receipt(&veri_key, &stored.uuid)
        .await
        .map_err(ApiError::from)?;
    Ok((
        StatusCode::OK,
        Json(json!({"veri_key": veri_key, "rekor_uuid": stored.uuid})),
    )
        .into_response())
}

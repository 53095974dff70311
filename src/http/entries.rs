//! Provenance-cache entries: VeriKey computation, writes and tiered reads.

use std::time::Duration;

use actors::domain::entry::{Entry, verdict_hash};
use actors::domain::verikey::{VeriKeyInputs, parse_veri_key};
use actors::provcache::Accepted;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::scoped_api;
use super::error::{ApiError, ApiJson};
use crate::config::Scope;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The header naming the tier that answered a read.
pub const TIER_HEADER: &str = "x-provcache-tier";

/// Longest TTL a writer may ask for.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The routes of this module, each behind its scope.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let read = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(verikey))
            .routes(routes!(get_entry)),
        &state.tokens,
        Scope::Read,
    );
    let write = scoped_api(
        OpenApiRouter::new().routes(routes!(put_entry)),
        &state.tokens,
        Scope::Write,
    );
    read.merge(write)
}

#[utoipa::path(post, path = "/api/v1/provcache/verikey", tag = "provcache",
    request_body(content_type = "application/json", description = "the VeriKey inputs (docs/verikey.md)"),
    responses((status = 200, description = "`veri_key`"), (status = 400, description = "names the bad input")),
    security(("bearer" = ["read"])))]
async fn verikey(ApiJson(inputs): ApiJson<VeriKeyInputs>) -> Result<Json<Value>, ApiError> {
    let key = inputs
        .veri_key()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(json!({"veri_key": key})))
}

/// A TTL: seconds, or a duration such as `"12h"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

/// The body of `POST /api/v1/provcache/entries`. The lengths in the schema are
/// `actors::domain::limits`' (`Entry::validate`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutEntry {
    /// The entry's VeriKey; or give `inputs` instead.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    veri_key: Option<String>,
    /// What the VeriKey is computed from (docs/verikey.md); or give `veri_key` instead.
    #[schema(schema_with = super::document::optional_verikey_inputs)]
    inputs: Option<VeriKeyInputs>,
    /// The verdict document, any JSON value, stored as given.
    #[schema(value_type = Value)]
    verdict: Value,
    /// 0 to 100. JSON does not tell `67` from `67.0`, so neither does this field.
    #[schema(value_type = i64, minimum = 0, maximum = 100)]
    trust_score: serde_json::Number,
    /// The evidence's proof root.
    #[serde(default)]
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    proof_root: Option<String>,
    /// Required unless `inputs` gives it.
    #[serde(default)]
    #[schema(pattern = "^[\\x21-\\x7e]{1,128}$")]
    policy_hash: Option<String>,
    /// Required unless `inputs` gives it.
    #[serde(default)]
    #[schema(pattern = "^[\\x21-\\x7e]{1,128}$")]
    signer_set_hash: Option<String>,
    /// The signers' key IDs.
    #[serde(default)]
    #[schema(max_items = 256, pattern = "^[\\x21-\\x7e]{1,256}$")]
    signer_key_ids: Vec<String>,
    /// The vulnerability feed.
    #[serde(default)]
    #[schema(pattern = "^[\\x21-\\x7e]{1,128}$")]
    feed_id: Option<String>,
    /// The feed's epoch; must agree with `inputs.feed_epoch`.
    #[serde(default)]
    #[schema(pattern = "^[\\x21-\\x7e]{1,64}$")]
    feed_epoch: Option<String>,
    /// Seconds (1 to 366 days), or a duration such as `"12h"`.
    #[serde(default)]
    #[schema(schema_with = super::document::ttl)]
    ttl: Option<Ttl>,
}

/// Takes a field from the body or, failing that, from the inputs; both must agree.
fn pick(
    name: &str,
    given: Option<String>,
    from_inputs: Option<&String>,
) -> Result<Option<String>, ApiError> {
    match (given, from_inputs) {
        (Some(g), Some(i)) if &g != i => Err(ApiError::BadRequest(format!(
            "`{name}` differs from `inputs.{name}`"
        ))),
        (Some(g), _) => Ok(Some(g)),
        (None, i) => Ok(i.cloned()),
    }
}

fn ttl_of(ttl: Option<Ttl>, default: Duration) -> Result<Duration, ApiError> {
    let d = match ttl {
        None => default,
        Some(Ttl::Seconds(s)) => Duration::from_secs(s),
        Some(Ttl::Text(t)) => humantime::parse_duration(t.trim()).map_err(|e| {
            ApiError::BadRequest(format!(
                "`ttl` must be seconds or a duration like `12h`: {e}"
            ))
        })?,
    };
    if d.is_zero() || d > MAX_TTL {
        return Err(ApiError::BadRequest(
            "`ttl` must be more than zero and at most 366 days".into(),
        ));
    }
    Ok(d)
}

fn entry_of(body: PutEntry, default_ttl: Duration) -> Result<Entry, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let veri_key = match (&body.veri_key, &body.inputs) {
        (Some(k), None) => k.clone(),
        (None, Some(inputs)) => inputs.veri_key().map_err(|e| bad(e.to_string()))?,
        _ => {
            return Err(bad("give exactly one of `veri_key` and `inputs`".to_owned()));
        }
    };
    let inputs = body.inputs.as_ref();
    let policy_hash = pick(
        "policy_hash",
        body.policy_hash,
        inputs.map(|i| &i.policy_hash),
    )?
    .ok_or_else(|| bad("`policy_hash` is required".into()))?;
    let signer_set_hash = pick(
        "signer_set_hash",
        body.signer_set_hash,
        inputs.map(|i| &i.signer_set_hash),
    )?
    .ok_or_else(|| bad("`signer_set_hash` is required".into()))?;
    let feed_epoch = pick("feed_epoch", body.feed_epoch, inputs.map(|i| &i.feed_epoch))?;
    let trust_score = body
        .trust_score
        .as_i64()
        .or_else(|| {
            body.trust_score
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=100.0).contains(f))
                .map(|f| f as i64)
        })
        .and_then(|s| i16::try_from(s).ok())
        .filter(|s| (0..=100).contains(s))
        .ok_or_else(|| {
            bad(format!(
                "`trust_score` must be between 0 and 100, got {}",
                body.trust_score
            ))
        })?;
    let ttl = ttl_of(body.ttl, default_ttl)?;
    let now = Utc::now();
    let entry = Entry {
        veri_key,
        verdict_hash: verdict_hash(&body.verdict),
        verdict: body.verdict,
        proof_root: body.proof_root,
        trust_score,
        policy_hash,
        signer_set_hash,
        signer_key_ids: body.signer_key_ids,
        feed_id: body.feed_id,
        feed_epoch,
        created_at: now,
        expires_at: now
            + chrono::Duration::from_std(ttl).map_err(|_| bad("`ttl` is too long".into()))?,
    };
    entry.validate().map_err(|e| bad(e.to_string()))?;
    Ok(entry)
}

#[utoipa::path(post, path = "/api/v1/provcache/entries", tag = "provcache",
    request_body(content = PutEntry, content_type = "application/json", description = "`veri_key` or `inputs`, `verdict`, `trust_score`, ..."),
    responses((status = 202, description = "queued (write-behind)"), (status = 201, description = "committed"),
              (status = 400, description = "names the bad field")),
    security(("bearer" = ["write"])))]
async fn put_entry(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<PutEntry>,
) -> Result<Response, ApiError> {
    let entry = entry_of(body, s.default_ttl)?;
    let veri_key = entry.veri_key.clone();
    let expires_at = entry.expires_at;
    let accepted = s.cache.put(entry).await.map_err(ApiError::from)?;
    let (status, word) = match accepted {
        Accepted::Queued => (StatusCode::ACCEPTED, "queued"),
        Accepted::Committed => (StatusCode::CREATED, "committed"),
    };
    Ok((
        status,
        Json(json!({"veri_key": veri_key, "status": word, "expires_at": expires_at})),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/provcache/entries/{veri_key}", tag = "provcache",
    params(("veri_key" = String, Path, description = "sha256:<64 hex>")),
    responses((status = 200, description = "the entry; `X-Provcache-Tier` names the tier"), (status = 404, description = "miss or expired")),
    security(("bearer" = ["read"])))]
async fn get_entry(
    State(s): State<AppState>,
    Path(veri_key): Path<String>,
) -> Result<Response, ApiError> {
    parse_veri_key(&veri_key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let started = std::time::Instant::now();
    let found = s.cache.get(&veri_key).await.map_err(ApiError::from)?;
    let tier = found.as_ref().map_or("miss", |(_, served)| served.as_str());
    metrics::histogram!("provd_provcache_read_duration_seconds", "tier" => tier)
        .record(started.elapsed().as_secs_f64());
    match found {
        Some((entry, served)) => {
            let mut resp = Json(entry.as_ref()).into_response();
            resp.headers_mut()
                .insert(TIER_HEADER, HeaderValue::from_static(served.as_str()));
            Ok(resp)
        }
        None => Err(ApiError::NotFound(format!("no live entry for {veri_key}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_as_seconds_or_durations() {
        let d = Duration::from_secs(60);
        assert_eq!(ttl_of(None, d).ok(), Some(d));
        assert_eq!(
            ttl_of(Some(Ttl::Seconds(5)), d).ok(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            ttl_of(Some(Ttl::Text("2h".into())), d).ok(),
            Some(Duration::from_secs(7200))
        );
        assert!(ttl_of(Some(Ttl::Seconds(0)), d).is_err());
        assert!(ttl_of(Some(Ttl::Text("soon".into())), d).is_err());
    }
}

//! `GET /api/v1/provcache/stats`: the cache's figures, read from the typed record that is
//! updated with the metrics `/metrics` serves ([`actors::figures`]), so the two always
//! agree.

use axum::extract::State;

use axum::Json;
use serde_json::{Value, json};

use super::AppState;
use super::auth::scoped_api;
use super::error::ApiError;
use crate::config::Scope;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The hot tiers in read order; the durable tier (`postgres` or `sqlite`) comes last.
const HOT_TIERS: [&str; 2] = ["memory", "valkey"];

/// The stats route (scope `read`).
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    scoped_api(
        OpenApiRouter::new().routes(routes!(stats)),
        &state.tokens,
        Scope::Read,
    )
}

#[utoipa::path(get, path = "/api/v1/provcache/stats", tag = "provcache",
    responses((status = 200, description = "hits, misses, hit ratio, write-behind, evidence, ledger")),
    security(("bearer" = ["read"])))]
async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let entries = s.counts.entry_count().await?;
    let evidence = s.evidence.evidence_totals().await?;
    let ledger = s.ledger.stats().await?;

    let figures = actors::figures::snapshot();
    let mut tiers = serde_json::Map::new();
    let mut hits = 0.0;
    let durable = s.cache.durable_tier();
    for tier in HOT_TIERS.into_iter().chain([durable]) {
        let t = figures.tier(tier);
        hits += t.hits as f64;
        tiers.insert(
            tier.to_owned(),
            json!({"hits": t.hits as f64, "misses": t.misses as f64}),
        );
    }
    // A read either hits some tier or misses the last one.
    let misses = figures.tier(durable).misses as f64;
    let hit_ratio = if hits + misses > 0.0 {
        hits / (hits + misses)
    } else {
        0.0
    };
    Ok(Json(json!({
        "entries": entries,
        "hits": hits,
        "misses": misses,
        "hit_ratio": hit_ratio,
        "tiers": tiers,
        "write_behind": {
            "queue_depth": figures.write_behind_queue_depth,
            "lag_seconds": figures.write_behind_lag_seconds,
        },
        "evidence": {
            "roots": evidence.roots,
            "chunks": evidence.chunks,
            "bytes": evidence.bytes,
        },
        "revocations": ledger,
    })))
}

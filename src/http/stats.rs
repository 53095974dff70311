//! `GET /api/v1/provcache/stats`: the cache's figures, read from the same recorder that
//! serves `/metrics`, so the two always agree.

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

/// The value of one sample in Prometheus text (0 when absent).
fn sample(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| {
            let (n, labels) = series
                .split_once('{')
                .map_or((series, ""), |(n, l)| (n, l.trim_end_matches('}')));
            let labelled = match &want {
                Some(w) => labels.split(',').any(|kv| kv == w),
                None => labels.is_empty(),
            };
            (n == name && labelled).then(|| value.parse::<f64>().unwrap_or(0.0))
        })
        .sum()
}

#[utoipa::path(get, path = "/api/v1/provcache/stats", tag = "provcache",
    responses((status = 200, description = "hits, misses, hit ratio, write-behind, evidence, ledger")),
    security(("bearer" = ["read"])))]
async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let entries = s.counts.entry_count().await?;
    let evidence = s.evidence.evidence_totals().await?;
    let ledger = s.ledger.stats().await?;

    let text = s.metrics.render();
    let mut tiers = serde_json::Map::new();
    let mut hits = 0.0;
    let durable = s.cache.durable_tier();
    for tier in HOT_TIERS.into_iter().chain([durable]) {
        let h = sample(&text, "provd_provcache_hits_total", Some(("tier", tier)));
        let m = sample(&text, "provd_provcache_misses_total", Some(("tier", tier)));
        hits += h;
        tiers.insert(tier.to_owned(), json!({"hits": h, "misses": m}));
    }
    // A read either hits some tier or misses the last one.
    let misses = sample(
        &text,
        "provd_provcache_misses_total",
        Some(("tier", durable)),
    );
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
            "queue_depth": sample(&text, "provd_write_behind_queue_depth", None),
            "lag_seconds": sample(&text, "provd_write_behind_lag_seconds", None),
        },
        "evidence": {
            "roots": evidence.roots,
            "chunks": evidence.chunks,
            "bytes": evidence.bytes,
        },
        "revocations": ledger,
    })))
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn samples_are_found_by_name_and_label() {
        let text = "# TYPE a counter\na{tier=\"memory\"} 3\na{tier=\"valkey\"} 4\nb 2.5\n";
        assert_eq!(sample(text, "a", Some(("tier", "memory"))), 3.0);
        assert_eq!(sample(text, "a", Some(("tier", "postgres"))), 0.0);
        assert_eq!(sample(text, "b", None), 2.5);
        assert_eq!(sample(text, "c", None), 0.0);
    }
}

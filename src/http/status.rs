//! `GET /api/v1/status` (the status report as JSON) and `GET /dashboard` (one self-contained
//! page drawing it). Both are open, like `/readyz` and `/metrics`: they show health and
//! counts, never entries, tokens or evidence.

use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use actors::ports::{PortError, RejectedEvent};

use super::AppState;
use crate::ops::status::{Inputs, report};
use crate::storage::ops::OpsSnapshot;

/// The dashboard page: inline CSS and JS, no external assets.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Read access to the database's operator figures.
#[async_trait]
pub trait OpsQuery: Send + Sync {
    /// Checkpoints, divergences, ledger positions, replay, invalidations, submissions.
    async fn snapshot(&self) -> Result<OpsSnapshot, String>;
    /// The most recently refused messages (events, cache writes, ledger rows), newest first.
    async fn rejected(&self, limit: i64) -> Result<Vec<RejectedEvent>, PortError>;
}

/// The open routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(dashboard))
}

/// The status report: health of every service and actor, cache hit ratio, write-behind lag,
/// submission queue and dead letters, latest checkpoint per log, open divergences,
/// invalidations per hour, replay lag per node.
#[utoipa::path(get, path = "/api/v1/status", tag = "operations",
    responses((status = 200, description = "healthy; the report"),
              (status = 503, description = "unhealthy; the same report with `problems`")))]
async fn status(State(s): State<AppState>) -> Response {
    let probes = futures::future::join_all(s.probes.iter().map(|p| async move {
        let r = tokio::time::timeout(Duration::from_secs(2), p.check())
            .await
            .unwrap_or_else(|_| Err("timed out after 2s".to_owned()));
        (p.name().to_owned(), r)
    }));
    let snapshot = async {
        tokio::time::timeout(Duration::from_secs(3), s.ops.snapshot())
            .await
            .unwrap_or_else(|_| Err("timed out after 3s".to_owned()))
    };
    let (services, snapshot) = tokio::join!(probes, snapshot);
    let r = report(Inputs {
        node_id: s.node_id.clone(),
        deployment_id: s.deployment_id,
        services,
        actors: s
            .health
            .snapshot()
            .into_iter()
            // Readiness gates are not actors; their effect shows in `actors_ready`.
            .filter(|(name, _)| name != actors::ledger::CATCH_UP_GATE)
            .collect(),
        actors_ready: s.health.ready(),
        figures: actors::figures::snapshot(),
        snapshot,
        now: chrono::Utc::now(),
    });
    let code = if r.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CACHE_CONTROL, "no-store")], axum::Json(r)).into_response()
}

/// The ops dashboard: one HTML page that refreshes itself from `/api/v1/status`.
#[utoipa::path(get, path = "/dashboard", tag = "operations",
    responses((status = 200, description = "the page", content_type = "text/html")))]
async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

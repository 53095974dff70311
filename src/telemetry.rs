//! Logs (tracing) and metrics (Prometheus text format).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the log subscriber once; later calls (tests) are no-ops.
/// The filter comes from `PROVD_LOG` (e.g. `info,provd=debug`), default `info`.
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PROVD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // A recorder installed by someone else (never in provd) would win; ours still
            // renders, just empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            metrics::gauge!("provd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_gauge!("provd_build_info", "Build information; always 1.");
    describe_counter!(
        "provd_actor_restarts_total",
        "Restarts of a supervised actor after a crash."
    );
    describe_counter!(
        "provd_actor_escalations_total",
        "Actors whose restart budget was spent; they stay down."
    );
    describe_counter!(
        "provd_invalidations_total",
        "Invalidations committed, by revocation type."
    );
    describe_counter!(
        "provd_entries_invalidated_total",
        Unit::Count,
        "Cache entries deleted by invalidations, by revocation type."
    );
    describe_counter!(
        "provd_events_rejected_total",
        "Inbound events refused, by subject and reason."
    );
    describe_counter!(
        "provd_event_processing_errors_total",
        "Events whose processing failed transiently and will be retried."
    );
    describe_counter!(
        "provd_hot_cache_purge_errors_total",
        "Hot-tier purges that failed after an invalidation."
    );
    describe_counter!(
        "provd_http_requests_total",
        "HTTP requests answered, by route and status class."
    );
}

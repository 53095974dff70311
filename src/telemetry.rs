//! Logs (tracing), traces (OpenTelemetry over OTLP/HTTP, when `otel.endpoint` is set) and
//! metrics (Prometheus text format).
//!
//! Traces are the same tracing spans the logs carry (the HTTP request, each publish, each
//! consumed message, each call to a log), turned into OpenTelemetry spans by
//! `tracing-opentelemetry` and exported in batches from the SDK's own thread, so a slow or
//! absent receiver never holds a request. `actors::trace` carries the W3C context across the
//! bus.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::config::otel::OtelConfig;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from `otel.endpoint`.
    #[error("cannot export traces to {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's explanation.
        message: String,
    },
}

/// Keeps trace export running; dropping it flushes the spans not yet sent and stops it.
#[must_use = "dropping the guard stops trace export"]
pub struct TraceGuard(Option<SdkTracerProvider>);

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("provd: traces not all exported at shutdown: {e}");
        }
    }
}

/// Installs the log subscriber once; later calls (tests) are no-ops.
/// The filter comes from `PROVD_LOG` (e.g. `info,provd=debug`), default `info`.
pub fn init_logs(format: LogFormat) {
    install(format, None);
}

/// Installs the log subscriber and, when `otel.endpoint` is set, trace export over
/// OTLP/HTTP with `service.name` and `service.instance.id` (the node id) as its resource.
pub fn init_logs_and_traces(
    format: LogFormat,
    otel: &OtelConfig,
    node_id: &str,
) -> Result<TraceGuard, TelemetryError> {
    let Some(endpoint) = &otel.endpoint else {
        install(format, None);
        return Ok(TraceGuard(None));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;
    let resource = Resource::builder()
        .with_service_name(otel.service_name.clone())
        .with_attribute(KeyValue::new("service.instance.id", node_id.to_owned()))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    install(format, Some(&provider));
    actors::trace::set_exporting(true);
    Ok(TraceGuard(Some(provider)))
}

fn install(format: LogFormat, traces: Option<&SdkTracerProvider>) {
    let filter = EnvFilter::try_from_env("PROVD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let traces = traces.map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("provd")));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
}

static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = histogram_buckets(PrometheusBuilder::new()).build_recorder();
            let handle = recorder.handle();
            // A recorder installed by someone else (never in provd) would win; ours still
            // renders, just empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            crate::ops::catalogue::describe();
            crate::ops::catalogue::build_info();
            handle
        })
        .clone()
}

/// Buckets make these histograms (not summaries), so they aggregate across nodes.
fn histogram_buckets(b: PrometheusBuilder) -> PrometheusBuilder {
    const BATCH: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];
    const SECONDS: &[f64] = &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    b.set_buckets_for_metric(Matcher::Full("provd_write_behind_batch_size".into()), BATCH)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("provd_write_behind_flush_duration_seconds".into()),
                SECONDS,
            )
        })
        .and_then(|b| {
            // Rekor v2 writes wait for the next checkpoint, so the range reaches a minute.
            b.set_buckets_for_metric(
                Matcher::Full("provd_rekor_request_duration_seconds".into()),
                &[
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
                ],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("provd_http_request_duration_seconds".into()),
                SECONDS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("provd_provcache_read_duration_seconds".into()),
                &[
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ],
            )
        })
        // Only an empty bucket list is refused, and these are constants; without buckets the
        // two would render as summaries.
        .unwrap_or_else(|_| PrometheusBuilder::new())
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
        "Consumed messages refused for good (recorded and terminated), by subject and reason."
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
        "provd_provcache_hits_total",
        "Provenance-cache reads answered, by tier (memory, valkey, postgres)."
    );
    describe_counter!(
        "provd_provcache_misses_total",
        "Provenance-cache reads a tier could not answer, by tier."
    );
    describe_counter!(
        "provd_provcache_tier_errors_total",
        "Failed cache-tier operations, by tier and operation; the tier is skipped briefly."
    );
    describe_counter!(
        "provd_provcache_writes_total",
        "Accepted cache writes, by path (write_behind or direct)."
    );
    describe_counter!(
        "provd_provcache_write_behind_fallbacks_total",
        "Writes committed directly because the hot tier or the bus was down."
    );
    describe_counter!(
        "provd_provcache_stale_removed_total",
        "Hot-tier copies taken back because an invalidation raced with putting them there."
    );
    describe_counter!(
        "provd_provcache_recheck_errors_total",
        "Failed re-checks of hot-tier copies against invalidations."
    );
    describe_gauge!(
        "provd_write_behind_queue_depth",
        Unit::Count,
        "Accepted writes not yet flushed to PostgreSQL."
    );
    describe_gauge!(
        "provd_write_behind_lag_seconds",
        Unit::Seconds,
        "Age of the oldest write the flusher holds unflushed."
    );
    describe_gauge!(
        "provd_write_behind_flushed_lag_seconds",
        Unit::Seconds,
        "Age of the oldest write of the last flush when it committed."
    );
    metrics::describe_histogram!(
        "provd_write_behind_batch_size",
        Unit::Count,
        "Writes per write-behind flush."
    );
    metrics::describe_histogram!(
        "provd_write_behind_flush_duration_seconds",
        Unit::Seconds,
        "Time of one write-behind flush transaction."
    );
    describe_counter!(
        "provd_write_behind_flushed_total",
        "Rows written by the write-behind flusher."
    );
    describe_counter!(
        "provd_write_behind_invalidated_total",
        "Queued writes dropped because a matching invalidation was recorded after them."
    );
    describe_counter!(
        "provd_write_behind_flush_errors_total",
        "Write-behind flushes that failed and will be retried."
    );
    describe_counter!(
        "provd_write_behind_rejected_total",
        "Writes on the write-behind stream that can never be stored, recorded and terminated."
    );
    describe_counter!(
        "provd_rekor_requests_total",
        "Requests to a transparency-log backend, every attempt, by backend and outcome."
    );
    metrics::describe_histogram!(
        "provd_rekor_request_duration_seconds",
        Unit::Seconds,
        "Time of one request attempt to a transparency-log backend."
    );
    describe_counter!(
        "provd_rekor_retries_total",
        "Retries of transparency-log requests inside the resilient wrapper, by backend."
    );
    describe_gauge!(
        "provd_rekor_circuit_open",
        "Whether a backend's circuit breaker is open (1) or closed (0)."
    );
    describe_counter!(
        "provd_http_requests_total",
        "HTTP requests answered, by method, route template and status code."
    );
}

//! Descriptions of the metrics not described by the module that records them, and the
//! series created at zero at start.
//!
//! A Prometheus series appears in `/metrics` only once something touches it. A dashboard
//! (and `rate()`) should see every series from the first scrape, and the catalogue test
//! compares the names in `/metrics` with `docs/metrics.md`; so every series whose label
//! values are known at start (actors, tiers, triggers, subjects, outcomes, backends) is
//! created here with the value zero.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::config::Config;

/// Inbound subjects (without prefix) that consumers count rejections and errors under.
const INBOUND_SUBJECTS: [&str; 7] = [
    "provcache.writes",
    "prov.ledger.revocations",
    "prov.events.signer.revoked",
    "prov.events.feed.epoch_advanced",
    "prov.events.policy.updated",
    "prov.events.invalidate",
    "rekor.submissions.requested",
];

/// The reasons for refusing an event (`events::RejectReason`).
const REJECT_REASONS: [&str; 9] = [
    "invalid_json",
    "unsupported_spec_version",
    "unknown_type",
    "unsupported_version",
    "subject_mismatch",
    "missing_field",
    "invalid_field",
    "invalid_data",
    "store_refused",
];

/// Outcomes of one submission-queue delivery (`actors::submitter`).
const SUBMISSION_OUTCOMES: [&str; 6] = [
    "logged",
    "duplicate",
    "retried",
    "dead_lettered",
    "rejected",
    "store_unavailable",
];

/// Stored submission statuses (`actors::domain::submission`).
pub const SUBMISSION_STATUSES: [&str; 5] = [
    "queued",
    "submitting",
    "retrying",
    "logged",
    "dead_lettered",
];

/// Outcomes of an evidence upload (`http::proofs`).
const UPLOAD_OUTCOMES: [&str; 5] = ["created", "existing", "invalid", "too_large", "error"];

/// Describes the metrics this module owns. Called once, when the recorder is installed.
pub fn describe() {
    describe_counter!(
        "provd_provcache_undecodable_total",
        "Hot-tier values that could not be decoded and were treated as misses, by tier."
    );
    describe_histogram!(
        "provd_provcache_read_duration_seconds",
        Unit::Seconds,
        "Time of one cache read through the API, by the tier that answered (miss: none)."
    );
    describe_histogram!(
        "provd_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer one HTTP request, by method and route."
    );
    describe_gauge!(
        "provd_service_up",
        "Whether a required service (postgres, redis, nats) answers: 1 or 0."
    );
    describe_gauge!(
        "provd_actor_up",
        "Whether a supervised actor is running: 1 or 0."
    );
    describe_gauge!(
        "provd_ledger_outbox_lag",
        "Ledger rows committed but not yet published by the outbox (head minus published)."
    );
    describe_gauge!(
        "provd_ledger_replay_checkpoint_seq_no",
        "The last ledger seq_no this node has applied to its hot tiers (its replay checkpoint)."
    );
    describe_gauge!(
        "provd_rekor_submissions_stored",
        "Rekor submissions stored, by status (all nodes; read from PostgreSQL)."
    );
    describe_gauge!(
        "provd_jetstream_consumer_pending",
        "Messages waiting on a durable JetStream consumer (undelivered plus unacknowledged), by consumer."
    );
    // The checkpoint and divergence gauges are described by `actors::divergence`.
    describe_counter!(
        "provd_rekor_submissions_total",
        "Submission-queue deliveries, by outcome."
    );
    describe_counter!(
        "provd_rekor_dead_letters_total",
        "Submissions dead-lettered (a permanent failure or too many attempts)."
    );
    describe_gauge!(
        "provd_rekor_submission_queue_depth",
        "Submissions waiting in the queue, as the submitter last saw it."
    );
}

/// Sets `provd_build_info{version, profile, target}` to 1.
pub fn build_info() {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    metrics::gauge!(
        "provd_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "profile" => profile,
        "target" => format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
    )
    .set(1.0);
}

/// Creates at zero every series whose labels are known from the configuration.
/// `actors` are the supervised children's names.
pub fn register(config: &Config, actors: &[String]) {
    for actor in actors {
        metrics::counter!("provd_actor_restarts_total", "actor" => actor.clone()).increment(0);
        metrics::counter!("provd_actor_escalations_total", "actor" => actor.clone()).increment(0);
        metrics::gauge!("provd_actor_up", "actor" => actor.clone()).increment(0.0);
        // Consuming actors read a durable consumer of their own name; the ledger consumer's
        // is named after the node.
        let durable = match actor.as_str() {
            actors::ledger::OUTBOX_NAME => continue,
            actors::ledger::CONSUMER_NAME => actors::ledger::durable_name(&config.node_id),
            name => name.to_owned(),
        };
        metrics::gauge!("provd_jetstream_consumer_pending", "consumer" => durable).increment(0.0);
    }
    for subject in INBOUND_SUBJECTS {
        for reason in REJECT_REASONS {
            metrics::counter!("provd_events_rejected_total", "subject" => subject, "reason" => reason)
                .increment(0);
        }
        metrics::counter!("provd_event_processing_errors_total", "subject" => subject).increment(0);
    }
    for service in crate::app::service_names(config) {
        metrics::gauge!("provd_service_up", "service" => service).increment(0.0);
    }
    metrics::counter!("provd_hot_cache_purge_errors_total").increment(0);
    metrics::counter!("provd_provcache_undecodable_total", "tier" => "valkey").increment(0);
    for tier in ["memory", "valkey", crate::app::store_name(config), "miss"] {
        let _ = metrics::histogram!("provd_provcache_read_duration_seconds", "tier" => tier);
    }
    for name in [
        "provd_write_behind_queue_depth",
        "provd_write_behind_lag_seconds",
        "provd_write_behind_flushed_lag_seconds",
        "provd_ledger_outbox_lag",
        "provd_ledger_replay_checkpoint_seq_no",
        "provd_rekor_submission_queue_depth",
    ] {
        metrics::gauge!(name).increment(0.0);
    }
    for name in [
        "provd_write_behind_flushed_total",
        "provd_write_behind_invalidated_total",
        "provd_write_behind_flush_errors_total",
        "provd_write_behind_rejected_total",
        "provd_rekor_dead_letters_total",
        "provd_evidence_bytes_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    let _ = metrics::histogram!("provd_write_behind_batch_size");
    let _ = metrics::histogram!("provd_write_behind_flush_duration_seconds");
    for outcome in SUBMISSION_OUTCOMES {
        metrics::counter!("provd_rekor_submissions_total", "outcome" => outcome).increment(0);
    }
    for status in SUBMISSION_STATUSES {
        metrics::gauge!("provd_rekor_submissions_stored", "status" => status).increment(0.0);
    }
    for outcome in UPLOAD_OUTCOMES {
        metrics::counter!("provd_evidence_uploads_total", "outcome" => outcome).increment(0);
    }
    for backend in config.rekor.backends.keys() {
        let b = backend.clone();
        metrics::counter!("provd_rekor_requests_total", "backend" => b.clone(), "outcome" => "ok")
            .increment(0);
        let _ = metrics::histogram!("provd_rekor_request_duration_seconds", "backend" => b.clone());
        metrics::counter!("provd_rekor_retries_total", "backend" => b.clone()).increment(0);
        metrics::gauge!("provd_rekor_circuit_open", "backend" => b.clone()).increment(0.0);
        for gauge in [
            "provd_rekor_checkpoint_age_seconds",
            "provd_rekor_checkpoint_tree_size",
            "provd_rekor_open_divergences",
        ] {
            metrics::gauge!(gauge, "backend" => b.clone()).increment(0.0);
        }
    }
    metrics::counter!(
        "provd_http_requests_total",
        "method" => "GET",
        "route" => "/metrics",
        "status" => "200"
    )
    .increment(0);
    let _ = metrics::histogram!("provd_http_request_duration_seconds", "method" => "GET", "route" => "/metrics");
}

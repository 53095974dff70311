//! Log monitoring end to end: provd's log-sync actors, divergence detector and alert outbox
//! (real PostgreSQL and NATS, or embedded; the HTTP API) against the local log over real HTTP,
//! with its fault modes (fork, rollback, wrong key), two nodes for a split view (distributed
//! only), and a webhook receiver started by the test.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::domain::dsse::Envelope;
use actors::ports::{RekorClient, RekorSubmission};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use common::lab_log::LabLog;
use common::{
    ADMIN_TOKEN, READ_TOKEN, TestApp, TestData, TestDb, both_modes, eventually, metric_value,
};
use provd::adapters::rekor::build_backend;
use provd::app::App;
use provd::config::RawRekor;
use provd::config::rekor::RawRekorBackend;
use provd::devlog::{Faults, ForkFault};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);
const FORK_HEADER: &str = "x-dev-log-fork";

impl LabLog {
    /// A backend on this log polled every `interval`, optionally sending `headers`.
    fn backend(&self, api: &str, interval: &str, headers: &[(&str, &str)]) -> RawRekorBackend {
        RawRekorBackend {
            kind: Some("private".into()),
            api: Some(api.into()),
            url: Some(self.base.clone()),
            keys: Some(vec![if api == "v1" {
                self.info.v1_public_key_pem.clone()
            } else {
                self.info.v2_vkey.clone()
            }]),
            origin: Some(self.info.origin.clone()),
            max_attempts: Some(1),
            breaker_threshold: Some(100_000),
            read_timeout: Some("10s".into()),
            sync_interval: Some(interval.into()),
            headers: (!headers.is_empty()).then(|| {
                headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>()
            }),
            ..RawRekorBackend::default()
        }
    }

    fn rekor(&self, backends: Vec<(&str, RawRekorBackend)>) -> RawRekor {
        RawRekor {
            default_backend: backends.first().map(|(n, _)| (*n).to_owned()),
            backends: backends
                .into_iter()
                .map(|(n, b)| (n.to_owned(), b))
                .collect(),
            queue: None,
        }
    }

    /// A client of this log, for writing entries straight to it.
    fn client(&self) -> Arc<dyn RekorClient> {
        let config = self
            .rekor(vec![("writer", self.backend("v1", "10s", &[]))])
            .validate()
            .expect("valid backend")
            .backends["writer"]
            .clone();
        build_backend(&config).expect("client builds")
    }

    fn envelope(&self) -> Envelope {
        let payload =
            json!({"_type": "https://in-toto.io/Statement/v1", "nonce": uuid::Uuid::new_v4()});
        Envelope::sign(
            "application/vnd.in-toto+json",
            payload.to_string().as_bytes(),
            &self.signer,
            "",
        )
    }

    fn pem(&self) -> String {
        self.signer.public_key().to_pem().expect("pem")
    }

    /// Appends `n` entries straight to the log.
    async fn grow(&self, client: &Arc<dyn RekorClient>, n: usize) {
        for _ in 0..n {
            let submission = RekorSubmission {
                envelope: self.envelope(),
                verifiers: vec![self.signer.public_key()],
            };
            client.submit(&submission).await.expect("logged");
        }
    }
}

/// A webhook receiver on port 0 that refuses its first `fail_first` requests with 500.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct HookState {
    got: Arc<Mutex<Vec<Value>>>,
    refuse: Arc<Mutex<usize>>,
}

async fn hook_handler(State(s): State<HookState>, Json(body): Json<Value>) -> StatusCode {
    let mut refuse = s.refuse.lock().expect("lock");
    if *refuse > 0 {
        *refuse -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    s.got.lock().expect("lock").push(body);
    StatusCode::NO_CONTENT
}

impl Hook {
    async fn start(fail_first: usize) -> Hook {
        let got = Arc::new(Mutex::new(Vec::new()));
        let state = HookState {
            got: got.clone(),
            refuse: Arc::new(Mutex::new(fail_first)),
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(hook_handler))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Hook {
            url,
            got,
            _stop: stop,
        }
    }

    fn received(&self) -> Vec<Value> {
        self.got.lock().expect("lock").clone()
    }
}

impl TestApp {
    async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn divergences(&self, open: bool) -> Vec<Value> {
        self.get_json(&format!("/api/v1/rekor/divergences?open={open}"))
            .await["divergences"]
            .as_array()
            .expect("divergences")
            .clone()
    }

    async fn checkpoints(&self, backend: &str) -> Vec<Value> {
        self.get_json(&format!(
            "/api/v1/rekor/checkpoints?backend={backend}&limit=1000"
        ))
        .await["checkpoints"]
            .as_array()
            .expect("checkpoints")
            .clone()
    }

    async fn latest_size(&self, backend: &str) -> Option<u64> {
        self.checkpoints(backend)
            .await
            .iter()
            .filter(|c| c["observed_by"] == self.config.node_id.as_str())
            .filter_map(|c| c["tree_size"].as_u64())
            .max()
    }

    /// The first divergence of `kind`, once it is there.
    async fn until_divergence(&self, kind: &str) -> Value {
        eventually(&format!("a {kind} divergence"), WAIT, || async {
            self.divergences(false)
                .await
                .into_iter()
                .find(|d| d["kind"] == kind)
        })
        .await
    }

    async fn ack(&self, id: i64) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/v1/rekor/divergences/{id}/ack")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"by": "test operator"}))
            .send()
            .await
            .expect("ack")
    }

    async fn readyz(&self) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
        (status, resp.json().await.expect("json"))
    }

    /// Sync rounds of `backend` so far: (all, diverged).
    async fn rounds(&self, backend: &str) -> (f64, f64) {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let of = |outcome: &str| {
            metric_value(
                &text,
                "provd_rekor_sync_ticks_total",
                &[("backend", backend), ("outcome", outcome)],
            )
        };
        let all = ["advanced", "unchanged", "held", "diverged", "unavailable"]
            .iter()
            .map(|o| of(o))
            .sum();
        (all, of("diverged"))
    }

    async fn receipts_unverified(&self) -> i64 {
        self.query_i64("SELECT count(*) FROM rekor_entries WHERE verified_at IS NULL")
            .await
    }
}

both_modes! {
/// The seed's steps 5 and 6: the sync picks up new entries and re-verifies this node's
/// receipts (`verified_at`); with a checkpoint stored, a forked log is a divergence.
async fn sync_verifies_new_entries_and_receipts_and_a_forked_log_is_a_divergence() {
    // Metrics are process-wide: each mode counts under its own backend name.
    let seed = common::per_mode("seed");
    let seed = seed.as_str();
    let log = LabLog::start().await;
    let writer = log.client();
    let backend = log.backend("v1", "200ms", &[(FORK_HEADER, "1")]);
    let rekor = log
        .rekor(vec![(seed, backend)])
        .validate()
        .expect("valid");
    let Some(app) = TestApp::start_with(move |c| c.rekor = rekor).await else {
        return;
    };
    // The empty log is synced without alarm.
    eventually("the empty log's checkpoint", WAIT, || async {
        (app.latest_size(seed).await == Some(0)).then_some(())
    })
    .await;

    // Receipts through provd's queue.
    for _ in 0..3 {
        let resp = app
            .http
            .post(app.url("/api/v1/rekor/submissions"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"envelope": log.envelope(), "verifiers": [log.pem()]}))
            .send()
            .await
            .expect("submit");
        assert_eq!(resp.status(), 202);
    }
    eventually("3 receipts stored", WAIT, || async {
        (app.query_i64("SELECT count(*) FROM rekor_entries").await == 3).then_some(())
    })
    .await;
    log.grow(&writer, 2).await;
    // Step 5: the sync reaches the log's size and re-verifies every receipt.
    eventually(
        "the sync at size 5 with every receipt verified",
        WAIT,
        || async {
            (app.latest_size(seed).await == Some(5) && app.receipts_unverified().await == 0)
                .then_some(())
        },
    )
    .await;
    let stored = app.checkpoints(seed).await;
    assert!(
        stored
            .iter()
            .all(|c| c["note"].as_str().is_some_and(|n| n.contains("\n\n")))
    );
    let sizes: Vec<u64> = stored
        .iter()
        .filter_map(|c| c["tree_size"].as_u64())
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {sizes:?}"
    );
    let at_5 = app
        .get_json("/api/v1/rekor/checkpoints?size=5&limit=1")
        .await;
    assert_eq!(
        at_5["checkpoints"].as_array().map(Vec::len),
        Some(1),
        "{at_5}"
    );
    assert_eq!(at_5["checkpoints"][0]["tree_size"], 5);
    for bad in ["limit=0", "limit=1001", "size=-1", "colour=red"] {
        let resp = app
            .http
            .get(app.url(&format!("/api/v1/rekor/checkpoints?{bad}")))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 400, "{bad}");
    }
    assert!(
        app.divergences(false).await.is_empty(),
        "an honest log raises none"
    );
    assert!(
        app.metric(
            "provd_rekor_receipts_reverified_total",
            &[("backend", seed)]
        )
        .await
            >= 3.0
    );
    assert_eq!(
        app.metric("provd_rekor_checkpoint_tree_size", &[("backend", seed)])
            .await,
        5.0
    );

    // Step 6: the stored checkpoint (size 5) against a fork of the same size.
    log.set_faults(&Faults {
        fork: Some(ForkFault::Header {
            header: FORK_HEADER.into(),
        }),
        ..Faults::default()
    })
    .await;
    let fork = app.until_divergence("fork").await;
    assert_eq!(fork["backend"], seed);
    let notes = fork["evidence"]["checkpoints"].as_array().expect("notes");
    assert_eq!(notes.len(), 2, "{fork}");
    assert_eq!(notes[0]["tree_size"], 5);
    assert_eq!(notes[1]["tree_size"], 5);
    assert_ne!(notes[0]["root_hash"], notes[1]["root_hash"]);
    assert_ne!(notes[0]["note"], notes[1]["note"]);
    assert_eq!(
        app.latest_size(seed).await,
        Some(5),
        "the stored checkpoint stays"
    );
    app.finish().await;
}
}

both_modes! {
/// Fork, rollback and wrong-key faults are each detected within two sync rounds with
/// their kind and evidence; the webhook receives each once (after refusing the first
/// attempt); while one is open `/readyz` is red and the sync does not advance, and an
/// acknowledgement through the API clears both.
async fn each_fault_mode_is_detected_alerted_once_and_cleared_by_an_acknowledgement() {
    // Metrics are process-wide: each mode counts under its own backend name.
    let faults_backend = common::per_mode("faults");
    let faults_backend = faults_backend.as_str();
    let log = LabLog::start().await;
    let writer = log.client();
    log.grow(&writer, 4).await;
    let hook = Hook::start(1).await;
    let backend = log.backend("v1", "200ms", &[(FORK_HEADER, "1")]);
    let rekor = log
        .rekor(vec![(faults_backend, backend)])
        .validate()
        .expect("valid");
    let url = hook.url.clone();
    let Some(app) = TestApp::start_with(move |c| {
        c.rekor = rekor;
        c.alerts.webhook_url = Some(url);
    })
    .await
    else {
        return;
    };
    let gate = format!("rekor-divergence:{faults_backend}");
    let gate = gate.as_str();
    eventually("the first checkpoint", WAIT, || async {
        (app.latest_size(faults_backend).await == Some(4)).then_some(())
    })
    .await;
    eventually("ready", WAIT, || async {
        (app.readyz().await.0 == StatusCode::OK).then_some(())
    })
    .await;

    let faults = [
        (
            "fork",
            Faults {
                fork: Some(ForkFault::Header {
                    header: FORK_HEADER.into(),
                }),
                ..Faults::default()
            },
        ),
        (
            "rollback",
            Faults {
                rollback_to: Some(2),
                ..Faults::default()
            },
        ),
        (
            "bad_signature",
            Faults {
                wrong_key: true,
                ..Faults::default()
            },
        ),
    ];
    let mut size = 4;
    for (kind, fault) in faults {
        log.set_faults(&fault).await;
        // Rounds completed from here on that did not find it: at most the one already
        // running when the fault was set.
        let (before, diverged_before) = app.rounds(faults_backend).await;
        let d = app.until_divergence(kind).await;
        let (after, diverged_after) = app.rounds(faults_backend).await;
        let missed = (after - before) - (diverged_after - diverged_before);
        assert!(missed <= 1.0, "{kind}: {missed} rounds missed it");
        match kind {
            "bad_signature" => {
                let note = d["evidence"]["note"].as_str().expect("the refused note");
                assert!(
                    note.starts_with(&format!("{} - ", log.info.origin)),
                    "{note}"
                );
                assert!(
                    d["evidence"]["error"]
                        .as_str()
                        .expect("error")
                        .contains("signature")
                );
            }
            _ => {
                let notes = d["evidence"]["checkpoints"].as_array().expect("notes");
                assert_eq!(notes.len(), 2, "{d}");
                assert_eq!(notes[0]["role"], "verified");
                assert_eq!(notes[1]["role"], "fetched");
                if kind == "rollback" {
                    assert_eq!(notes[1]["tree_size"], 2);
                }
            }
        }
        // Held: not ready, and the log growing meanwhile does not move the sync.
        let body = eventually("not ready while it is open", WAIT, || async {
            let (status, body) = app.readyz().await;
            (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
        })
        .await;
        assert_eq!(body["actors"][gate]["status"], "failed", "{body}");
        assert!(
            body["actors"][gate]["detail"]
                .as_str()
                .expect("detail")
                .contains(kind),
            "{body}"
        );
        let held = ("outcome", "held");
        let held_before = app
            .metric(
                "provd_rekor_sync_ticks_total",
                &[("backend", faults_backend), held],
            )
            .await;
        log.set_faults(&Faults::default()).await;
        log.grow(&writer, 1).await;
        size += 1;
        eventually("a held round", WAIT, || async {
            let held_now = app
                .metric(
                    "provd_rekor_sync_ticks_total",
                    &[("backend", faults_backend), held],
                )
                .await;
            (held_now > held_before).then_some(())
        })
        .await;
        assert!(
            app.latest_size(faults_backend).await < Some(size),
            "held while open"
        );
        // The acknowledgement clears readiness and lets the sync advance.
        let id = d["id"].as_i64().expect("id");
        let acked = app.ack(id).await;
        assert_eq!(acked.status(), 200);
        let acked: Value = acked.json().await.expect("json");
        assert_eq!(acked["acknowledged_by"], "test operator");
        eventually("ready again", WAIT, || async {
            (app.readyz().await.0 == StatusCode::OK).then_some(())
        })
        .await;
        eventually("the sync advanced", WAIT, || async {
            (app.latest_size(faults_backend).await == Some(size)).then_some(())
        })
        .await;
    }

    // Each divergence went to the webhook exactly once (the first attempt was refused).
    eventually("every alert delivered", WAIT, || async {
        let all = app.divergences(false).await;
        (all.len() == 3 && all.iter().all(|d| !d["delivered_at"].is_null())).then_some(())
    })
    .await;
    let got = hook.received();
    let mut ids: Vec<i64> = got.iter().map(|a| a["id"].as_i64().expect("id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (3, 3), "{got:?}");
    let mut kinds: Vec<&str> = got
        .iter()
        .map(|a| a["kind"].as_str().expect("kind"))
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["bad_signature", "fork", "rollback"]);
    assert!(
        got.iter()
            .all(|a| a["evidence"].is_object() && a["detected_by"] == app.config.node_id.as_str())
    );
    for kind in ["fork", "rollback", "bad_signature"] {
        assert_eq!(
            app.metric(
                "provd_rekor_divergences_total",
                &[("backend", faults_backend), ("kind", kind)]
            )
            .await,
            1.0,
            "{kind} counted once"
        );
    }
    // Unknown ids and missing scopes are refused.
    assert_eq!(app.ack(999_999).await.status(), 404);
    let forbidden = app
        .http
        .post(app.url("/api/v1/rekor/divergences/1/ack"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("ack");
    assert_eq!(forbidden.status(), 403);
    app.finish().await;
}
}

both_modes! {
/// An honest log growing under load for 50 sync rounds, read through both the v1 API and
/// the v2 tiles, raises no divergence.
async fn an_honest_log_growing_under_load_for_50_rounds_raises_none() {
    // Metrics are process-wide: each mode counts under its own backend name.
    let (load_v1, load_v2) = (common::per_mode("load-v1"), common::per_mode("load-v2"));
    let (load_v1, load_v2) = (load_v1.as_str(), load_v2.as_str());
    let log = Arc::new(LabLog::start().await);
    let rekor = log
        .rekor(vec![
            (load_v1, log.backend("v1", "100ms", &[])),
            (load_v2, log.backend("v2", "100ms", &[])),
        ])
        .validate()
        .expect("valid");
    let Some(app) = TestApp::start_with(move |c| c.rekor = rekor).await else {
        return;
    };
    let (stop, mut stopped) = oneshot::channel::<()>();
    let writer_log = log.clone();
    let writer = tokio::spawn(async move {
        let client = writer_log.client();
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = &mut stopped => return n,
                _ = writer_log.grow(&client, 4) => n += 4,
            }
        }
    });
    for backend in [load_v1, load_v2] {
        eventually(
            &format!("50 rounds of {backend}"),
            Duration::from_secs(180),
            || async { (app.rounds(backend).await.0 >= 50.0).then_some(()) },
        )
        .await;
    }
    let _ = stop.send(());
    let written = writer.await.expect("writer");
    assert!(written >= 4, "the log grew under load");
    assert!(
        app.divergences(false).await.is_empty(),
        "{:?}",
        app.divergences(false).await
    );
    for backend in [load_v1, load_v2] {
        let advanced = app
            .metric(
                "provd_rekor_sync_ticks_total",
                &[("backend", backend), ("outcome", "advanced")],
            )
            .await;
        assert!(advanced >= 2.0, "{backend} advanced {advanced} times");
        assert_eq!(
            app.metric(
                "provd_rekor_sync_ticks_total",
                &[("backend", backend), ("outcome", "diverged")]
            )
            .await,
            0.0
        );
    }
    let (status, body) = app.readyz().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.finish().await;
}
}

/// A fork served only to node B (its requests carry the fork header) is invisible to
/// each node alone: both trust their first checkpoint. Node A's detector sees B's
/// observation on the shared bus (the nodes have separate databases with one deployment id,
/// so the bus is the only link) and raises a split view with both signed notes.
#[tokio::test]
async fn a_split_view_served_to_one_of_two_nodes_is_detected_through_shared_observations() {
    let log = LabLog::start().await;
    let writer = log.client();
    log.grow(&writer, 6).await;
    log.set_faults(&Faults {
        fork: Some(ForkFault::Header {
            header: FORK_HEADER.into(),
        }),
        ..Faults::default()
    })
    .await;
    let rekor_a = log
        .rekor(vec![("split", log.backend("v1", "200ms", &[]))])
        .validate()
        .expect("valid");
    let rekor_b = log
        .rekor(vec![(
            "split",
            log.backend("v1", "200ms", &[(FORK_HEADER, "1")]),
        )])
        .validate()
        .expect("valid");
    let Some(a) = TestApp::start_with(move |c| c.rekor = rekor_a).await else {
        return;
    };
    let db_b = TestData::Postgres(TestDb::create(&a.services).await);
    let mut config_b = common::test_config(&a.services, &db_b);
    config_b.nats_prefix = a.config.nats_prefix.clone();
    config_b.rekor = rekor_b;
    let node_b = config_b.node_id.clone();
    // One deployment: otherwise B refuses A's streams.
    common::set_deployment_id(&config_b, a.app.parts().deployment).await;
    let b = App::start(config_b).await.expect("node b starts");

    let split = a.until_divergence("fork").await;
    assert_eq!(split["evidence"]["split_view"], true, "{split}");
    let seen: Vec<&Value> = split["evidence"]["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .collect();
    let mut by: Vec<&str> = seen
        .iter()
        .map(|c| c["observed_by"].as_str().expect("node"))
        .collect();
    by.sort_unstable();
    let mut expected = vec![a.config.node_id.as_str(), node_b.as_str()];
    expected.sort_unstable();
    assert_eq!(by, expected);
    assert_eq!(
        seen[0]["note"].as_str().map(|n| n.lines().nth(1)),
        seen[1]["note"].as_str().map(|n| n.lines().nth(1)),
        "same size"
    );
    assert_ne!(seen[0]["root_hash"], seen[1]["root_hash"]);
    // Neither node alone saw anything wrong with its own log view.
    let own: Vec<Value> = a
        .divergences(false)
        .await
        .into_iter()
        .filter(|d| d["evidence"]["split_view"] == false)
        .collect();
    assert!(own.is_empty(), "{own:?}");
    // Node A holds the backend until an operator acknowledges the split view.
    eventually("node A not ready", WAIT, || async {
        (a.readyz().await.0 == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;

    b.stop().await;
    db_b.remove().await;
    a.finish().await;
}

/// The same, with the two views at different sizes (the realistic case: nodes poll at
/// different moments): node B holds the fork at size 6 while the log grows to 8 before node A
/// starts. Node A's detector asks the log for the consistency proof between B's view and its
/// own; it does not verify, which is a split view.
#[tokio::test]
async fn a_split_view_at_different_sizes_is_detected_through_a_consistency_proof() {
    let log = LabLog::start().await;
    let writer = log.client();
    log.grow(&writer, 6).await;
    log.set_faults(&Faults {
        fork: Some(ForkFault::Header {
            header: FORK_HEADER.into(),
        }),
        ..Faults::default()
    })
    .await;
    let Some(services) = common::services() else {
        return;
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db_b = TestData::Postgres(TestDb::create(&services).await);
    let mut config_b = common::test_config(&services, &db_b);
    config_b.rekor = log
        .rekor(vec![(
            "split",
            log.backend("v1", "200ms", &[(FORK_HEADER, "1")]),
        )])
        .validate()
        .expect("valid");
    let prefix = config_b.nats_prefix.clone();
    let b = App::start(config_b).await.expect("node b starts");
    eventually("node B stored the forked view", WAIT, || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM rekor_checkpoints WHERE tree_size = 6")
                .fetch_one(b.parts().store.pg_pool().expect("postgres"))
                .await
                .expect("count");
        (n > 0).then_some(())
    })
    .await;
    log.grow(&writer, 2).await;
    let rekor_a = log
        .rekor(vec![("split", log.backend("v1", "200ms", &[]))])
        .validate()
        .expect("valid");
    // A store of its own, B's deployment: otherwise A refuses B's streams.
    let Some(a) = TestApp::start_in_deployment(b.parts().deployment, move |c| {
        c.rekor = rekor_a;
        c.nats_prefix = prefix;
    })
    .await
    else {
        return;
    };
    let split = a.until_divergence("fork").await;
    assert_eq!(split["evidence"]["split_view"], true, "{split}");
    let sizes: Vec<u64> = split["evidence"]["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .map(|c| c["tree_size"].as_u64().expect("size"))
        .collect();
    assert_eq!(sizes, [6, 8], "{split}");
    assert!(
        !split["evidence"]["proof"]
            .as_array()
            .expect("proof")
            .is_empty()
    );

    b.stop().await;
    db_b.remove().await;
    a.finish().await;
}

both_modes! {
/// A restart resumes from the stored checkpoint: a node that verified size 4, stopped, and
/// restarted while the log serves it a fork of size 4 finds the fork at once; nothing it had
/// verified is fetched again as new.
async fn a_restart_resumes_from_the_stored_checkpoint() {
    // Metrics are process-wide: each mode counts under its own backend name.
    let restart = common::per_mode("restart");
    let restart = restart.as_str();
    let log = LabLog::start().await;
    let writer = log.client();
    log.grow(&writer, 4).await;
    let rekor = log
        .rekor(vec![(
            restart,
            log.backend("v1", "200ms", &[(FORK_HEADER, "1")]),
        )])
        .validate()
        .expect("valid");
    let Some(first) = TestApp::start_with(move |c| c.rekor = rekor).await else {
        return;
    };
    eventually("size 4 verified", WAIT, || async {
        (first.latest_size(restart).await == Some(4)).then_some(())
    })
    .await;
    let TestApp {
        app,
        config,
        data,
        http,
        services,
        ..
    } = first;
    app.stop().await;

    // While it is down the log forks at the size it verified.
    log.set_faults(&Faults {
        fork: Some(ForkFault::Header {
            header: FORK_HEADER.into(),
        }),
        ..Faults::default()
    })
    .await;
    let app = App::start(config.clone()).await.expect("restarts");
    let again = TestApp {
        base: format!("http://{}", app.local_addr()),
        app,
        http,
        config,
        data,
        services,
    };
    let fork = again.until_divergence("fork").await;
    let notes = fork["evidence"]["checkpoints"].as_array().expect("notes");
    assert_eq!(notes[0]["role"], "verified");
    assert_eq!(notes[0]["tree_size"], 4);
    assert_ne!(notes[0]["root_hash"], notes[1]["root_hash"]);
    let stored = again.checkpoints(restart).await;
    assert_eq!(stored.len(), 1, "the fork was never stored: {stored:?}");
    again.finish().await;
}
}

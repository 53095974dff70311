//! Deployment identity: the id each database makes at its first migration, the JetStream
//! streams and consumers tagged with it, and the refusal to start against another
//! deployment's. Two deployments stand for "two databases on one NATS server without a
//! prefix": two test databases sharing one test prefix.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use actors::ports::{ConsumerSpec, EventBus as _, PortError, StartPosition};
use async_nats::jetstream::consumer;
use common::{TestApp, TestData, both_modes, eventually, services, test_config};
use events::Subjects;
use events::streams::{self, PROV_EVENTS, PROVCACHE_WRITES, PROVCACHE_WRITES_SUBJECT};
use futures::StreamExt as _;
use provd::adapters::AdapterError;
use provd::adapters::jetstream::{JetStreamBus, owner_description};
use provd::app::{App, AppError};
use serde_json::Value;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// `prefix`'s streams that exist, by name, with their descriptions.
async fn stream_descriptions(nats_url: &str, prefix: &str) -> BTreeMap<String, Option<String>> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
    let subjects = Subjects::new(prefix);
    let mut out = BTreeMap::new();
    for def in &streams::ALL {
        let name = subjects.stream_name(def);
        if let Ok(stream) = js.get_stream(&name).await {
            out.insert(name, stream.cached_info().config.description.clone());
        }
    }
    out
}

/// Every consumer on `prefix`'s streams, by `stream/consumer`, with its configuration.
async fn consumers(nats_url: &str, prefix: &str) -> BTreeMap<String, consumer::Config> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
    let subjects = Subjects::new(prefix);
    let mut out = BTreeMap::new();
    for def in &streams::ALL {
        let name = subjects.stream_name(def);
        let Ok(stream) = js.get_stream(&name).await else {
            continue;
        };
        let mut list = stream.consumers();
        while let Some(info) = list.next().await {
            let info = info.expect("consumer info");
            out.insert(format!("{name}/{}", info.name), info.config);
        }
    }
    out
}

/// The consumers once the flusher's and this node's ledger consumer exist: the actors
/// subscribe after `App::start` returns.
async fn started_consumers(
    nats_url: &str,
    prefix: &str,
    node_id: &str,
) -> BTreeMap<String, consumer::Config> {
    let ledger = format!("/{}", actors::ledger::durable_name(node_id));
    eventually("the flusher's and the ledger's consumers", WAIT, || async {
        let c = consumers(nats_url, prefix).await;
        let flusher = c.keys().any(|k| k.ends_with("/write-behind-flusher"));
        let ledger = c.keys().any(|k| k.ends_with(&ledger));
        (flusher && ledger).then_some(c)
    })
    .await
}

/// Whether every consumer in `c` names `deployment` as its owner.
fn all_owned_by(c: &BTreeMap<String, consumer::Config>, deployment: Uuid) -> bool {
    let mine = owner_description(deployment);
    c.values()
        .all(|c| c.description.as_deref() == Some(mine.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deployment_on_the_same_prefix_is_refused_and_a_second_node_is_not() {
    // Distributed only: the in-process bus lives in the deployment's own SQLite file.
    let Some(a) = TestApp::start().await else {
        return;
    };
    let nats = a.services.nats_url.clone();
    let prefix = a.config.nats_prefix.clone();
    let ours = a.app.parts().deployment;
    assert_eq!(ours, a.app.store().deployment_id().await.expect("id"));
    let before = started_consumers(&nats, &prefix, &a.config.node_id).await;
    assert!(all_owned_by(&before, ours), "{before:#?}");
    let streams_a = stream_descriptions(&nats, &prefix).await;
    assert_eq!(streams_a.len(), streams::ALL.len());
    assert!(
        streams_a
            .values()
            .all(|d| d.as_deref() == Some(owner_description(ours).as_str())),
        "{streams_a:#?}"
    );

    // Deployment B: a database of its own, A's NATS prefix.
    let (data_b, services) = TestData::create().await.expect("services are up");
    let mut config_b = test_config(&services, &data_b);
    config_b.nats_prefix = prefix.clone();
    let err = match App::start(config_b.clone()).await {
        Ok(_) => panic!("deployment B started on deployment A's streams"),
        Err(e) => e,
    };
    // B's database was migrated before the refusal, so it has its own id.
    let theirs = provd::app::open_store(&config_b)
        .await
        .expect("B's store")
        .deployment_id()
        .await
        .expect("B's id");
    assert_ne!(ours, theirs, "two databases, two deployments");
    let foreign = match &err {
        AppError::ForeignDeployment(foreign) => {
            assert_eq!(foreign.deployment, theirs);
            assert_eq!(foreign.owner, ours);
            assert!(
                streams_a.contains_key(&foreign.stream),
                "{} is one of A's streams",
                foreign.stream
            );
            foreign
        }
        other => panic!("refused for another reason: {other}"),
    };
    let message = err.to_string();
    for needle in [
        ours.to_string(),
        theirs.to_string(),
        format!("`{}`", foreign.stream),
        "nats_prefix".to_owned(),
        "database_url".to_owned(),
    ] {
        assert!(message.contains(&needle), "{needle} in: {message}");
    }
    // The refused start changed nothing of A's.
    let now = consumers(&nats, &prefix).await;
    assert!(all_owned_by(&now, ours), "{now:#?}");
    assert_eq!(stream_descriptions(&nats, &prefix).await, streams_a);
    data_b.remove().await;

    // A second node of A: A's database and prefix.
    let db = a.config.database_url.clone();
    let node2 = TestApp::start_with(|c| {
        c.database_url = db;
        c.nats_prefix = prefix.clone();
    })
    .await
    .expect("services are up");
    assert_eq!(node2.app.parts().deployment, ours);
    let status: Value = node2
        .http
        .get(node2.url("/api/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["deployment_id"], ours.to_string());
    // Its own ledger consumer carries A's id too.
    let both = started_consumers(&nats, &prefix, &node2.config.node_id).await;
    assert!(all_owned_by(&both, ours), "{both:#?}");

    let TestApp { app, data, .. } = node2;
    app.stop().await;
    data.remove().await;
    a.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_made_before_deployment_ids_are_adopted_with_their_configuration() {
    let Some(a) = TestApp::start().await else {
        return;
    };
    let TestApp {
        app,
        config,
        data,
        services,
        ..
    } = a;
    let ours = app.parts().deployment;
    let before = started_consumers(&services.nats_url, &config.nats_prefix, &config.node_id).await;
    app.stop().await;

    // What a provd from before deployment ids left: the same streams and consumers, no
    // description.
    let js =
        async_nats::jetstream::new(async_nats::connect(&services.nats_url).await.expect("nats"));
    let streams_before = stream_descriptions(&services.nats_url, &config.nats_prefix).await;
    for name in streams_before.keys() {
        let mut c = js
            .get_stream(name)
            .await
            .expect("stream")
            .cached_info()
            .config
            .clone();
        c.description = None;
        js.update_stream(&c)
            .await
            .expect("stream description removed");
    }
    for (name, c) in &before {
        // Made again rather than updated: nats-server before 2.10 cannot update a consumer
        // that starts at a time.
        let (stream, consumer) = name.split_once('/').expect("stream/consumer");
        let stream = js.get_stream(stream).await.expect("stream");
        stream.delete_consumer(consumer).await.expect("deleted");
        stream
            .create_consumer(consumer::Config {
                description: None,
                ..c.clone()
            })
            .await
            .expect("made without a description");
    }
    let stripped = consumers(&services.nats_url, &config.nats_prefix).await;
    assert!(
        stripped.values().all(|c| c.description.is_none()),
        "{stripped:#?}"
    );

    assert!(
        stream_descriptions(&services.nats_url, &config.nats_prefix)
            .await
            .values()
            .all(Option::is_none)
    );

    // The same deployment starts again and takes them back, changing nothing else.
    let app = App::start(config.clone())
        .await
        .expect("starts over unclaimed streams and consumers");
    let mine = owner_description(ours);
    let streams_after = stream_descriptions(&services.nats_url, &config.nats_prefix).await;
    assert_eq!(streams_after.len(), streams::ALL.len());
    assert!(
        streams_after
            .values()
            .all(|d| d.as_deref() == Some(mine.as_str())),
        "{streams_after:#?}"
    );
    let after = consumers(&services.nats_url, &config.nats_prefix).await;
    for (name, old) in &before {
        let new = after.get(name).expect("the consumer is kept");
        // nats-server before 2.10 cannot update a consumer that starts at a time; its
        // stream speaks for it. Every other consumer is adopted.
        if old.deliver_policy == consumer::DeliverPolicy::All {
            assert_eq!(new.description.as_deref(), Some(mine.as_str()), "{name}");
        } else {
            assert!(
                new.description.is_none() || new.description.as_deref() == Some(mine.as_str()),
                "{name}: {:?}",
                new.description
            );
        }
        assert_eq!(
            consumer::Config {
                description: None,
                ..new.clone()
            },
            consumer::Config {
                description: None,
                ..old.clone()
            },
            "{name}: only the description changed"
        );
    }

    let bus = app.bus().clone();
    app.stop().await;
    let _ = bus.delete_streams().await;
    data.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_consumers_another_deployment_made_after_start_are_refused() {
    let Some(services) = services() else {
        return;
    };
    let connect = |prefix: String| {
        let url = services.nats_url.clone();
        async move {
            JetStreamBus::connect(&url, Subjects::new(prefix))
                .await
                .expect("nats")
                .with_stream_max_bytes(Some(64 * 1024 * 1024))
        }
    };
    let unique = || format!("d{}", &Uuid::new_v4().simple().to_string()[..12]);
    let (id_a, id_b) = (Uuid::new_v4(), Uuid::new_v4());
    let flusher = |subjects: &Subjects| ConsumerSpec {
        stream: subjects.stream_name(&PROVCACHE_WRITES),
        durable: "write-behind-flusher".into(),
        filter_subject: subjects.prefixed(PROVCACHE_WRITES_SUBJECT),
        start: StartPosition::All,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        max_ack_pending: 0,
    };

    // Streams A made, no consumer on them yet: B's claim and B's subscriptions refuse them.
    let prefix = unique();
    let subjects = Subjects::new(&prefix);
    let a = connect(prefix.clone()).await.for_deployment(id_a);
    let b = connect(prefix.clone()).await.for_deployment(id_b);
    a.ensure_streams().await.expect("A makes the streams");
    match b.claim().await {
        Err(AdapterError::ForeignOwner(f)) => {
            assert_eq!((f.owner, f.deployment), (id_a, id_b));
            assert_eq!(f.consumer, None);
            assert!(subjects.stream_name(&PROV_EVENTS) == f.stream, "{f}");
        }
        other => panic!("expected a foreign stream, got {other:?}"),
    }
    match b.subscribe(&flusher(&subjects)).await.err() {
        Some(PortError::Conflict(m)) => {
            assert!(
                m.contains(&id_a.to_string()) && m.contains(&id_b.to_string()),
                "{m}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    a.delete_streams().await.expect("cleanup");

    // Streams made before deployment ids, and a consumer A made on them after B's start-up
    // check: B's subscription is refused, naming the consumer; so is B's next start.
    let prefix = unique();
    let subjects = Subjects::new(&prefix);
    let old = connect(prefix.clone()).await;
    let a = connect(prefix.clone()).await.for_deployment(id_a);
    let b = connect(prefix.clone()).await.for_deployment(id_b);
    old.ensure_streams()
        .await
        .expect("streams without an owner");
    a.subscribe(&flusher(&subjects))
        .await
        .expect("A makes the consumer");
    match b.subscribe(&flusher(&subjects)).await.err() {
        Some(PortError::Conflict(m)) => {
            assert!(
                m.contains(&id_a.to_string())
                    && m.contains(&id_b.to_string())
                    && m.contains("write-behind-flusher"),
                "{m}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match b.claim().await {
        Err(AdapterError::ForeignOwner(f)) => {
            assert_eq!((f.owner, f.deployment), (id_a, id_b));
            assert_eq!(f.consumer.as_deref(), Some("write-behind-flusher"));
        }
        other => panic!("expected a foreign consumer, got {other:?}"),
    }

    // A consumer made without an id (a provd from before deployment ids) is adopted by the
    // deployment that subscribes to it.
    let events = ConsumerSpec {
        stream: subjects.stream_name(&PROV_EVENTS),
        durable: "explicit-invalidator".into(),
        filter_subject: subjects.prefixed("prov.events.invalidate"),
        ..flusher(&subjects)
    };
    let key = format!("{}/explicit-invalidator", events.stream);
    old.subscribe(&events)
        .await
        .expect("a consumer without an owner");
    assert_eq!(
        consumers(&services.nats_url, &prefix).await[&key].description,
        None
    );
    a.subscribe(&events).await.expect("A adopts it");
    assert_eq!(
        consumers(&services.nats_url, &prefix).await[&key].description,
        Some(owner_description(id_a))
    );
    a.delete_streams().await.expect("cleanup");
}

both_modes! {
    /// The status report names the deployment: the id in the database, a random UUID that
    /// stays the same when the node restarts on the same data.
    async fn the_status_report_names_the_deployment_and_a_restart_keeps_it() {
        let Some(t) = TestApp::start().await else {
            return;
        };
        let id = t.app.parts().deployment;
        assert_eq!(id.get_version_num(), 4, "{id} is a random UUID");
        assert_eq!(t.app.store().deployment_id().await.expect("id"), id);
        let status: Value = t
            .http
            .get(t.url("/api/v1/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        assert_eq!(status["deployment_id"], id.to_string());

        let TestApp { app, config, data, .. } = t;
        app.stop().await;
        let app = App::start(config).await.expect("restarts on its own data");
        assert_eq!(app.parts().deployment, id);
        let bus = app.bus().clone();
        app.stop().await;
        let _ = bus.delete_streams().await;
        data.remove().await;
    }
}

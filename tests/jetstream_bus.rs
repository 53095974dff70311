//! The JetStream bus against a real NATS server: deliveries nobody works on any more are
//! counted as the consumer's backlog and redelivered within the broker's short ack wait,
//! while a live process keeps what it works on with progress acks up to the consumer's own
//! ack wait.

mod common;

use std::time::{Duration, Instant};

use actors::ports::{ConsumerSpec, Delivery, EventBus, StartPosition, Subscription};
use common::services;
use events::Subjects;
use events::streams::{PROVCACHE_WRITES, PROVCACHE_WRITES_SUBJECT};
use provd::adapters::jetstream::{JetStreamBus, SERVER_ACK_WAIT};

/// The consumer's own ack wait: far longer than any wait in these tests, so a redelivery
/// seen here comes from the broker's short one.
const CONSUMER_ACK_WAIT: Duration = Duration::from_secs(300);

async fn bus() -> Option<(JetStreamBus, Subjects)> {
    let services = services()?;
    let prefix = format!("jsb{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let subjects = Subjects::new(prefix);
    let bus = JetStreamBus::connect(&services.nats_url, subjects.clone())
        .await
        .expect("connect");
    Some((bus, subjects))
}

fn spec(subjects: &Subjects) -> ConsumerSpec {
    ConsumerSpec {
        stream: subjects.stream_name(&PROVCACHE_WRITES),
        durable: "flusher".into(),
        filter_subject: subjects.prefixed(PROVCACHE_WRITES_SUBJECT),
        start: StartPosition::All,
        ack_wait: CONSUMER_ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: 0,
    }
}

/// Pulls until `n` messages came or `deadline` passed.
async fn take(
    sub: &mut Box<dyn Subscription>,
    n: usize,
    deadline: Duration,
) -> Vec<Box<dyn Delivery>> {
    let until = Instant::now() + deadline;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < until {
        out.extend(
            sub.next_batch(n - out.len(), Duration::from_millis(500))
                .await
                .expect("pull"),
        );
    }
    out
}

#[tokio::test]
async fn abandoned_deliveries_are_counted_and_come_back_before_the_consumers_ack_wait() {
    let Some((bus, subjects)) = bus().await else {
        return;
    };
    let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
    for i in 0..3 {
        bus.publish(
            &subject,
            &format!("w{i}"),
            format!("write {i}").into_bytes(),
        )
        .await
        .expect("publish");
    }
    let sent_at = chrono::Utc::now();
    let mut first = bus.subscribe(&spec(&subjects)).await.expect("subscribe");
    let held = take(&mut first, 3, Duration::from_secs(15)).await;
    assert_eq!(held.len(), 3);
    // Dropped without a settlement, as a subscription that fails drops what it holds (a
    // process killed outright is `tests/write_behind_crash.rs`): no more progress acks.
    drop(held);
    drop(first);

    let mut sub = bus.subscribe(&spec(&subjects)).await.expect("subscribe");
    let backlog = sub
        .backlog()
        .await
        .expect("backlog")
        .expect("JetStream counts");
    assert_eq!(
        backlog.waiting, 3,
        "held unacknowledged, yet work: {backlog:?}"
    );
    let oldest = backlog.oldest.expect("the oldest waiting message's time");
    assert!(
        (oldest - sent_at).num_seconds().abs() < 60,
        "oldest {oldest} is when the first write was published ({sent_at})"
    );
    // Far sooner than the consumer's own ack wait.
    let again = take(&mut sub, 3, CONSUMER_ACK_WAIT / 10).await;
    assert_eq!(again.len(), 3, "redelivered after the broker's ack wait");
    assert!(again.iter().all(|d| d.delivered() == 2));
    for d in &again {
        d.ack().await.expect("ack");
    }
    let backlog = sub.backlog().await.expect("backlog").expect("counts");
    assert_eq!(backlog.waiting, 0);
    assert_eq!(backlog.oldest, None);
    bus.delete_streams().await.expect("clean up");
}

#[tokio::test]
async fn a_live_subscriber_keeps_its_deliveries_past_the_brokers_ack_wait() {
    let Some((bus, subjects)) = bus().await else {
        return;
    };
    let subject = subjects.prefixed(PROVCACHE_WRITES_SUBJECT);
    bus.publish(&subject, "slow", b"slow work".to_vec())
        .await
        .expect("publish");
    let mut sub = bus.subscribe(&spec(&subjects)).await.expect("subscribe");
    let held = take(&mut sub, 1, Duration::from_secs(15)).await;
    assert_eq!(held.len(), 1);
    // Twice the broker's ack wait with the delivery in hand: progress acks keep it, so
    // nothing is redelivered meanwhile.
    let until = Instant::now() + SERVER_ACK_WAIT * 2;
    while Instant::now() < until {
        let b = sub
            .next_batch(1, Duration::from_millis(500))
            .await
            .expect("pull");
        assert!(b.is_empty(), "redelivered while held by a live subscriber");
    }
    held[0].ack().await.expect("ack");
    let backlog = sub.backlog().await.expect("backlog").expect("counts");
    assert_eq!(backlog.waiting, 0);
    bus.delete_streams().await.expect("clean up");
}

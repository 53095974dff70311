//! The embedded mode's in-process bus against a real SQLite file: JetStream's semantics
//! (sequences, dedupe, retention, durable consumers, ack/nak/term, ack wait, max deliver,
//! max ack pending) and what survives closing and reopening the file.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use actors::ports::{ConsumerSpec, Delivery, EventBus, PortError, StartPosition, Subscription};
use events::Subjects;
use events::streams::{PROV_EVENTS, PROVCACHE_WRITES, StreamDef};
use provd::adapters::local_bus::LocalBus;
use provd::storage::Store;
use tempfile::TempDir;

const PREFIX: &str = "lb";
/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(15);

async fn open(dir: &TempDir) -> (Store, LocalBus) {
    let store = Store::open_sqlite(dir.path()).await.expect("open store");
    store.migrate().await.expect("migrate");
    let bus = LocalBus::open(&store, Subjects::new(PREFIX))
        .await
        .expect("open bus");
    (store, bus)
}

fn stream(def: &StreamDef) -> String {
    Subjects::new(PREFIX).stream_name(def)
}

fn subject(base: &str) -> String {
    format!("{PREFIX}.{base}")
}

fn spec(def: &StreamDef, durable: &str, filter: &str, start: StartPosition) -> ConsumerSpec {
    ConsumerSpec {
        stream: stream(def),
        durable: durable.to_owned(),
        filter_subject: subject(filter),
        start,
        ack_wait: Duration::from_secs(60),
        max_deliver: -1,
        max_ack_pending: 0,
    }
}

fn text(d: &dyn Delivery) -> String {
    String::from_utf8(d.payload().to_vec()).expect("utf-8 payload")
}

fn texts(batch: &[Box<dyn Delivery>]) -> Vec<String> {
    batch.iter().map(|d| text(d.as_ref())).collect()
}

/// Pulls until `n` messages came or `WAIT` passed.
async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Box<dyn Delivery>> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(
            sub.next_batch(n - out.len(), Duration::from_millis(500))
                .await
                .expect("next_batch"),
        );
    }
    out
}

/// One short pull that must come back empty.
async fn assert_nothing(sub: &mut Box<dyn Subscription>, why: &str) {
    let batch = sub
        .next_batch(10, Duration::from_millis(200))
        .await
        .expect("next_batch");
    assert!(batch.is_empty(), "{why}: got {:?}", texts(&batch));
}

async fn publish(bus: &LocalBus, base: &str, id: &str, payload: &str) {
    bus.publish(&subject(base), id, payload.as_bytes().to_vec())
        .await
        .expect("publish");
}

async fn stored_messages(store: &Store, def: &StreamDef) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM bus_messages WHERE stream = ?")
        .bind(stream(def))
        .fetch_one(store.sqlite_reader().expect("sqlite"))
        .await
        .expect("count messages")
}

#[tokio::test]
async fn publish_subscribe_ack() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    for i in 0..3 {
        publish(
            &bus,
            "prov.events.a.b",
            &format!("id-{i}"),
            &format!("m{i}"),
        )
        .await;
    }
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "c1",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    let batch = sub.next_batch(10, WAIT).await.unwrap();
    assert_eq!(texts(&batch), ["m0", "m1", "m2"]);
    assert!(batch.iter().all(|d| d.delivered() == 1));
    assert!(batch.iter().all(|d| d.subject() == "lb.prov.events.a.b"));
    let pending: Vec<_> = batch.iter().map(|d| d.pending()).collect();
    assert_eq!(pending, [Some(2), Some(1), Some(0)]);
    assert_eq!(
        bus.consumer_pending(&stream(&PROV_EVENTS), "c1")
            .await
            .unwrap(),
        3,
        "delivered but unacknowledged messages are pending"
    );
    for d in &batch {
        d.ack().await.unwrap();
    }
    assert_nothing(&mut sub, "acknowledged messages came back").await;
    assert_eq!(
        bus.consumer_pending(&stream(&PROV_EVENTS), "c1")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        bus.consumers_pending().await.unwrap(),
        vec![("c1".to_owned(), 0)]
    );
    assert!(
        bus.consumer_pending(&stream(&PROV_EVENTS), "nobody")
            .await
            .is_err()
    );
    bus.ping().await.unwrap();
}

#[tokio::test]
async fn a_waiting_pull_is_woken_by_a_publish() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "c1",
            "prov.events.>",
            StartPosition::New,
        ))
        .await
        .unwrap();
    let publisher = bus.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        publish(&publisher, "prov.events.x", "", "late").await;
    });
    // The wait is far longer than the test's patience: only the publish can end it early.
    let started = Instant::now();
    let batch = sub.next_batch(10, Duration::from_secs(600)).await.unwrap();
    assert_eq!(texts(&batch), ["late"]);
    assert!(started.elapsed() < Duration::from_secs(600));
    task.await.unwrap();
}

#[tokio::test]
async fn a_subject_no_stream_captures_is_an_error() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    let err = bus
        .publish("lb.nowhere.at.all", "x", b"p".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::Rejected(_)), "{err:?}");
    // Without the prefix the subject belongs to no stream of this deployment either.
    assert!(
        bus.publish("prov.events.a", "", b"p".to_vec())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn nak_with_delay_redelivers_only_after_the_delay() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    publish(&bus, "prov.events.a", "n1", "again").await;
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "c1",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    let first = take(&mut sub, 1).await;
    assert_eq!(texts(&first), ["again"]);
    let delay = Duration::from_secs(2);
    let naked = Instant::now();
    first[0].nak(delay).await.unwrap();
    // A short pull right after the nak: anything it returns must be after the delay.
    let early = sub
        .next_batch(10, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(
        early.is_empty() || naked.elapsed() >= delay,
        "redelivered {:?} after {:?}, before the {delay:?} delay",
        texts(&early),
        naked.elapsed()
    );
    let again = if early.is_empty() {
        take(&mut sub, 1).await
    } else {
        early
    };
    assert!(
        naked.elapsed() >= delay,
        "came back after {:?}",
        naked.elapsed()
    );
    assert_eq!(texts(&again), ["again"]);
    assert_eq!(again[0].delivered(), 2);
    again[0].ack().await.unwrap();
    assert_nothing(&mut sub, "acked after a nak").await;
}

#[tokio::test]
async fn nak_without_delay_redelivers_at_once() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    publish(&bus, "prov.events.a", "", "now").await;
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "c1",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    let first = take(&mut sub, 1).await;
    first[0].nak(Duration::ZERO).await.unwrap();
    let again = take(&mut sub, 1).await;
    assert_eq!(texts(&again), ["now"]);
    assert_eq!(again[0].delivered(), 2);
}

#[tokio::test]
async fn an_expired_ack_wait_redelivers() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    publish(&bus, "prov.events.a", "", "slow").await;
    let ack_wait = Duration::from_millis(500);
    let mut sub = bus
        .subscribe(&ConsumerSpec {
            ack_wait,
            ..spec(&PROV_EVENTS, "c1", "prov.events.>", StartPosition::All)
        })
        .await
        .unwrap();
    // Taken before the delivery, which starts the ack wait, so it bounds it from below.
    let delivered_at = Instant::now();
    let first = take(&mut sub, 1).await;
    assert_eq!(first[0].delivered(), 1);
    // Not acknowledged: it comes back once the ack wait expired.
    let again = take(&mut sub, 1).await;
    assert_eq!(texts(&again), ["slow"]);
    assert_eq!(again[0].delivered(), 2);
    assert!(delivered_at.elapsed() >= ack_wait);
    // The first delivery's late ack still settles the message.
    first[0].ack().await.unwrap();
    assert_nothing(&mut sub, "acked by the first delivery").await;
}

#[tokio::test]
async fn max_deliver_stops_redeliveries() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    publish(&bus, "prov.events.a", "", "poison").await;
    let mut sub = bus
        .subscribe(&ConsumerSpec {
            ack_wait: Duration::from_millis(200),
            max_deliver: 3,
            ..spec(&PROV_EVENTS, "c1", "prov.events.>", StartPosition::All)
        })
        .await
        .unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let b = take(&mut sub, 1).await;
        assert_eq!(texts(&b), ["poison"]);
        deliveries.push(b[0].delivered());
    }
    assert_eq!(deliveries, [1, 2, 3]);
    // Well past another ack wait: no fourth delivery.
    let later = sub.next_batch(10, Duration::from_secs(1)).await.unwrap();
    assert!(later.is_empty(), "delivered a 4th time");
    assert_eq!(
        bus.consumer_pending(&stream(&PROV_EVENTS), "c1")
            .await
            .unwrap(),
        0
    );
    // The consumer goes on with the next message.
    publish(&bus, "prov.events.a", "", "next").await;
    assert_eq!(texts(&take(&mut sub, 1).await), ["next"]);
}

#[tokio::test]
async fn term_is_never_redelivered() {
    let dir = TempDir::new().unwrap();
    let (store, bus) = open(&dir).await;
    publish(&bus, "provcache.writes", "w1", "bad").await;
    let mut sub = bus
        .subscribe(&ConsumerSpec {
            ack_wait: Duration::from_millis(200),
            ..spec(
                &PROVCACHE_WRITES,
                "flusher",
                "provcache.writes",
                StartPosition::All,
            )
        })
        .await
        .unwrap();
    let b = take(&mut sub, 1).await;
    b[0].term().await.unwrap();
    let later = sub.next_batch(10, Duration::from_secs(1)).await.unwrap();
    assert!(later.is_empty(), "a terminated message came back");
    assert_eq!(stored_messages(&store, &PROVCACHE_WRITES).await, 0);
}

#[tokio::test]
async fn max_ack_pending_bounds_outstanding_messages() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    for i in 0..5 {
        publish(&bus, "prov.events.a", "", &format!("m{i}")).await;
    }
    let mut sub = bus
        .subscribe(&ConsumerSpec {
            max_ack_pending: 2,
            ..spec(&PROV_EVENTS, "c1", "prov.events.>", StartPosition::All)
        })
        .await
        .unwrap();
    let first = sub.next_batch(10, WAIT).await.unwrap();
    assert_eq!(texts(&first), ["m0", "m1"]);
    assert_nothing(&mut sub, "more than max_ack_pending outstanding").await;
    first[0].ack().await.unwrap();
    assert_eq!(texts(&take(&mut sub, 1).await), ["m2"]);
}

#[tokio::test]
async fn a_message_id_within_the_window_is_stored_once() {
    let dir = TempDir::new().unwrap();
    let (store, bus) = open(&dir).await;
    publish(&bus, "prov.events.a", "same", "first").await;
    publish(&bus, "prov.events.a", "same", "retry").await;
    publish(&bus, "prov.events.a", "other", "second").await;
    publish(&bus, "prov.events.a", "", "no id 1").await;
    publish(&bus, "prov.events.a", "", "no id 2").await;
    assert_eq!(stored_messages(&store, &PROV_EVENTS).await, 4);
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "c1",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    let b = take(&mut sub, 4).await;
    assert_eq!(texts(&b), ["first", "second", "no id 1", "no id 2"]);
    assert_nothing(&mut sub, "a duplicate was stored").await;

    // A work-queue message acknowledged (and removed) still deduplicates a retry.
    publish(&bus, "provcache.writes", "write-1", "w").await;
    let mut flusher = bus
        .subscribe(&spec(
            &PROVCACHE_WRITES,
            "flusher",
            "provcache.writes",
            StartPosition::All,
        ))
        .await
        .unwrap();
    take(&mut flusher, 1).await[0].ack().await.unwrap();
    assert_eq!(stored_messages(&store, &PROVCACHE_WRITES).await, 0);
    publish(&bus, "provcache.writes", "write-1", "w").await;
    assert_eq!(stored_messages(&store, &PROVCACHE_WRITES).await, 0);
    assert_nothing(&mut flusher, "a retried write was queued again").await;
}

#[tokio::test]
async fn start_positions() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    publish(&bus, "prov.events.a", "", "m1").await;
    publish(&bus, "prov.events.a", "", "m2").await;
    // Times are stored in microseconds: step past m2's.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    publish(&bus, "prov.events.a", "", "m3").await;
    let filter = "prov.events.>";
    let mut new = bus
        .subscribe(&spec(&PROV_EVENTS, "new", filter, StartPosition::New))
        .await
        .unwrap();
    let mut since_sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "since",
            filter,
            StartPosition::Since(since),
        ))
        .await
        .unwrap();
    let mut all = bus
        .subscribe(&spec(&PROV_EVENTS, "all", filter, StartPosition::All))
        .await
        .unwrap();
    let mut future = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "future",
            filter,
            StartPosition::Since(chrono::Utc::now() + chrono::Duration::hours(1)),
        ))
        .await
        .unwrap();
    publish(&bus, "prov.events.a", "", "m4").await;
    assert_eq!(texts(&take(&mut new, 1).await), ["m4"]);
    assert_nothing(&mut new, "New delivered older messages").await;
    assert_eq!(texts(&take(&mut since_sub, 2).await), ["m3", "m4"]);
    assert_nothing(&mut since_sub, "Since delivered older messages").await;
    let every = take(&mut all, 4).await;
    assert_eq!(texts(&every), ["m1", "m2", "m3", "m4"]);
    // A start time after the newest message behaves as the stream's end.
    assert_eq!(texts(&take(&mut future, 1).await), ["m4"]);
    for d in &every {
        d.ack().await.unwrap();
    }
    drop(all);

    // An existing consumer keeps its position whatever start it is opened with.
    let mut all_again = bus
        .subscribe(&spec(&PROV_EVENTS, "all", filter, StartPosition::All))
        .await
        .unwrap();
    assert_nothing(&mut all_again, "an existing consumer started over").await;
    publish(&bus, "prov.events.a", "", "m5").await;
    assert_eq!(texts(&take(&mut all_again, 1).await), ["m5"]);
}

#[tokio::test]
async fn wildcard_filters() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    for (base, payload) in [
        ("prov.events.signer.revoked", "signer revoked"),
        ("prov.events.key.revoked", "key revoked"),
        ("prov.events.signer.added", "signer added"),
        ("prov.events.signer.revoked.late", "deeper"),
    ] {
        publish(&bus, base, "", payload).await;
    }
    let cases: [(&str, &[&str]); 4] = [
        ("prov.events.*.revoked", &["signer revoked", "key revoked"]),
        (
            "prov.events.signer.>",
            &["signer revoked", "signer added", "deeper"],
        ),
        ("prov.events.signer.revoked", &["signer revoked"]),
        (
            "prov.events.>",
            &["signer revoked", "key revoked", "signer added", "deeper"],
        ),
    ];
    for (i, (filter, want)) in cases.iter().enumerate() {
        let mut sub = bus
            .subscribe(&spec(
                &PROV_EVENTS,
                &format!("c{i}"),
                filter,
                StartPosition::All,
            ))
            .await
            .unwrap();
        let got = take(&mut sub, want.len()).await;
        assert_eq!(texts(&got), *want, "{filter}");
        assert_nothing(&mut sub, filter).await;
        assert_eq!(got.last().unwrap().pending(), Some(0), "{filter}");
    }
}

#[tokio::test]
async fn a_narrow_filter_moves_past_messages_it_skips() {
    let dir = TempDir::new().unwrap();
    let (store, bus) = open(&dir).await;
    for i in 0..50 {
        publish(&bus, "prov.events.other", "", &format!("o{i}")).await;
    }
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "narrow",
            "prov.events.mine",
            StartPosition::All,
        ))
        .await
        .unwrap();
    assert_nothing(&mut sub, "a message outside the filter").await;
    // The position is past every message looked at, so they are not scanned again.
    let cursor: i64 =
        sqlx::query_scalar("SELECT cursor FROM bus_consumers WHERE durable = 'narrow'")
            .fetch_one(store.sqlite_reader().expect("sqlite"))
            .await
            .unwrap();
    assert_eq!(cursor, 50);
    publish(&bus, "prov.events.mine", "", "mine").await;
    let got = take(&mut sub, 1).await;
    assert_eq!(texts(&got), ["mine"]);
    assert_eq!(got[0].pending(), Some(0));
}

#[tokio::test]
async fn work_queue_acks_delete_and_limits_keep() {
    let dir = TempDir::new().unwrap();
    let (store, bus) = open(&dir).await;
    publish(&bus, "provcache.writes", "w", "write").await;
    publish(&bus, "prov.events.a", "e", "event").await;
    let mut flusher = bus
        .subscribe(&spec(
            &PROVCACHE_WRITES,
            "flusher",
            "provcache.writes",
            StartPosition::All,
        ))
        .await
        .unwrap();
    let mut reader = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "reader",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    take(&mut flusher, 1).await[0].ack().await.unwrap();
    take(&mut reader, 1).await[0].ack().await.unwrap();
    assert_eq!(stored_messages(&store, &PROVCACHE_WRITES).await, 0);
    assert_eq!(stored_messages(&store, &PROV_EVENTS).await, 1);
    // Another consumer of the limits stream still reads the acknowledged event.
    let mut second = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "second",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    assert_eq!(texts(&take(&mut second, 1).await), ["event"]);
    // A work-queue stream gives each subject to one consumer only, as JetStream does.
    let err = bus
        .subscribe(&spec(
            &PROVCACHE_WRITES,
            "rival",
            "provcache.>",
            StartPosition::All,
        ))
        .await
        .err()
        .expect("an overlapping work-queue consumer is refused");
    assert!(matches!(err, PortError::Rejected(_)), "{err:?}");
}

#[tokio::test]
async fn two_subscriptions_on_one_durable_share_the_messages() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    const N: usize = 300;
    for i in 0..N {
        publish(&bus, "provcache.writes", &format!("w{i}"), &i.to_string()).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let mut sub = bus
                .subscribe(&spec(
                    &PROVCACHE_WRITES,
                    "flusher",
                    "provcache.writes",
                    StartPosition::All,
                ))
                .await
                .unwrap();
            let mut got = Vec::new();
            loop {
                let b = sub.next_batch(7, Duration::from_millis(500)).await.unwrap();
                if b.is_empty() {
                    return got;
                }
                for d in b {
                    got.push(text(d.as_ref()).parse::<usize>().unwrap());
                    d.ack().await.unwrap();
                    // Let the other subscription in between batches.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let a = tasks.remove(0).await.unwrap();
    let b = tasks.remove(0).await.unwrap();
    assert!(!a.is_empty() && !b.is_empty(), "{} / {}", a.len(), b.len());
    let sa: BTreeSet<_> = a.iter().copied().collect();
    let sb: BTreeSet<_> = b.iter().copied().collect();
    assert_eq!(
        sa.len(),
        a.len(),
        "a message came twice to one subscription"
    );
    assert!(sa.is_disjoint(&sb), "a message went to both subscriptions");
    let union: BTreeSet<_> = sa.union(&sb).copied().collect();
    assert_eq!(union, (0..N).collect());
}

#[tokio::test]
async fn reopening_the_file_redelivers_what_was_not_acked() {
    let dir = TempDir::new().unwrap();
    let consumer = ConsumerSpec {
        // Long enough that only the reopening can make the messages due again.
        ack_wait: Duration::from_secs(3600),
        ..spec(
            &PROVCACHE_WRITES,
            "flusher",
            "provcache.writes",
            StartPosition::All,
        )
    };
    {
        let (_store, bus) = open(&dir).await;
        for p in ["a", "b", "c"] {
            publish(&bus, "provcache.writes", p, p).await;
        }
        let mut sub = bus.subscribe(&consumer).await.unwrap();
        let b = take(&mut sub, 3).await;
        assert_eq!(texts(&b), ["a", "b", "c"]);
        b[0].ack().await.unwrap();
        // b and c stay unacknowledged when the process "dies": the bus, the store and the
        // deliveries are dropped without settling anything.
    }
    let (store, bus) = open(&dir).await;
    let mut sub = bus.subscribe(&consumer).await.unwrap();
    let again = take(&mut sub, 2).await;
    assert_eq!(texts(&again), ["b", "c"]);
    assert!(again.iter().all(|d| d.delivered() == 2));
    assert_nothing(&mut sub, "the acknowledged message came back").await;
    for d in &again {
        d.ack().await.unwrap();
    }
    publish(&bus, "provcache.writes", "d", "d").await;
    let d = take(&mut sub, 1).await;
    assert_eq!(texts(&d), ["d"]);
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM bus_messages WHERE stream = ?")
        .bind(stream(&PROVCACHE_WRITES))
        .fetch_all(store.sqlite_reader().expect("sqlite"))
        .await
        .unwrap();
    assert_eq!(seqs, [4], "sequence numbers continue after reopening");
    // The dedupe window survives too.
    publish(&bus, "provcache.writes", "a", "a").await;
    assert_nothing(&mut sub, "a retried publish from before the restart").await;
}

#[tokio::test]
async fn a_size_limit_drops_the_oldest_messages() {
    let dir = TempDir::new().unwrap();
    let store = Store::open_sqlite(dir.path()).await.unwrap();
    store.migrate().await.unwrap();
    let bus = LocalBus::open_with_max_bytes(&store, Subjects::new(PREFIX), Some(1000))
        .await
        .unwrap();
    for i in 0..30 {
        publish(&bus, "prov.events.a", "", &format!("{i:0>100}")).await;
    }
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "c1",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    let kept = take(&mut sub, 30).await;
    let kept: Vec<usize> = kept
        .iter()
        .map(|d| text(d.as_ref()).parse().unwrap())
        .collect();
    assert_eq!(kept, (20..30).collect::<Vec<_>>(), "the newest 1000 bytes");
}

#[tokio::test]
async fn deleted_streams_come_back_empty() {
    let dir = TempDir::new().unwrap();
    let (store, bus) = open(&dir).await;
    publish(&bus, "prov.events.a", "x", "old").await;
    bus.delete_streams().await.unwrap();
    assert_eq!(stored_messages(&store, &PROV_EVENTS).await, 0);
    assert!(bus.consumers_pending().await.unwrap().is_empty());
    bus.ping().await.unwrap();
    publish(&bus, "prov.events.a", "x", "new").await;
    let mut sub = bus
        .subscribe(&spec(
            &PROV_EVENTS,
            "c1",
            "prov.events.>",
            StartPosition::All,
        ))
        .await
        .unwrap();
    assert_eq!(texts(&take(&mut sub, 1).await), ["new"]);
}

#[tokio::test]
async fn throughput() {
    let dir = TempDir::new().unwrap();
    let (_store, bus) = open(&dir).await;
    const N: usize = 10_000;
    let payload = vec![b'x'; 256];
    let started = Instant::now();
    for i in 0..N {
        bus.publish(
            &subject("provcache.writes"),
            &format!("w{i}"),
            payload.clone(),
        )
        .await
        .unwrap();
    }
    let published = started.elapsed();
    let mut sub = bus
        .subscribe(&spec(
            &PROVCACHE_WRITES,
            "flusher",
            "provcache.writes",
            StartPosition::All,
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while consumed < N && Instant::now() < deadline {
        let batch = sub.next_batch(500, Duration::from_secs(1)).await.unwrap();
        for d in &batch {
            d.ack().await.unwrap();
        }
        consumed += batch.len();
    }
    let drained = started.elapsed();
    assert_eq!(consumed, N);
    eprintln!(
        "local bus: published {N} x 256 B in {published:?} ({:.0}/s); consumed and acked in \
         {drained:?} ({:.0}/s)",
        N as f64 / published.as_secs_f64(),
        N as f64 / drained.as_secs_f64()
    );
}

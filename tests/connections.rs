//! Connection hygiene of the HTTP server (`[http]`): clients that send nothing, half a
//! request or a request head a byte at a time are closed at the header-read timeout; a
//! kept-alive connection at the idle timeout; at the connection cap, connections that wait
//! for a request make room for new ones, so `/healthz` answers under a flood of half-open
//! connections; beyond the cap on requests in flight, requests are answered 503 `overloaded`
//! while the probes still answer.
//!
//! These tests are about sockets, not storage: they run in embedded mode only.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, Mode, READ_TOKEN, TestApp, eventually, in_mode};
use provd::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Far above every timeout these tests configure: only a server that never closes misses it.
const DEADLINE: Duration = Duration::from_secs(30);

async fn start(change: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::start_with(change)
        .await
        .expect("embedded mode needs no services")
}

/// Reads until the server closes the connection (end of stream or reset); returns what it
/// sent, or fails at `DEADLINE`.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open for {DEADLINE:?}; it sent {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server has closed `stream`, without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        // Bytes without a close: still open (a server answer would be a bug caught below).
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Reads one response with a `content-length` from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .expect("content-length");
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("a response before the deadline")
            .expect("read");
        assert!(n > 0, "closed mid-response: {text}");
        data.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_or_half_a_request_is_closed_at_the_header_read_timeout() {
    in_mode(Mode::Embedded, async {
        let timeout = Duration::from_secs(1);
        let t = start(|c| {
            c.http.header_read_timeout = timeout;
            // Longer, so a close at the header timeout is the header timeout's doing.
            c.http.idle_timeout = Duration::from_secs(60);
        })
        .await;
        let before = t
            .metric(
                "provd_http_connections_closed_total",
                &[("reason", "header_timeout")],
            )
            .await;
        for sent in [
            &b""[..],
            b"GET /healthz HT",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        ] {
            let started = Instant::now();
            let mut s = TcpStream::connect(t.addr()).await.expect("connect");
            s.write_all(sent).await.expect("write");
            let answer = until_closed(&mut s).await;
            let open_for = started.elapsed();
            assert!(answer.is_empty(), "no answer to half a request: {answer:?}");
            // The deadline runs from the connection's start, after `started`.
            assert!(
                open_for >= timeout,
                "{:?} closed after {open_for:?}, before the {timeout:?} timeout",
                String::from_utf8_lossy(sent)
            );
        }
        let after = t
            .metric(
                "provd_http_connections_closed_total",
                &[("reason", "header_timeout")],
            )
            .await;
        assert!(after - before >= 3.0, "counted: {before} -> {after}");
        t.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_a_byte_at_a_time_is_closed_at_the_header_read_timeout() {
    in_mode(Mode::Embedded, async {
        let t = start(|c| {
            c.http.header_read_timeout = Duration::from_secs(1);
            c.http.idle_timeout = Duration::from_secs(60);
        })
        .await;
        let mut s = TcpStream::connect(t.addr()).await.expect("connect");
        // A header that never ends, trickled: every byte is activity, none completes it.
        let trickle = b"GET /healthz HTTP/1.1\r\nX-Slow: "
            .iter()
            .copied()
            .chain(std::iter::repeat(b'a'));
        let mut sent = 0usize;
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 256];
        for byte in trickle {
            assert!(
                Instant::now() < deadline,
                "still open after {sent} bytes and {DEADLINE:?}"
            );
            tokio::select! {
                r = s.read(&mut buf) => {
                    assert!(matches!(r, Ok(0) | Err(_)), "no answer to half a request: {r:?}");
                    break;
                }
                _ = pace.tick() => {
                    if s.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
            }
        }
        assert!(sent > 0);
        t.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_at_the_idle_timeout_not_the_header_timeout() {
    in_mode(Mode::Embedded, async {
        let (header, idle) = (Duration::from_millis(500), Duration::from_secs(3));
        let t = start(|c| {
            c.http.header_read_timeout = header;
            c.http.idle_timeout = idle;
        })
        .await;
        let mut s = TcpStream::connect(t.addr()).await.expect("connect");
        for _ in 0..2 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let answer = read_response(&mut s).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let idle_from = Instant::now();
        let rest = until_closed(&mut s).await;
        assert!(rest.is_empty(), "{rest:?}");
        let open_for = idle_from.elapsed();
        // The server's idle wait began just before `idle_from`; a close near the 500 ms header
        // timeout would be the wrong timer.
        assert!(
            open_for >= idle - header,
            "closed {open_for:?} after the response; the idle timeout is {idle:?}"
        );
        t.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keep_alive_a_connection_closes_after_its_response() {
    in_mode(Mode::Embedded, async {
        let t = start(|c| {
            c.http.header_read_timeout = Duration::from_secs(60);
            c.http.idle_timeout = Duration::ZERO;
        })
        .await;
        let mut s = TcpStream::connect(t.addr()).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let answer = String::from_utf8(until_closed(&mut s).await).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        t.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_half_open_connections_make_room_and_healthz_answers() {
    in_mode(Mode::Embedded, async {
        let cap = 16;
        let t = start(|c| {
            c.http.max_connections = cap;
            // Far longer than the test: every close below is the cap's doing.
            c.http.header_read_timeout = Duration::from_secs(120);
            c.http.idle_timeout = Duration::from_secs(120);
        })
        .await;
        let before = t
            .metric(
                "provd_http_connections_closed_total",
                &[("reason", "evicted")],
            )
            .await;
        let flood = 200;
        let mut half_open = Vec::new();
        for _ in 0..flood {
            let mut s = TcpStream::connect(t.addr()).await.expect("connect");
            s.write_all(b"GET /api/v1/provcache/stats HTTP/1.1\r\nHost")
                .await
                .expect("write");
            half_open.push(s);
        }
        // The server holds at most `cap` of them: the others are closed to make room.
        eventually("all but the cap's worth closed", DEADLINE, || {
            let closed = half_open.iter().filter(|s| is_closed(s)).count();
            std::future::ready((closed >= flood - cap).then_some(()))
        })
        .await;
        let r = t.http.get(t.url("/healthz")).send().await.expect("healthz");
        assert_eq!(r.status(), 200);
        let r = t.http.get(t.url("/readyz")).send().await.expect("readyz");
        assert!(
            [200, 503].contains(&r.status().as_u16()),
            "readyz answers: {}",
            r.status()
        );
        eventually("ready", DEADLINE, || async {
            let r = t.http.get(t.url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        // An API request is served too, not refused: it took a waiting connection's place.
        let r = t
            .http
            .get(t.url("/api/v1/provcache/stats"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("stats");
        assert_eq!(r.status(), 200);
        let evicted = t
            .metric(
                "provd_http_connections_closed_total",
                &[("reason", "evicted")],
            )
            .await;
        assert!(
            evicted - before >= (flood - cap) as f64,
            "evictions counted: {before} -> {evicted}"
        );
        t.finish().await;
    })
    .await;
}

/// Starts `POST /api/v1/proofs` of `length` bytes and returns once its handler runs (it
/// asked for the body: `100 Continue`), having sent one byte: the handler waits for the rest,
/// holding its request slot and its connection.
async fn slow_upload(t: &TestApp, length: usize) -> TcpStream {
    let mut s = TcpStream::connect(t.addr()).await.expect("connect");
    let head = format!(
        "POST /api/v1/proofs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: text/plain\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("100 Continue before the deadline")
            .expect("read");
        assert!(n > 0, "closed before 100 Continue");
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 100"), "{seen}");
    s.write_all(b"x").await.expect("write");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_requests_in_flight_cap_requests_get_503_overloaded_and_probes_answer() {
    in_mode(Mode::Embedded, async {
        let t = start(|c| c.http.max_requests_in_flight = 1).await;
        let length = 1000;
        let mut upload = slow_upload(&t, length).await;
        // The upload holds the only slot: another request is refused.
        let refused = t
            .http
            .get(t.url("/api/v1/provcache/stats"))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .expect("stats");
        assert_eq!(refused.status(), 503);
        assert_eq!(
            refused.headers()["retry-after"],
            "5",
            "{:?}",
            refused.headers()
        );
        let body: serde_json::Value = refused.json().await.expect("json error");
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        for probe in ["/healthz", "/metrics"] {
            let r = t.http.get(t.url(probe)).send().await.expect("probe");
            assert_eq!(r.status(), 200, "{probe}");
        }
        let r = t.http.get(t.url("/readyz")).send().await.expect("readyz");
        let body: serde_json::Value = r.json().await.expect("readyz json");
        assert!(body["status"].is_string(), "readyz answers: {body}");
        assert!(
            t.metric("provd_http_requests_shed_total", &[]).await >= 1.0,
            "shedding counted"
        );

        // The upload completes, its slot is freed, and requests are served again.
        upload
            .write_all(&vec![b'x'; length - 1])
            .await
            .expect("rest of the body");
        let answer = read_response(&mut upload).await;
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        eventually("served again", DEADLINE, || async {
            let r = t
                .http
                .get(t.url("/api/v1/provcache/stats"))
                .bearer_auth(READ_TOKEN)
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        t.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_has_a_request_in_progress_a_new_one_is_answered_503() {
    in_mode(Mode::Embedded, async {
        let cap = 2;
        let t = start(|c| c.http.max_connections = cap).await;
        let mut busy = Vec::new();
        for _ in 0..cap {
            busy.push(slow_upload(&t, 1000).await);
        }
        // Both uploads are in their handlers: no connection can make room.
        let mut s = TcpStream::connect(t.addr()).await.expect("connect");
        let answer = String::from_utf8(until_closed(&mut s).await).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 5"), "{answer}");
        assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");
        // Both uploads are still in progress: neither was closed to make room.
        for s in &busy {
            assert!(
                !is_closed(s),
                "a connection with a request in progress was closed"
            );
        }
        drop(busy);
        eventually("healthz once the uploads are gone", DEADLINE, || async {
            let r = t.http.get(t.url("/healthz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        t.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_between_requests_makes_room_at_the_cap() {
    in_mode(Mode::Embedded, async {
        let t = start(|c| c.http.max_connections = 2).await;
        let mut kept = TcpStream::connect(t.addr()).await.expect("connect");
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut kept).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let busy = slow_upload(&t, 1000).await;
        // At the cap: the kept-alive connection, its response written out, makes room.
        let mut third = TcpStream::connect(t.addr()).await.expect("connect");
        third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let answer = read_response(&mut third).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(until_closed(&mut kept).await.is_empty());
        assert!(!is_closed(&busy), "the upload in progress was kept");
        drop(busy);
        t.finish().await;
    })
    .await;
}

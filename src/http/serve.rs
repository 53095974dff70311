//! Serving the router over TCP, within the limits of `[http]`.
//!
//! Each accepted connection is served by hyper (HTTP/1.1) in a task of its own, watched for
//! two deadlines: a client has `header_read_timeout` from connecting (or from the first byte
//! of a later request) to finish a request's head, and a kept-alive connection may wait
//! `idle_timeout` for its next request. At `max_connections` a new connection makes room by
//! closing the connection that has waited longest for a request; when every connection has a
//! request in progress, the new one is answered 503 and closed. Requests beyond
//! `max_requests_in_flight` are answered 503 `overloaded` ([`limit_in_flight`]); the probes and
//! `/metrics` are never refused. So a flood of connections that send nothing, or half a
//! request, costs at most `max_connections` descriptors, and `/healthz` still answers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::error::ApiError;
use crate::config::http::HttpConfig;

/// Open HTTP connections (gauge).
const OPEN_CONNECTIONS: &str = "provd_http_open_connections";
/// Connections provd closed because of a limit, by reason (counter).
const CONNECTIONS_CLOSED: &str = "provd_http_connections_closed_total";
/// Requests answered 503 `overloaded` (counter).
const REQUESTS_SHED: &str = "provd_http_requests_shed_total";
/// Requests holding an in-flight slot (gauge).
const REQUESTS_IN_FLIGHT: &str = "provd_http_requests_in_flight";

/// Why provd closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// A request's head did not arrive in time.
    HeaderTimeout,
    /// A kept-alive connection waited too long for its next request.
    IdleTimeout,
    /// Closed to make room for a new connection at the cap.
    Evicted,
    /// A new connection at the cap, when no connection could make room.
    Refused,
    /// The server is stopping and the connection has no request in progress.
    Shutdown,
}

impl Reason {
    /// The `reason` label, for the reasons that are limits at work.
    fn label(self) -> Option<&'static str> {
        match self {
            Reason::HeaderTimeout => Some("header_timeout"),
            Reason::IdleTimeout => Some("idle_timeout"),
            Reason::Evicted => Some("evicted"),
            Reason::Refused => Some("refused"),
            Reason::Shutdown => None,
        }
    }

    fn count(self) {
        if let Some(reason) = self.label() {
            metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
        }
    }
}

/// Describes this module's metrics and creates their series at zero.
pub fn describe_metrics() {
    metrics::describe_gauge!(OPEN_CONNECTIONS, "HTTP connections open.");
    metrics::describe_counter!(
        CONNECTIONS_CLOSED,
        "HTTP connections provd closed because of a limit, by reason (header_timeout, \
         idle_timeout, evicted, refused)."
    );
    metrics::describe_counter!(
        REQUESTS_SHED,
        "HTTP requests answered 503 overloaded because max_requests_in_flight were in flight."
    );
    metrics::describe_gauge!(
        REQUESTS_IN_FLIGHT,
        "HTTP requests in flight, counted against http.max_requests_in_flight."
    );
    metrics::gauge!(OPEN_CONNECTIONS).increment(0.0);
    metrics::gauge!(REQUESTS_IN_FLIGHT).increment(0.0);
    metrics::counter!(REQUESTS_SHED).increment(0);
    for reason in [
        Reason::HeaderTimeout,
        Reason::IdleTimeout,
        Reason::Evicted,
        Reason::Refused,
    ] {
        if let Some(reason) = reason.label() {
            metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(0);
        }
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request since `since`; `first_byte` is when its first byte came.
    Waiting {
        since: Instant,
        first_byte: Option<Instant>,
    },
    /// A request is handled or its response body produced.
    Busy,
    /// The response body has ended since `since`, but hyper may still hold bytes of it that
    /// the socket has not taken: closing now could cut the response short.
    Flushing { since: Instant },
}

#[derive(Debug)]
struct ConnState {
    phase: Phase,
    /// Whether a request was served on this connection already.
    served: bool,
    /// Asked to close to make room for a new connection.
    evicted: bool,
}

/// One connection's state, shared by its socket, its requests and its watcher.
#[derive(Debug)]
struct Conn {
    state: Mutex<ConnState>,
    /// Wakes the watcher when the state changes.
    changed: Notify,
}

/// What the watcher does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Close the connection now.
    Close(Reason),
    /// Close it at the instant unless the state changes first.
    At(Instant, Reason),
    /// No deadline: a request is in progress.
    Wait,
}

impl Conn {
    fn new(now: Instant) -> Conn {
        Conn {
            state: Mutex::new(ConnState {
                phase: Phase::Waiting {
                    since: now,
                    first_byte: None,
                },
                served: false,
                evicted: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        // The state is a few plain fields, valid whatever a panicking holder did.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes arrived: the first byte of a request starts its header deadline.
    fn on_read(&self) {
        let mut s = self.lock();
        if let Phase::Waiting {
            first_byte: first @ None,
            ..
        } = &mut s.phase
        {
            *first = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// A request's head is in and its handler runs.
    fn on_request(&self) {
        let mut s = self.lock();
        s.phase = Phase::Busy;
        s.served = true;
        drop(s);
        self.changed.notify_one();
    }

    /// The response body has ended (or was dropped).
    fn on_body_end(&self) {
        let mut s = self.lock();
        if s.phase == Phase::Busy {
            s.phase = Phase::Flushing {
                since: Instant::now(),
            };
            drop(s);
            self.changed.notify_one();
        }
    }

    /// hyper flushed everything it had written to the socket.
    fn on_flushed(&self) {
        let mut s = self.lock();
        if let Phase::Flushing { .. } = s.phase {
            s.phase = Phase::Waiting {
                since: Instant::now(),
                first_byte: None,
            };
            drop(s);
            self.changed.notify_one();
        }
    }

    /// Since when the connection has waited for a request, if it is waiting and may be
    /// evicted.
    fn evictable_since(&self) -> Option<Instant> {
        let s = self.lock();
        match s.phase {
            Phase::Waiting { since, .. } if !s.evicted => Some(since),
            _ => None,
        }
    }

    /// Asks the watcher to close the connection.
    fn evict(&self) {
        self.lock().evicted = true;
        self.changed.notify_one();
    }

    /// The watcher's next step, at `now`.
    fn next(&self, limits: &Limits, stopping: bool, now: Instant) -> Step {
        let mut s = self.lock();
        let (since, first_byte) = match s.phase {
            Phase::Busy => {
                // A request that began as the connection was chosen keeps it; the next
                // connection over the cap picks another.
                s.evicted = false;
                return Step::Wait;
            }
            Phase::Flushing { since } => {
                s.evicted = false;
                // A client that does not read its response is as idle as one that sends
                // nothing.
                return deadline(
                    since + limits.idle.max(limits.header),
                    Reason::IdleTimeout,
                    now,
                );
            }
            Phase::Waiting { since, first_byte } => (since, first_byte),
        };
        if s.evicted {
            return Step::Close(Reason::Evicted);
        }
        if stopping || (s.served && limits.idle.is_zero()) {
            // hyper closes these by itself once the response is out; nothing is lost.
            return Step::Close(Reason::Shutdown);
        }
        match (s.served, first_byte) {
            (false, _) => deadline(since + limits.header, Reason::HeaderTimeout, now),
            (true, Some(first)) => deadline(first + limits.header, Reason::HeaderTimeout, now),
            (true, None) => deadline(since + limits.idle, Reason::IdleTimeout, now),
        }
    }
}

fn deadline(at: Instant, reason: Reason, now: Instant) -> Step {
    if now >= at {
        Step::Close(reason)
    } else {
        Step::At(at, reason)
    }
}

/// The timeouts a connection's watcher applies.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header: Duration,
    idle: Duration,
}

/// The open connections, by id.
#[derive(Debug, Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self, conn: Arc<Conn>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, conn);
        metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
        id
    }

    fn remove(&self, id: u64) {
        if self.lock().remove(&id).is_some() {
            metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
        }
    }

    /// Closes the connection that has waited longest for a request; false when every
    /// connection has a request in progress. A linear scan: it runs only at the cap, and
    /// costs far less than the accept it makes room for.
    fn evict_one(&self) -> bool {
        let victim = self
            .lock()
            .values()
            .filter_map(|c| c.evictable_since().map(|since| (since, c.clone())))
            .min_by_key(|(since, _)| *since);
        match victim {
            Some((_, conn)) => {
                conn.evict();
                true
            }
            None => false,
        }
    }
}

/// The socket, reporting reads and flushes to its connection's state.
struct Tracked {
    io: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes the socket only once its own buffer is written out.
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.conn.on_flushed();
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Marks the end of a response body when dropped.
struct BodyEnd(Arc<Conn>);

impl Drop for BodyEnd {
    fn drop(&mut self) {
        self.0.on_body_end();
    }
}

/// A response body that reports its end to the connection.
struct ReportingBody {
    body: Body,
    end: Option<BodyEnd>,
}

impl hyper::body::Body for ReportingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.end.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a connection over the cap gets when no connection can make room.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 5\r\n\
connection: close\r\n\
content-length: 75\r\n\
\r\n\
{\"error\":{\"code\":\"overloaded\",\"message\":\"too many connections; try again\"}}";

/// Serves `router` on `listener` until `stop` is cancelled, then lets every request in
/// progress finish and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: HttpConfig,
    stop: CancellationToken,
) {
    if let Some(files) = crate::config::http::open_file_limit()
        && config.max_connections as u64 > files / 2
    {
        tracing::warn!(
            max_connections = config.max_connections,
            open_file_limit = files,
            "http.max_connections is more than half the open-file limit: a flood of \
             connections can leave the database, Valkey/Redis and NATS without descriptors"
        );
    }
    let limits = Limits {
        header: config.header_read_timeout,
        idle: config.idle_timeout,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watcher below keeps the deadlines; hyper's own header timer would also end the
    // wait of a kept-alive connection at the header deadline.
    builder
        .header_read_timeout(None)
        .keep_alive(!config.idle_timeout.is_zero());
    let registry = Arc::new(Registry::default());
    // Every connection task holds a receiver; the sender sees them all gone.
    let (all_closed, open) = watch::channel(());
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors, most likely: wait for some to be released rather
                    // than spin.
                    tracing::error!(error = %e, "cannot accept HTTP connections");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        if registry.len() >= config.max_connections && !registry.evict_one() {
            refuse(stream);
            continue;
        }
        // Responses are written whole or in batches of chunks: Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn::new(Instant::now()));
        let id = registry.insert(conn.clone());
        let (registry, router, builder, stop, open) = (
            registry.clone(),
            router.clone(),
            builder.clone(),
            stop.clone(),
            open.clone(),
        );
        tokio::spawn(async move {
            serve_connection(stream, conn, router, &builder, limits, stop).await;
            registry.remove(id);
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    all_closed.closed().await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Answers a connection over the cap at once, without reading it, and closes it.
fn refuse(stream: TcpStream) {
    // Best effort: a full socket buffer, or a request the client is still sending, may cost
    // the client this answer; it sees the connection closed either way.
    let _ = stream.try_write(REFUSED);
    Reason::Refused.count();
}

/// Serves one connection until it closes, is closed for a limit, or the server stops.
async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    router: Router,
    builder: &hyper::server::conn::http1::Builder,
    limits: Limits,
    stop: CancellationToken,
) {
    let io = TokioIo::new(Tracked {
        io: stream,
        conn: conn.clone(),
    });
    let requests = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        requests.on_request();
        let end = BodyEnd(requests.clone());
        let router = router.clone();
        async move {
            let Ok(resp) = router.oneshot(req.map(Body::new)).await;
            Ok::<_, Infallible>(resp.map(|body| ReportingBody {
                body,
                end: Some(end),
            }))
        }
    });
    let http = builder.serve_connection(io, service);
    tokio::pin!(http);
    let mut stopping = false;
    loop {
        let changed = conn.changed.notified();
        let at = match conn.next(&limits, stopping, Instant::now()) {
            Step::Close(reason) => {
                reason.count();
                return;
            }
            Step::At(at, _) => Some(at),
            Step::Wait => None,
        };
        tokio::select! {
            biased;
            () = changed => {}
            done = http.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                // A request in progress is answered; then hyper closes the connection.
                http.as_mut().graceful_shutdown();
            }
            () = sleep_until(at), if at.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The paths never counted against `http.max_requests_in_flight` nor refused by it: the
/// probes, and the metrics that show the shedding.
const EXEMPT: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The cap on requests in flight ([`limit_in_flight`]'s state).
#[derive(Debug, Clone)]
pub struct InFlight {
    slots: Arc<Semaphore>,
}

impl InFlight {
    /// At most `max` requests at once.
    pub fn new(max: usize) -> InFlight {
        InFlight {
            slots: Arc::new(Semaphore::new(max)),
        }
    }
}

/// Holds an in-flight slot; counts the gauge down when dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!(REQUESTS_IN_FLIGHT).decrement(1.0);
    }
}

/// Middleware: a request beyond the cap is answered 503 `overloaded` with `Retry-After` at
/// once, before its body is read; the probes and `/metrics` pass uncounted.
pub async fn limit_in_flight(State(cap): State<InFlight>, req: Request, next: Next) -> Response {
    if EXEMPT.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(permit) = cap.slots.clone().try_acquire_owned() else {
        metrics::counter!(REQUESTS_SHED).increment(1);
        return ApiError::Overloaded("too many requests in flight; try again".into())
            .into_response();
    };
    metrics::gauge!(REQUESTS_IN_FLIGHT).increment(1.0);
    let _slot = Slot { _permit: permit };
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(75),
        }
    }

    #[test]
    fn each_phase_has_its_deadline() {
        let t0 = Instant::now();
        let conn = Conn::new(t0);
        let l = limits();
        // A new connection has the header timeout from its start, bytes or not.
        assert_eq!(
            conn.next(&l, false, t0),
            Step::At(t0 + l.header, Reason::HeaderTimeout)
        );
        conn.on_read();
        assert_eq!(
            conn.next(&l, false, t0),
            Step::At(t0 + l.header, Reason::HeaderTimeout)
        );
        assert_eq!(
            conn.next(&l, false, t0 + l.header),
            Step::Close(Reason::HeaderTimeout)
        );
        conn.on_request();
        assert_eq!(conn.next(&l, false, t0 + l.idle * 10), Step::Wait);
        conn.on_body_end();
        let Phase::Flushing { since } = conn.lock().phase else {
            panic!("flushing");
        };
        assert_eq!(
            conn.next(&l, false, since),
            Step::At(since + l.idle, Reason::IdleTimeout)
        );
        conn.on_flushed();
        let Phase::Waiting { since, .. } = conn.lock().phase else {
            panic!("waiting");
        };
        // Kept alive: the idle timeout until a byte of the next request comes.
        assert_eq!(
            conn.next(&l, false, since),
            Step::At(since + l.idle, Reason::IdleTimeout)
        );
        conn.on_read();
        let Phase::Waiting {
            first_byte: Some(first),
            ..
        } = conn.lock().phase
        else {
            panic!("first byte");
        };
        assert_eq!(
            conn.next(&l, false, first),
            Step::At(first + l.header, Reason::HeaderTimeout)
        );
        // Stopping closes a waiting connection at once, not a busy one.
        assert_eq!(conn.next(&l, true, first), Step::Close(Reason::Shutdown));
        conn.on_request();
        assert_eq!(conn.next(&l, true, first), Step::Wait);
    }

    #[test]
    fn the_refusal_is_a_complete_json_answer() {
        let text = std::str::from_utf8(REFUSED).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("content-length");
        assert_eq!(length.parse::<usize>().expect("number"), body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "overloaded");
    }

    #[test]
    fn eviction_takes_the_longest_waiting_and_spares_busy_connections() {
        let registry = Registry::default();
        let t0 = Instant::now();
        let busy = Arc::new(Conn::new(t0));
        busy.on_request();
        let old = Arc::new(Conn::new(t0 + Duration::from_millis(1)));
        let new = Arc::new(Conn::new(t0 + Duration::from_millis(2)));
        for c in [&busy, &new, &old] {
            registry.insert(c.clone());
        }
        assert!(registry.evict_one());
        assert!(old.lock().evicted);
        assert_eq!(old.next(&limits(), false, t0), Step::Close(Reason::Evicted));
        assert!(registry.evict_one());
        assert!(new.lock().evicted);
        // Only the busy connection is left, and it is never chosen.
        assert!(!registry.evict_one());
        assert!(!busy.lock().evicted);
    }
}

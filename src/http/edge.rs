//! The listener and the guards against slow and hostile clients.
//!
//! - Connections: at most `server.max_connections` are served at once (a semaphore in the accept
//!   loop; the next ones wait in the kernel's listen backlog, holding no file of this process).
//! - Request heads: a connection must deliver a complete request head within
//!   `server.header_read_timeout_secs` of its first byte (or of being opened), else it is closed.
//! - Idle keep-alive: a connection with no request in flight and no bytes moving either way for
//!   `server.keep_alive_timeout_secs` is closed.
//! - Request bodies: the whole body must arrive within `server.body_read_timeout_secs`.
//! - A `Content-Length` above `server.body_limit_bytes` is answered 413 before any body is read.
//! - `X-Request-Id` is kept only when it is 1 to 128 of `A-Z a-z 0-9 . _ : -`; anything else is
//!   replaced by a generated id (the rejected value is never logged).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::Map;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::app::App;
use crate::config::ServerConfig;
use crate::envelope::{ActionError, EnvelopeResponse};

use super::REQUEST_ID;

/// Longest accepted `X-Request-Id`.
const MAX_REQUEST_ID: usize = 128;

/// The connection limits of the listener, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to deliver a request head.
    pub header_read: Duration,
    /// Idle time of a kept-alive connection.
    pub keep_alive: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl ConnLimits {
    /// The limits configured in `[server]`.
    pub fn of(server: &ServerConfig) -> ConnLimits {
        ConnLimits {
            header_read: Duration::from_secs(server.header_read_timeout_secs),
            keep_alive: Duration::from_secs(server.keep_alive_timeout_secs),
            max_connections: server.max_connections.max(1),
        }
    }

    /// How often a connection checks its deadlines: a quarter of the shorter one, between
    /// 50 ms and 1 s.
    fn tick(&self) -> Duration {
        (self.header_read.min(self.keep_alive) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// Connections being served right now (all listeners of the process).
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Connections being served right now by the listeners of this process.
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(Ordering::Relaxed)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// (idle connections close at once).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut warned_full = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait (server.max_connections)"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file handles or a connection reset before accept: back off a
                    // little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if permits.available_permits() > limits.max_connections / 2 {
            warned_full = false;
        }
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            connection(stream, peer, router, limits, stop).await;
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// What a connection did lately, shared by its socket wrapper, its service and its watchdog.
struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last byte moved either way.
    last_io: AtomicU64,
    /// Requests whose head arrived and whose response is not yet handed over.
    in_flight: AtomicUsize,
    /// 1 + milliseconds since `epoch` when the current request head began; 0 when none is
    /// being received.
    head_started: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_io: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            // The first request's head is due from the moment the connection is open.
            head_started: AtomicU64::new(1),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn read_some(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote_some(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ConnLimits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now_ms();
        let head = self.head_started.load(Ordering::Acquire);
        let header_ms = u64::try_from(limits.header_read.as_millis()).unwrap_or(u64::MAX);
        let idle_ms = u64::try_from(limits.keep_alive.as_millis()).unwrap_or(u64::MAX);
        if head != 0 && now.saturating_sub(head - 1) >= header_ms {
            return Some("request head not received within server.header_read_timeout_secs");
        }
        if now.saturating_sub(self.last_io.load(Ordering::Relaxed)) >= idle_ms {
            return Some("idle past server.keep_alive_timeout_secs");
        }
        None
    }
}

/// A request in flight on a connection; dropped when its response is handed over.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote_some();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that records its activity.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, breaks a limit, or (after shutdown) finishes its
/// request in flight.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = hyper_util::rt::TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let guard = service_activity.request_started();
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = router.oneshot(req.map(Body::new)).await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(limits.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(peer = %peer, reason = why, "closing connection");
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Middleware

/// Answers 413 at once when `Content-Length` is above `server.body_limit_bytes`, and gives the
/// body a whole-body deadline of `server.body_read_timeout_secs`.
pub async fn body_guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limit = app.config.server.body_limit_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = announced
        && length > limit as u64
    {
        let mut r = EnvelopeResponse::error(
            "",
            "",
            Map::new(),
            &ActionError::InvalidParameter(format!(
                "request body of {length} bytes is larger than server.body_limit_bytes ({limit} bytes)"
            )),
        );
        r.status = StatusCode::PAYLOAD_TOO_LARGE;
        let mut resp = r.into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let has_body =
        announced.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let timeout = Duration::from_secs(app.config.server.body_read_timeout_secs);
    let (parts, body) = req.into_parts();
    next.run(Request::from_parts(parts, with_deadline(body, timeout)))
        .await
}

/// The body of a request that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within server.body_read_timeout_secs ({0} s)")]
pub struct BodyTimedOut(u64);

/// `body`, failing when it has not been received entirely within `limit`.
fn with_deadline(body: Body, limit: Duration) -> Body {
    let deadline = Instant::now() + limit;
    let stream = body.into_data_stream();
    Body::from_stream(futures::stream::unfold(
        Some(stream),
        move |state| async move {
            let mut stream = state?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(stream))),
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => None,
                Err(_) => Some((Err(axum::Error::new(BodyTimedOut(limit.as_secs()))), None)),
            }
        },
    ))
}

/// Whether `value` is an acceptable caller-supplied request id.
pub fn is_safe_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Drops an `X-Request-Id` that is not a short token of safe characters (a new one is then
/// generated); the rejected value is not logged.
pub async fn request_id_guard(mut req: Request, next: Next) -> Response {
    let ids = req.headers().get_all(&REQUEST_ID);
    let mut count = 0;
    let mut all_safe = true;
    for v in ids {
        count += 1;
        all_safe &= is_safe_request_id(v.as_bytes());
    }
    if count > 1 || !all_safe {
        req.headers_mut().remove(&REQUEST_ID);
        tracing::info!(
            "X-Request-Id replaced: not 1 to 128 of A-Z a-z 0-9 . _ : - (the value is not logged)"
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(is_safe_request_id(b"abc-123_x.y:z"));
        assert!(is_safe_request_id(&[b'a'; 128]));
        assert!(!is_safe_request_id(&[b'a'; 129]));
        assert!(!is_safe_request_id(b""));
        assert!(!is_safe_request_id(b"a b"));
        assert!(!is_safe_request_id(b"a\nlevel=error"));
        assert!(!is_safe_request_id("é".as_bytes()));
        assert!(!is_safe_request_id(b"a\"b"));
    }

    #[test]
    fn ticks_stay_in_range() {
        let l = ConnLimits {
            header_read: Duration::from_secs(10),
            keep_alive: Duration::from_secs(60),
            max_connections: 1,
        };
        assert_eq!(l.tick(), Duration::from_secs(1));
        let short = ConnLimits {
            header_read: Duration::from_secs(1),
            ..l
        };
        assert_eq!(short.tick(), Duration::from_millis(250));
    }
}

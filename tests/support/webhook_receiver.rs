//! A webhook receiver for ingestion tests: an HTTP server on a random loopback port that
//! checks each POST's `X-Signature`, records the events, and answers 200 — or 503 while told
//! to fail. Included by test files with `#[path]`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Post {
    /// The event keys, in order.
    pub keys: Vec<String>,
    /// The events.
    pub events: Vec<Value>,
    /// Answered 200.
    pub accepted: bool,
    /// The signature matched the body and its time was within five minutes.
    pub signature_ok: bool,
    /// The sender's address (one host process keeps one connection).
    pub peer: std::net::SocketAddr,
    /// The whole body.
    pub body: Value,
}

struct Inner {
    secret: Vec<u8>,
    posts: Mutex<Vec<Post>>,
    /// Keys of acknowledged POSTs, in order, and POSTs refused (kept apart: cheap to read).
    tally: Mutex<(Vec<String>, usize)>,
    failing: AtomicBool,
}

/// A running receiver (stops with the test's runtime).
#[derive(Clone)]
pub struct Receiver {
    /// Where to POST.
    pub url: String,
    inner: Arc<Inner>,
}

fn signature_ok(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers.get("x-signature").and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature_ok = signature_ok(&inner.secret, &headers, &body);
    let parsed = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let events: Vec<Value> = parsed
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let keys = keys_of(&events);
    let accepted = !inner.failing.load(Ordering::SeqCst) && signature_ok;
    // Recorded before answering: an acknowledged batch is always on record.
    {
        let mut tally = inner.tally.lock().unwrap();
        if accepted {
            tally.0.extend(keys_of(&events));
        } else {
            tally.1 += 1;
        }
    }
    inner.posts.lock().unwrap().push(Post {
        keys,
        events,
        accepted,
        signature_ok,
        peer,
        body: parsed,
    });
    if accepted {
        StatusCode::OK
    } else if !signature_ok {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn keys_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_key"].as_str().unwrap_or("?").to_string())
        .collect()
}

impl Receiver {
    /// Starts a receiver checking signatures made with `secret`.
    pub async fn start(secret: &str) -> Receiver {
        let inner = Arc::new(Inner {
            secret: secret.as_bytes().to_vec(),
            posts: Mutex::new(Vec::new()),
            tally: Mutex::new((Vec::new(), 0)),
            failing: AtomicBool::new(false),
        });
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await;
        });
        Receiver { url, inner }
    }

    /// Answers 503 from now on (`true`) or 200 again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    /// Every POST so far.
    pub fn posts(&self) -> Vec<Post> {
        self.inner.posts.lock().unwrap().clone()
    }

    /// The keys of every acknowledged POST, in order (with repeats).
    pub fn acked_keys(&self) -> Vec<String> {
        self.inner.tally.lock().unwrap().0.clone()
    }

    /// POSTs refused so far.
    pub fn refused(&self) -> usize {
        self.inner.tally.lock().unwrap().1
    }

    /// Waits until `cond` holds for this receiver (checked every 20 ms, up to `within`).
    pub async fn wait_until(&self, what: &str, within: Duration, cond: impl Fn(&Receiver) -> bool) {
        let deadline = Instant::now() + within;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} refused posts, {} acknowledged keys",
                self.refused(),
                self.acked_keys().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the distinct acknowledged keys number at least `n`.
    pub async fn wait_for_keys(&self, n: usize, within: Duration) {
        self.wait_until(&format!("{n} acknowledged event keys"), within, |r| {
            let mut keys = r.acked_keys();
            keys.sort();
            keys.dedup();
            keys.len() >= n
        })
        .await;
    }
}

//! Test doubles for the client's unit tests: a scripted HTTP server on 127.0.0.1:0 that records
//! every request, and a token source that counts fetches and invalidations.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

use super::{DefenderClient, DefenderError, RetryPolicy, TokenSource};

/// One request as the test server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// Method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `Accept` header.
    pub accept: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// Body as text.
    pub body: String,
}

impl Recorded {
    /// Decoded query pairs.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }
}

type Handler = Arc<dyn Fn(usize, &Recorded) -> Response + Send + Sync>;

/// A scripted server: the handler gets the request's index (0-based) and the request.
pub(crate) struct TestServer {
    /// Listen address.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts a server answering with `handler`.
    pub async fn start(
        handler: impl Fn(usize, &Recorded) -> Response + Send + Sync + 'static,
    ) -> TestServer {
        TestServer::start_with(move |_| handler).await
    }

    /// Starts a server whose handler is built knowing the server's own address.
    pub async fn start_with<H>(make: impl FnOnce(SocketAddr) -> H) -> TestServer
    where
        H: Fn(usize, &Recorded) -> Response + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(make(addr));
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = requests.clone();
        let app = Router::new().fallback(move |req: Request| {
            let handler = handler.clone();
            let recorded = recorded.clone();
            async move {
                let (parts, body) = req.into_parts();
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let mut r = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().map(str::to_owned),
                    authorization: header("authorization"),
                    accept: header("accept"),
                    content_type: header("content-type"),
                    body: String::new(),
                };
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                r.body = String::from_utf8_lossy(&bytes).into_owned();
                let index = {
                    let mut all = recorded.lock().unwrap();
                    all.push(r.clone());
                    all.len() - 1
                };
                handler(index, &r)
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer {
            addr,
            url: format!("http://{addr}"),
            requests,
            task,
        }
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Number of requests so far.
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hands out `token-N`, where N counts invalidations of the current token.
#[derive(Debug, Default)]
pub(crate) struct FakeTokens {
    /// token() calls.
    pub fetched: AtomicUsize,
    /// invalidate() calls.
    pub invalidated: AtomicUsize,
    generation: AtomicUsize,
    /// When set, token() fails with this message.
    pub fail: Mutex<Option<String>>,
}

impl FakeTokens {
    /// token() calls so far.
    pub fn fetched(&self) -> usize {
        self.fetched.load(Ordering::SeqCst)
    }

    /// invalidate() calls so far.
    pub fn invalidated(&self) -> usize {
        self.invalidated.load(Ordering::SeqCst)
    }
}

impl TokenSource for FakeTokens {
    fn token(&self) -> BoxFuture<'_, Result<SecretString, DefenderError>> {
        Box::pin(async move {
            self.fetched.fetch_add(1, Ordering::SeqCst);
            if let Some(message) = self.fail.lock().unwrap().clone() {
                return Err(DefenderError::Auth(message));
            }
            let n = self.generation.load(Ordering::SeqCst);
            Ok(SecretString::from(format!("token-{n}")))
        })
    }

    fn invalidate(&self, rejected: &SecretString) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
        let n = self.generation.load(Ordering::SeqCst);
        if rejected.expose_secret() == format!("token-{n}") {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A client for `server` with millisecond retry waits.
pub(crate) fn client_for(server: &TestServer, tokens: Arc<FakeTokens>) -> DefenderClient {
    client_at(&server.url, tokens)
}

/// A client for `url` with millisecond retry waits.
pub(crate) fn client_at(url: &str, tokens: Arc<FakeTokens>) -> DefenderClient {
    let http = DefenderClient::http_client(Duration::from_secs(2), Duration::from_secs(10));
    DefenderClient::new(http, url, tokens).with_retry_policy(RetryPolicy::for_tests())
}

//! The Microsoft Defender for Endpoint API client.
//!
//! [`DefenderClient`] sends every call to the asset's configured API host with a bearer token
//! from a [`TokenSource`]. On a 401 it drops the token, fetches a new one and repeats the call
//! once. GET and DELETE are repeated on 500/502/503/504 and on connection failures or timeouts
//! with jittered exponential backoff ([`RetryPolicy`]); POST and PATCH never are (the action may
//! have been created). Microsoft error bodies become [`DefenderError`]s keeping the code and
//! the correlation id. [`DefenderClient::list`] follows OData paging without ever
//! sending the token to a host other than the configured one.
//!
//! Upstream discipline: before every request (retries included) the client takes a permit from
//! the asset's [`Budget`] for the call's endpoint [`Family`]. When the budget is spent it waits
//! for the next permit if that moment comes before the client's deadline
//! ([`DefenderClient::with_deadline`]; without one, before the asset's longest wait, 30 s by
//! default), and otherwise fails at once with [`DefenderError::Throttled`] without sending
//! anything. A 429 answer is waited out the same way: when its `Retry-After` ends before the
//! deadline the same request is sent again, POSTs included (a 429 means nothing was run), at
//! most [`MAX_THROTTLE_RETRIES`] times; otherwise the call fails with
//! [`DefenderError::Throttled`] carrying the `Retry-After`.
//!
//! Every call counts `defender_upstream_requests_total{endpoint,status}` (endpoint is the path
//! template, ids replaced by `{id}`), `defender_upstream_retries_total{endpoint,reason}` and
//! `defender_upstream_throttled_total{endpoint}` (429 answers); budget waits count
//! `defender_budget_waits_total{family}` and calls refused by the budget
//! `defender_budget_exhausted_total{family}`. Each call runs in a debug span with the method
//! and the path template.

mod budget;
pub mod endpoints;
mod error;
pub mod hunting;
pub mod kql;
mod models;
pub mod odata;
mod paging;
mod request_budget;
mod retry;
mod shared_budget;
mod urls;

#[cfg(test)]
mod testing;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tracing::Instrument;
use url::Url;

pub use budget::{Budget, DEFAULT_ACTIONS_FLOOR_PERCENT, FAMILIES, Family, FamilyUse};
pub use endpoints::{Call, Endpoint, Priority};
pub use error::{DefenderError, GaveUp, ThrottleCause};
pub use models::{
    ActionStatus, CommandError, Machine, MachineAction, field_text, link_host, presigned_link,
};
pub use odata::Filter;
pub use paging::{ListQuery, MAX_TOP};
pub use request_budget::{DegradedBudget, RequestBudget, TenantBudgets, strictest};
pub use retry::RetryPolicy;
pub use shared_budget::SharedBudget;
pub use urls::{encode_query, path_with_query};

/// Largest response body read into memory (hunting results reach 124 MB).
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// The call [`DefenderClient::probe`] makes, for messages.
pub const PROBE: &str = "GET /api/machines?$top=1";

/// How many times one call is sent again after a 429 whose `Retry-After` fits the deadline.
pub const MAX_THROTTLE_RETRIES: u32 = 5;

/// Supplies bearer tokens for one asset.
pub trait TokenSource: Send + Sync + 'static {
    /// A valid access token (cached or freshly fetched).
    fn token(&self) -> BoxFuture<'_, Result<SecretString, DefenderError>>;
    /// The API answered 401 with this token: drop it so the next token() fetches a new one.
    fn invalidate(&self, rejected: &SecretString);
}

/// The Defender API client of one asset; cheap to clone.
#[derive(Clone)]
pub struct DefenderClient {
    inner: Arc<Inner>,
    /// When set, waits (throttling, budget) must end by then; past it calls fail fast.
    deadline: Option<tokio::time::Instant>,
    /// When set, replaces the client's total timeout for each request (hunting queries).
    request_timeout: Option<Duration>,
    /// When set, every call takes its budget permit at this priority instead of its
    /// endpoint's (alert ingestion reads in the background).
    priority: Option<Priority>,
}

struct Inner {
    http: reqwest::Client,
    api_url: String,
    base: Result<Url, String>,
    tokens: Arc<dyn TokenSource>,
    retry: RetryPolicy,
    /// Shared by every clone of the client (deadline-bound ones included).
    budget: RequestBudget,
}

impl fmt::Debug for DefenderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefenderClient")
            .field("api_url", &self.inner.api_url)
            .field("retry", &self.inner.retry)
            .field("budget", &self.inner.budget)
            .field("deadline", &self.deadline)
            .field("request_timeout", &self.request_timeout)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

/// The body of a request, rebuilt for each attempt.
#[derive(Clone, Copy)]
enum Body<'a> {
    None,
    Json(&'a Value),
    Multipart(&'a (dyn Fn() -> reqwest::multipart::Form + Send + Sync)),
}

/// A complete answer of the API (or, for a call that asked for it, a success answer whose body
/// is still to be read from `pending`).
struct RawResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The answer whose body was left unread (see [`Route::stream`]).
    pending: Option<reqwest::Response>,
}

/// Why one attempt got no answer.
enum AttemptError {
    /// Connecting, sending or reading failed.
    Transport(reqwest::Error),
    /// Nothing to retry (the request could not be built, the body was too large).
    Fatal(DefenderError),
}

/// What the client needs to know about a call besides its URL: its budget family and
/// priority, and its metric label.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    family: Family,
    priority: Priority,
    label: std::borrow::Cow<'static, str>,
    /// A success answer's body is left for the caller to read as it arrives.
    stream: bool,
}

impl Route {
    /// The route of a catalogued endpoint.
    fn of(endpoint: &'static Endpoint) -> Route {
        Route {
            family: endpoint.family,
            priority: endpoint.priority,
            label: std::borrow::Cow::Borrowed(endpoint.label()),
            stream: false,
        }
    }

    /// The route of an uncatalogued path (the client's own tests): family and label worked
    /// out from the path, reads as reads.
    #[cfg(test)]
    fn guess(method: &Method, path: &str) -> Route {
        let path = path.split('?').next().unwrap_or_default();
        Route {
            family: Family::of(method, path),
            priority: if *method == Method::GET {
                Priority::Read
            } else {
                Priority::Respond
            },
            label: std::borrow::Cow::Owned(urls::endpoint_template(path)),
            stream: false,
        }
    }
}

impl DefenderClient {
    /// A client for `api_url` (the base without `/api`; a trailing slash is ignored), with
    /// the standard request budget ([`Budget::standard`]; see [`with_budget`](Self::with_budget)).
    pub fn new(
        http: reqwest::Client,
        api_url: &str,
        tokens: Arc<dyn TokenSource>,
    ) -> DefenderClient {
        let api_url = api_url.trim().trim_end_matches('/').to_string();
        let base = Url::parse(&api_url)
            .map_err(|e| format!("the configured API URL {api_url:?} is not a valid URL: {e}"))
            .and_then(|u| {
                if u.cannot_be_a_base() || u.host_str().is_none() {
                    Err(format!(
                        "the configured API URL {api_url:?} is not an http(s) base URL"
                    ))
                } else {
                    Ok(u)
                }
            });
        DefenderClient {
            inner: Arc::new(Inner {
                http,
                api_url,
                base,
                tokens,
                retry: RetryPolicy::standard(),
                budget: RequestBudget::from(Budget::standard()),
            }),
            deadline: None,
            request_timeout: None,
            priority: None,
        }
    }

    /// The same client with the asset's request budget (a fresh one: build it once per asset
    /// and share the client).
    pub fn with_budget(self, budget: Budget) -> DefenderClient {
        self.with_shared_budget(Arc::new(budget))
    }

    /// The same client drawing on `budget`, which other clients may share (each endpoint
    /// family keeps its own windows).
    pub fn with_shared_budget(self, budget: Arc<Budget>) -> DefenderClient {
        self.with_request_budget(RequestBudget::local(budget))
    }

    /// The same client drawing on `budget`: local or kept in Redis, shared by every asset of
    /// the registration ([`TenantBudgets::for_asset`]).
    pub fn with_request_budget(self, budget: RequestBudget) -> DefenderClient {
        let inner = &self.inner;
        DefenderClient {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                api_url: inner.api_url.clone(),
                base: inner.base.clone(),
                tokens: inner.tokens.clone(),
                retry: inner.retry,
                budget,
            }),
            deadline: self.deadline,
            request_timeout: self.request_timeout,
            priority: self.priority,
        }
    }

    /// The asset's request budget (its limits tell pollers how often they may call).
    pub fn budget(&self) -> &RequestBudget {
        &self.inner.budget
    }

    /// The same client bound to an action's deadline: throttling waits end by then.
    pub fn with_deadline(&self, at: tokio::time::Instant) -> DefenderClient {
        DefenderClient {
            inner: self.inner.clone(),
            deadline: Some(at),
            request_timeout: self.request_timeout,
            priority: self.priority,
        }
    }

    /// The same client giving each request up to `timeout` in all, instead of the asset's
    /// `http_timeout_secs` (hunting queries may run for minutes).
    pub fn with_request_timeout(&self, timeout: Duration) -> DefenderClient {
        DefenderClient {
            inner: self.inner.clone(),
            deadline: self.deadline,
            request_timeout: Some(timeout),
            priority: self.priority,
        }
    }

    /// The same client taking the budget permit of every call at `priority`, whatever its
    /// endpoint's: alert ingestion lists with [`Priority::Background`], so its polls only
    /// use the share of each window above the actions floor and never queue ahead of a
    /// playbook's calls.
    pub fn with_priority(&self, priority: Priority) -> DefenderClient {
        DefenderClient {
            inner: self.inner.clone(),
            deadline: self.deadline,
            request_timeout: self.request_timeout,
            priority: Some(priority),
        }
    }

    /// The deadline this client is bound to, if any.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// The same client with another retry policy (tests use [`RetryPolicy::for_tests`]).
    pub fn with_retry_policy(self, retry: RetryPolicy) -> DefenderClient {
        let inner = &self.inner;
        DefenderClient {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                api_url: inner.api_url.clone(),
                base: inner.base.clone(),
                tokens: inner.tokens.clone(),
                retry,
                budget: inner.budget.clone(),
            }),
            deadline: self.deadline,
            request_timeout: self.request_timeout,
            priority: self.priority,
        }
    }

    /// The HTTP client for Defender calls: rustls, redirects not followed, user agent
    /// `defender-soar/<version>`, connect and total timeouts, pooled connections.
    pub fn http_client(connect_timeout: Duration, total_timeout: Duration) -> reqwest::Client {
        let user_agent = concat!("defender-soar/", env!("CARGO_PKG_VERSION"));
        let built = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(user_agent)
            .connect_timeout(connect_timeout)
            .timeout(total_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(16)
            .tcp_keepalive(Duration::from_secs(60))
            .build();
        match built {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "could not build the configured HTTP client; using a plain one");
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(user_agent)
                    .connect_timeout(connect_timeout)
                    .timeout(total_timeout)
                    .build()
                    .unwrap_or_default()
            }
        }
    }

    /// The configured API base (without `/api`).
    pub fn api_url(&self) -> &str {
        &self.inner.api_url
    }

    /// The underlying HTTP client, for downloads from pre-signed URLs that take no bearer
    /// token (live response results, investigation packages).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// GET an endpoint as JSON; an empty body is `Value::Null`.
    pub async fn get(&self, call: &Call) -> Result<Value, DefenderError> {
        self.get_with_query(call, &[]).await
    }

    /// `GET` of one record with the related `relation` embedded (`$expand`) when given.
    pub async fn get_expanded(
        &self,
        call: &Call,
        relation: Option<&str>,
    ) -> Result<Value, DefenderError> {
        match relation {
            Some(r) => self.get_with_query(call, &[("$expand", r)]).await,
            None => self.get(call).await,
        }
    }

    /// GET an endpoint with query parameters (encoded here) as JSON.
    pub async fn get_with_query(
        &self,
        call: &Call,
        query: &[(&str, &str)],
    ) -> Result<Value, DefenderError> {
        let url = self.url(&path_with_query(&call.path, query))?;
        self.get_url(url, &Route::of(call.endpoint)).await
    }

    /// The connectivity probe ([`PROBE`]): the first page of one device.
    pub async fn probe(&self) -> Result<Value, DefenderError> {
        self.get_with_query(&endpoints::MACHINES.at(&[]), &[("$top", "1")])
            .await
    }

    /// POST a JSON body; never repeated except once after a 401 (the request was not run)
    /// and after a 429 (nothing was run).
    pub async fn post(&self, call: &Call, body: &Value) -> Result<Value, DefenderError> {
        let url = self.url(&call.path)?;
        let raw = self
            .execute(
                Method::POST,
                url,
                Body::Json(body),
                Route::of(call.endpoint),
            )
            .await?;
        decode_json(success(raw)?)
    }

    /// POST a JSON body and hand the success answer's body to `parse` as it arrives, on a
    /// blocking thread, without holding it in memory (hunting answers reach 124 MB; `parse`
    /// keeps what it needs). Repeated like [`post`](Self::post); the body may be at most
    /// 256 MB. A connection that fails or times out while the body is read is a
    /// [`DefenderError::Transport`], an answer `parse` cannot read a [`DefenderError::Decode`].
    pub async fn post_parsed<T, F>(
        &self,
        call: &Call,
        body: &Value,
        parse: F,
    ) -> Result<T, DefenderError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn std::io::Read) -> Result<T, serde_json::Error> + Send + 'static,
    {
        let url = self.url(&call.path)?;
        let host = urls::authority(&url);
        let mut route = Route::of(call.endpoint);
        route.stream = true;
        let raw = success(
            self.execute(Method::POST, url, Body::Json(body), route)
                .await?,
        )?;
        let decode = |e: serde_json::Error| match e.io_error_kind() {
            Some(std::io::ErrorKind::TimedOut) => DefenderError::Transport(format!(
                "request to {host} timed out while its answer was read"
            )),
            Some(std::io::ErrorKind::FileTooLarge) => DefenderError::Decode(format!(
                "the answer of {} is larger than {} MB",
                call.endpoint.label(),
                MAX_BODY_BYTES / (1024 * 1024)
            )),
            Some(_) => DefenderError::Transport(format!(
                "the connection to {host} failed while its answer was read: {e}"
            )),
            None => DefenderError::Decode(e.to_string()),
        };
        let Some(response) = raw.pending else {
            return parse(&mut raw.body.as_slice()).map_err(decode);
        };
        let chunks = futures::TryStreamExt::map_err(response.bytes_stream(), |e| {
            if e.is_timeout() {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")
            } else {
                std::io::Error::other(e.without_url())
            }
        });
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(chunks));
        let parsed = tokio::task::spawn_blocking(move || {
            let mut capped = Capped {
                inner: reader,
                left: MAX_BODY_BYTES,
            };
            parse(&mut capped)
        })
        .await
        .map_err(|e| DefenderError::Decode(format!("reading the answer stopped: {e}")))?;
        parsed.map_err(decode)
    }

    /// PATCH a JSON body; like [`post`](Self::post), never repeated except after a 401.
    pub async fn patch(&self, call: &Call, body: &Value) -> Result<Value, DefenderError> {
        let url = self.url(&call.path)?;
        let raw = self
            .execute(
                Method::PATCH,
                url,
                Body::Json(body),
                Route::of(call.endpoint),
            )
            .await?;
        decode_json(success(raw)?)
    }

    /// POST a multipart form (library uploads); `form` is called for each attempt (a new
    /// token after a 401). Never repeated otherwise.
    pub async fn post_multipart(
        &self,
        call: &Call,
        form: &(dyn Fn() -> reqwest::multipart::Form + Send + Sync),
    ) -> Result<Value, DefenderError> {
        let url = self.url(&call.path)?;
        let raw = self
            .execute(
                Method::POST,
                url,
                Body::Multipart(form),
                Route::of(call.endpoint),
            )
            .await?;
        decode_json(success(raw)?)
    }

    /// DELETE; the answer's body is ignored.
    pub async fn delete(&self, call: &Call) -> Result<(), DefenderError> {
        let url = self.url(&call.path)?;
        let raw = self
            .execute(Method::DELETE, url, Body::None, Route::of(call.endpoint))
            .await?;
        success(raw).map(|_| ())
    }

    /// Up to `limit` items of an OData list: `$top` = min(limit, 10,000), the query's
    /// `$filter` and parameters, following `@odata.nextLink` (rebased onto the configured
    /// host) and falling back to `$skip` paging when a full page comes without one.
    /// `limit` 0 asks for nothing and sends no request.
    pub async fn list(
        &self,
        call: &Call,
        query: &ListQuery,
        limit: usize,
    ) -> Result<Vec<Value>, DefenderError> {
        paging::list(self, &call.path, &Route::of(call.endpoint), query, limit).await
    }

    /// Like [`list`](Self::list), with pages of at most `page_size` items (`$top`), for lists
    /// whose limit is below 10,000 (Graph: 2,000 alerts, 50 incidents a page).
    pub async fn list_with_page_size(
        &self,
        call: &Call,
        query: &ListQuery,
        limit: usize,
        page_size: usize,
    ) -> Result<Vec<Value>, DefenderError> {
        paging::list_paged(
            self,
            &call.path,
            &Route::of(call.endpoint),
            query,
            limit,
            page_size,
        )
        .await
    }

    /// The parsed base URL, or why the configured one is unusable.
    fn base(&self) -> Result<&Url, DefenderError> {
        self.inner
            .base
            .as_ref()
            .map_err(|e| DefenderError::Transport(format!("{e}; the request was not sent")))
    }

    fn url(&self, path_and_query: &str) -> Result<Url, DefenderError> {
        urls::join(self.base()?, &self.inner.api_url, path_and_query)
    }

    /// GET an absolute URL already on the configured host.
    async fn get_url(&self, url: Url, route: &Route) -> Result<Value, DefenderError> {
        let raw = self
            .execute(Method::GET, url, Body::None, route.clone())
            .await?;
        decode_json(success(raw)?)
    }

    /// Sends one logical call: the 401 refresh and the retries of idempotent methods.
    async fn execute(
        &self,
        method: Method,
        url: Url,
        body: Body<'_>,
        route: Route,
    ) -> Result<RawResponse, DefenderError> {
        let span = tracing::debug_span!(
            "defender_request",
            method = %method,
            endpoint = %route.label
        );
        self.execute_in_span(method, url, body, route)
            .instrument(span)
            .await
    }

    async fn execute_in_span(
        &self,
        method: Method,
        url: Url,
        body: Body<'_>,
        route: Route,
    ) -> Result<RawResponse, DefenderError> {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::DELETE);
        let Route {
            family,
            priority,
            label: endpoint,
            stream,
        } = route;
        let priority = self.priority.unwrap_or(priority);
        let policy = self.inner.retry;
        let mut token = self.inner.tokens.token().await?;
        let mut refreshed = false;
        let mut throttled_answers: u32 = 0;
        let mut backoff = policy.backoff();
        loop {
            self.permit(family, priority).await?;
            let started = Instant::now();
            match self.attempt(&method, &url, &token, body, stream).await {
                Ok(raw) => {
                    let status = raw.status;
                    count_request(&endpoint, status.as_u16().to_string());
                    tracing::debug!(
                        status = status.as_u16(),
                        elapsed_ms = elapsed_ms(started),
                        "answered"
                    );
                    if status == StatusCode::UNAUTHORIZED && !refreshed {
                        refreshed = true;
                        count_retry(&endpoint, "unauthorized");
                        self.inner.tokens.invalidate(&token);
                        token = self.inner.tokens.token().await?;
                        continue;
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        throttled_answers += 1;
                        count_throttled(&endpoint);
                        let retry_after = retry::retry_after_or_default(&raw.headers);
                        self.may_wait_out_429(retry_after, throttled_answers)?;
                        count_retry(&endpoint, "throttled");
                        tracing::debug!(
                            retry_after_ms = millis(retry_after),
                            answers = throttled_answers,
                            "throttled; waiting for Retry-After"
                        );
                        tokio::time::sleep(retry_after).await;
                        continue;
                    }
                    if idempotent
                        && retry::is_retryable_status(status)
                        && let Some(wait) = backoff.next()
                    {
                        count_retry(&endpoint, "server_error");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Ok(raw);
                }
                Err(AttemptError::Fatal(e)) => {
                    count_request(&endpoint, "error".to_string());
                    return Err(e);
                }
                Err(AttemptError::Transport(e)) => {
                    count_request(&endpoint, "error".to_string());
                    tracing::debug!(
                        timeout = e.is_timeout(),
                        connect = e.is_connect(),
                        elapsed_ms = elapsed_ms(started),
                        "no answer"
                    );
                    if idempotent && let Some(wait) = backoff.next() {
                        count_retry(&endpoint, "transport");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(transport_error(&url, &e, idempotent));
                }
            }
        }
    }

    /// The latest moment a wait may end (never before `now`: a call that needs no wait goes
    /// even past its deadline), and what to say when a wait would end later.
    fn wait_limit(&self, now: tokio::time::Instant) -> (tokio::time::Instant, GaveUp) {
        match self.deadline {
            Some(deadline) => (deadline.max(now), GaveUp::Deadline),
            None => {
                let max = self.inner.budget.max_wait();
                (now.checked_add(max).unwrap_or(now), GaveUp::LongerThan(max))
            }
        }
    }

    /// Takes a permit of the asset's budget for `family`: at once, after a wait that ends
    /// within the wait limit, or not at all ([`DefenderError::Throttled`], nothing sent).
    async fn permit(&self, family: Family, priority: Priority) -> Result<(), DefenderError> {
        let mut now = tokio::time::Instant::now();
        let (latest, gave_up) = self.wait_limit(now);
        let budget = &self.inner.budget;
        // A background call reserves nothing ahead, nor does any call on a budget shared
        // through Redis: it asks again, within the wait limit, until there is room.
        let asks_again = priority == Priority::Background || budget.asks_again();
        let mut waited = false;
        let mut reserved = budget.reserve(family, priority, now, latest).await;
        while asks_again
            && let Err(spent) = &reserved
            && spent.at <= latest
        {
            if !waited {
                waited = true;
                count_budget_wait(family);
                tracing::debug!(
                    family = family.name(),
                    wait_ms = millis(spent.at - now),
                    "request budget spent; waiting to ask again"
                );
            }
            tokio::time::sleep_until(spent.at).await;
            now = tokio::time::Instant::now();
            reserved = budget.reserve(family, priority, now, latest).await;
        }
        match reserved {
            Ok(at) if at <= now => Ok(()),
            Ok(at) => {
                count_budget_wait(family);
                tracing::debug!(
                    family = family.name(),
                    wait_ms = millis(at - now),
                    "request budget spent; waiting for a permit"
                );
                tokio::time::sleep_until(at).await;
                Ok(())
            }
            Err(spent) => {
                count_budget_exhausted(family);
                let retry_after = spent.at.saturating_duration_since(now);
                tracing::debug!(
                    family = family.name(),
                    limit = %spent.limit,
                    retry_after_ms = millis(retry_after),
                    "request budget spent; not waiting"
                );
                Err(DefenderError::Throttled {
                    retry_after,
                    cause: ThrottleCause::Budget {
                        family,
                        limit: spent.limit,
                        until: time::OffsetDateTime::now_utc() + retry_after,
                        gave_up,
                    },
                })
            }
        }
    }

    /// `Ok` when the `answers`-th 429 of a call may be waited out (`retry_after` ends within
    /// the wait limit and retries remain), else the error to return.
    fn may_wait_out_429(&self, retry_after: Duration, answers: u32) -> Result<(), DefenderError> {
        let now = tokio::time::Instant::now();
        let (latest, gave_up) = self.wait_limit(now);
        let gave_up = if answers > MAX_THROTTLE_RETRIES {
            GaveUp::RetriesExhausted
        } else if now.checked_add(retry_after).is_none_or(|end| end > latest) {
            gave_up
        } else {
            return Ok(());
        };
        Err(DefenderError::Throttled {
            retry_after,
            cause: ThrottleCause::Upstream { answers, gave_up },
        })
    }

    /// One HTTP exchange, body read completely.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        token: &SecretString,
        body: Body<'_>,
        stream: bool,
    ) -> Result<RawResponse, AttemptError> {
        let mut request = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, bearer(token).map_err(AttemptError::Fatal)?)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(timeout) = self.request_timeout {
            request = request.timeout(timeout);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(value),
            Body::Multipart(form) => request.multipart(form()),
        };
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        if stream && status.is_success() {
            return Ok(RawResponse {
                status,
                headers,
                body: Vec::new(),
                pending: Some(response),
            });
        }
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(AttemptError::Fatal(DefenderError::Decode(format!(
                    "the answer of {} is larger than {} MB",
                    urls::endpoint_template(url.path()),
                    MAX_BODY_BYTES / (1024 * 1024)
                ))));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(RawResponse {
            status,
            headers,
            body: bytes,
            pending: None,
        })
    }
}

/// A reader that fails with `FileTooLarge` past `left` bytes.
struct Capped<R> {
    inner: R,
    left: usize,
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a body of exactly the limit from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    "the answer is too large",
                )),
            };
        }
        let max = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n;
        Ok(n)
    }
}

/// Calls by raw path, for the client's own tests (actions only call catalogued endpoints).
#[cfg(test)]
impl DefenderClient {
    async fn get_path(&self, path_and_query: &str) -> Result<Value, DefenderError> {
        let url = self.url(path_and_query)?;
        self.get_url(url, &Route::guess(&Method::GET, path_and_query))
            .await
    }

    async fn post_path(&self, path: &str, body: &Value) -> Result<Value, DefenderError> {
        let url = self.url(path)?;
        let route = Route::guess(&Method::POST, path);
        decode_json(success(
            self.execute(Method::POST, url, Body::Json(body), route)
                .await?,
        )?)
    }

    async fn patch_path(&self, path: &str, body: &Value) -> Result<Value, DefenderError> {
        let url = self.url(path)?;
        let route = Route::guess(&Method::PATCH, path);
        decode_json(success(
            self.execute(Method::PATCH, url, Body::Json(body), route)
                .await?,
        )?)
    }

    async fn delete_path(&self, path: &str) -> Result<(), DefenderError> {
        let url = self.url(path)?;
        let route = Route::guess(&Method::DELETE, path);
        success(self.execute(Method::DELETE, url, Body::None, route).await?).map(|_| ())
    }

    async fn post_multipart_path(
        &self,
        path: &str,
        form: &(dyn Fn() -> reqwest::multipart::Form + Send + Sync),
    ) -> Result<Value, DefenderError> {
        let url = self.url(path)?;
        let route = Route::guess(&Method::POST, path);
        decode_json(success(
            self.execute(Method::POST, url, Body::Multipart(form), route)
                .await?,
        )?)
    }

    async fn list_path(
        &self,
        path: &str,
        query: &ListQuery,
        limit: usize,
    ) -> Result<Vec<Value>, DefenderError> {
        paging::list(self, path, &Route::guess(&Method::GET, path), query, limit).await
    }
}

/// Builder errors are not worth repeating; everything else on the wire is.
fn classify(e: reqwest::Error) -> AttemptError {
    if e.is_builder() {
        AttemptError::Fatal(DefenderError::Transport(format!(
            "the request could not be built: {}",
            root_cause(&e)
        )))
    } else {
        AttemptError::Transport(e)
    }
}

/// `Bearer <token>`, marked sensitive so it never shows in debug output.
fn bearer(token: &SecretString) -> Result<HeaderValue, DefenderError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            DefenderError::Auth(
                "the access token contains characters that cannot be sent in an HTTP header".into(),
            )
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A connection failure naming the host and what went wrong (never the URL's query).
fn transport_error(url: &Url, e: &reqwest::Error, idempotent: bool) -> DefenderError {
    let host = urls::authority(url);
    let what = if e.is_timeout() {
        format!("request to {host} timed out")
    } else if e.is_connect() {
        format!("could not connect to {host}: {}", root_cause(e))
    } else {
        format!("connection to {host} failed: {}", root_cause(e))
    };
    if idempotent || e.is_connect() {
        DefenderError::Transport(what)
    } else {
        DefenderError::Transport(format!(
            "{what}; the request may have reached the API, check its effect before repeating it"
        ))
    }
}

/// The innermost error's text (an OS or TLS error), never reqwest's own message, which
/// carries the URL and its query.
fn root_cause(e: &reqwest::Error) -> String {
    let mut innermost: Option<&dyn std::error::Error> = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        innermost = Some(s);
        source = s.source();
    }
    let text = match innermost {
        Some(s) => s.to_string(),
        None if e.is_timeout() => "timed out".into(),
        None if e.is_connect() => "connection failed".into(),
        None if e.is_body() || e.is_decode() => "the answer's body could not be read".into(),
        None => "the request failed".into(),
    };
    error::sanitize(&text, 200)
}

/// The answer when it is a success, else its error.
fn success(raw: RawResponse) -> Result<RawResponse, DefenderError> {
    if raw.status.is_success() {
        Ok(raw)
    } else {
        Err(error::from_response(raw.status, &raw.headers, &raw.body))
    }
}

/// JSON of a success answer; an empty body is `Null`.
fn decode_json(raw: RawResponse) -> Result<Value, DefenderError> {
    let body = raw.body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&raw.body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|_| {
        let content_type = raw
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| error::sanitize(v, 60))
            .unwrap_or_else(|| "none".into());
        DefenderError::Decode(format!(
            "HTTP {} answer is not JSON ({} bytes, content type {content_type})",
            raw.status.as_u16(),
            body.len()
        ))
    })
}

fn elapsed_ms(started: Instant) -> u64 {
    millis(started.elapsed())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn count_request(endpoint: &str, status: String) {
    metrics::counter!(
        "defender_upstream_requests_total",
        "endpoint" => endpoint.to_string(),
        "status" => status
    )
    .increment(1);
}

fn count_throttled(endpoint: &str) {
    metrics::counter!(
        "defender_upstream_throttled_total",
        "endpoint" => endpoint.to_string()
    )
    .increment(1);
}

fn count_budget_wait(family: Family) {
    metrics::counter!("defender_budget_waits_total", "family" => family.name()).increment(1);
}

fn count_budget_exhausted(family: Family) {
    metrics::counter!("defender_budget_exhausted_total", "family" => family.name()).increment(1);
}

fn count_retry(endpoint: &str, reason: &'static str) {
    metrics::counter!(
        "defender_upstream_retries_total",
        "endpoint" => endpoint.to_string(),
        "reason" => reason
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::json;

    use super::testing::{FakeTokens, Recorded, TestServer, client_at, client_for};
    use super::*;

    fn status(code: u16) -> Response {
        StatusCode::from_u16(code).unwrap().into_response()
    }

    fn unauthorized() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"code": "Unauthorized", "message": "Unauthorized"}})),
        )
            .into_response()
    }

    #[test]
    fn futures_are_send_and_the_client_is_shareable() {
        fn send<T: Send>(_: T) {}
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<DefenderClient>();
        let http = DefenderClient::http_client(Duration::from_secs(1), Duration::from_secs(1));
        let client =
            DefenderClient::new(http, "http://127.0.0.1:1", Arc::new(FakeTokens::default()));
        let body = json!({});
        let form = reqwest::multipart::Form::new;
        send(client.get_path("/api/x"));
        send(client.post_path("/api/x", &body));
        send(client.patch_path("/api/x", &body));
        send(client.delete_path("/api/x"));
        send(client.post_multipart_path("/api/x", &form));
        send(client.list_path("/api/x", &ListQuery::new(), 1));
    }

    #[tokio::test]
    async fn sends_token_and_accept_and_parses_json() {
        let server = TestServer::start(|_, _| {
            axum::Json(json!({"id": "m1", "riskScore": "5", "unknown": {"a": [1]}})).into_response()
        })
        .await;
        let tokens = Arc::new(FakeTokens::default());
        let client = client_for(&server, tokens.clone());
        let got = client.get_path("/api/machines/m1").await.unwrap();
        assert_eq!(
            got,
            json!({"id": "m1", "riskScore": "5", "unknown": {"a": [1]}})
        );
        let r = &server.requests()[0];
        assert_eq!(r.method, "GET");
        assert_eq!(r.authorization.as_deref(), Some("Bearer token-0"));
        assert_eq!(r.accept.as_deref(), Some("application/json"));
        assert_eq!(tokens.fetched(), 1);
        assert_eq!(tokens.invalidated(), 0);
        assert!(!format!("{client:?}").contains("token-0"));
    }

    #[tokio::test]
    async fn a_streamed_answer_is_parsed_as_it_arrives_and_errors_keep_their_kind() {
        let server = TestServer::start(|i, _| match i {
            0 => axum::Json(json!({"Results": [{"a": 1}, {"a": 2}], "Schema": []})).into_response(),
            1 => (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"code": "BadRequest", "message": "Query could not be parsed at 'x' on line [1,2]"}})),
            )
                .into_response(),
            _ => "not json".into_response(),
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let call = endpoints::ADVANCED_QUERIES.at(&[]);
        let read = |r: &mut dyn std::io::Read| hunting::HuntingAnswer::read(r, 1);
        let answer = client
            .post_parsed(&call, &json!({"Query": "T"}), read)
            .await
            .unwrap();
        assert_eq!((answer.total_rows, answer.rows.len()), (2, 1));
        let refused = client
            .post_parsed(&call, &json!({"Query": "T"}), read)
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(400));
        assert!(refused.to_string().contains("line [1,2]"), "{refused}");
        let garbled = client
            .post_parsed(&call, &json!({"Query": "T"}), read)
            .await
            .unwrap_err();
        assert!(matches!(garbled, DefenderError::Decode(_)), "{garbled:?}");
        assert_eq!(server.count(), 3, "POSTs are not repeated");
    }

    #[test]
    fn the_body_cap_tells_a_full_body_from_a_longer_one() {
        use std::io::Read as _;
        let mut exact = Capped {
            inner: &b"abcd"[..],
            left: 4,
        };
        let mut out = Vec::new();
        assert_eq!(exact.read_to_end(&mut out).unwrap(), 4);
        let mut longer = Capped {
            inner: &b"abcde"[..],
            left: 4,
        };
        let err = longer.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
    }

    #[tokio::test]
    async fn raw_query_is_encoded() {
        let server =
            TestServer::start(|_, _| axum::Json(json!({"value": []})).into_response()).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        client
            .get_path(&path_with_query(
                "/api/machines",
                &[("$filter", "computerDnsName eq 'a b'")],
            ))
            .await
            .unwrap();
        client
            .get_path("/api/machines?$filter=computerDnsName eq 'a b'")
            .await
            .unwrap();
        let reqs = server.requests();
        for r in &reqs {
            assert!(!r.query.as_deref().unwrap().contains(' '));
            assert_eq!(
                r.query_pairs(),
                vec![(
                    "$filter".to_string(),
                    "computerDnsName eq 'a b'".to_string()
                )]
            );
        }
    }

    #[tokio::test]
    async fn unauthorized_refreshes_once_and_retries() {
        let server = TestServer::start(|_, r: &Recorded| {
            if r.authorization.as_deref() == Some("Bearer token-0") {
                unauthorized()
            } else {
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"id": "a1", "status": "Pending"})),
                )
                    .into_response()
            }
        })
        .await;
        let tokens = Arc::new(FakeTokens::default());
        let client = client_for(&server, tokens.clone());
        let got = client
            .post_path(
                "/api/machines/m1/isolate",
                &json!({"Comment": "c", "IsolationType": "Full"}),
            )
            .await
            .unwrap();
        assert_eq!(got["id"], "a1");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].authorization.as_deref(), Some("Bearer token-1"));
        assert_eq!(reqs[1].body, reqs[0].body);
        assert_eq!(reqs[1].content_type.as_deref(), Some("application/json"));
        assert_eq!(tokens.fetched(), 2);
        assert_eq!(tokens.invalidated(), 1);
    }

    #[tokio::test]
    async fn unauthorized_twice_gives_up() {
        let server = TestServer::start(|_, _| unauthorized()).await;
        let tokens = Arc::new(FakeTokens::default());
        let client = client_for(&server, tokens.clone());
        let err = client.get_path("/api/machines").await.unwrap_err();
        assert!(
            matches!(&err, DefenderError::Unauthorized(m) if m.contains("401 Unauthorized")),
            "{err}"
        );
        assert!(!err.to_string().contains("token-"));
        assert_eq!(server.count(), 2);
        assert_eq!(tokens.invalidated(), 1);
        assert_eq!(tokens.fetched(), 2);
        assert!(!matches!(err, DefenderError::Throttled { .. }));
    }

    #[tokio::test]
    async fn token_failure_is_an_auth_error_without_request() {
        let server = TestServer::start(|_, _| status(200)).await;
        let tokens = Arc::new(FakeTokens::default());
        *tokens.fail.lock().unwrap() = Some("AADSTS7000222: the client secret expired".into());
        let client = client_for(&server, tokens.clone());
        let err = client.get_path("/api/machines").await.unwrap_err();
        assert_eq!(
            err,
            DefenderError::Auth("AADSTS7000222: the client secret expired".into())
        );
        assert_eq!(server.count(), 0);
    }

    #[tokio::test]
    async fn get_retries_server_errors() {
        let server = TestServer::start(|n, _| {
            if n < 2 {
                status(503)
            } else {
                axum::Json(json!({"ok": true})).into_response()
            }
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        assert_eq!(
            client.get_path("/api/machines").await.unwrap(),
            json!({"ok": true})
        );
        assert_eq!(server.count(), 3);
    }

    #[tokio::test]
    async fn get_gives_up_after_max_retries() {
        let server = TestServer::start(|_, _| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"code": "InternalServerError", "message": "boom"}})),
            )
                .into_response()
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let err = client.delete_path("/api/indicators/5").await.unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert_eq!(err.code(), Some("InternalServerError"));
        assert_eq!(server.count(), 4);
    }

    #[tokio::test]
    async fn post_and_patch_are_not_retried() {
        let server = TestServer::start(|_, _| status(503)).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let err = client
            .post_path("/api/machines/m1/isolate", &json!({"Comment": "c"}))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert_eq!(server.count(), 1);
        let err = client
            .patch_path("/api/alerts/a1", &json!({"status": "Resolved"}))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert_eq!(server.count(), 2);
        assert_eq!(server.requests()[1].method, "PATCH");
    }

    fn too_many(retry_after: &'static str) -> Response {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after)],
            axum::Json(json!({"error": {"code": "TooManyRequests", "message": "slow down"}})),
        )
            .into_response()
    }

    fn budget(per_minute: u32, per_hour: Option<u32>) -> crate::config::BudgetConfig {
        crate::config::BudgetConfig {
            default: crate::config::RateLimit::new(per_minute, per_hour),
            ..crate::config::BudgetConfig::STANDARD
        }
    }

    #[tokio::test]
    async fn a_429_that_fits_is_waited_out_and_the_get_repeated() {
        let server = TestServer::start(|n, _| {
            if n == 0 {
                too_many("0.05")
            } else {
                axum::Json(json!({"ok": true})).into_response()
            }
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        assert_eq!(
            client.get_path("/api/machines").await.unwrap(),
            json!({"ok": true})
        );
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn a_post_is_repeated_after_a_429_because_nothing_ran() {
        let server = TestServer::start(|n, _| {
            if n == 0 {
                too_many("0.05")
            } else {
                (StatusCode::CREATED, axum::Json(json!({"id": "a1"}))).into_response()
            }
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()))
            .with_deadline(tokio::time::Instant::now() + Duration::from_secs(20));
        let got = client
            .post_path("/api/machines/m1/isolate", &json!({"Comment": "c"}))
            .await
            .unwrap();
        assert_eq!(got["id"], "a1");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].body, reqs[1].body);
        assert_eq!(reqs[1].method, "POST");
    }

    #[tokio::test]
    async fn a_retry_after_longer_than_the_longest_wait_fails_at_once() {
        let server = TestServer::start(|_, _| too_many("120")).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let err = client.get_path("/api/machines").await.unwrap_err();
        assert_eq!(
            err,
            DefenderError::Throttled {
                retry_after: Duration::from_secs(120),
                cause: ThrottleCause::Upstream {
                    answers: 1,
                    gave_up: GaveUp::LongerThan(Duration::from_secs(30)),
                },
            }
        );
        assert_eq!(server.count(), 1);
        assert_eq!(err.retry_after_secs(), Some(120));
        let message = err.to_string();
        assert!(message.contains("HTTP 429"), "{message}");
        assert!(message.contains("longer than the 30 s"), "{message}");
    }

    #[tokio::test]
    async fn a_retry_after_past_the_deadline_fails_at_once_for_posts_too() {
        let server = TestServer::start(|_, _| too_many("5")).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()))
            .with_deadline(tokio::time::Instant::now() + Duration::from_secs(1));
        let err = client.post_path("/api/x", &json!({})).await.unwrap_err();
        assert_eq!(
            err,
            DefenderError::Throttled {
                retry_after: Duration::from_secs(5),
                cause: ThrottleCause::Upstream {
                    answers: 1,
                    gave_up: GaveUp::Deadline,
                },
            }
        );
        assert!(
            err.to_string()
                .contains("the action's deadline leaves no time to wait 5 s"),
            "{err}"
        );
        assert_eq!(err.retry_after_secs(), Some(5));
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn endless_429s_give_up_after_the_retries() {
        let server = TestServer::start(|_, _| too_many("0.01")).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let err = client.get_path("/api/machines").await.unwrap_err();
        let answers = MAX_THROTTLE_RETRIES + 1;
        assert_eq!(
            err,
            DefenderError::Throttled {
                retry_after: Duration::from_millis(10),
                cause: ThrottleCause::Upstream {
                    answers,
                    gave_up: GaveUp::RetriesExhausted,
                },
            }
        );
        assert_eq!(server.count(), answers as usize);
    }

    #[tokio::test]
    async fn a_spent_budget_fails_fast_and_sends_nothing() {
        let server = TestServer::start(|_, _| axum::Json(json!({})).into_response()).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()))
            .with_budget(Budget::new(&budget(3, None)));
        for _ in 0..3 {
            client.get_path("/api/machines").await.unwrap();
        }
        // No deadline: the next permit (a minute away) is beyond the 30 s longest wait.
        let err = client.get_path("/api/machines").await.unwrap_err();
        let DefenderError::Throttled { retry_after, cause } = &err else {
            panic!("{err:?}")
        };
        assert!(
            *retry_after > Duration::from_secs(30) && *retry_after <= Duration::from_secs(61),
            "{retry_after:?}"
        );
        assert!(
            matches!(cause, ThrottleCause::Budget { family: Family::Default, limit, gave_up: GaveUp::LongerThan(max), .. }
                if limit == "3/min" && *max == Duration::from_secs(30)),
            "{cause:?}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with(
                "the asset's request budget for Defender API calls (3/min) is spent until "
            ),
            "{message}"
        );
        assert!(message.contains("not sent to Defender"), "{message}");
        assert_eq!(err.status(), None);
        // With a deadline shorter than the refill, the same.
        let bound = client.with_deadline(tokio::time::Instant::now() + Duration::from_secs(2));
        let err = bound
            .post_path("/api/machines/m1/isolate", &json!({}))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                DefenderError::Throttled {
                    cause: ThrottleCause::Budget {
                        gave_up: GaveUp::Deadline,
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("deadline leaves no time"), "{err}");
        assert!(err.retry_after_secs().is_some_and(|s| s > 30), "{err:?}");
        // Other families have budgets of their own.
        client
            .post_path("/api/advancedqueries/run", &json!({"Query": "x"}))
            .await
            .unwrap();
        assert_eq!(server.count(), 4);
    }

    #[tokio::test]
    async fn a_call_that_needs_no_wait_goes_even_past_its_deadline() {
        let server = TestServer::start(|_, _| axum::Json(json!({})).into_response()).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()))
            .with_budget(Budget::new(&budget(1, None)));
        let past = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let late = client.with_deadline(past);
        late.get_path("/api/machines").await.unwrap();
        let err = late.get_path("/api/machines").await.unwrap_err();
        assert!(
            matches!(
                &err,
                DefenderError::Throttled {
                    cause: ThrottleCause::Budget {
                        gave_up: GaveUp::Deadline,
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn a_spent_budget_is_waited_for_within_the_deadline() {
        let server = TestServer::start(|_, _| axum::Json(json!({})).into_response()).await;
        let budget = Budget::with_windows(
            &budget(2, None),
            Duration::from_millis(150),
            Duration::from_millis(150),
        );
        let client = client_for(&server, Arc::new(FakeTokens::default())).with_budget(budget);
        for _ in 0..5 {
            client.get_path("/api/machines").await.unwrap();
        }
        assert_eq!(server.count(), 5);
    }

    #[tokio::test]
    async fn background_calls_wait_for_room_above_the_floor_without_delaying_reads() {
        let server = TestServer::start(|_, _| axum::Json(json!({})).into_response()).await;
        // 4 a "minute" of one second, half kept for actions: background calls get 2 a window.
        let shared = Budget::with_windows(
            &budget(4, None),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .with_actions_floor(50);
        let client = client_for(&server, Arc::new(FakeTokens::default())).with_budget(shared);
        let background = client.with_priority(Priority::Background);
        let list = endpoints::MACHINES.at(&[]);
        background.get(&list).await.unwrap();
        background.get(&list).await.unwrap();
        // The third background call waits for the window to pass, holding no reservation ...
        let started = tokio::time::Instant::now();
        let waiting = {
            let background = background.clone();
            let list = list.clone();
            tokio::spawn(async move { background.get(&list).await })
        };
        tokio::task::yield_now().await;
        // ... so a read goes at once, and so does a state-changing call.
        client.get(&list).await.unwrap();
        client
            .post(&endpoints::ISOLATE.at(&["m1"]), &json!({}))
            .await
            .unwrap();
        assert_eq!(server.count(), 4);
        assert!(started.elapsed() < Duration::from_millis(900));
        waiting.await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(server.count(), 5);
        // Without a wait limit that covers the window, a background call fails at once.
        let impatient = client_for(&server, Arc::new(FakeTokens::default()))
            .with_budget(Budget::new(&crate::config::BudgetConfig {
                max_wait_secs: 0,
                ..budget(2, None)
            }))
            .with_priority(Priority::Background);
        impatient.get(&list).await.unwrap();
        let err = impatient.get(&list).await.unwrap_err();
        assert!(err.retry_after().is_some(), "{err:?}");
        assert_eq!(server.count(), 6);
    }

    #[tokio::test]
    async fn retries_take_permits_too() {
        let server = TestServer::start(|n, _| {
            if n == 0 {
                status(503)
            } else {
                axum::Json(json!({})).into_response()
            }
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()))
            .with_budget(Budget::new(&budget(2, None)));
        client.get_path("/api/machines").await.unwrap();
        assert_eq!(server.count(), 2);
        let err = client.get_path("/api/machines").await.unwrap_err();
        assert!(err.retry_after().is_some(), "{err:?}");
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_never_exceed_the_budget() {
        let server = TestServer::start(|_, _| axum::Json(json!({})).into_response()).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()))
            .with_budget(Budget::new(&budget(20, Some(1500))));
        // State-changing calls may use the whole budget (reads leave a tenth of it to them).
        let calls = (0..200).map(|_| {
            let client = client.clone();
            async move { client.post_path("/api/machines/m1/tags", &json!({})).await }
        });
        let results = futures::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let throttled = results
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Err(DefenderError::Throttled {
                        cause: ThrottleCause::Budget { .. },
                        ..
                    })
                )
            })
            .count();
        assert_eq!(ok, 20);
        assert_eq!(throttled, 180);
        assert_eq!(server.count(), 20);
    }

    #[tokio::test]
    async fn clones_share_the_budget() {
        let server = TestServer::start(|_, _| axum::Json(json!({})).into_response()).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()))
            .with_budget(Budget::new(&budget(2, None)));
        let bound = client.with_deadline(tokio::time::Instant::now() + Duration::from_secs(1));
        let retried = client.clone().with_retry_policy(RetryPolicy::none());
        bound.get_path("/api/machines").await.unwrap();
        retried.get_path("/api/machines").await.unwrap();
        assert!(client.get_path("/api/machines").await.is_err());
        assert_eq!(server.count(), 2);
        assert_eq!(client.budget().limit(Family::Default).per_minute, 2);
        assert!(bound.deadline().is_some());
    }

    #[tokio::test]
    async fn api_errors_keep_code_and_correlation() {
        let server = TestServer::start(|_, _| {
            (
                StatusCode::NOT_FOUND,
                [("request-id", "hdr-id")],
                axum::Json(json!({"error": {
                    "code": "ResourceNotFound",
                    "message": "Machine X was not found",
                    "target": "4c8f62ab-2a6b-4d2c-9a0e-0b1b6b9b2d11"
                }})),
            )
                .into_response()
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let err = client.get_path("/api/machines/X").await.unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "Defender API error 404 ResourceNotFound: Machine X was not found (correlation id 4c8f62ab-2a6b-4d2c-9a0e-0b1b6b9b2d11)"
        );
        assert_eq!(server.count(), 1, "4xx is not retried");
    }

    #[tokio::test]
    async fn empty_and_non_json_success_bodies() {
        let server = TestServer::start(|n, _| match n {
            0 => status(204),
            1 => status(200),
            2 => (StatusCode::OK, [("content-type", "text/plain")], "42").into_response(),
            _ => (
                StatusCode::OK,
                [("content-type", "text/html")],
                format!("<html>{}</html>", "secret-ish ".repeat(100)),
            )
                .into_response(),
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        assert_eq!(
            client.post_path("/api/x", &json!({})).await.unwrap(),
            Value::Null
        );
        assert_eq!(client.get_path("/api/x").await.unwrap(), Value::Null);
        assert_eq!(
            client.get_path("/api/machines/$count").await.unwrap(),
            json!(42)
        );
        let err = client.get_path("/api/x").await.unwrap_err();
        let DefenderError::Decode(message) = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.contains("not JSON") && message.contains("text/html"),
            "{message}"
        );
        assert!(!message.contains("secret-ish"));
    }

    #[tokio::test]
    async fn delete_ignores_the_body() {
        let server = TestServer::start(|_, _| status(204)).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        client.delete_path("/api/indicators/5").await.unwrap();
        assert_eq!(server.requests()[0].method, "DELETE");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let other = TestServer::start(|_, _| status(200)).await;
        let location = format!("{}/api/machines", other.url);
        let server = TestServer::start(move |_, _| {
            (StatusCode::FOUND, [("location", location.clone())]).into_response()
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let err = client.get_path("/api/machines").await.unwrap_err();
        assert_eq!(err.status(), Some(302));
        assert_eq!(other.count(), 0);
    }

    #[tokio::test]
    async fn connection_refused_names_the_host() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = client_at(&format!("http://{addr}"), Arc::new(FakeTokens::default()));
        let err = client
            .get_path("/api/machines?$filter=x eq 'private'")
            .await
            .unwrap_err();
        let DefenderError::Transport(message) = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.starts_with("could not connect"), "{message}");
        assert!(!message.contains("private"), "{message}");
        assert!(!message.contains("token"), "{message}");
        let err = client.post_path("/api/x", &json!({})).await.unwrap_err();
        assert!(err.to_string().starts_with("could not connect"), "{err}");
        assert!(!err.to_string().contains("may have reached"), "{err}");
    }

    #[tokio::test]
    async fn timeouts_are_reported_as_such() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts connections and never answers.
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let http = DefenderClient::http_client(Duration::from_secs(1), Duration::from_millis(50));
        let client = DefenderClient::new(
            http,
            &format!("http://{addr}/"),
            Arc::new(FakeTokens::default()),
        )
        .with_retry_policy(RetryPolicy::none());
        assert_eq!(client.api_url(), format!("http://{addr}"));
        let err = client.get_path("/api/machines").await.unwrap_err();
        assert_eq!(
            err,
            DefenderError::Transport(format!("request to {addr} timed out"))
        );
        let err = client.post_path("/api/x", &json!({})).await.unwrap_err();
        assert!(
            err.to_string().contains("may have reached the API"),
            "{err}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn invalid_api_url_is_reported() {
        let http = DefenderClient::http_client(Duration::from_secs(1), Duration::from_secs(1));
        let client = DefenderClient::new(http, "not a url", Arc::new(FakeTokens::default()));
        let err = client.get_path("/api/machines").await.unwrap_err();
        assert!(
            matches!(&err, DefenderError::Transport(m) if m.contains("not a valid URL")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn multipart_upload_is_resent_after_refresh() {
        let server = TestServer::start(|_, r: &Recorded| {
            if r.authorization.as_deref() == Some("Bearer token-0") {
                unauthorized()
            } else {
                axum::Json(json!({"fileName": "x.ps1"})).into_response()
            }
        })
        .await;
        let tokens = Arc::new(FakeTokens::default());
        let client = client_for(&server, tokens.clone());
        let form = || {
            reqwest::multipart::Form::new()
                .text("Description", "d")
                .part(
                    "File",
                    reqwest::multipart::Part::bytes(b"echo 1".to_vec()).file_name("x.ps1"),
                )
        };
        let got = client
            .post_multipart_path("/api/libraryfiles", &form)
            .await
            .unwrap();
        assert_eq!(got["fileName"], "x.ps1");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert!(reqs[1].body.contains("echo 1"));
        assert!(
            reqs[1]
                .content_type
                .as_deref()
                .unwrap()
                .starts_with("multipart/form-data")
        );
    }
}

//! Errors of the Defender API client, and how Microsoft error bodies become them.
//!
//! Microsoft answers errors as `{"error":{"code","message","target"}}`, where `target` usually
//! is a correlation GUID. Real answers also come as PascalCase keys, as a bare string `error`
//! (Entra style), as ASP.NET `{"Message": ...}` bodies, as HTML from a gateway, or empty. Every
//! variant becomes a [`DefenderError`] that keeps the code and the correlation id.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;

use super::budget::Family;
use super::retry;

/// Longest message kept from a body that is not JSON (HTML or plain text).
const TEXT_MESSAGE_CHARS: usize = 200;
/// Longest message kept from a JSON error body.
const JSON_MESSAGE_CHARS: usize = 1000;
/// Longest correlation id or target kept.
const ID_CHARS: usize = 100;

/// Why a call to the Defender API failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DefenderError {
    /// HTTP 401 even after a new token was fetched; the message says what to check.
    #[error("{0}")]
    Unauthorized(String),
    /// HTTP 403: the app lacks a role, or the operation is disabled for the tenant.
    #[error("Defender API error 403 {code}: {message}")]
    Forbidden {
        /// Microsoft error code (`Forbidden`, `DisabledFeature`, `DisallowedOperation`, ...).
        code: String,
        /// Microsoft error message.
        message: String,
    },
    /// HTTP 404: the resource does not exist (or is not visible to the app).
    #[error("Defender API error 404 {code}: {message}{}", correlation_suffix(.correlation_id))]
    NotFound {
        /// Microsoft error code (`NotFound`, `ResourceNotFound`).
        code: String,
        /// Microsoft error message.
        message: String,
        /// Correlation id for Microsoft support, when the answer carried one.
        correlation_id: Option<String>,
    },
    /// Any other error status (4xx, 5xx, or an unexpected redirect).
    #[error("Defender API error {status} {code}: {message}{}", correlation_suffix(.correlation_id))]
    Api {
        /// HTTP status.
        status: u16,
        /// Microsoft error code, or the status name when the body had none.
        code: String,
        /// Microsoft error message.
        message: String,
        /// Correlation id for Microsoft support, when the answer carried one.
        correlation_id: Option<String>,
    },
    /// Defender answered 429, or the asset's request budget is spent, and waiting did not
    /// fit in the call's deadline (or the asset's longest wait): try again after
    /// `retry_after`. `cause` says which, for the message.
    #[error("{}", throttled_message(.retry_after, .cause))]
    Throttled {
        /// From `Retry-After` (60 s when the answer had none), or until a budget permit frees.
        retry_after: Duration,
        /// What throttled the call and why the client did not wait.
        cause: ThrottleCause,
    },
    /// The API could not be reached, or the connection failed or timed out (host named).
    #[error("{0}")]
    Transport(String),
    /// A success answer that could not be read (not JSON, not a list, ...).
    #[error("unexpected Defender API response: {0}")]
    Decode(String),
    /// No access token could be obtained; the message comes from the auth module.
    #[error("{0}")]
    Auth(String),
}

/// What throttled a call.
#[derive(Debug, Clone, PartialEq)]
pub enum ThrottleCause {
    /// Defender answered HTTP 429 (`answers` times for this call).
    Upstream {
        /// 429 answers received for this call.
        answers: u32,
        /// Why the client stopped waiting.
        gave_up: GaveUp,
    },
    /// The asset's client-side request budget is spent; the request was not sent.
    Budget {
        /// The endpoint family whose budget is spent.
        family: Family,
        /// The spent limit, e.g. `100/min` or `1500/h`.
        limit: String,
        /// When a permit frees up (UTC).
        until: OffsetDateTime,
        /// Why the client did not wait for it.
        gave_up: GaveUp,
    },
}

/// Why a throttled call was not waited out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The wait would end after the action's deadline.
    Deadline,
    /// The call has no deadline and the wait is longer than the asset's longest wait.
    LongerThan(Duration),
    /// Defender kept answering 429 after the client's retries.
    RetriesExhausted,
    /// Not decided by the client (an error made from a bare 429 answer).
    Unspecified,
}

/// The message of [`DefenderError::Throttled`]: what happened, and when to retry.
fn throttled_message(retry_after: &Duration, cause: &ThrottleCause) -> String {
    let secs = ceil_secs(*retry_after);
    match cause {
        ThrottleCause::Upstream { answers, gave_up } => {
            let why = match gave_up {
                GaveUp::Deadline => {
                    format!(" and the action's deadline leaves no time to wait {secs} s")
                }
                GaveUp::LongerThan(max) => format!(
                    " and asked for a wait of {secs} s, longer than the {} s this asset waits \
                     at most",
                    ceil_secs_or_zero(*max)
                ),
                GaveUp::RetriesExhausted => format!(" {answers} times in a row"),
                GaveUp::Unspecified => String::new(),
            };
            format!(
                "Defender throttled the request (HTTP 429 TooManyRequests){why}; retry after {secs} s"
            )
        }
        ThrottleCause::Budget {
            family,
            limit,
            until,
            gave_up,
        } => {
            let why = match gave_up {
                GaveUp::Deadline => " and the action's deadline leaves no time to wait".to_string(),
                GaveUp::LongerThan(max) => format!(
                    ", more than the {} s this asset waits at most",
                    ceil_secs_or_zero(*max)
                ),
                GaveUp::RetriesExhausted | GaveUp::Unspecified => String::new(),
            };
            let format = format_description!("[hour]:[minute]:[second]");
            let until = until
                .format(format)
                .map(|t| format!(" until {t} UTC"))
                .unwrap_or_default();
            format!(
                "the asset's request budget for {} calls ({limit}) is spent{until}{why}; the \
                 request was not sent to Defender; retry after {secs} s",
                family.describe()
            )
        }
    }
}

impl DefenderError {
    /// A 429 answer's error, before the client decided anything about it.
    pub(crate) fn upstream_throttled(retry_after: Duration) -> DefenderError {
        DefenderError::Throttled {
            retry_after,
            cause: ThrottleCause::Upstream {
                answers: 1,
                gave_up: GaveUp::Unspecified,
            },
        }
    }

    /// How long to wait before trying again, when the call was throttled.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DefenderError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The Microsoft error code, for the variants that carry one.
    pub fn code(&self) -> Option<&str> {
        match self {
            DefenderError::Forbidden { code, .. }
            | DefenderError::NotFound { code, .. }
            | DefenderError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True for HTTP 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DefenderError::NotFound { .. })
    }

    /// The HTTP status the API answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DefenderError::Unauthorized(_) => Some(401),
            DefenderError::Forbidden { .. } => Some(403),
            DefenderError::NotFound { .. } => Some(404),
            DefenderError::Api { status, .. } => Some(*status),
            DefenderError::Throttled {
                cause: ThrottleCause::Upstream { .. },
                ..
            } => Some(429),
            DefenderError::Throttled {
                cause: ThrottleCause::Budget { .. },
                ..
            }
            | DefenderError::Transport(_)
            | DefenderError::Decode(_)
            | DefenderError::Auth(_) => None,
        }
    }

    /// Whole seconds to wait before retrying a throttled call (rounded up, at least 1);
    /// `None` when the error is not throttling.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            DefenderError::Throttled { retry_after, .. } => Some(ceil_secs(*retry_after)),
            _ => None,
        }
    }

    /// The correlation id Microsoft support asks for, when the answer carried one.
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            DefenderError::NotFound { correlation_id, .. }
            | DefenderError::Api { correlation_id, .. } => correlation_id.as_deref(),
            _ => None,
        }
    }
}

/// Whole seconds, rounded up, at least 1 (a `Retry-After: 0` still means "wait").
fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// Whole seconds, rounded up (0 stays 0).
fn ceil_secs_or_zero(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn correlation_suffix(correlation_id: &Option<String>) -> String {
    match correlation_id {
        Some(id) => format!(" (correlation id {id})"),
        None => String::new(),
    }
}

/// What an error body says, whatever its shape.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ErrorDetails {
    /// Error code.
    pub code: Option<String>,
    /// Error message.
    pub message: Option<String>,
    /// `target` (a correlation GUID, or sometimes the name of the field in error).
    pub target: Option<String>,
    /// A request id found inside the body (`innerError.request-id`).
    pub request_id: Option<String>,
}

/// The error for a non-success answer that is not a 401 needing a refresh.
pub(crate) fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> DefenderError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return DefenderError::upstream_throttled(retry::retry_after_or_default(headers));
    }
    let details = parse_error_body(body);
    let code = details
        .code
        .clone()
        .unwrap_or_else(|| status_code_name(status));
    let correlation_id = correlation_id(&details, headers);
    let mut message = details.message.clone().unwrap_or_else(|| {
        if status.is_redirection() {
            "the API answered with a redirect, which is not followed".to_string()
        } else {
            "the answer carried no error details".to_string()
        }
    });
    if let Some(target) = &details.target
        && !is_guid(target)
        && !message.contains(target.as_str())
    {
        message = format!("{message} (target {target})");
    }
    match status {
        StatusCode::UNAUTHORIZED => DefenderError::Unauthorized(format!(
            "Defender API rejected the access token (401 {code}: {message}{}) even after a new \
             token was fetched; check the app registration's API permissions, the tenant and \
             the environment (token audience)",
            correlation_suffix(&correlation_id)
        )),
        StatusCode::FORBIDDEN => DefenderError::Forbidden { code, message },
        StatusCode::NOT_FOUND => DefenderError::NotFound {
            code,
            message,
            correlation_id,
        },
        _ => DefenderError::Api {
            status: status.as_u16(),
            code,
            message,
            correlation_id,
        },
    }
}

/// `NotFound`, `InternalServerError`, ... (the status name without spaces).
fn status_code_name(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => reason
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect(),
        None => format!("Http{}", status.as_u16()),
    }
}

/// `target` when it is a GUID, else a request id from the body or the headers.
fn correlation_id(details: &ErrorDetails, headers: &HeaderMap) -> Option<String> {
    if let Some(target) = &details.target
        && is_guid(target)
    {
        return Some(target.clone());
    }
    if let Some(id) = &details.request_id {
        return Some(id.clone());
    }
    ["request-id", "x-ms-request-id", "client-request-id"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|v| v.to_str().ok())
        .map(|v| sanitize(v, ID_CHARS))
        .find(|v| !v.is_empty())
}

/// Reads an error body of any shape Microsoft (or a gateway in front of it) sends.
pub(crate) fn parse_error_body(body: &[u8]) -> ErrorDetails {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return ErrorDetails::default();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => from_object(&obj),
        Ok(Value::String(s)) => ErrorDetails {
            message: non_empty(sanitize(&s, JSON_MESSAGE_CHARS)),
            ..ErrorDetails::default()
        },
        Ok(Value::Null) => ErrorDetails::default(),
        Ok(other) => ErrorDetails {
            message: non_empty(sanitize(&other.to_string(), TEXT_MESSAGE_CHARS)),
            ..ErrorDetails::default()
        },
        Err(_) => ErrorDetails {
            message: non_empty(text_message(text)),
            ..ErrorDetails::default()
        },
    }
}

fn from_object(obj: &Map<String, Value>) -> ErrorDetails {
    match get_ci(obj, "error") {
        Some(Value::Object(inner)) => {
            let mut details = ErrorDetails {
                code: field_text(inner, "code"),
                message: field_text(inner, "message"),
                target: field_text(inner, "target").map(|t| sanitize(&t, ID_CHARS)),
                request_id: None,
            };
            if let Some(Value::Object(innermost)) = get_ci(inner, "innererror") {
                details.request_id = field_text(innermost, "request-id")
                    .or_else(|| field_text(innermost, "client-request-id"))
                    .map(|id| sanitize(&id, ID_CHARS));
                if details.code.is_none() {
                    details.code = field_text(innermost, "code");
                }
            }
            if details.message.is_none() {
                details.message = field_text(obj, "error_description");
            }
            details
        }
        Some(Value::String(code)) => ErrorDetails {
            code: non_empty(sanitize(code, ID_CHARS)),
            message: field_text(obj, "error_description").or_else(|| field_text(obj, "message")),
            target: field_text(obj, "target").map(|t| sanitize(&t, ID_CHARS)),
            request_id: field_text(obj, "correlation_id").map(|t| sanitize(&t, ID_CHARS)),
        },
        _ => ErrorDetails {
            code: field_text(obj, "code"),
            message: field_text(obj, "message")
                .or_else(|| field_text(obj, "error_description"))
                .or_else(|| field_text(obj, "title")),
            target: field_text(obj, "target").map(|t| sanitize(&t, ID_CHARS)),
            request_id: None,
        },
    }
}

/// A key looked up without regard to ASCII case (`error`, `Error`, `ERROR`).
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A field as sanitized text: strings as they are, OData `{"value": "..."}` messages
/// unwrapped, numbers and booleans printed; empty or null is `None`.
fn field_text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    let text = match get_ci(obj, key)? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(o) => match get_ci(o, "value") {
            Some(Value::String(s)) => s.clone(),
            _ => Value::Object(o.clone()).to_string(),
        },
        Value::Array(a) => Value::Array(a.clone()).to_string(),
        Value::Null => return None,
    };
    non_empty(sanitize(&text, JSON_MESSAGE_CHARS))
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// The readable part of an HTML or plain-text body, shortened.
fn text_message(text: &str) -> String {
    let looks_html = text.starts_with('<') || text.to_ascii_lowercase().contains("<html");
    if !looks_html {
        return sanitize(text, TEXT_MESSAGE_CHARS);
    }
    let mut plain = String::with_capacity(text.len().min(4096));
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                plain.push(' ');
            }
            _ if !in_tag => plain.push(c),
            _ => {}
        }
        if plain.len() > 8 * TEXT_MESSAGE_CHARS {
            break;
        }
    }
    sanitize(&plain, TEXT_MESSAGE_CHARS)
}

/// Control characters become spaces, runs of whitespace one space, and the result is cut at
/// `max_chars` characters (with `…`).
pub(crate) fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0usize;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            if count >= max_chars {
                out.push('…');
                return out;
            }
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        if count >= max_chars {
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// `8-4-4-4-12` hexadecimal digits, optionally in braces.
pub(crate) fn is_guid(s: &str) -> bool {
    let s = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(s);
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn err(status: u16, headers: &HeaderMap, body: &str) -> DefenderError {
        from_response(
            StatusCode::from_u16(status).unwrap(),
            headers,
            body.as_bytes(),
        )
    }

    const GUID: &str = "1234abcd-0000-4000-8000-00000000beef";

    #[test]
    fn standard_body_keeps_code_message_and_correlation() {
        let body = format!(
            r#"{{"error":{{"code":"ResourceNotFound","message":"Machine X was not found","target":"{GUID}"}}}}"#
        );
        let e = err(404, &HeaderMap::new(), &body);
        assert_eq!(
            e,
            DefenderError::NotFound {
                code: "ResourceNotFound".into(),
                message: "Machine X was not found".into(),
                correlation_id: Some(GUID.into()),
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "Defender API error 404 ResourceNotFound: Machine X was not found (correlation id {GUID})"
            )
        );
        assert!(e.is_not_found());
        assert_eq!(e.code(), Some("ResourceNotFound"));
        assert_eq!(e.status(), Some(404));
    }

    #[test]
    fn pascal_case_body_and_extra_fields() {
        let body = format!(
            r#"{{"Error":{{"Code":"ActiveRequestAlreadyExists","Message":"Action is already in progress","Target":"{GUID}","Details":[1,2]}},"extra":true}}"#
        );
        let e = err(400, &HeaderMap::new(), &body);
        assert_eq!(
            e,
            DefenderError::Api {
                status: 400,
                code: "ActiveRequestAlreadyExists".into(),
                message: "Action is already in progress".into(),
                correlation_id: Some(GUID.into()),
            }
        );
    }

    #[test]
    fn string_error_uses_description() {
        let e = err(
            400,
            &HeaderMap::new(),
            r#"{"error":"invalid_request","error_description":"AADSTS900144: missing\r\nTrace ID: x"}"#,
        );
        assert_eq!(e.code(), Some("invalid_request"));
        assert_eq!(
            e.to_string(),
            "Defender API error 400 invalid_request: AADSTS900144: missing Trace ID: x"
        );
    }

    #[test]
    fn aspnet_message_body() {
        let e = err(
            500,
            &HeaderMap::new(),
            r#"{"Message":"An error has occurred."}"#,
        );
        assert_eq!(
            e.to_string(),
            "Defender API error 500 InternalServerError: An error has occurred."
        );
    }

    #[test]
    fn html_body_is_shortened_and_stripped() {
        let filler = "x".repeat(500);
        let body = format!(
            "<html><head><title>502 Bad Gateway</title></head>\n<body><h1>Bad\tGateway</h1>{filler}</body></html>"
        );
        let e = err(502, &HeaderMap::new(), &body);
        let DefenderError::Api { code, message, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(code, "BadGateway");
        assert!(
            message.starts_with("502 Bad Gateway Bad Gateway xxx"),
            "{message}"
        );
        assert!(!message.contains('<'));
        assert!(
            message.chars().count() <= 201,
            "{}",
            message.chars().count()
        );
        assert!(message.ends_with('…'));
    }

    #[test]
    fn plain_text_body() {
        let e = err(503, &HeaderMap::new(), "Service Unavailable\r\n");
        assert_eq!(
            e.to_string(),
            "Defender API error 503 ServiceUnavailable: Service Unavailable"
        );
    }

    #[test]
    fn empty_body_uses_status_and_header_request_id() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-request-id", HeaderValue::from_static("req-42"));
        let e = err(500, &headers, "");
        assert_eq!(
            e.to_string(),
            "Defender API error 500 InternalServerError: the answer carried no error details (correlation id req-42)"
        );
    }

    #[test]
    fn non_guid_target_is_shown_and_header_id_used() {
        let mut headers = HeaderMap::new();
        headers.insert("request-id", HeaderValue::from_static("abc"));
        let e = err(
            400,
            &headers,
            r#"{"error":{"code":"InvalidInput","message":"Comment is required","target":"Body"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "Defender API error 400 InvalidInput: Comment is required (target Body) (correlation id abc)"
        );
    }

    #[test]
    fn graph_inner_error_request_id_and_odata_message_object() {
        let e = err(
            400,
            &HeaderMap::new(),
            r#"{"error":{"code":"BadRequest","message":{"lang":"en-US","value":"Bad query"},"innerError":{"request-id":"r-1","date":"2026"}}}"#,
        );
        assert_eq!(
            e.to_string(),
            "Defender API error 400 BadRequest: Bad query (correlation id r-1)"
        );
    }

    #[test]
    fn missing_fields_are_tolerated() {
        let e = err(409, &HeaderMap::new(), r#"{"error":{}}"#);
        assert_eq!(
            e.to_string(),
            "Defender API error 409 Conflict: the answer carried no error details"
        );
        let e = err(400, &HeaderMap::new(), r#"[1,2]"#);
        assert_eq!(e.to_string(), "Defender API error 400 BadRequest: [1,2]");
    }

    #[test]
    fn forbidden_and_unauthorized() {
        let e = err(
            403,
            &HeaderMap::new(),
            r#"{"error":{"code":"Forbidden","message":"The application does not have any of the required application permissions (Machine.Isolate)"}}"#,
        );
        assert_eq!(
            e,
            DefenderError::Forbidden {
                code: "Forbidden".into(),
                message: "The application does not have any of the required application permissions (Machine.Isolate)".into()
            }
        );
        let e = err(
            401,
            &HeaderMap::new(),
            r#"{"error":{"code":"Unauthorized","message":"Unauthorized"}}"#,
        );
        assert!(matches!(&e, DefenderError::Unauthorized(m) if m.contains("401 Unauthorized")));
        assert_eq!(e.status(), Some(401));
    }

    #[test]
    fn throttled_converts_to_action_error() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        let e = err(429, &headers, r#"{"error":{"code":"TooManyRequests"}}"#);
        assert_eq!(e, DefenderError::upstream_throttled(Duration::from_secs(7)));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.retry_after_secs(), Some(7));
        assert_eq!(
            e.to_string(),
            "Defender throttled the request (HTTP 429 TooManyRequests); retry after 7 s"
        );
        let upstream = DefenderError::Transport("could not connect".into());
        assert_eq!(upstream.retry_after_secs(), None);
        assert_eq!(upstream.to_string(), "could not connect");
        assert_eq!(DefenderError::Decode("x".into()).retry_after(), None);
    }

    #[test]
    fn throttled_messages_say_what_happened() {
        let upstream = |gave_up, answers| DefenderError::Throttled {
            retry_after: Duration::from_millis(29_500),
            cause: ThrottleCause::Upstream { answers, gave_up },
        };
        assert_eq!(
            upstream(GaveUp::Deadline, 1).to_string(),
            "Defender throttled the request (HTTP 429 TooManyRequests) and the action's deadline \
             leaves no time to wait 30 s; retry after 30 s"
        );
        assert_eq!(
            upstream(GaveUp::LongerThan(Duration::from_secs(10)), 1).to_string(),
            "Defender throttled the request (HTTP 429 TooManyRequests) and asked for a wait of \
             30 s, longer than the 10 s this asset waits at most; retry after 30 s"
        );
        assert_eq!(
            upstream(GaveUp::RetriesExhausted, 6).to_string(),
            "Defender throttled the request (HTTP 429 TooManyRequests) 6 times in a row; retry \
             after 30 s"
        );
        let budget = |gave_up| DefenderError::Throttled {
            retry_after: Duration::from_secs(42),
            cause: ThrottleCause::Budget {
                family: Family::Default,
                limit: "100/min".into(),
                until: time::macros::datetime!(2026-01-01 10:42:17.5 UTC),
                gave_up,
            },
        };
        let e = budget(GaveUp::Deadline);
        assert_eq!(
            e.to_string(),
            "the asset's request budget for Defender API calls (100/min) is spent until \
             10:42:17 UTC and the action's deadline leaves no time to wait; the request was not \
             sent to Defender; retry after 42 s"
        );
        assert_eq!(e.status(), None, "nothing was sent");
        assert_eq!(
            budget(GaveUp::LongerThan(Duration::from_secs(30))).to_string(),
            "the asset's request budget for Defender API calls (100/min) is spent until \
             10:42:17 UTC, more than the 30 s this asset waits at most; the request was not \
             sent to Defender; retry after 42 s"
        );
        assert_eq!(e.retry_after_secs(), Some(42));
        assert!(e.to_string().contains("budget"));
    }

    #[test]
    fn guid_shapes() {
        assert!(is_guid(GUID));
        assert!(is_guid(&format!("{{{GUID}}}")));
        assert!(!is_guid("Body"));
        assert!(!is_guid("1234abcd-0000-4000-8000-00000000beeg"));
    }

    #[test]
    fn sanitize_cuts_on_characters() {
        assert_eq!(sanitize("  a\r\n\tb  ", 10), "a b");
        assert_eq!(sanitize("ééééé", 3), "ééé…");
        assert_eq!(sanitize("abc", 3), "abc");
    }
}

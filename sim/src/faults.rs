//! The outer middleware: `/api` path normalisation (the real API is case-insensitive), injected
//! faults, and request counting.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::{Fault, FaultKind, Sim};

/// The route template a request matched, carried from the inner router to the counter.
#[derive(Clone)]
struct RouteLabel(String);

/// Lower-cases `/api/...` paths (ids and action names are case-insensitive upstream).
pub fn normalize_path(path: &str) -> String {
    let is_api = path.len() >= 4
        && path[..4].eq_ignore_ascii_case("/api")
        && (path.len() == 4 || path.as_bytes()[4] == b'/');
    if is_api {
        path.to_ascii_lowercase()
    } else {
        path.to_string()
    }
}

/// Matches `text` against a glob where `*` matches any run of characters (case-insensitive).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let t = text.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Takes the first pending fault matching the request, consuming one of its uses.
fn take_fault(sim: &Sim, method: &str, path: &str) -> Option<FaultKind> {
    let mut faults = sim.faults.lock().unwrap_or_else(|p| p.into_inner());
    let pos = faults.iter().position(|f: &Fault| {
        f.count > 0
            && f.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && glob_match(&f.path, path)
    })?;
    let kind = faults[pos].kind.clone();
    faults[pos].count -= 1;
    if faults[pos].count == 0 {
        faults.remove(pos);
    }
    Some(kind)
}

/// Route-layer middleware: remembers the matched route template for the counter.
pub async fn remember_route(req: Request, next: Next) -> Response {
    let label = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let mut resp = next.run(req).await;
    if let Some(label) = label {
        resp.extensions_mut().insert(RouteLabel(label));
    }
    resp
}

/// Outer middleware: normalises the path, applies faults, counts the request.
pub async fn outer(State(sim): State<Arc<Sim>>, mut req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let path = normalize_path(req.uri().path());
    if path != req.uri().path() {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    let fault = take_fault(&sim, &method, &path);
    let resp = match fault {
        Some(FaultKind::Status {
            status,
            body,
            headers,
        }) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = body.unwrap_or_else(|| {
                serde_json::json!({"error": {
                    "code": code.canonical_reason().unwrap_or("Error").replace(' ', ""),
                    "message": "Injected fault",
                    "target": uuid::Uuid::new_v4().to_string(),
                }})
                .to_string()
            });
            let mut resp = (code, [("content-type", "application/json")], body).into_response();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
        Some(FaultKind::Drop) => {
            sim.count_request(&method, "dropped", &path, 0);
            // Unwinding out of the connection task closes the socket with no answer;
            // resume_unwind skips the panic hook, so nothing is printed.
            std::panic::resume_unwind(Box::new("defender-sim: injected dropped connection"));
        }
        Some(FaultKind::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(FaultKind::MalformedJson) => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let cut = &bytes[..bytes.len() / 2];
            let mut broken = cut.to_vec();
            broken.extend_from_slice(b"<<not json");
            parts.headers.remove("content-length");
            parts
                .headers
                .insert("content-type", HeaderValue::from_static("application/json"));
            Response::from_parts(parts, Body::from(broken))
        }
        None => next.run(req).await,
    };
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_string());
    // Control calls are the test's own, not the client's: they are not counted.
    if !path.starts_with("/_sim/") {
        sim.count_request(&method, &route, &path, resp.status().as_u16());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match(
            "/api/machineactions/*",
            "/api/machineactions/abc"
        ));
        assert!(glob_match("*/token", "/t/oauth2/v2.0/token"));
        assert!(glob_match("/API/Machines", "/api/machines"));
        assert!(!glob_match("/api/machines", "/api/machines/x"));
        assert!(glob_match("/api/*/isolate", "/api/machines/1/isolate"));
        assert!(!glob_match("/api/*/isolate", "/api/machines/1/unisolate2"));
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_path("/API/Machines/ABC"), "/api/machines/abc");
        assert_eq!(
            normalize_path("/Tenant/oauth2/token"),
            "/Tenant/oauth2/token"
        );
        assert_eq!(normalize_path("/apix"), "/apix");
    }
}

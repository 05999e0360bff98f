//! Error bodies in the shapes Defender (`{"error":{code,message,target}}`) and Entra use.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An MDE API error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Defender error code (`ResourceNotFound`, `InvalidRequestBody`, ...).
    pub code: &'static str,
    /// Human readable message.
    pub message: String,
    /// Retry-After seconds for 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404 ResourceNotFound.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
    }
    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }
    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    /// 429 TooManyRequests with Retry-After.
    pub fn too_many(retry_after: u64) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "TooManyRequests",
            message: "Rate limit is exceeded. Try again later.".into(),
            retry_after: Some(retry_after.max(1)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "target": uuid::Uuid::new_v4().to_string(),
        }});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

/// Fallback for unknown routes: 404 NotFound in Defender's shape.
pub async fn not_found_fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("No route matches {}", uri.path()),
    )
}

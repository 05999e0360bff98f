//! The result envelope (design §4) and the outcome policy: how every failure becomes an
//! envelope with its HTTP status.
//!
//! The policy lives here, in the application layer, and nowhere else: the Defender client and
//! the token manager report their own error types and know nothing of envelopes. A handler's
//! `?` on a [`DefenderError`] does the right thing through `From`: throttling past the
//! action's deadline answers 503 with `Retry-After`; any other upstream failure is a `failed`
//! envelope with HTTP 200 naming what Defender said (the action ran, and its answer is that
//! it could not do the job). 502 stays for answers the host cannot interpret at all.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::{AuthError, Denied};
use crate::defender::DefenderError;

/// `success` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The action did what it was asked.
    Success,
    /// It did not; `message` says why.
    Failed,
}

/// Every action answer, success or not.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    /// Action id.
    pub action: String,
    /// Asset id.
    pub asset_id: String,
    /// `success` or `failed`.
    pub status: Status,
    /// What happened, for a person.
    pub message: String,
    /// Key facts for playbooks (Splunk SOAR names: event_id, total_devices, ...).
    #[schema(value_type = Object)]
    pub summary: Map<String, Value>,
    /// Result rows.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
    /// The validated parameters (defaults applied).
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

/// What a handler produces when it ran (HTTP 200, whatever the status).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Failed instead of success.
    pub failed: bool,
    /// Message.
    pub message: String,
    /// Summary.
    pub summary: Map<String, Value>,
    /// Data rows.
    pub data: Vec<Value>,
}

impl Outcome {
    /// A success with a message.
    pub fn success(message: impl Into<String>) -> Outcome {
        Outcome {
            failed: false,
            message: message.into(),
            ..Outcome::default()
        }
    }

    /// A failure with a message (the action ran; HTTP 200).
    pub fn failed(message: impl Into<String>) -> Outcome {
        Outcome {
            failed: true,
            message: message.into(),
            ..Outcome::default()
        }
    }

    /// Adds a summary entry.
    pub fn with_summary(mut self, key: &str, value: impl Into<Value>) -> Outcome {
        self.summary.insert(key.to_string(), value.into());
        self
    }

    /// Appends a data row.
    pub fn with_data(mut self, row: Value) -> Outcome {
        self.data.push(row);
        self
    }
}

/// Why an action could not produce an [`Outcome`]; each kind has its HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    /// 400: a parameter is invalid; the message names it and says what is allowed.
    #[error("{0}")]
    InvalidParameter(String),
    /// 401: missing or wrong API key.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the action is disabled for this asset.
    #[error("{0}")]
    Disabled(String),
    /// 404: unknown asset or action.
    #[error("{0}")]
    NotFound(String),
    /// 409: the asset needs consent first; the message carries the `/start_oauth` URL.
    #[error("{message}")]
    ConsentRequired {
        /// Message including the URL.
        message: String,
        /// The consent URL.
        url: String,
    },
    /// 200 with a `failed` envelope: the upstream refused or failed, and the message says so.
    #[error("{0}")]
    Failed(String),
    /// 502: the upstream failed in a way the action could not handle.
    #[error("{0}")]
    Upstream(String),
    /// 503: throttled past the action's deadline; retry after this many seconds.
    #[error("{message}")]
    Throttled {
        /// Message.
        message: String,
        /// Seconds.
        retry_after: u64,
    },
    /// 500: a fault of this host (logged; the caller gets the message).
    #[error("{0}")]
    Internal(String),
}

impl ActionError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ActionError::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            ActionError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ActionError::Disabled(_) => StatusCode::FORBIDDEN,
            ActionError::NotFound(_) => StatusCode::NOT_FOUND,
            ActionError::ConsentRequired { .. } => StatusCode::CONFLICT,
            ActionError::Failed(_) => StatusCode::OK,
            ActionError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ActionError::Throttled { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ActionError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds for a Retry-After header, when there is one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ActionError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<DefenderError> for ActionError {
    /// Throttled past the deadline → 503 with `Retry-After`; anything else → a failed result.
    fn from(error: DefenderError) -> ActionError {
        match error.retry_after_secs() {
            Some(retry_after) => ActionError::Throttled {
                message: error.to_string(),
                retry_after,
            },
            None => ActionError::Failed(error.to_string()),
        }
    }
}

impl AuthError {
    /// The action error for failures that are not the action's to report: consent needed
    /// (409 with the URL) and a broken state file (500 with the recovery advice). `None` for
    /// refusals and transport failures, which an action reports as a failed result.
    pub fn action_error(&self) -> Option<ActionError> {
        match self {
            AuthError::ConsentRequired { message, url } => Some(ActionError::ConsentRequired {
                message: message.clone(),
                url: url.clone(),
            }),
            AuthError::State(message) => Some(ActionError::Internal(message.clone())),
            _ => None,
        }
    }
}

impl Denied {
    /// The failed result an action answers with (HTTP 200, no API call made).
    pub fn outcome(&self) -> Outcome {
        Outcome::failed(self.message.clone())
            .with_summary("missing_permissions", self.missing.clone())
            .with_summary("granted_permissions", self.granted.clone())
    }
}

impl Envelope {
    /// The envelope of a handler outcome.
    pub fn from_outcome(
        action: &str,
        asset_id: &str,
        parameters: Map<String, Value>,
        outcome: Outcome,
    ) -> Envelope {
        Envelope {
            action: action.to_string(),
            asset_id: asset_id.to_string(),
            status: if outcome.failed {
                Status::Failed
            } else {
                Status::Success
            },
            message: outcome.message,
            summary: outcome.summary,
            data: outcome.data,
            parameters,
        }
    }

    /// A failed envelope for an error.
    pub fn from_error(
        action: &str,
        asset_id: &str,
        parameters: Map<String, Value>,
        error: &ActionError,
    ) -> Envelope {
        let mut summary = Map::new();
        if let ActionError::ConsentRequired { url, .. } = error {
            summary.insert("consent_url".into(), Value::String(url.clone()));
        }
        Envelope {
            action: action.to_string(),
            asset_id: asset_id.to_string(),
            status: Status::Failed,
            message: error.to_string(),
            summary,
            data: Vec::new(),
            parameters,
        }
    }
}

/// An envelope with its HTTP status (and Retry-After when throttled).
pub struct EnvelopeResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub envelope: Envelope,
    /// Retry-After seconds.
    pub retry_after: Option<u64>,
}

impl EnvelopeResponse {
    /// 200 with the outcome's envelope.
    pub fn ok(envelope: Envelope) -> EnvelopeResponse {
        EnvelopeResponse {
            status: StatusCode::OK,
            envelope,
            retry_after: None,
        }
    }

    /// The error's status with a failed envelope.
    pub fn error(
        action: &str,
        asset_id: &str,
        parameters: Map<String, Value>,
        error: &ActionError,
    ) -> EnvelopeResponse {
        EnvelopeResponse {
            status: error.status(),
            envelope: Envelope::from_error(action, asset_id, parameters, error),
            retry_after: error.retry_after(),
        }
    }
}

impl IntoResponse for EnvelopeResponse {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.envelope)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defender_errors_follow_the_outcome_policy() {
        let throttled =
            ActionError::from(DefenderError::upstream_throttled(Duration::from_secs(7)));
        assert_eq!(throttled.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(throttled.retry_after(), Some(7));
        assert_eq!(
            throttled.to_string(),
            "Defender throttled the request (HTTP 429 TooManyRequests); retry after 7 s"
        );
        let refused = ActionError::from(DefenderError::Transport("could not connect".into()));
        assert!(matches!(&refused, ActionError::Failed(m) if m == "could not connect"));
        assert_eq!(refused.status(), StatusCode::OK);
        let response = EnvelopeResponse::error("a", "b", Map::new(), &refused);
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.envelope.status, Status::Failed);
        assert_eq!(response.envelope.message, "could not connect");
    }
}

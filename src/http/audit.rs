//! `GET /audit` (admin scope): the audit trail's lines, oldest first, a page at a time.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::Map;

use crate::app::App;
use crate::audit::{AuditError, MAX_READ_LIMIT};
use crate::envelope::{ActionError, EnvelopeResponse};

/// Default number of lines of a page.
const DEFAULT_LIMIT: usize = 100;

fn error(e: ActionError) -> Response {
    EnvelopeResponse::error("", "", Map::new(), &e).into_response()
}

/// The audit handler.
#[utoipa::path(get, path = "/audit",
    params(
        ("since" = Option<String>, Query,
            description = "Lines written at or after this RFC 3339 time (2024-05-01T10:00:00Z), or from this UTC date (2024-05-01); default: from the first line"),
        ("cursor" = Option<String>, Query, pattern = "^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}:[0-9]{1,18})?$",
            description = "Continue after a previous page: its `next` value (takes precedence over `since`); empty counts as not given"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Most lines answered (default 100)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`{\"lines\": [<audit line>…], \"next\": \"<cursor>\"|null}`, oldest first (newest last); `next` is set when more lines follow", body = crate::audit::AuditPage),
        (status = 400, description = "Envelope: since, cursor or limit malformed or out of range", body = crate::envelope::Envelope),
        (status = 401, description = "Envelope: missing or wrong API key", body = crate::envelope::Envelope),
        (status = 403, description = "Envelope: the API key lacks the admin scope", body = crate::envelope::Envelope),
        (status = 500, description = "Envelope: the audit trail cannot be read (logged)", body = crate::envelope::Envelope)))]
pub async fn audit(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let mut since = None;
    let mut cursor = None;
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            // Empty counts as not given, as for every other parameter of the API.
            "since" if !v.is_empty() => since = Some(v.into_owned()),
            "cursor" if !v.is_empty() => cursor = Some(v.into_owned()),
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_READ_LIMIT).contains(&n) => limit = n,
                _ => {
                    return error(ActionError::InvalidParameter(format!(
                        "parameter 'limit': must be a whole number from 1 to {MAX_READ_LIMIT}"
                    )));
                }
            },
            _ => {}
        }
    }
    let log = app.audit.clone();
    let read =
        tokio::task::spawn_blocking(move || log.read(since.as_deref(), cursor.as_deref(), limit))
            .await;
    match read {
        Ok(Ok(page)) => Json(page).into_response(),
        Ok(Err(AuditError::Query(msg))) => error(ActionError::InvalidParameter(msg)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "audit trail read failed");
            error(ActionError::Internal(
                "the audit trail could not be read (logged)".into(),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "audit trail read failed");
            error(ActionError::Internal(
                "the audit trail could not be read (logged)".into(),
            ))
        }
    }
}

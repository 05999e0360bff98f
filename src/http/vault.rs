//! `GET /vault/{vault_id}` (a retrieved file, streamed, with its original name) and
//! `GET /vault/{vault_id}/info` (its metadata), behind the API key.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Map;
use tokio_util::io::ReaderStream;

use super::api_key::Caller;
use crate::app::App;
use crate::envelope::{ActionError, EnvelopeResponse};
use crate::vault::Vault;

/// The metadata of a vault file, as `GET /vault/{vault_id}/info` answers it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VaultInfo {
    /// Original file name, reduced to a safe base name.
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA1, lower-case hex.
    pub sha1: String,
    /// SHA256, lower-case hex: the vault id.
    pub sha256: String,
    /// Asset it was retrieved with.
    pub asset: String,
    /// Device it came from.
    pub device: Option<String>,
    /// Machine action (event) that produced it.
    pub event_id: Option<String>,
    /// When it was retrieved (RFC 3339, UTC).
    pub retrieved_at: String,
}

impl From<crate::vault::VaultEntry> for VaultInfo {
    fn from(e: crate::vault::VaultEntry) -> VaultInfo {
        VaultInfo {
            file_name: e.file_name,
            size: e.size,
            sha1: e.sha1,
            sha256: e.sha256,
            asset: e.asset,
            device: e.device,
            event_id: e.event_id,
            retrieved_at: e.retrieved_at,
        }
    }
}

fn not_found(id: &str) -> Response {
    EnvelopeResponse::error(
        "",
        "",
        Map::new(),
        &ActionError::NotFound(format!(
            "no file '{}' in the vault (ids are SHA256 hex)",
            crate::actions::truncate(id, 80)
        )),
    )
    .into_response()
}

/// 403 when the caller's key may not use the asset the file was retrieved through.
fn out_of_scope(
    caller: Option<&super::api_key::Caller>,
    entry: &crate::vault::VaultEntry,
) -> Option<Response> {
    let caller = caller?;
    (!caller.assets.allows(&entry.asset)).then(|| {
        EnvelopeResponse::error(
            "",
            &entry.asset,
            Map::new(),
            &ActionError::Disabled(format!(
                "this API key may not use asset '{}', through which this file was retrieved",
                entry.asset
            )),
        )
        .into_response()
    })
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "vault read failed");
    EnvelopeResponse::error(
        "",
        "",
        Map::new(),
        &ActionError::Internal("the vault could not be read (logged)".into()),
    )
    .into_response()
}

/// The stored file, with its original name in Content-Disposition.
#[utoipa::path(get, path = "/vault/{vault_id}", security(("api_key" = [])),
    params(("vault_id" = String, Path, description = "The file's vault id: its SHA256 (hex), as get_file reports it")),
    responses(
        (status = 200, description = "The file's bytes", body = Vec<u8>, content_type = "application/octet-stream",
            headers(("Content-Disposition" = String, description = "attachment; filename=\"<original name>\""))),
        (status = 401, description = "Missing or wrong API key", body = crate::envelope::Envelope),
        (status = 403, description = "The API key lacks the read scope or may not use the asset the file was retrieved through", body = crate::envelope::Envelope),
        (status = 404, description = "No such file", body = crate::envelope::Envelope),
        (status = 500, description = "The vault cannot be read (logged)", body = crate::envelope::Envelope)))]
pub async fn file(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let vault = Vault::of(&app.config);
    let entry = match vault.info(&id).await {
        Ok(Some(e)) => e,
        Ok(None) => return not_found(&id),
        Err(e) => return internal(e),
    };
    if let Some(refused) = out_of_scope(caller.as_deref(), &entry) {
        return refused;
    }
    let Some(path) = vault.file_path(&id) else {
        return not_found(&id);
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let name =
        crate::vault::safe_file_name(&entry.file_name).unwrap_or_else(|| entry.sha256.clone());
    let disposition = content_disposition(&name);
    let mut resp = (StatusCode::OK, Body::from_stream(ReaderStream::new(file))).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&entry.size.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `attachment` with an ASCII `filename` (other characters as `_`) and the exact name as RFC
/// 6266 / RFC 8187 `filename*=UTF-8''…`.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The stored file's metadata.
#[utoipa::path(get, path = "/vault/{vault_id}/info", security(("api_key" = [])),
    params(("vault_id" = String, Path, description = "The file's vault id: its SHA256 (hex), as get_file reports it")),
    responses(
        (status = 200, description = "The file's metadata", body = VaultInfo),
        (status = 401, description = "Missing or wrong API key", body = crate::envelope::Envelope),
        (status = 403, description = "The API key lacks the read scope or may not use the asset the file was retrieved through", body = crate::envelope::Envelope),
        (status = 404, description = "No such file", body = crate::envelope::Envelope),
        (status = 500, description = "The vault cannot be read (logged)", body = crate::envelope::Envelope)))]
pub async fn info(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    caller: Option<Extension<Caller>>,
) -> Response {
    match Vault::of(&app.config).info(&id).await {
        Ok(Some(entry)) => match out_of_scope(caller.as_deref(), &entry) {
            Some(refused) => refused,
            None => Json(VaultInfo::from(entry)).into_response(),
        },
        Ok(None) => not_found(&id),
        Err(e) => internal(e),
    }
}

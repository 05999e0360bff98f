//! The live response library: `GET /api/libraryfiles`, multipart `POST /api/libraryfiles` and
//! `DELETE /api/libraryfiles/{name}`, kept in the world's scenario (`scenario.library`).

use std::sync::Arc;

use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::odata_context;
use crate::error::ApiError;
use crate::jwt::Claims;
use crate::scenario::LibraryFile;
use crate::state::{Clock, Sim};

/// Largest file the library accepts (250 MB).
pub const MAX_FILE_BYTES: usize = 250 * 1024 * 1024;

/// Largest text form field (description and flags).
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Creation time reported for scenario files that name none.
const SEEDED_TIME: &str = "2025-03-01T08:00:00.0000000Z";

/// Library routes (behind the API guard). The upload route lifts the default body limit and
/// enforces [`MAX_FILE_BYTES`] itself while reading.
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/api/libraryfiles",
            get(list).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/libraryfiles/{name}", delete(remove))
}

/// Lower-case hex SHA-256 of a library file's bytes.
fn sha256_hex(file: &LibraryFile) -> String {
    let decoded = file
        .content_base64
        .as_deref()
        .and_then(|b| STANDARD.decode(b.trim()).ok());
    let bytes = decoded.as_deref().unwrap_or(file.content.as_bytes());
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The LibraryFile JSON Defender answers.
pub fn library_json(file: &LibraryFile) -> Value {
    let created = file
        .creation_time
        .clone()
        .unwrap_or_else(|| SEEDED_TIME.to_string());
    let updated = file
        .last_updated_time
        .clone()
        .unwrap_or_else(|| created.clone());
    json!({
        "fileName": file.file_name,
        "sha256": sha256_hex(file),
        "description": file.description,
        "creationTime": created,
        "createdBy": file.created_by,
        "hasParameters": file.has_parameters,
        "parametersDescription": file.parameters_description,
        "lastUpdatedTime": updated,
    })
}

/// `GET /api/libraryfiles`.
async fn list(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Json<Value> {
    let value: Vec<Value> = sim
        .world()
        .scenario
        .library
        .iter()
        .map(library_json)
        .collect();
    Json(json!({
        "@odata.context": odata_context(&headers, "LibraryFiles"),
        "value": value,
    }))
}

/// Whether a library file name is acceptable: letters, digits, '-', '_', '.'.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.chars().all(|c| c == '.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads one form part, refusing more than `cap` bytes.
async fn read_part(mut field: Field<'_>, cap: usize, what: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        ApiError::bad_request(
            "InvalidRequestBody",
            format!("The multipart body could not be read: {e}"),
        )
    })? {
        if out.len() + chunk.len() > cap {
            return Err(ApiError::bad_request(
                "InvalidInput",
                format!("{what} is larger than the {cap} bytes allowed"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn parse_flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ApiError::bad_request(
            "InvalidInput",
            format!("{name} must be 'true' or 'false', not '{v}'"),
        )),
    }
}

/// The parts of an upload form.
#[derive(Default)]
struct UploadForm {
    file: Option<(String, Vec<u8>)>,
    description: Option<String>,
    parameters_description: Option<String>,
    has_parameters: Option<String>,
    override_if_exists: Option<String>,
}

async fn read_form(mut multipart: Multipart) -> Result<UploadForm, ApiError> {
    let mut form = UploadForm::default();
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            ApiError::bad_request(
                "InvalidRequestBody",
                format!("The multipart body could not be read: {e}"),
            )
        })?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        match name.as_str() {
            "file" => {
                let file_name = field.file_name().unwrap_or_default().to_string();
                if !valid_file_name(&file_name) {
                    return Err(ApiError::bad_request(
                        "InvalidInput",
                        format!(
                            "File name '{file_name}' is not allowed: use only letters, digits, '-', '_' and '.'"
                        ),
                    ));
                }
                let bytes = read_part(field, MAX_FILE_BYTES, "The file").await?;
                form.file = Some((file_name, bytes));
            }
            "description" | "parametersdescription" | "hasparameters" | "overrideifexists" => {
                let bytes = read_part(field, MAX_TEXT_BYTES, &name).await?;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let slot = match name.as_str() {
                    "description" => &mut form.description,
                    "parametersdescription" => &mut form.parameters_description,
                    "hasparameters" => &mut form.has_parameters,
                    _ => &mut form.override_if_exists,
                };
                *slot = Some(text);
            }
            // Unknown parts are ignored, as form binding does.
            _ => {
                read_part(field, MAX_FILE_BYTES, "A form part").await?;
            }
        }
    }
    Ok(form)
}

/// `POST /api/libraryfiles` (multipart/form-data).
async fn upload(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            "InvalidRequestBody",
            format!("The request must be multipart/form-data: {e}"),
        )
    })?;
    let form = read_form(multipart).await?;
    let Some((file_name, bytes)) = form.file else {
        return Err(ApiError::bad_request(
            "InvalidRequestBody",
            "The form part 'File' (with a file name) is required",
        ));
    };
    let has_parameters = parse_flag("HasParameters", form.has_parameters.as_deref())?;
    let override_if_exists = parse_flag("OverrideIfExists", form.override_if_exists.as_deref())?;
    let (content, content_base64) = match String::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let bytes = e.into_bytes();
            (
                String::from_utf8_lossy(&bytes).into_owned(),
                Some(STANDARD.encode(&bytes)),
            )
        }
    };
    let now = Clock::format_ms(sim.clock.now_ms());
    let parameters_description = form.parameters_description.filter(|s| !s.is_empty());
    let mut w = sim.world();
    let created_by = super::requestor(&w.scenario, &claims);
    let library = &mut w.scenario.library;
    let existing = library
        .iter()
        .position(|f| f.file_name.eq_ignore_ascii_case(&file_name));
    let out = match existing {
        Some(_) if !override_if_exists => {
            return Err(ApiError::bad_request(
                "BadRequest",
                format!(
                    "A file named {file_name} already exists in the library; set OverrideIfExists to true to replace it"
                ),
            ));
        }
        Some(i) => {
            let old = &library[i];
            let replaced = LibraryFile {
                file_name: file_name.clone(),
                description: form.description.unwrap_or_default(),
                has_parameters,
                parameters_description,
                content,
                script_output: None,
                script_errors: None,
                exit_code: 0,
                created_by: old.created_by.clone(),
                content_base64,
                creation_time: Some(
                    old.creation_time
                        .clone()
                        .unwrap_or_else(|| SEEDED_TIME.to_string()),
                ),
                last_updated_time: Some(now),
            };
            let out = library_json(&replaced);
            library[i] = replaced;
            out
        }
        None => {
            let created = LibraryFile {
                file_name: file_name.clone(),
                description: form.description.unwrap_or_default(),
                has_parameters,
                parameters_description,
                content,
                script_output: None,
                script_errors: None,
                exit_code: 0,
                created_by: Some(created_by),
                content_base64,
                creation_time: Some(now.clone()),
                last_updated_time: Some(now),
            };
            let out = library_json(&created);
            library.push(created);
            out
        }
    };
    drop(w);
    let mut body = serde_json::Map::new();
    body.insert(
        "@odata.context".into(),
        json!(odata_context(&headers, "LibraryFiles/$entity")),
    );
    if let Value::Object(m) = out {
        body.extend(m);
    }
    Ok(Json(Value::Object(body)))
}

/// `DELETE /api/libraryfiles/{name}`.
async fn remove(
    State(sim): State<Arc<Sim>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut w = sim.world();
    let library = &mut w.scenario.library;
    let pos = library
        .iter()
        .position(|f| f.file_name.eq_ignore_ascii_case(&name))
        .ok_or_else(|| ApiError::not_found(format!("File {name} was not found in the library")))?;
    library.remove(pos);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert!(valid_file_name("collect-triage_v2.ps1"));
        assert!(!valid_file_name("bad name.ps1"));
        assert!(!valid_file_name("..\\x.ps1"));
        assert!(!valid_file_name(""));
        assert!(!valid_file_name(".."));
    }

    #[test]
    fn flags() {
        assert!(parse_flag("X", Some("True")).unwrap());
        assert!(!parse_flag("X", None).unwrap());
        assert!(parse_flag("X", Some("yes")).is_err());
    }
}

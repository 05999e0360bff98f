//! `list_library_files`, `upload_library_file` and `delete_library_file`: the tenant's live
//! response library, the scripts `run_script` runs and the files `put_file` places on devices.
//!
//! An upload sends one multipart form to `POST /api/libraryfiles` (`File`, `Description`,
//! `ParametersDescription`, `HasParameters`, `OverrideIfExists`). Its file comes either inline
//! (`content`, base64, at most [`MAX_INLINE_BYTES`] decoded) or from the vault (`vault_id`, at
//! most [`MAX_LIBRARY_BYTES`]); a vault file is streamed from disk into the request, never held
//! in memory, and reopened when the form is rebuilt for the retry after a 401. Every parameter
//! problem is reported (HTTP 400) before anything is sent to Defender.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures::{StreamExt, TryStreamExt};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::io::ReaderStream;

use super::{Action, ActionContext, HandlerFn, erase};
use crate::defender::{DefenderError, endpoints};
use crate::envelope::{ActionError, Outcome};
use crate::vault::Vault;

/// Largest file the live response library takes (250 MB).
pub const MAX_LIBRARY_BYTES: u64 = 250 * 1024 * 1024;

/// Largest file accepted inline as `content` (1 MiB decoded); larger ones go through the vault.
pub const MAX_INLINE_BYTES: usize = 1024 * 1024;

/// Longest base64 text of [`MAX_INLINE_BYTES`] (padded, whitespace removed).
const MAX_INLINE_ENCODED: usize = MAX_INLINE_BYTES.div_ceil(3) * 4;

/// How long a library call may wait out throttling.
const DEADLINE: Duration = Duration::from_secs(15);

/// Read size when streaming a vault file into an upload.
const STREAM_CHUNK: usize = 64 * 1024;

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<ListLibraryFiles>(),
        erase::<UploadLibraryFile>(),
        erase::<DeleteLibraryFile>(),
    ]
}

/// `list_library_files`.
pub struct ListLibraryFiles;

/// Parameters of `list_library_files` (none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {}

impl Action for ListLibraryFiles {
    const ID: &'static str = "list_library_files";
    type Params = ListParams;

    async fn run(ctx: ActionContext, _p: ListParams) -> Result<Outcome, ActionError> {
        let client = ctx.asset.defender.with_deadline(Instant::now() + DEADLINE);
        let answer = match client.get(&endpoints::LIBRARY_FILES.at(&[])).await {
            Ok(v) => v,
            Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
            Err(e) => {
                return Ok(Outcome::failed(format!(
                    "listing the live response library failed: {e}"
                )));
            }
        };
        let Some(files) = library_files(answer) else {
            return Ok(Outcome::failed(
                "listing the live response library failed: Defender's answer holds no list of files",
            ));
        };
        let total = files.len();
        let mut outcome = Outcome::success(match total {
            0 => "The live response library is empty".to_string(),
            1 => "Found 1 library file".to_string(),
            n => format!("Found {n} library files"),
        })
        .with_summary("total_files", total);
        outcome.data = files;
        Ok(outcome)
    }
}

/// The file objects of a library list answer (`{"value": [...]}`, or a bare array), each as
/// Defender sent it minus `@odata.*` annotations; `None` when the answer holds no list.
pub fn library_files(answer: Value) -> Option<Vec<Value>> {
    let list = match answer {
        Value::Array(items) => items,
        Value::Object(mut map) => {
            if map.contains_key("@odata.nextLink") {
                tracing::warn!("the library list has a next page; only the first is shown");
            }
            match map.remove("value") {
                Some(Value::Array(items)) => items,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(
        list.into_iter()
            .filter_map(|item| match item {
                Value::Object(map) => Some(Value::Object(without_annotations(map))),
                _ => None,
            })
            .collect(),
    )
}

fn without_annotations(mut map: Map<String, Value>) -> Map<String, Value> {
    map.retain(|k, _| !k.starts_with("@odata."));
    map
}

/// `upload_library_file`.
pub struct UploadLibraryFile;

/// Parameters of `upload_library_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    /// SHA256 of a vault file.
    #[serde(default)]
    pub vault_id: Option<String>,
    /// The file in base64.
    #[serde(default)]
    pub content: Option<String>,
    /// Name in the library.
    pub file_name: String,
    /// Description.
    pub description: String,
    /// What the script's parameters are.
    #[serde(default)]
    pub parameters_description: Option<String>,
    /// Whether the script takes parameters.
    #[serde(default)]
    pub has_parameters: bool,
    /// Replace a file of the same name (`OverrideIfExists`).
    #[serde(default, rename = "override")]
    pub override_existing: bool,
}

/// Where the uploaded bytes come from, checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// Decoded `content`.
    Inline(Vec<u8>),
    /// A vault file: its path, size and SHA256.
    Vault {
        /// The stored file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// Its SHA256 (the vault id), lower case.
        sha256: String,
    },
}

impl Source {
    fn size(&self) -> u64 {
        match self {
            Source::Inline(bytes) => bytes.len() as u64,
            Source::Vault { size, .. } => *size,
        }
    }

    fn sha256(&self) -> String {
        match self {
            Source::Inline(bytes) => hex(&Sha256::digest(bytes)),
            Source::Vault { sha256, .. } => sha256.clone(),
        }
    }

    /// The `File` part: the bytes, or a fresh stream over the vault file.
    fn part(&self) -> Part {
        match self {
            Source::Inline(bytes) => Part::bytes(bytes.clone()),
            Source::Vault { path, size, .. } => {
                let size = *size;
                // Opened lazily when the request body is first polled; read in chunks.
                let stream = futures::stream::once(tokio::fs::File::open(path.clone()))
                    .map_ok(move |file| ReaderStream::with_capacity(file.take(size), STREAM_CHUNK))
                    .try_flatten()
                    .boxed();
                Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
            }
        }
    }
}

/// Checks the choice between `vault_id` and `content`: exactly one must be given.
pub fn choose_source<'a>(
    vault_id: Option<&'a str>,
    content: Option<&'a str>,
) -> Result<Either<'a>, ActionError> {
    match (vault_id, content) {
        (Some(_), Some(_)) => Err(ActionError::InvalidParameter(
            "parameters 'vault_id' and 'content' exclude each other: give the vault id of a \
             stored file, or the file's content in base64, not both"
                .into(),
        )),
        (None, None) => Err(ActionError::InvalidParameter(
            "one of parameters 'vault_id' (the vault id of a stored file) or 'content' (the \
             file's content in base64, up to 1 MiB) is required"
                .into(),
        )),
        (Some(id), None) => Ok(Either::Vault(id)),
        (None, Some(content)) => Ok(Either::Content(content)),
    }
}

/// Which of `vault_id` / `content` was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<'a> {
    /// `vault_id`.
    Vault(&'a str),
    /// `content`.
    Content(&'a str),
}

/// Decodes `content` (standard base64, padding optional, whitespace and line breaks ignored),
/// refusing more than [`MAX_INLINE_BYTES`].
pub fn decode_content(content: &str) -> Result<Vec<u8>, ActionError> {
    let compact: String = content
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let too_large = || {
        ActionError::InvalidParameter(format!(
            "parameter 'content': the file is larger than {MAX_INLINE_BYTES} bytes (1 MiB); \
             store it in the vault and give its vault_id instead"
        ))
    };
    if compact.len() > MAX_INLINE_ENCODED {
        return Err(too_large());
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(compact.as_bytes()).map_err(|e| {
        ActionError::InvalidParameter(format!(
            "parameter 'content': not valid base64 ({e}); give the file's bytes in standard \
             base64"
        ))
    })?;
    if bytes.len() > MAX_INLINE_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Checks a library file name beyond the definition's pattern: not only dots.
pub fn check_file_name(name: &str) -> Result<(), ActionError> {
    if name.chars().all(|c| c == '.') {
        return Err(ActionError::InvalidParameter(format!(
            "parameter 'file_name': '{name}' is not a file name (letters, digits, '-', '_' and \
             '.', not only dots)"
        )));
    }
    Ok(())
}

/// The vault file `vault_id`, checked to exist and to fit the library.
async fn vault_source(ctx: &ActionContext, vault_id: &str) -> Result<Source, ActionError> {
    let vault = Vault::of(&ctx.app.config);
    let shown = super::truncate(vault_id, 64);
    let not_found = || {
        ActionError::InvalidParameter(format!(
            "parameter 'vault_id': no file {shown} in the vault (a vault id is the SHA256 \
             reported by get_file or collect_investigation_package)"
        ))
    };
    let entry = vault
        .info(vault_id)
        .await
        .map_err(|e| ActionError::Internal(format!("reading vault file {shown}: {e}")))?
        .ok_or_else(not_found)?;
    let too_large = |size: u64| {
        ActionError::InvalidParameter(format!(
            "parameter 'vault_id': vault file {shown} has {size} bytes; the live response \
             library takes files up to {MAX_LIBRARY_BYTES} bytes (250 MB)"
        ))
    };
    if entry.size > MAX_LIBRARY_BYTES {
        return Err(too_large(entry.size));
    }
    let path = vault.file_path(vault_id).ok_or_else(not_found)?;
    let size = tokio::fs::metadata(&path)
        .await
        .map_err(|e| ActionError::Internal(format!("reading vault file {shown}: {e}")))?
        .len();
    if size > MAX_LIBRARY_BYTES {
        return Err(too_large(size));
    }
    Ok(Source::Vault {
        path,
        size,
        sha256: entry.sha256.to_ascii_lowercase(),
    })
}

impl Action for UploadLibraryFile {
    const ID: &'static str = "upload_library_file";
    type Params = UploadParams;

    async fn run(ctx: ActionContext, p: UploadParams) -> Result<Outcome, ActionError> {
        let chosen = choose_source(p.vault_id.as_deref(), p.content.as_deref())?;
        check_file_name(&p.file_name)?;
        let source = match chosen {
            Either::Content(content) => Source::Inline(decode_content(content)?),
            Either::Vault(id) => vault_source(&ctx, id).await?,
        };
        let sha256 = source.sha256();
        let size = source.size();
        let name = p.file_name.clone();

        let flag = |b: bool| if b { "true" } else { "false" };
        let form = || {
            let mut form = Form::new()
                .text("Description", p.description.clone())
                .text("HasParameters", flag(p.has_parameters))
                .text("OverrideIfExists", flag(p.override_existing));
            if let Some(pd) = p
                .parameters_description
                .as_deref()
                .filter(|s| !s.is_empty())
            {
                form = form.text("ParametersDescription", pd.to_string());
            }
            form.part("File", source.part().file_name(name.clone()))
        };

        ctx.progress(&format!(
            "uploading {name} ({size} bytes) to the live response library"
        ));
        let client = ctx.asset.defender.with_deadline(Instant::now() + DEADLINE);
        let answer = match client
            .post_multipart(&endpoints::UPLOAD_LIBRARY_FILE.at(&[]), &form)
            .await
        {
            Ok(v) => v,
            Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
            Err(e) => {
                let exists =
                    e.status() == Some(400) && e.to_string().to_ascii_lowercase().contains("exist");
                let hint = if exists && !p.override_existing {
                    "; to replace the library's file, run the action again with override set to true"
                } else {
                    ""
                };
                return Ok(Outcome::failed(format!(
                    "Defender did not accept {name} into the live response library: {e}{hint}"
                ))
                .with_summary("file_name", name.as_str())
                .with_summary("sha256", sha256.as_str()));
            }
        };
        let file = match answer {
            Value::Object(map) => without_annotations(map),
            _ => Map::new(),
        };
        let reported = file
            .get("sha256")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        if let Some(reported) = reported.as_deref()
            && reported != sha256
        {
            return Ok(Outcome::failed(format!(
                "Defender stored {name} with SHA256 {reported}, but the file sent has SHA256 \
                 {sha256}; upload it again"
            ))
            .with_summary("file_name", name.as_str())
            .with_summary("sha256", reported)
            .with_data(Value::Object(file)));
        }
        let stored_name = file
            .get("fileName")
            .and_then(Value::as_str)
            .unwrap_or(&name)
            .to_string();
        Ok(Outcome::success(format!(
            "Uploaded {stored_name} ({size} bytes) to the live response library"
        ))
        .with_summary("file_name", stored_name)
        .with_summary("sha256", sha256)
        .with_data(Value::Object(file)))
    }
}

/// `delete_library_file`.
pub struct DeleteLibraryFile;

/// Parameters of `delete_library_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// The library file's name.
    pub file_name: String,
}

impl Action for DeleteLibraryFile {
    const ID: &'static str = "delete_library_file";
    type Params = DeleteParams;

    async fn run(ctx: ActionContext, p: DeleteParams) -> Result<Outcome, ActionError> {
        check_file_name(&p.file_name)?;
        let name = p.file_name.as_str();
        let client = ctx.asset.defender.with_deadline(Instant::now() + DEADLINE);
        match client
            .delete(&endpoints::DELETE_LIBRARY_FILE.at(&[name]))
            .await
        {
            Ok(()) => Ok(Outcome::success(format!(
                "Deleted {name} from the live response library"
            ))
            .with_summary("file_name", name)
            .with_summary("deleted", true)),
            Err(e) if e.is_not_found() => Ok(Outcome::failed(format!(
                "the live response library has no file named {name}"
            ))
            .with_summary("file_name", name)
            .with_summary("deleted", false)),
            Err(e) if e.retry_after().is_some() => Err(e.into()),
            Err(e) => Ok(
                Outcome::failed(format!("deleting {name} from the library failed: {e}"))
                    .with_summary("file_name", name)
                    .with_summary("deleted", false),
            ),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exactly_one_source() {
        assert_eq!(choose_source(Some("a"), None).unwrap(), Either::Vault("a"));
        assert_eq!(
            choose_source(None, Some("b")).unwrap(),
            Either::Content("b")
        );
        let both = choose_source(Some("a"), Some("b")).unwrap_err().to_string();
        assert!(
            both.contains("'vault_id'") && both.contains("'content'"),
            "{both}"
        );
        let neither = choose_source(None, None).unwrap_err().to_string();
        assert!(
            neither.contains("'vault_id'") && neither.contains("'content'"),
            "{neither}"
        );
    }

    #[test]
    fn content_is_decoded_with_limits() {
        assert_eq!(decode_content("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_content("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_content("aGVs\r\nbG8=\n").unwrap(), b"hello");
        let bad = decode_content("not base64!").unwrap_err().to_string();
        assert!(bad.contains("'content'") && bad.contains("base64"), "{bad}");
        let engine = base64::engine::general_purpose::STANDARD;
        let max = engine.encode(vec![7u8; MAX_INLINE_BYTES]);
        assert_eq!(max.len(), MAX_INLINE_ENCODED);
        assert_eq!(decode_content(&max).unwrap().len(), MAX_INLINE_BYTES);
        let over = engine.encode(vec![7u8; MAX_INLINE_BYTES + 1]);
        let msg = decode_content(&over).unwrap_err().to_string();
        assert!(
            msg.contains("'content'") && msg.contains("vault_id"),
            "{msg}"
        );
    }

    #[test]
    fn dots_are_not_a_name() {
        assert!(check_file_name("x.ps1").is_ok());
        assert!(check_file_name(".hidden").is_ok());
        for bad in [".", "..", "..."] {
            let msg = check_file_name(bad).unwrap_err().to_string();
            assert!(msg.contains("'file_name'"), "{msg}");
        }
    }

    #[test]
    fn list_answers_are_read_tolerantly() {
        let files = library_files(json!({
            "@odata.context": "x",
            "value": [
                {"fileName": "a.ps1", "sha256": "00", "extra": 1, "@odata.etag": "e"},
                {"fileName": "b.ps1"},
                "junk"
            ]
        }))
        .unwrap();
        assert_eq!(
            files,
            vec![
                json!({"fileName": "a.ps1", "sha256": "00", "extra": 1}),
                json!({"fileName": "b.ps1"})
            ]
        );
        assert_eq!(library_files(json!([{"fileName": "c"}])).unwrap().len(), 1);
        assert!(library_files(json!({"value": null})).is_none());
        assert!(library_files(Value::Null).is_none());
    }

    #[test]
    fn inline_source_hashes_its_bytes() {
        let s = Source::Inline(b"hello".to_vec());
        assert_eq!(s.size(), 5);
        assert_eq!(
            s.sha256(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }
}

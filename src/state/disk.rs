//! The state file on disk: its JSON format (version 1, secrets sealed), atomic replacement
//! (temporary file, fsync, rename, fsync of the directory), the advisory lock file, and the
//! clean-up of temporary files left by a crashed writer.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::error::Category;

use super::crypto::{Cipher, OpenError};
use super::error::truncate;
use super::key::{KEY_FILE_NAME, KeySource};
use super::{
    AssetState, ConsentSession, ConsentTicket, IdempotencyRecord, StateError, StoredTokens,
};

/// The newest (and only) format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Suffix of state file names: `<asset>_state.json`.
pub(crate) const STATE_SUFFIX: &str = "_state.json";
/// Suffix of lock file names: `<asset>_state.lock`.
const LOCK_SUFFIX: &str = "_state.lock";
/// Suffix of the token lock files: `<asset>_token.lock`, held across a token request.
const TOKEN_LOCK_SUFFIX: &str = "_token.lock";

/// Version 1 of the file: non-secret fields in clear, secrets sealed. Unknown fields are
/// ignored on read.
#[derive(Serialize, Deserialize)]
struct DiskFile {
    version: u64,
    asset_id: String,
    #[serde(default)]
    updated_at: i64,
    #[serde(default)]
    tokens: Option<DiskTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    graph_tokens: Option<DiskTokens>,
    #[serde(default)]
    consent_sessions: Vec<DiskConsent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    consent_tickets: Vec<ConsentTicket>,
    #[serde(default)]
    idempotency: BTreeMap<String, IdempotencyRecord>,
    #[serde(default)]
    checkpoints: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingestion: Option<super::IngestionState>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    callbacks: BTreeMap<String, super::CallbackRecord>,
}

/// Token pair; `access_token` and `refresh_token` are sealed.
#[derive(Serialize, Deserialize)]
struct DiskTokens {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    expires_at: i64,
    obtained_at: i64,
    grant: String,
    #[serde(default)]
    scope: Option<String>,
}

/// Pending consent session; `verifier` is sealed.
#[derive(Serialize, Deserialize)]
struct DiskConsent {
    state_hash: String,
    verifier: String,
    created_at: i64,
    expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    browser_hash: Option<String>,
}

/// The fields read before anything else, to refuse unknown versions and foreign files early.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    asset_id: Option<Value>,
}

/// The key material and its description, as needed to read and write a file.
pub(crate) struct Keyring<'a> {
    /// The cipher for the current key.
    pub(crate) cipher: &'a Cipher,
    /// Where that key came from.
    pub(crate) source: &'a KeySource,
    /// The state directory (for naming the key file in messages).
    pub(crate) dir: &'a Path,
}

/// `dir/<asset>_state.json`.
pub(crate) fn state_path(dir: &Path, asset_id: &str) -> PathBuf {
    dir.join(format!("{asset_id}{STATE_SUFFIX}"))
}

/// `dir/<asset>_token.lock`.
pub(crate) fn token_lock_path(dir: &Path, asset_id: &str) -> PathBuf {
    dir.join(format!("{asset_id}{TOKEN_LOCK_SUFFIX}"))
}

/// A fresh temporary name next to `base`: `dir/.<base>.<pid>.<random>.tmp`.
pub(crate) fn temp_path(dir: &Path, base: &str) -> PathBuf {
    let random = rand::thread_rng().next_u64();
    dir.join(format!(".{base}.{}.{random:016x}.tmp", std::process::id()))
}

/// Reads and decodes the asset's file; `Ok(None)` when it does not exist.
pub(crate) fn read_state(
    keys: &Keyring<'_>,
    asset_id: &str,
) -> Result<Option<AssetState>, StateError> {
    let path = state_path(keys.dir, asset_id);
    match fs::read(&path) {
        Ok(bytes) => decode(keys, asset_id, &path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::io("file", &path, "read", &e)),
    }
}

/// Encodes `state` and replaces the asset's file atomically.
pub(crate) fn write_state(
    keys: &Keyring<'_>,
    asset_id: &str,
    state: &AssetState,
) -> Result<(), StateError> {
    let path = state_path(keys.dir, asset_id);
    let bytes = encode(keys.cipher, asset_id, &path, state)?;
    write_atomic(keys.dir, &path, &bytes)
}

/// Parses a state file's bytes: version, then asset id, then the rest; secrets decrypted.
pub(crate) fn decode(
    keys: &Keyring<'_>,
    asset_id: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<AssetState, StateError> {
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| corrupt(describe(&e)))?;
    let version = match probe.version {
        None => return Err(corrupt("it has no \"version\" field".into())),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| corrupt("\"version\" is not a non-negative integer".into()))?,
    };
    if version != u64::from(FORMAT_VERSION) {
        return Err(StateError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
            relation: if version > u64::from(FORMAT_VERSION) {
                "newer than"
            } else {
                "older than the first"
            },
        });
    }
    match probe.asset_id {
        Some(Value::String(found)) if found == asset_id => {}
        Some(Value::String(found)) => {
            return Err(StateError::AssetMismatch {
                path: path.to_path_buf(),
                expected: asset_id.to_owned(),
                found: truncate(&found, 80),
            });
        }
        Some(_) => return Err(corrupt("\"asset_id\" is not a string".into())),
        None => return Err(corrupt("it has no \"asset_id\" field".into())),
    }
    let file: DiskFile = serde_json::from_slice(bytes).map_err(|e| corrupt(describe(&e)))?;

    let open = |field: String, sealed: &str| -> Result<SecretString, StateError> {
        keys.cipher
            .open(asset_id, sealed)
            .map_err(|problem| match problem {
                OpenError::Malformed => corrupt(format!("{field} is not an encrypted value")),
                OpenError::Auth => StateError::Decrypt {
                    path: path.to_path_buf(),
                    field,
                    key_source: keys.source.to_string(),
                    key_file: keys.dir.join(KEY_FILE_NAME),
                },
            })
    };
    let open_tokens = |field: &str, t: Option<DiskTokens>| -> Result<_, StateError> {
        let Some(t) = t else {
            return Ok(None);
        };
        Ok(Some(StoredTokens {
            access_token: open(format!("{field}.access_token"), &t.access_token)?,
            refresh_token: match &t.refresh_token {
                None => None,
                Some(sealed) => Some(open(format!("{field}.refresh_token"), sealed)?),
            },
            expires_at: t.expires_at,
            obtained_at: t.obtained_at,
            grant: t.grant,
            scope: t.scope,
        }))
    };
    let tokens = open_tokens("tokens", file.tokens)?;
    let graph_tokens = open_tokens("graph_tokens", file.graph_tokens)?;
    let consent_sessions = file
        .consent_sessions
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(ConsentSession {
                verifier: open(format!("consent_sessions[{i}].verifier"), &c.verifier)?,
                state_hash: c.state_hash,
                created_at: c.created_at,
                expires_at: c.expires_at,
                browser_hash: c.browser_hash,
            })
        })
        .collect::<Result<Vec<_>, StateError>>()?;
    Ok(AssetState {
        tokens,
        graph_tokens,
        consent_sessions,
        consent_tickets: file.consent_tickets,
        idempotency: file.idempotency,
        checkpoints: file.checkpoints,
        ingestion: file.ingestion,
        callbacks: file.callbacks,
    })
}

/// Serialises `state` for `asset_id`, sealing every secret with a fresh nonce.
pub(crate) fn encode(
    cipher: &Cipher,
    asset_id: &str,
    path: &Path,
    state: &AssetState,
) -> Result<Vec<u8>, StateError> {
    let seal = |secret: &SecretString| {
        cipher
            .seal(asset_id, secret.expose_secret())
            .ok_or_else(|| StateError::Internal {
                path: path.to_path_buf(),
                message: "encryption failed".into(),
            })
    };
    let seal_tokens = |t: &Option<StoredTokens>| -> Result<Option<DiskTokens>, StateError> {
        let Some(t) = t else {
            return Ok(None);
        };
        Ok(Some(DiskTokens {
            access_token: seal(&t.access_token)?,
            refresh_token: t.refresh_token.as_ref().map(seal).transpose()?,
            expires_at: t.expires_at,
            obtained_at: t.obtained_at,
            grant: t.grant.clone(),
            scope: t.scope.clone(),
        }))
    };
    let tokens = seal_tokens(&state.tokens)?;
    let graph_tokens = seal_tokens(&state.graph_tokens)?;
    let consent_sessions = state
        .consent_sessions
        .iter()
        .map(|c| {
            Ok(DiskConsent {
                state_hash: c.state_hash.clone(),
                verifier: seal(&c.verifier)?,
                created_at: c.created_at,
                expires_at: c.expires_at,
                browser_hash: c.browser_hash.clone(),
            })
        })
        .collect::<Result<Vec<_>, StateError>>()?;
    let file = DiskFile {
        version: u64::from(FORMAT_VERSION),
        asset_id: asset_id.to_owned(),
        updated_at: super::now_unix(),
        tokens,
        graph_tokens,
        consent_sessions,
        consent_tickets: state.consent_tickets.clone(),
        idempotency: state.idempotency.clone(),
        checkpoints: state.checkpoints.clone(),
        ingestion: state.ingestion.clone(),
        callbacks: state.callbacks.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Internal {
        path: path.to_path_buf(),
        message: format!("cannot serialise the state: {}", describe(&e)),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A serde_json error described by position and field name only: its full message can quote
/// values from the file.
fn describe(e: &serde_json::Error) -> String {
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Io => format!("read error at {at}"),
        Category::Syntax => format!("invalid JSON at {at}"),
        Category::Eof if e.line() <= 1 && e.column() == 0 => "the file is empty".into(),
        Category::Eof => format!("the file ends early, at {at}"),
        Category::Data => {
            let message = e.to_string();
            if message.starts_with("missing field") || message.starts_with("duplicate field") {
                message
            } else {
                format!("a value has the wrong type or shape at {at}")
            }
        }
    }
}

/// Creates `path` (0600, must not exist), writes `bytes`, fsyncs.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `path` with `bytes`: temporary file in the same directory, write, fsync, rename,
/// fsync of the directory. Readers see the old or the new file, never a mix.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let base = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = temp_path(dir, base);
    if let Err(e) = write_synced(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(StateError::io("file", &tmp, "write", &e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(StateError::io("file", path, "replace", &e));
    }
    sync_dir(dir)
}

/// fsyncs a directory so a rename or a new name in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StateError::io("directory", dir, "sync", &e))
}

/// Removes temporary files left by a writer of this asset's state that died mid-write. Only
/// called with the asset's file lock held, so no live writer owns them.
pub(crate) fn clean_temps(dir: &Path, asset_id: &str) {
    let prefix = format!(".{asset_id}{STATE_SUFFIX}.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&prefix)
            && name.ends_with(".tmp")
            && let Err(e) = fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), error = %e,
                "cannot remove a leftover temporary state file");
        }
    }
}

/// The asset ids that have a state file in `dir`, sorted.
pub(crate) fn list_assets(dir: &Path) -> Result<Vec<String>, StateError> {
    let entries = fs::read_dir(dir).map_err(|e| StateError::io("directory", dir, "list", &e))?;
    let mut assets = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StateError::io("directory", dir, "list", &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(asset) = name.strip_suffix(STATE_SUFFIX)
            && super::is_valid_asset_id(asset)
        {
            assets.push(asset.to_owned());
        }
    }
    assets.sort();
    Ok(assets)
}

/// An exclusive advisory lock on `dir/<asset>_state.lock` (or `dir/<asset>_token.lock`), held
/// until dropped. Serialises writers of one asset across processes (and across stores within a
/// process).
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the asset's state lock file is locked exclusively.
    pub(crate) fn acquire(dir: &Path, asset_id: &str) -> Result<FileLock, StateError> {
        Self::acquire_path(&dir.join(format!("{asset_id}{LOCK_SUFFIX}")))
    }

    /// Blocks until the asset's token lock file is locked exclusively.
    pub(crate) fn acquire_token(dir: &Path, asset_id: &str) -> Result<FileLock, StateError> {
        Self::acquire_path(&token_lock_path(dir, asset_id))
    }

    /// Blocks until the lock file `path` (created 0600 if missing) is locked exclusively.
    fn acquire_path(path: &Path) -> Result<FileLock, StateError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| StateError::io("lock file", path, "open", &e))?;
        lock_exclusive(&file).map_err(|e| StateError::io("lock file", path, "lock", &e))?;
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first makes it explicit.
        let _ = unlock(&self.file);
    }
}

/// `File::lock` (std, stable since Rust 1.89).
fn lock_exclusive(file: &File) -> io::Result<()> {
    file.lock()
}

/// `File::unlock` (std, stable since Rust 1.89).
fn unlock(file: &File) -> io::Result<()> {
    file.unlock()
}

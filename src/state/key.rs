//! Where the state key comes from: `DEFENDER_SOAR_STATE_KEY` (base64 of 32 bytes) or the key
//! file `state.key` in the state directory, created 0600 with 32 random bytes on first run.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rand::RngCore as _;
use rand::rngs::OsRng;
use secrecy::zeroize::Zeroize as _;

use super::StateError;
use super::disk;

/// Environment variable holding the state key (base64 of 32 bytes).
pub const STATE_KEY_ENV: &str = "DEFENDER_SOAR_STATE_KEY";
/// Name of the key file inside the state directory, used when the variable is unset.
pub const KEY_FILE_NAME: &str = "state.key";

/// Where the key of a [`super::StateStore`] came from (shown in messages; never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The `DEFENDER_SOAR_STATE_KEY` environment variable.
    Env,
    /// The key file at this path.
    File(PathBuf),
    /// A key handed to [`super::StateStore::with_key`].
    Explicit,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "environment variable {STATE_KEY_ENV}"),
            KeySource::File(path) => write!(f, "key file {}", path.display()),
            KeySource::Explicit => f.write_str("the key given by the caller"),
        }
    }
}

/// Decodes the value of `DEFENDER_SOAR_STATE_KEY` (standard or URL-safe base64, padded or not).
pub fn key_from_env_value(value: &OsStr) -> Result<[u8; 32], StateError> {
    let bad = |problem: &str| StateError::KeyEnv {
        var: STATE_KEY_ENV,
        problem: problem.to_owned(),
    };
    let text = value.to_str().ok_or_else(|| bad("not valid UTF-8"))?.trim();
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut decoded = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .ok_or_else(|| bad("not valid base64"))?;
    let result = <[u8; 32]>::try_from(decoded.as_slice())
        .map_err(|_| bad(&format!("it decodes to {} bytes", decoded.len())));
    decoded.zeroize();
    result
}

/// Reads `dir/state.key`, creating it (0600, 32 random bytes) when it does not exist yet.
/// Two processes starting at once agree on one key: the file appears complete or not at all.
pub(crate) fn load_or_create_key_file(dir: &Path) -> Result<[u8; 32], StateError> {
    let path = dir.join(KEY_FILE_NAME);
    for _ in 0..3 {
        match File::open(&path) {
            Ok(file) => return read_key_file(&path, file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                OsRng.fill_bytes(&mut key);
                let created = create_key_file(dir, &path, &key);
                match created {
                    Ok(true) => return Ok(key),
                    // Another process created it first: read theirs.
                    Ok(false) => key.zeroize(),
                    Err(e) => {
                        key.zeroize();
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(StateError::io("key file", &path, "open", &e)),
        }
    }
    Err(StateError::io(
        "key file",
        &path,
        "create",
        &io::Error::other("it keeps appearing and disappearing"),
    ))
}

/// Checks mode and size, then reads the 32 key bytes.
fn read_key_file(path: &Path, mut file: File) -> Result<[u8; 32], StateError> {
    let meta = file
        .metadata()
        .map_err(|e| StateError::io("key file", path, "inspect", &e))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StateError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if !meta.is_file() || meta.len() != 32 {
        return Err(StateError::KeyFileSize {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut key = [0u8; 32];
    file.read_exact(&mut key)
        .map_err(|e| StateError::io("key file", path, "read", &e))?;
    Ok(key)
}

/// Creates the key file without ever exposing a partial one: writes a temporary file, then
/// hard-links it into place (fails if the name exists). `Ok(false)`: someone else won.
fn create_key_file(dir: &Path, path: &Path, key: &[u8; 32]) -> Result<bool, StateError> {
    let tmp = disk::temp_path(dir, KEY_FILE_NAME);
    disk::write_synced(&tmp, key).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StateError::io("key file", &tmp, "write", &e)
    })?;
    let linked = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // File systems without hard links: exclusive create of the final name instead.
        Err(_) => match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => file
                .write_all(key)
                .and_then(|()| file.sync_all())
                .map(|()| true)
                .map_err(|e| StateError::io("key file", path, "write", &e)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StateError::io("key file", path, "create", &e)),
        },
    };
    let _ = fs::remove_file(&tmp);
    if linked? {
        disk::sync_dir(dir)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Replaces the key file with `key` atomically (key rotation).
pub(crate) fn replace_key_file(dir: &Path, path: &Path, key: &[u8; 32]) -> Result<(), StateError> {
    let tmp = disk::temp_path(dir, KEY_FILE_NAME);
    disk::write_synced(&tmp, key)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StateError::io("key file", path, "replace", &e)
        })?;
    disk::sync_dir(dir)
}

//! Errors of the state store: each one says what is wrong, which file, and how to recover.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a state operation failed. Never contains a secret; cheap to clone.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The asset id cannot name a state file.
    #[error(
        "asset id {asset_id:?} cannot name a state file: ids are 1 to 64 characters from \
         A-Z, a-z, 0-9, '_' and '-'"
    )]
    InvalidAssetId {
        /// The rejected id (truncated).
        asset_id: String,
    },

    /// `DEFENDER_SOAR_STATE_KEY` is set but is not base64 of 32 bytes.
    #[error(
        "environment variable {var} must be the base64 encoding of exactly 32 bytes ({problem}): \
         fix or unset it (unset, the key file in the state directory is used)"
    )]
    KeyEnv {
        /// The variable's name.
        var: &'static str,
        /// What is wrong with its value (never the value itself).
        problem: String,
    },

    /// The key file exists but is not exactly 32 bytes.
    #[error(
        "state key file {path} must be exactly 32 bytes but has {len}: restore the original key \
         file (or set DEFENDER_SOAR_STATE_KEY); if the key is lost, move the key file and the \
         state files aside and consent again"
    )]
    KeyFileSize {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },

    /// The key file can be read by group or others.
    #[error(
        "state key file {path} has mode {mode:04o}, readable or writable by group or others: \
         run `chmod 600 {path}` (and consider rotating the key)"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The state file is not valid state JSON.
    #[error(
        "state file {path} is corrupt ({detail}): restore it from a backup, or move it aside and \
         consent again; the file was left untouched"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong (positions and field names only, never values).
        detail: String,
    },

    /// A secret in the state file fails authenticated decryption.
    #[error(
        "state file {path} cannot be decrypted with the current state key from {key_source} \
         (field {field}; the file was tampered with, or DEFENDER_SOAR_STATE_KEY / {key_file} \
         changed): restore the previous key, or move the file aside and consent again; the \
         file was left untouched"
    )]
    Decrypt {
        /// The state file.
        path: PathBuf,
        /// Which secret failed (e.g. `tokens.access_token`).
        field: String,
        /// Where the current key came from.
        key_source: String,
        /// The key file of this state directory.
        key_file: PathBuf,
    },

    /// The file's format version is not one this build reads.
    #[error(
        "state file {path} has format version {found}, {relation} version {supported} that this \
         build reads: run a defender-soar release that supports it, or restore a backup; the \
         file was left untouched"
    )]
    UnsupportedVersion {
        /// The state file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The newest version this build reads.
        supported: u32,
        /// "newer than" or "unknown to".
        relation: &'static str,
    },

    /// The file names another asset inside (copied from another asset).
    #[error(
        "state file {path} belongs to asset {found:?}, not {expected:?} (was it copied from \
         another asset?): move it aside and consent again for {expected:?}; the file was left \
         untouched"
    )]
    AssetMismatch {
        /// The state file.
        path: PathBuf,
        /// The asset the file was opened for.
        expected: String,
        /// The asset recorded in the file (truncated).
        found: String,
    },

    /// A file system operation failed.
    #[error(
        "state {what} {path}: cannot {op}: {message}; check that the state directory exists, is \
         on a writable file system and belongs to the user running defender-soar"
    )]
    Io {
        /// "file", "directory", "key file" or "lock file".
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operation ("read", "write", "lock", ...).
        op: &'static str,
        /// The operating system's message.
        message: String,
        /// The I/O error kind.
        kind: io::ErrorKind,
    },

    /// The shared state store (Redis) could not be used.
    #[error(
        "state of asset {asset:?} in Redis: cannot {op}: {message}; nothing was changed. Check \
         that Redis is reachable at the URL in server.state.redis_url_env; the host retries on \
         the next request"
    )]
    Backend {
        /// The asset (`*` for the whole store).
        asset: String,
        /// The operation ("read", "write", "lock", "list").
        op: &'static str,
        /// What went wrong (never the URL).
        message: String,
    },

    /// Something that should not happen (a panic in a blocking task, an encryption failure).
    #[error("internal error while handling state file {path}: {message}")]
    Internal {
        /// The path involved.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

impl StateError {
    /// An I/O error on `path`.
    pub(crate) fn io(what: &'static str, path: &Path, op: &'static str, err: &io::Error) -> Self {
        StateError::Io {
            what,
            path: path.to_path_buf(),
            op,
            message: err.to_string(),
            kind: err.kind(),
        }
    }

    /// True when the error comes from the file's contents (corrupt, tampered, wrong key, wrong
    /// version, wrong asset) rather than from the environment: the file is kept as it is.
    pub fn is_bad_file(&self) -> bool {
        matches!(
            self,
            StateError::Corrupt { .. }
                | StateError::Decrypt { .. }
                | StateError::UnsupportedVersion { .. }
                | StateError::AssetMismatch { .. }
        )
    }
}

/// Failure of [`super::StateStore::update`]: the store failed, or the update function did.
#[derive(Debug)]
pub enum UpdateError<E> {
    /// Reading, decrypting or writing the state failed; nothing was written.
    State(StateError),
    /// The update function returned this error; nothing was written.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for UpdateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::State(e) => e.fmt(f),
            UpdateError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for UpdateError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpdateError::State(e) => Some(e),
            UpdateError::Inner(e) => Some(e),
        }
    }
}

impl UpdateError<std::convert::Infallible> {
    /// The state error of an update whose function cannot fail.
    pub fn into_state(self) -> StateError {
        match self {
            UpdateError::State(e) => e,
            UpdateError::Inner(never) => match never {},
        }
    }
}

impl<E> From<StateError> for UpdateError<E> {
    fn from(e: StateError) -> Self {
        UpdateError::State(e)
    }
}

/// At most `max` characters of `s` (for values read from files and echoed in messages).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

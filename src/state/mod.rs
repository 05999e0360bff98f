//! Per-asset state store: one encrypted, crash-safe JSON file per asset
//! (`<state_dir>/<asset>_state.json`) holding the token pair, pending consent sessions,
//! idempotency records and ingestion checkpoints.
//!
//! - Files are replaced atomically (temporary file in the same directory, fsync, rename, fsync
//!   of the directory) with mode 0600; a crash leaves the old or the new version.
//! - Secrets (access token, refresh token, PKCE verifier) are sealed with AES-256-GCM, a fresh
//!   nonce each time, the asset id as associated data. The key comes from
//!   `DEFENDER_SOAR_STATE_KEY` or the 0600 key file `state.key` created on first run.
//! - [`StateStore::update`] is a read-modify-write under an in-process per-asset lock and an
//!   advisory lock on `<asset>_state.lock`, so concurrent writers (tasks or processes) never lose
//!   an update.
//! - [`StateStore::lock_tokens`] takes a second advisory lock, `<asset>_token.lock`, that a
//!   token request holds from re-reading the stored pair until the new pair is stored: hosts
//!   sharing the directory then redeem each refresh token once.
//! - A corrupt, tampered, foreign-key, foreign-asset or too-new file is never rewritten or
//!   deleted: the operations on that asset fail with a [`StateError`] saying how to recover;
//!   other assets keep working.

mod crypto;
mod disk;
mod error;
mod key;
mod shared;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use secrecy::zeroize::Zeroize as _;
use serde::{Deserialize, Serialize};

use crypto::Cipher;
use disk::{FileLock, Keyring};

pub use disk::FORMAT_VERSION;
pub use error::{StateError, UpdateError};
pub use key::{KEY_FILE_NAME, KeySource, STATE_KEY_ENV, key_from_env_value};

/// Everything remembered about one asset between requests and restarts.
#[derive(Default, Clone)]
pub struct AssetState {
    /// The current token pair for the Defender API, if any. For delegated grants its refresh
    /// token is the asset's one, for every audience.
    pub tokens: Option<StoredTokens>,
    /// The current Microsoft Graph access token, if any (never a refresh token: that stays in
    /// `tokens`).
    pub graph_tokens: Option<StoredTokens>,
    /// Consent sessions started by `/start_oauth` and not yet completed or expired.
    pub consent_sessions: Vec<ConsentSession>,
    /// Consent tickets issued to API callers and not yet used at `/start_oauth` or expired.
    pub consent_tickets: Vec<ConsentTicket>,
    /// Idempotency key → the operation it started (live-response resumption).
    pub idempotency: BTreeMap<String, IdempotencyRecord>,
    /// Named checkpoints (ingestion cursors and the like), free-form JSON.
    pub checkpoints: BTreeMap<String, serde_json::Value>,
    /// Alert ingestion: the poller's checkpoint and its last outcome.
    pub ingestion: Option<IngestionState>,
    /// Completion callbacks by event id: pending, failing, or delivered (kept a while).
    pub callbacks: BTreeMap<String, CallbackRecord>,
}

impl AssetState {
    /// Whether `other` holds the same state, secrets included (compared in memory, never
    /// shown).
    pub fn same_as(&self, other: &AssetState) -> bool {
        use secrecy::ExposeSecret as _;
        fn tokens(a: &Option<StoredTokens>, b: &Option<StoredTokens>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => {
                    a.access_token.expose_secret() == b.access_token.expose_secret()
                        && a.refresh_token.as_ref().map(|t| t.expose_secret())
                            == b.refresh_token.as_ref().map(|t| t.expose_secret())
                        && a.expires_at == b.expires_at
                        && a.obtained_at == b.obtained_at
                        && a.grant == b.grant
                        && a.scope == b.scope
                }
                _ => false,
            }
        }
        let sessions = self.consent_sessions.len() == other.consent_sessions.len()
            && self
                .consent_sessions
                .iter()
                .zip(&other.consent_sessions)
                .all(|(a, b)| {
                    a.state_hash == b.state_hash
                        && a.verifier.expose_secret() == b.verifier.expose_secret()
                        && a.created_at == b.created_at
                        && a.expires_at == b.expires_at
                        && a.browser_hash == b.browser_hash
                });
        tokens(&self.tokens, &other.tokens)
            && tokens(&self.graph_tokens, &other.graph_tokens)
            && sessions
            && self.consent_tickets == other.consent_tickets
            && self.idempotency == other.idempotency
            && self.checkpoints == other.checkpoints
            && self.ingestion == other.ingestion
            && self.callbacks == other.callbacks
    }
}

/// A completion callback the host owes a caller (see `crate::callbacks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRecord {
    /// The action that asked for it.
    pub action: String,
    /// Where the final envelope goes.
    pub url: String,
    /// The configured secret that signs it.
    pub secret_ref: String,
    /// The action whose answer (with `event_id`) is the final envelope, and its parameters.
    pub resume_action: String,
    /// Parameters of `resume_action`.
    #[serde(default)]
    pub resume_params: serde_json::Map<String, serde_json::Value>,
    /// When it was asked for (unix seconds).
    pub created_at: i64,
    /// `pending`, `failing` or `delivered`.
    pub status: String,
    /// POSTs tried so far.
    #[serde(default)]
    pub attempts: u64,
    /// Why the last POST failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the receiver acknowledged it (unix seconds).
    #[serde(default)]
    pub delivered_at: Option<i64>,
}

/// Where an asset's alert ingestion stands (kept in the asset's state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestionState {
    /// Alerts with a last update before this instant (RFC 3339) are all in the journal, and
    /// so are those at exactly this instant whose ids are in `ids_at_checkpoint`.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Ids of the alerts already journaled whose last update is exactly `checkpoint`.
    #[serde(default)]
    pub ids_at_checkpoint: Vec<String>,
    /// The last poll stopped at `max_per_poll`: the next one continues from the checkpoint
    /// itself (past the ids already seen there) instead of reading the overlap again.
    #[serde(default)]
    pub more: bool,
    /// When the last poll ended (unix seconds).
    #[serde(default)]
    pub last_poll_at: Option<i64>,
    /// `ok` or `failed` (the last poll's outcome).
    #[serde(default)]
    pub last_outcome: Option<String>,
    /// Why the last poll failed (no secrets), if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Polls run so far.
    #[serde(default)]
    pub polls: u64,
    /// Events appended to the journal so far.
    #[serde(default)]
    pub delivered: u64,
    /// Polls that failed so far.
    #[serde(default)]
    pub errors: u64,
    /// Push delivery by webhook id (see `WebhookConfig::id`).
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookState>,
    /// When the poller means to poll next (unix seconds), set after each poll it runs.
    #[serde(default)]
    pub next_poll_at: Option<i64>,
}

/// Where the push delivery to one webhook stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookState {
    /// The sequence number of the last journal event the receiver acknowledged (2xx).
    #[serde(default)]
    pub cursor: u64,
    /// Events acknowledged so far.
    #[serde(default)]
    pub delivered: u64,
    /// Failed POSTs so far.
    #[serde(default)]
    pub failures: u64,
    /// Failed POSTs since the last success.
    #[serde(default)]
    pub consecutive_failures: u64,
    /// Events dropped from the full journal before the receiver acknowledged them.
    #[serde(default)]
    pub dropped: u64,
    /// When the receiver last acknowledged a batch (unix seconds).
    #[serde(default)]
    pub last_success_at: Option<i64>,
    /// When the last POST failed (unix seconds).
    #[serde(default)]
    pub last_failure_at: Option<i64>,
    /// Since when POSTs fail without a success in between (unix seconds).
    #[serde(default)]
    pub failing_since: Option<i64>,
    /// Why the last POST failed (status or kind of failure, no URL).
    #[serde(default)]
    pub last_error: Option<String>,
}

impl fmt::Debug for AssetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssetState")
            .field("tokens", &self.tokens)
            .field("graph_tokens", &self.graph_tokens)
            .field("consent_sessions", &self.consent_sessions)
            .field("consent_tickets", &self.consent_tickets)
            .field("idempotency", &self.idempotency)
            .field("checkpoints", &self.checkpoints.keys().collect::<Vec<_>>())
            .field("ingestion", &self.ingestion)
            .finish()
    }
}

/// A token pair as stored (secrets encrypted on disk, [`SecretString`] in memory).
#[derive(Clone)]
pub struct StoredTokens {
    /// The bearer token for the API.
    pub access_token: SecretString,
    /// The refresh token (authorization-code assets only).
    pub refresh_token: Option<SecretString>,
    /// When the access token expires (unix seconds).
    pub expires_at: i64,
    /// When the pair was obtained (unix seconds).
    pub obtained_at: i64,
    /// `"client_credentials"` or `"authorization_code"`.
    pub grant: String,
    /// The scope granted, if the token endpoint said.
    pub scope: Option<String>,
}

impl fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTokens")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_at", &self.expires_at)
            .field("obtained_at", &self.obtained_at)
            .field("grant", &self.grant)
            .field("scope", &self.scope)
            .finish()
    }
}

/// A pending interactive consent: only the hash of the `state` value is kept.
#[derive(Clone)]
pub struct ConsentSession {
    /// Hex SHA-256 of the `state` value (the value itself is never stored).
    pub state_hash: String,
    /// The PKCE code verifier.
    pub verifier: SecretString,
    /// When the session was created (unix seconds).
    pub created_at: i64,
    /// When the session stops being accepted (unix seconds).
    pub expires_at: i64,
    /// Hex SHA-256 of the browser-binding cookie set when the session opened; `/result` must
    /// come with that cookie. `None` only for sessions stored by older versions.
    pub browser_hash: Option<String>,
}

/// A single-use consent link handed to an authenticated caller: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentTicket {
    /// Hex SHA-256 of the ticket value.
    pub ticket_hash: String,
    /// When it was issued (unix seconds).
    pub created_at: i64,
    /// When it stops being accepted (unix seconds).
    pub expires_at: i64,
}

impl fmt::Debug for ConsentSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsentSession")
            .field("state_hash", &self.state_hash)
            .field("verifier", &"[REDACTED]")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("browser_hash", &self.browser_hash)
            .finish()
    }
}

/// What an idempotency key started: replaying the key returns the same operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The action that used the key.
    pub action: String,
    /// The event id the action returned.
    pub event_id: String,
    /// Hash of the parameters, to refuse the key with different parameters.
    pub params_hash: String,
    /// When the record was made (unix seconds).
    pub created_at: i64,
}

/// The asset's token lock, held until dropped (see [`StateStore::lock_tokens`]).
pub struct TokenLock {
    _lock: HeldLock,
}

/// A claim across hosts (see [`StateStore::claim`]), released when dropped.
pub struct Claim {
    _lock: shared::RedisLock,
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Claim")
    }
}

/// The lock behind a [`TokenLock`].
enum HeldLock {
    /// An advisory file lock.
    File(#[allow(dead_code)] FileLock),
    /// A Redis lock (released in the background when dropped).
    Redis(#[allow(dead_code)] shared::RedisLock),
}

impl fmt::Debug for TokenLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenLock")
    }
}

/// The per-asset state files of one state directory. Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
}

/// Shared part of a [`StateStore`].
struct Inner {
    /// The state directory.
    dir: PathBuf,
    /// Where the key came from.
    key_source: KeySource,
    /// The current cipher. Readers and writers hold it shared; key rotation holds it
    /// exclusively while it re-encrypts every file and swaps the key.
    cipher: Arc<tokio::sync::RwLock<Arc<Cipher>>>,
    /// One async lock per asset, serialising this process's operations on that asset.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The Redis store, when state is shared there instead of kept in files.
    shared: Option<shared::SharedState>,
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("dir", &self.inner.dir)
            .field("key_source", &self.inner.key_source)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens the store in `dir` (created 0700 if missing). Key: env `DEFENDER_SOAR_STATE_KEY`
    /// (base64 of 32 bytes) or `dir/state.key` (created 0600 with 32 random bytes on first
    /// run; refused if not exactly 32 bytes or accessible by group or others).
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        Self::open_with_env(dir, std::env::var_os(STATE_KEY_ENV))
    }

    /// [`StateStore::open`] with the variable's value passed in (testable without touching
    /// the process environment).
    fn open_with_env(
        dir: &Path,
        env_value: Option<std::ffi::OsString>,
    ) -> Result<StateStore, StateError> {
        create_dir(dir)?;
        let (mut key, source) = match env_value {
            Some(value) => (key::key_from_env_value(&value)?, KeySource::Env),
            None => (
                key::load_or_create_key_file(dir)?,
                KeySource::File(dir.join(KEY_FILE_NAME)),
            ),
        };
        let store = Self::build(dir, &key, source);
        key.zeroize();
        Ok(store)
    }

    /// Same as [`StateStore::open`] with an explicit key (tests, key rotation).
    pub fn with_key(dir: &Path, key: [u8; 32]) -> Result<StateStore, StateError> {
        create_dir(dir)?;
        let mut key = key;
        let store = Self::build(dir, &key, KeySource::Explicit);
        key.zeroize();
        Ok(store)
    }

    /// The store for `dir` with `key`.
    fn build(dir: &Path, key: &[u8; 32], key_source: KeySource) -> StateStore {
        StateStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                key_source,
                cipher: Arc::new(tokio::sync::RwLock::new(Arc::new(Cipher::new(key)))),
                locks: Mutex::new(HashMap::new()),
                shared: None,
            }),
        }
    }

    /// The same store (same key) keeping every asset's state in Redis instead of files; the
    /// state directory keeps only the key file (when the key comes from it).
    pub fn with_redis(&self, link: Arc<crate::redis_link::RedisLink>) -> StateStore {
        StateStore {
            inner: Arc::new(Inner {
                dir: self.inner.dir.clone(),
                key_source: self.inner.key_source.clone(),
                cipher: self.inner.cipher.clone(),
                locks: Mutex::new(HashMap::new()),
                shared: Some(shared::SharedState::new(link)),
            }),
        }
    }

    /// `files` or `redis`.
    pub fn backend_name(&self) -> &'static str {
        if self.inner.shared.is_some() {
            "redis"
        } else {
            "files"
        }
    }

    /// Every asset with stored state, sorted.
    pub async fn assets(&self) -> Result<Vec<String>, StateError> {
        if let Some(shared) = &self.inner.shared {
            return shared.assets().await;
        }
        let dir = self.inner.dir.clone();
        run_blocking(dir.clone(), move || disk::list_assets(&dir)).await
    }

    /// Loads from Redis.
    async fn load_shared(
        &self,
        shared: &shared::SharedState,
        asset_id: &str,
    ) -> Result<AssetState, StateError> {
        let cipher = self.inner.cipher.clone().read_owned().await;
        let _guard = self.asset_lock(asset_id).lock_owned().await;
        let Some(bytes) = shared.get(asset_id).await? else {
            return Ok(AssetState::default());
        };
        disk::decode(
            &self.inner.keyring(&cipher),
            asset_id,
            &shared.label(asset_id),
            &bytes,
        )
    }

    /// Read-modify-write in Redis under the asset's Redis lock.
    async fn update_shared<T, E, F>(
        &self,
        shared: &shared::SharedState,
        asset_id: &str,
        f: F,
    ) -> Result<T, UpdateError<E>>
    where
        F: FnOnce(&mut AssetState) -> Result<T, E>,
    {
        let cipher = self.inner.cipher.clone().read_owned().await;
        let _guard = self.asset_lock(asset_id).lock_owned().await;
        let lock = shared.lock("state", asset_id).await?;
        let label = shared.label(asset_id);
        let keys = self.inner.keyring(&cipher);
        let result = async {
            let mut state = match shared.get(asset_id).await? {
                Some(bytes) => disk::decode(&keys, asset_id, &label, &bytes)?,
                None => AssetState::default(),
            };
            match f(&mut state) {
                Ok(value) => {
                    let bytes = disk::encode(&cipher, asset_id, &label, &state)?;
                    shared.put_fenced(&lock, asset_id, &bytes).await?;
                    Ok(Ok(value))
                }
                Err(e) => Ok(Err(e)),
            }
        }
        .await;
        shared.unlock(lock).await;
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(UpdateError::Inner(e)),
            Err(e) => Err(UpdateError::State(e)),
        }
    }

    /// With the Redis backend, waits for the asset's claim on `name` (e.g. an Idempotency-Key)
    /// across hosts and holds it until the answer is dropped; with files, `None` at once (one
    /// process: its own locks suffice). The name is hashed into the lock's key.
    pub async fn claim(&self, asset_id: &str, name: &str) -> Result<Option<Claim>, StateError> {
        check_asset_id(asset_id)?;
        let Some(shared) = &self.inner.shared else {
            return Ok(None);
        };
        use sha2::Digest as _;
        let digest: String = sha2::Sha256::digest(name.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let lock = shared.lock(&format!("claim-{digest}"), asset_id).await?;
        Ok(Some(Claim { _lock: lock }))
    }

    /// Writes `state` as the asset's whole state (replacing what is there) and reads it back;
    /// answers whether what reads back equals `state` (migration).
    pub async fn replace_and_verify(
        &self,
        asset_id: &str,
        state: AssetState,
    ) -> Result<bool, StateError> {
        let expected = state.clone();
        self.update(asset_id, move |s| {
            *s = state;
            Ok::<(), std::convert::Infallible>(())
        })
        .await
        .map_err(UpdateError::into_state)?;
        let back = self.load(asset_id).await?;
        Ok(back.same_as(&expected))
    }

    /// The asset's state; a missing file is the default state. Never modifies the file.
    pub async fn load(&self, asset_id: &str) -> Result<AssetState, StateError> {
        check_asset_id(asset_id)?;
        if let Some(shared) = &self.inner.shared {
            return self.load_shared(shared, asset_id).await;
        }
        let cipher = self.inner.cipher.clone().read_owned().await;
        let guard = self.asset_lock(asset_id).lock_owned().await;
        let inner = self.inner.clone();
        let asset = asset_id.to_owned();
        let path = self.path(asset_id);
        run_blocking(path, move || {
            let _guard = guard;
            let keys = inner.keyring(&cipher);
            Ok(disk::read_state(&keys, &asset)?.unwrap_or_default())
        })
        .await
    }

    /// Read-modify-write under the in-process per-asset lock and the advisory file lock: reads
    /// the current file, applies `f`, writes atomically (mode 0600). If `f` returns `Err`, or
    /// the current file cannot be read, nothing is written. Returns `f`'s value.
    pub async fn update<T, E, F>(&self, asset_id: &str, f: F) -> Result<T, UpdateError<E>>
    where
        F: FnOnce(&mut AssetState) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        check_asset_id(asset_id)?;
        if let Some(shared) = &self.inner.shared {
            return self.update_shared(shared, asset_id, f).await;
        }
        let cipher = self.inner.cipher.clone().read_owned().await;
        let guard = self.asset_lock(asset_id).lock_owned().await;
        let inner = self.inner.clone();
        let asset = asset_id.to_owned();
        let path = self.path(asset_id);
        let outcome = run_blocking(path, move || {
            // Both locks stay held until the write is durable, even if the caller is gone.
            let _guard = guard;
            let keys = inner.keyring(&cipher);
            let _file_lock = FileLock::acquire(&inner.dir, &asset)?;
            disk::clean_temps(&inner.dir, &asset);
            let mut state = disk::read_state(&keys, &asset)?.unwrap_or_default();
            match f(&mut state) {
                Ok(value) => {
                    disk::write_state(&keys, &asset, &state)?;
                    Ok(Ok(value))
                }
                Err(e) => Ok(Err(e)),
            }
        })
        .await?;
        outcome.map_err(UpdateError::Inner)
    }

    /// Waits (off the async worker threads) for the asset's exclusive token lock on
    /// `dir/<asset>_token.lock` (created 0600 if missing) and holds it until the returned guard
    /// is dropped. Token requests of one asset take turns with it across processes sharing the
    /// directory. It is a different file from the lock [`StateStore::update`] takes, so the
    /// holder can still load and update the asset's state. Dropping the future while it waits
    /// releases the lock as soon as it is obtained.
    pub async fn lock_tokens(&self, asset_id: &str) -> Result<TokenLock, StateError> {
        check_asset_id(asset_id)?;
        if let Some(shared) = &self.inner.shared {
            let lock = shared.lock("tokens", asset_id).await?;
            return Ok(TokenLock {
                _lock: HeldLock::Redis(lock),
            });
        }
        let dir = self.inner.dir.clone();
        let asset = asset_id.to_owned();
        let path = disk::token_lock_path(&dir, asset_id);
        run_blocking(path, move || FileLock::acquire_token(&dir, &asset))
            .await
            .map(|lock| TokenLock {
                _lock: HeldLock::File(lock),
            })
    }

    /// `dir/<asset>_state.json`.
    pub fn path(&self, asset_id: &str) -> PathBuf {
        disk::state_path(&self.inner.dir, asset_id)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Where the current key came from.
    pub fn key_source(&self) -> &KeySource {
        &self.inner.key_source
    }

    /// Re-encrypts every state file in the directory under `new_key`, atomically per file,
    /// and from then on uses `new_key`. When the key came from the key file, the key file is
    /// replaced too (last); when it came from `DEFENDER_SOAR_STATE_KEY`, set the variable to
    /// the new key before the next start. All files are checked before any is rewritten; a
    /// file already readable with `new_key` is left as it is, so running the rotation again
    /// with the same new key completes an interrupted one. Returns how many files were
    /// re-encrypted. Stop other processes using the directory first.
    pub async fn rotate_key(&self, new_key: [u8; 32]) -> Result<usize, StateError> {
        if self.inner.shared.is_some() {
            return Err(StateError::Backend {
                asset: "*".into(),
                op: "rotate the key of",
                message: "key rotation works on state files: migrate the state to files (defender-soar migrate-state --to files), rotate, and migrate it back".into(),
            });
        }
        let mut current = self.inner.cipher.clone().write_owned().await;
        let inner = self.inner.clone();
        let dir = self.inner.dir.clone();
        run_blocking(dir, move || {
            let mut new_key = new_key;
            let new_cipher = Arc::new(Cipher::new(&new_key));
            let result = inner.rotate(&current, &new_cipher, &new_key);
            new_key.zeroize();
            let count = result?;
            *current = new_cipher;
            Ok(count)
        })
        .await
    }

    /// The in-process lock of `asset_id`.
    fn asset_lock(&self, asset_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(asset_id.to_owned()).or_default().clone()
    }
}

impl Inner {
    /// The keyring for `cipher` in this directory.
    fn keyring<'a>(&'a self, cipher: &'a Cipher) -> Keyring<'a> {
        Keyring {
            cipher,
            source: &self.key_source,
            dir: &self.dir,
        }
    }

    /// Key rotation, with the cipher held exclusively (no other operation of this store runs).
    fn rotate(&self, old: &Cipher, new: &Cipher, new_key: &[u8; 32]) -> Result<usize, StateError> {
        let assets = disk::list_assets(&self.dir)?;
        // Sorted order: deadlock-free against writers, which hold one lock at a time.
        let _locks = assets
            .iter()
            .map(|asset| FileLock::acquire(&self.dir, asset))
            .collect::<Result<Vec<_>, _>>()?;
        let old_keys = self.keyring(old);
        let new_keys = Keyring {
            cipher: new,
            source: &KeySource::Explicit,
            dir: &self.dir,
        };
        let mut pending = Vec::new();
        for asset in &assets {
            match disk::read_state(&old_keys, asset) {
                Ok(Some(state)) => pending.push((asset, state)),
                Ok(None) => {}
                Err(e @ StateError::Decrypt { .. }) => {
                    if disk::read_state(&new_keys, asset).is_err() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        for (asset, state) in &pending {
            disk::clean_temps(&self.dir, asset);
            disk::write_state(&new_keys, asset, state)?;
        }
        if let KeySource::File(path) = &self.key_source {
            key::replace_key_file(&self.dir, path, new_key)?;
        }
        Ok(pending.len())
    }
}

/// Runs blocking file work off the async threads; a panic becomes [`StateError::Internal`].
async fn run_blocking<T, F>(path: PathBuf, work: F) -> Result<T, StateError>
where
    F: FnOnce() -> Result<T, StateError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(StateError::Internal {
            path,
            message: if e.is_panic() {
                "the state operation panicked".into()
            } else {
                "the state operation was cancelled".into()
            },
        }),
    }
}

/// Creates the state directory (mode 0700) if it does not exist.
fn create_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StateError::io("directory", dir, "create", &e))
}

/// `[A-Za-z0-9_-]{1,64}`: the same rule as asset ids in the configuration.
pub(crate) fn is_valid_asset_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Refuses asset ids that cannot name a file safely.
fn check_asset_id(asset_id: &str) -> Result<(), StateError> {
    if is_valid_asset_id(asset_id) {
        Ok(())
    } else {
        Err(StateError::InvalidAssetId {
            asset_id: error::truncate(asset_id, 80),
        })
    }
}

/// Now, in unix seconds.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

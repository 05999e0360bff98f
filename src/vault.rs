//! The vault: a content-addressed store of files retrieved from devices (investigation
//! packages, live response downloads).
//!
//! A file lives at `<state_dir>/vault/<sha256>` next to `<sha256>.json`, its metadata (file
//! name, size, SHA1, SHA256, asset, device, event id, retrieval time). Content arrives through a
//! [`VaultWriter`]: streamed into a temporary file in the vault directory while both hashes are
//! computed, flushed to disk, then renamed to its SHA256. The same content stored twice is kept
//! once (the first metadata stays). Files and metadata are readable by the owner only.
//!
//! Limits (`[vault]`): a file larger than `max_file_bytes` is refused while it is written (its
//! temporary file removed); a new file that would take the vault past `max_total_bytes`
//! evicts the oldest files first, or is refused (`when_full`); no download starts, and a
//! running one stops, when the file system's free space is below `min_free_bytes`; files
//! older than `retention_days` are removed when a new file is stored.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::{Config, VaultConfig, WhenFull};

/// Longest file name kept in metadata.
const MAX_FILE_NAME: usize = 200;

/// Why the vault could not store or read a file.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A file system operation failed.
    #[error("vault: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// A metadata file could not be read.
    #[error("vault: metadata {0} is unreadable")]
    BadMetadata(String),
    /// The file is larger than `max_file_bytes`.
    #[error(
        "the file is larger than vault.max_file_bytes ({limit} bytes); it was refused and nothing was stored"
    )]
    TooLarge {
        /// `max_file_bytes`.
        limit: u64,
    },
    /// Storing the file would take the vault past `max_total_bytes` and `when_full` is
    /// `refuse` (or the file alone is larger).
    #[error(
        "the vault is full: {size} more bytes would pass vault.max_total_bytes ({limit} bytes, {used} in use); the file was refused and nothing was stored"
    )]
    Full {
        /// Size of the new file.
        size: u64,
        /// Bytes in use.
        used: u64,
        /// `max_total_bytes`.
        limit: u64,
    },
    /// The file system is below its free-space reserve.
    #[error(
        "the vault's file system has {free} bytes free, below vault.min_free_bytes ({reserve}); downloads are refused until space is freed"
    )]
    LowSpace {
        /// Free bytes.
        free: u64,
        /// `min_free_bytes`.
        reserve: u64,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> VaultError {
    let what = what.into();
    move |source| VaultError::Io { what, source }
}

/// The metadata of a stored file (`<sha256>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultEntry {
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
    #[serde(default)]
    pub device: Option<String>,
    /// Machine action (event) that produced it.
    #[serde(default)]
    pub event_id: Option<String>,
    /// When it was retrieved (RFC 3339, UTC).
    pub retrieved_at: String,
}

impl VaultEntry {
    /// The vault id (the SHA256).
    pub fn vault_id(&self) -> &str {
        &self.sha256
    }
}

/// Where a new file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// File name as offered (any path is dropped, unsafe characters replaced).
    pub file_name: String,
    /// Asset id.
    pub asset: String,
    /// Device id.
    pub device: Option<String>,
    /// Event id.
    pub event_id: Option<String>,
}

/// The result of storing a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its metadata (the first stored, when the content was already there).
    pub entry: VaultEntry,
    /// The content was already in the vault.
    pub already_present: bool,
}

/// Written between two free-space checks while storing a file.
const SPACE_CHECK_EVERY: u64 = 64 << 20;

/// Serialises the size accounting (and eviction) of files being named into the vault.
static ACCOUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The vault directory.
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
    limits: VaultConfig,
}

impl Vault {
    /// The vault of a state directory (`<state_dir>/vault`) with the default limits.
    pub fn in_state_dir(state_dir: &Path) -> Vault {
        Vault {
            dir: state_dir.join("vault"),
            limits: VaultConfig::default(),
        }
    }

    /// The configured vault: `[vault] vault_dir` (else `<state_dir>/vault`) and its limits.
    pub fn of(config: &Config) -> Vault {
        Vault {
            dir: config.vault.dir(&config.server.state_dir),
            limits: config.vault.clone(),
        }
    }

    /// This vault with other limits.
    pub fn with_limits(mut self, limits: VaultConfig) -> Vault {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &VaultConfig {
        &self.limits
    }

    /// Refuses when the file system is below `min_free_bytes` (an unreadable figure passes).
    pub fn check_space(&self) -> Result<(), VaultError> {
        let reserve = self.limits.min_free_bytes;
        if reserve == 0 {
            return Ok(());
        }
        match free_bytes(&self.dir) {
            Some(free) if free < reserve => Err(VaultError::LowSpace { free, reserve }),
            _ => Ok(()),
        }
    }

    /// Every stored file's metadata, oldest first.
    pub async fn entries(&self) -> Result<Vec<VaultEntry>, VaultError> {
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing the vault")(e)),
        };
        let mut out = Vec::new();
        while let Some(item) = dir
            .next_entry()
            .await
            .map_err(io_err("listing the vault"))?
        {
            let path = item.path();
            let is_meta = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(|stem| normalize_id(stem).as_deref() == Some(stem));
            if !is_meta {
                continue;
            }
            if let Ok(Some(entry)) = read_entry(&path).await
                && self.dir.join(&entry.sha256).is_file()
            {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| {
            a.retrieved_at
                .cmp(&b.retrieved_at)
                .then(a.sha256.cmp(&b.sha256))
        });
        Ok(out)
    }

    /// Removes a stored file and its metadata.
    pub async fn remove(&self, vault_id: &str) -> Result<(), VaultError> {
        let Some(id) = normalize_id(vault_id) else {
            return Ok(());
        };
        for path in [self.dir.join(&id), self.dir.join(format!("{id}.json"))] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing a vault file")(e)),
            }
        }
        Ok(())
    }

    /// Removes files older than `retention_days`; answers how many.
    pub async fn sweep_expired(&self) -> Result<usize, VaultError> {
        let Some(days) = self.limits.retention_days else {
            return Ok(0);
        };
        let Some(cutoff) = time::OffsetDateTime::now_utc().checked_sub(time::Duration::days(
            i64::try_from(days).unwrap_or(i64::MAX),
        )) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in self.entries().await? {
            let retrieved = time::OffsetDateTime::parse(
                &entry.retrieved_at,
                &time::format_description::well_known::Rfc3339,
            );
            if retrieved.is_ok_and(|t| t < cutoff) {
                self.remove(&entry.sha256).await?;
                tracing::info!(vault_id = %entry.sha256, "vault file past retention_days removed");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts storing a new file: content goes in through [`VaultWriter::write`].
    pub async fn writer(&self) -> Result<VaultWriter, VaultError> {
        create_dir(&self.dir).await?;
        self.check_space()?;
        if let Err(e) = self.sweep_expired().await {
            tracing::warn!(error = %e, "vault retention sweep failed");
        }
        let tmp = self
            .dir
            .join(format!(".incoming-{}", uuid::Uuid::new_v4().simple()));
        let file = open_private(&tmp).await?;
        Ok(VaultWriter {
            vault: self.clone(),
            dir: self.dir.clone(),
            tmp: Some(tmp),
            file: Some(file),
            sha1: Sha1::new(),
            sha256: Sha256::new(),
            size: 0,
        })
    }

    /// Stores bytes already in memory.
    pub async fn store_bytes(&self, bytes: &[u8], origin: Origin) -> Result<Stored, VaultError> {
        let mut w = self.writer().await?;
        w.write(bytes).await?;
        w.finish(origin).await
    }

    /// The path of a stored file, when `vault_id` is a SHA256 and the file exists.
    pub fn file_path(&self, vault_id: &str) -> Option<PathBuf> {
        let id = normalize_id(vault_id)?;
        let path = self.dir.join(&id);
        path.is_file().then_some(path)
    }

    /// The metadata of a stored file.
    pub async fn info(&self, vault_id: &str) -> Result<Option<VaultEntry>, VaultError> {
        let Some(id) = normalize_id(vault_id) else {
            return Ok(None);
        };
        if !self.dir.join(&id).is_file() {
            return Ok(None);
        }
        read_entry(&self.dir.join(format!("{id}.json"))).await
    }

    /// A stored file retrieved by `event_id` with `asset` (the oldest found), if any.
    pub async fn find_by_event(
        &self,
        asset: &str,
        event_id: &str,
    ) -> Result<Option<VaultEntry>, VaultError> {
        Ok(self.entries().await?.into_iter().find(|entry| {
            entry.asset == asset
                && entry
                    .event_id
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(event_id))
        }))
    }
}

/// A file being stored: hashes are computed as content arrives. Dropped without
/// [`finish`](Self::finish), it removes its temporary file.
pub struct VaultWriter {
    vault: Vault,
    dir: PathBuf,
    tmp: Option<PathBuf>,
    file: Option<tokio::fs::File>,
    sha1: Sha1,
    sha256: Sha256,
    size: u64,
}

impl VaultWriter {
    /// Appends content; refuses (and removes what was written) past `max_file_bytes` or below
    /// the free-space reserve.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), VaultError> {
        let limit = self.vault.limits.max_file_bytes;
        if self.size.saturating_add(chunk.len() as u64) > limit {
            self.abandon().await;
            return Err(VaultError::TooLarge { limit });
        }
        if (self.size / SPACE_CHECK_EVERY) != (self.size + chunk.len() as u64) / SPACE_CHECK_EVERY
            && let Err(e) = self.vault.check_space()
        {
            self.abandon().await;
            return Err(e);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io_err("writing a finished file")(io::Error::other(
                "already finished",
            )));
        };
        file.write_all(chunk)
            .await
            .map_err(io_err("writing to the vault"))?;
        self.sha1.update(chunk);
        self.sha256.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Closes and removes the temporary file; further writes fail.
    async fn abandon(&mut self) {
        drop(self.file.take());
        if let Some(tmp) = self.tmp.take() {
            let _ = tokio::fs::remove_file(tmp).await;
        }
    }

    /// Makes room for this file under `max_total_bytes` (oldest first), or refuses.
    async fn make_room(&self, sha256: &str) -> Result<(), VaultError> {
        let limit = self.vault.limits.max_total_bytes;
        let entries = self.vault.entries().await?;
        let mut used: u64 = entries
            .iter()
            .filter(|e| e.sha256 != sha256)
            .map(|e| e.size)
            .sum();
        if used.saturating_add(self.size) <= limit {
            return Ok(());
        }
        if self.vault.limits.when_full == WhenFull::Refuse || self.size > limit {
            return Err(VaultError::Full {
                size: self.size,
                used,
                limit,
            });
        }
        for old in entries.iter().filter(|e| e.sha256 != sha256) {
            if used.saturating_add(self.size) <= limit {
                break;
            }
            self.vault.remove(&old.sha256).await?;
            used = used.saturating_sub(old.size);
            tracing::info!(
                vault_id = %old.sha256,
                size = old.size,
                "vault file evicted to stay under vault.max_total_bytes"
            );
        }
        Ok(())
    }

    /// Flushes the content to disk, names it by its SHA256 and writes the metadata (unless the
    /// content was already stored).
    pub async fn finish(mut self, origin: Origin) -> Result<Stored, VaultError> {
        let (Some(mut file), Some(tmp)) = (self.file.take(), self.tmp.take()) else {
            return Err(io_err("finishing a file")(io::Error::other(
                "already finished",
            )));
        };
        let result = async {
            file.flush().await.map_err(io_err("writing to the vault"))?;
            file.sync_all()
                .await
                .map_err(io_err("flushing the vault file"))?;
            drop(file);
            let sha256 = hex(&std::mem::take(&mut self.sha256).finalize());
            let sha1 = hex(&std::mem::take(&mut self.sha1).finalize());
            let target = self.dir.join(&sha256);
            let meta_path = self.dir.join(format!("{sha256}.json"));
            let _accounting = ACCOUNTING.lock().await;
            if target.is_file()
                && let Ok(Some(existing)) = read_entry(&meta_path).await
            {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Ok(Stored {
                    entry: existing,
                    already_present: true,
                });
            }
            self.make_room(&sha256).await?;
            tokio::fs::rename(&tmp, &target)
                .await
                .map_err(io_err("naming the vault file"))?;
            let entry = VaultEntry {
                file_name: safe_file_name(&origin.file_name)
                    .unwrap_or_else(|| format!("{sha256}.bin")),
                size: self.size,
                sha1,
                sha256: sha256.clone(),
                asset: origin.asset,
                device: origin.device,
                event_id: origin.event_id,
                retrieved_at: now_rfc3339(),
            };
            write_entry(&self.dir, &meta_path, &entry).await?;
            sync_dir(&self.dir).await;
            Ok(Stored {
                entry,
                already_present: false,
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

impl Drop for VaultWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Free bytes for an unprivileged user on the file system of `dir` (or of its nearest existing
/// ancestor); `None` when it cannot be read.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let mut probe = Some(dir);
    while let Some(p) = probe {
        if let Ok(st) = rustix::fs::statvfs(p) {
            return Some(st.f_bavail.saturating_mul(st.f_frsize));
        }
        probe = p.parent().filter(|q| !q.as_os_str().is_empty());
    }
    rustix::fs::statvfs(".")
        .ok()
        .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
}

/// Free bytes of the file system of `dir`: not known on this platform.
#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// A SHA256 in lower case, when `id` is one (64 hex characters).
fn normalize_id(id: &str) -> Option<String> {
    let id = id.trim();
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The base name of `raw` (after the last `/` or `\`) with anything but letters, digits, `.`,
/// `-`, `_`, `(`, `)`, `+` and spaces replaced by `_`, no leading dots, at most 200 characters;
/// `None` when nothing usable is left.
pub fn safe_file_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '(' | ')' | '+' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let cut: String = trimmed.chars().take(MAX_FILE_NAME).collect();
    let cut = cut.trim_end().to_string();
    (!cut.is_empty() && cut.chars().any(|c| c != '_')).then_some(cut)
}

/// The file name of a `Content-Disposition` header (`filename*=UTF-8''…` preferred over
/// `filename="…"`), reduced by [`safe_file_name`].
pub fn content_disposition_file_name(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for part in header.split(';') {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if key == "filename*" {
            // charset'language'percent-encoded
            let encoded = value.splitn(3, '\'').nth(2).unwrap_or(value);
            extended = Some(percent_decode(encoded));
        } else if key == "filename" {
            plain = Some(value.trim_matches('"').replace("\\\"", "\""));
        }
    }
    extended
        .and_then(|n| safe_file_name(&n))
        .or_else(|| plain.and_then(|n| safe_file_name(&n)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes.get(i + 1..i + 3)
            && let Ok(text) = std::str::from_utf8(h)
            && let Ok(b) = u8::from_str_radix(text, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn create_dir(dir: &Path) -> Result<(), VaultError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(io_err(format!("creating {}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await;
    }
    Ok(())
}

async fn open_private(path: &Path) -> Result<tokio::fs::File, VaultError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
        .open(path)
        .await
        .map_err(io_err("creating a vault file"))
}

async fn read_entry(path: &Path) -> Result<Option<VaultEntry>, VaultError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| VaultError::BadMetadata(path.display().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading vault metadata")(e)),
    }
}

/// Writes metadata through a temporary file renamed into place.
async fn write_entry(dir: &Path, path: &Path, entry: &VaultEntry) -> Result<(), VaultError> {
    let tmp = dir.join(format!(".meta-{}", uuid::Uuid::new_v4().simple()));
    let body = serde_json::to_vec_pretty(entry).map_err(|e| VaultError::Io {
        what: "encoding vault metadata".into(),
        source: io::Error::other(e),
    })?;
    let result = async {
        let mut f = open_private(&tmp).await?;
        f.write_all(&body)
            .await
            .map_err(io_err("writing vault metadata"))?;
        f.sync_all()
            .await
            .map_err(io_err("flushing vault metadata"))?;
        drop(f);
        tokio::fs::rename(&tmp, path)
            .await
            .map_err(io_err("naming vault metadata"))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Makes the renames durable (best effort; not every platform can sync a directory).
async fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(name: &str, event: &str) -> Origin {
        Origin {
            file_name: name.into(),
            asset: "contoso".into(),
            device: Some("d".repeat(40)),
            event_id: Some(event.into()),
        }
    }

    fn sha256_hex(b: &[u8]) -> String {
        hex(&Sha256::digest(b))
    }

    #[tokio::test]
    async fn stores_by_sha256_with_metadata() {
        let state = tempfile::tempdir().unwrap();
        let vault = Vault::in_state_dir(state.path());
        let mut w = vault.writer().await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert_eq!(w.size(), 11);
        let stored = w.finish(origin("dir/report.zip", "e1")).await.unwrap();
        assert!(!stored.already_present);
        let e = &stored.entry;
        assert_eq!(e.sha256, sha256_hex(b"hello world"));
        assert_eq!(e.sha1, "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed");
        assert_eq!(e.size, 11);
        assert_eq!(e.file_name, "report.zip");
        assert_eq!(e.vault_id(), e.sha256);
        let path = vault.file_path(&e.sha256).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(vault.info(&e.sha256).await.unwrap().as_ref(), Some(e));
        assert_eq!(
            vault.info(&e.sha256.to_uppercase()).await.unwrap().as_ref(),
            Some(e)
        );
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(vault.dir().join(format!("{}.json", e.sha256))).unwrap(),
        )
        .unwrap();
        for key in [
            "file_name",
            "size",
            "sha1",
            "sha256",
            "asset",
            "device",
            "event_id",
            "retrieved_at",
        ] {
            assert!(meta.get(key).is_some(), "{key} missing in {meta}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Only the file and its metadata: no temporary files left.
        assert_eq!(std::fs::read_dir(vault.dir()).unwrap().count(), 2);
    }

    #[tokio::test]
    async fn same_content_twice_is_stored_once() {
        let state = tempfile::tempdir().unwrap();
        let vault = Vault::in_state_dir(state.path());
        let first = vault
            .store_bytes(b"package", origin("a.zip", "e1"))
            .await
            .unwrap();
        let second = vault
            .store_bytes(b"package", origin("b.zip", "e2"))
            .await
            .unwrap();
        assert!(second.already_present);
        assert_eq!(second.entry, first.entry, "the first metadata stays");
        assert_eq!(std::fs::read_dir(vault.dir()).unwrap().count(), 2);
        let other = vault
            .store_bytes(b"other", origin("c.zip", "e3"))
            .await
            .unwrap();
        assert_ne!(other.entry.sha256, first.entry.sha256);
        assert_eq!(std::fs::read_dir(vault.dir()).unwrap().count(), 4);
    }

    #[tokio::test]
    async fn finds_by_event_and_ignores_other_assets() {
        let state = tempfile::tempdir().unwrap();
        let vault = Vault::in_state_dir(state.path());
        assert_eq!(vault.find_by_event("contoso", "E1").await.unwrap(), None);
        let stored = vault.store_bytes(b"x", origin("a", "e1")).await.unwrap();
        assert_eq!(
            vault.find_by_event("contoso", "E1").await.unwrap(),
            Some(stored.entry)
        );
        assert_eq!(vault.find_by_event("fabrikam", "e1").await.unwrap(), None);
        assert_eq!(vault.find_by_event("contoso", "e2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn abandoned_writer_leaves_nothing() {
        let state = tempfile::tempdir().unwrap();
        let vault = Vault::in_state_dir(state.path());
        let mut w = vault.writer().await.unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(vault.dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn ids_are_checked() {
        let state = tempfile::tempdir().unwrap();
        let vault = Vault::in_state_dir(state.path());
        assert!(vault.file_path("../etc/passwd").is_none());
        assert!(vault.file_path(&"a".repeat(64)).is_none());
        assert_eq!(vault.info("nope").await.unwrap(), None);
    }

    #[test]
    fn file_names_are_made_safe() {
        assert_eq!(safe_file_name("a/b/c.zip").as_deref(), Some("c.zip"));
        assert_eq!(safe_file_name("C:\\x\\y.txt").as_deref(), Some("y.txt"));
        assert_eq!(safe_file_name("../..").as_deref(), None);
        assert_eq!(safe_file_name("..hidden").as_deref(), Some("hidden"));
        assert_eq!(safe_file_name("a\u{0}b;c").as_deref(), Some("a_b_c"));
        assert_eq!(safe_file_name("").as_deref(), None);
        assert_eq!(safe_file_name("///").as_deref(), None);
        assert_eq!(safe_file_name(&"n".repeat(500)).unwrap().len(), 200);
    }

    #[test]
    fn content_disposition_names() {
        assert_eq!(
            content_disposition_file_name(r#"attachment; filename="investigation-package-1.zip""#)
                .as_deref(),
            Some("investigation-package-1.zip")
        );
        assert_eq!(
            content_disposition_file_name(
                "attachment; filename=\"fallback.zip\"; filename*=UTF-8''r%C3%A9sum%C3%A9.zip"
            )
            .as_deref(),
            Some("résumé.zip")
        );
        assert_eq!(
            content_disposition_file_name("attachment; filename=../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(content_disposition_file_name("inline").as_deref(), None);
    }
}

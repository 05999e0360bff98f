//! The audit trail: one JSON line per state-changing request in
//! `<state_dir>/audit/<YYYY-MM-DD>.jsonl` (UTC date), each line carrying in `prev` the hex
//! SHA-256 of the previous line's bytes (the first line of a file chains to the last line of the
//! previous file, the very first to 64 zeros), so an edited or deleted line breaks the chain
//! ([`verify`]).
//!
//! Appends are serialised (in-process mutex and an advisory lock on `audit/.lock` for other
//! processes) and flushed to disk (`fsync`) before [`AuditLog::append`] returns.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `prev` of the first line ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest string value kept in `parameters` and `target` (longer ones are cut).
pub const MAX_VALUE_CHARS: usize = 256;
/// Most items of a list kept in `parameters`.
const MAX_LIST_ITEMS: usize = 20;
/// Longest outcome message kept.
const MAX_MESSAGE_CHARS: usize = 1024;
/// Largest `limit` of [`AuditLog::read`].
pub const MAX_READ_LIMIT: usize = 1000;
/// Parameter names (lower case) holding what an action is aimed at.
const TARGET_KEYS: [&str; 11] = [
    "device_id",
    "alert_id",
    "alert_ids",
    "incident_id",
    "indicator_value",
    "indicator_id",
    "indicator_ids",
    "file_hash",
    "vault_id",
    "event_id",
    "file_path",
];
/// Parts of parameter names that mark a secret or file contents: such parameters are dropped.
const SECRET_MARKS: [&str; 10] = [
    "secret",
    "token",
    "password",
    "passwd",
    "content",
    "credential",
    "cookie",
    "authorization",
    "api_key",
    "private",
];

/// The answer recorded for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOutcome {
    /// HTTP status answered.
    pub status: u16,
    /// The answer's message (cut to 1,024 characters).
    pub message: String,
}

/// One line of the audit trail, before its `time` and `prev` are set.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    /// The API key's name (`cli` for the command line).
    pub key: String,
    /// The caller's address (`-` when unknown).
    pub addr: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
    /// Asset id.
    pub asset: String,
    /// Action id (`consent`, `consent_ticket` for consent starts and opened consent links).
    pub action: String,
    /// The parameters (unfiltered: [`AuditLog::append`] drops secrets and cuts values).
    pub parameters: Map<String, Value>,
    /// Event (machine action) id from the answer's summary.
    pub event_id: Option<String>,
    /// HTTP status and message of the answer; `None` until known.
    pub outcome: Option<AuditOutcome>,
}

/// One line as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditLine {
    /// When it was written (RFC 3339, UTC).
    pub time: String,
    /// API key name.
    pub key: String,
    /// Caller address.
    pub addr: String,
    /// Request id.
    pub request_id: String,
    /// Asset id.
    pub asset: String,
    /// Action id.
    pub action: String,
    /// What the action aimed at (device id, indicator, alert id, file hash, …), from the
    /// parameters.
    pub target: Map<String, Value>,
    /// Parameters without secrets or file contents, values cut.
    pub parameters: Map<String, Value>,
    /// Event id from the answer.
    pub event_id: Option<String>,
    /// Status and message of the answer.
    pub outcome: AuditOutcome,
    /// Hex SHA-256 of the previous line's bytes.
    pub prev: String,
}

/// Why the audit trail could not be written, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit trail: cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The chain is broken at this line.
    #[error("audit trail broken at {file} line {line}: {reason}")]
    Broken {
        /// File name.
        file: String,
        /// Line number (from 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A bad query.
    #[error("{0}")]
    Query(String),
}

fn io_at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.display().to_string();
    move |source| AuditError::Io { what, path, source }
}

/// Where the last line is: file, its length then, and the line's hash.
#[derive(Debug, Clone)]
struct Head {
    file: PathBuf,
    len: u64,
    hash: String,
}

/// The audit trail of a host.
#[derive(Debug, Clone)]
pub struct AuditLog {
    dir: PathBuf,
    head: Arc<Mutex<Option<Head>>>,
}

/// A page of [`AuditLog::read`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Lines, oldest first (newest last).
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<Value>,
    /// Cursor of the next page (pass it as `cursor`); `null` when this page reached the end.
    pub next: Option<String>,
}

impl AuditLog {
    /// The trail in `dir` (created on first append).
    pub fn new(dir: PathBuf) -> AuditLog {
        AuditLog {
            dir,
            head: Arc::new(Mutex::new(None)),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a line can be appended now (the directory exists or can be created and today's
    /// file opens for appending). Checked before a state-changing action runs.
    pub async fn check_writable(&self) -> Result<(), AuditError> {
        let this = self.clone();
        blocking(move || {
            create_dir(&this.dir)?;
            let path = this.dir.join(file_name(OffsetDateTime::now_utc()));
            open_append(&path).map(|_| ())
        })
        .await
    }

    /// Appends `record` (secrets dropped, values cut), fsynced before returning.
    pub async fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        let this = self.clone();
        blocking(move || this.append_blocking(record)).await
    }

    /// [`AuditLog::append`] on the calling thread.
    pub fn append_blocking(&self, record: AuditRecord) -> Result<(), AuditError> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        create_dir(&self.dir)?;
        let lock_path = self.dir.join(".lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_at("open", &lock_path))?;
        lock.lock().map_err(io_at("lock", &lock_path))?;
        let now = OffsetDateTime::now_utc();
        let path = self.dir.join(file_name(now));
        let prev = match head.as_ref() {
            Some(h)
                if current_len(&h.file) == Some(h.len)
                    && newest_file(&self.dir)? == Some(h.file.clone()) =>
            {
                h.hash.clone()
            }
            _ => last_hash(&self.dir)?,
        };
        let parameters = sanitize(&record.parameters);
        let target = parameters
            .iter()
            .filter(|(k, _)| TARGET_KEYS.contains(&k.to_ascii_lowercase().as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let outcome = record.outcome.unwrap_or(AuditOutcome {
            status: 0,
            message: String::new(),
        });
        let line = AuditLine {
            time: now.format(&Rfc3339).unwrap_or_default(),
            key: cut(&record.key, 64),
            addr: cut(&record.addr, 64),
            request_id: cut(&record.request_id, 128),
            asset: cut(&record.asset, 64),
            action: cut(&record.action, 64),
            target,
            parameters,
            event_id: record.event_id.map(|e| cut(&e, 128)),
            outcome: AuditOutcome {
                status: outcome.status,
                message: cut(&outcome.message, MAX_MESSAGE_CHARS),
            },
            prev,
        };
        let bytes = serde_json::to_vec(&line).map_err(|e| AuditError::Io {
            what: "encode a line for",
            path: path.display().to_string(),
            source: io::Error::other(e),
        })?;
        let mut file = open_append(&path)?;
        let mut out = bytes.clone();
        out.push(b'\n');
        file.write_all(&out).map_err(io_at("write", &path))?;
        file.sync_all().map_err(io_at("sync", &path))?;
        let len = file
            .metadata()
            .map_err(io_at("read the size of", &path))?
            .len();
        *head = Some(Head {
            file: path,
            len,
            hash: hex(&Sha256::digest(&bytes)),
        });
        drop(lock);
        Ok(())
    }

    /// Up to `limit` lines (at most [`MAX_READ_LIMIT`]) from `since` (an RFC 3339 time or a
    /// `YYYY-MM-DD` date, inclusive) or from `cursor` (a previous page's `next`), oldest first.
    pub fn read(
        &self,
        since: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, AuditError> {
        let limit = limit.clamp(1, MAX_READ_LIMIT);
        let (start_file, start_line, since_time) = match (cursor, since) {
            (Some(c), _) => {
                let (file, line) = c
                    .split_once(':')
                    .and_then(|(f, l)| {
                        let digits =
                            !l.is_empty() && l.len() <= 18 && l.bytes().all(|b| b.is_ascii_digit());
                        Some((f, l.parse::<usize>().ok().filter(|_| digits)?))
                    })
                    .filter(|(f, _)| is_date(f))
                    .ok_or_else(|| {
                        AuditError::Query(
                            "parameter 'cursor': must be the 'next' value of a previous answer"
                                .into(),
                        )
                    })?;
                (file.to_string(), line, None)
            }
            (None, Some(s)) if is_date(s) => (s.to_string(), 0, None),
            (None, Some(s)) => {
                let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
                    AuditError::Query(
                        "parameter 'since': must be an RFC 3339 time (2024-05-01T10:00:00Z) or a date (2024-05-01)".into(),
                    )
                })?;
                let t = t.to_offset(time::UtcOffset::UTC);
                (date_of(t), 0, Some(t))
            }
            (None, None) => (String::new(), 0, None),
        };
        let mut lines = Vec::new();
        for (name, path) in files(&self.dir)? {
            let date = name.trim_end_matches(".jsonl");
            if date < start_file.as_str() {
                continue;
            }
            let file = File::open(&path).map_err(io_at("open", &path))?;
            for (i, line) in BufReader::new(file).lines().enumerate() {
                let line = line.map_err(io_at("read", &path))?;
                if date == start_file && i < start_line {
                    continue;
                }
                let value: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if let Some(t) = since_time {
                    let at = value
                        .get("time")
                        .and_then(Value::as_str)
                        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
                    if at.is_some_and(|at| at < t) {
                        continue;
                    }
                }
                if lines.len() == limit {
                    return Ok(AuditPage {
                        lines,
                        next: Some(format!("{date}:{i}")),
                    });
                }
                lines.push(value);
            }
        }
        Ok(AuditPage { lines, next: None })
    }
}

impl AuditLog {
    /// The newest `n` lines about `asset` (newest first), from the last [`RECENT_DAYS`] days'
    /// files; lines that do not parse are skipped.
    pub async fn recent(&self, asset: &str, n: usize) -> Result<Vec<AuditLine>, AuditError> {
        let dir = self.dir.clone();
        let asset = asset.to_string();
        blocking(move || {
            let mut out = Vec::new();
            for (_, path) in files(&dir)?.into_iter().rev().take(RECENT_DAYS) {
                let text = std::fs::read_to_string(&path).map_err(io_at("read", &path))?;
                for line in text.lines().rev() {
                    if out.len() == n {
                        return Ok(out);
                    }
                    if let Ok(l) = serde_json::from_str::<AuditLine>(line)
                        && l.asset == asset
                    {
                        out.push(l);
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}

/// How many daily files [`AuditLog::recent`] looks through.
pub const RECENT_DAYS: usize = 7;

/// Walks every file of the trail in date order: the number of lines verified, or where the
/// chain first breaks.
pub fn verify(dir: &Path) -> Result<usize, AuditError> {
    let mut expected = GENESIS.to_string();
    let mut count = 0;
    for (name, path) in files(dir)? {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_at("read", &path))?;
        let broken = |line: usize, reason: String| AuditError::Broken {
            file: name.clone(),
            line,
            reason,
        };
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let n = bytes.split(|b| *b == b'\n').count();
            return Err(broken(n, "the last line is incomplete (no newline)".into()));
        }
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if i + 1 == bytes.split(|b| *b == b'\n').count() && line.is_empty() {
                break;
            }
            let parsed: AuditLine = serde_json::from_slice(line)
                .map_err(|_| broken(i + 1, "not an audit line (invalid JSON)".into()))?;
            if parsed.prev != expected {
                return Err(broken(
                    i + 1,
                    "'prev' does not match the previous line: a line before it was edited, removed or inserted, or this line was".into(),
                ));
            }
            expected = hex(&Sha256::digest(line));
            count += 1;
        }
    }
    Ok(count)
}

/// Parameters without secrets and file contents, every value cut to size.
pub fn sanitize(parameters: &Map<String, Value>) -> Map<String, Value> {
    parameters
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !SECRET_MARKS.iter().any(|m| k.contains(m))
        })
        .map(|(k, v)| {
            // A callback URL may carry a token in its path or query: its origin only.
            if k == crate::callbacks::URL_PARAM
                && let Some(origin) = v
                    .as_str()
                    .and_then(|u| url::Url::parse(u.trim()).ok())
                    .map(|u| u.origin().ascii_serialization())
            {
                return (k.clone(), Value::String(origin));
            }
            (cut(k, 64), cut_value(v, 0))
        })
        .collect()
}

fn cut_value(v: &Value, depth: usize) -> Value {
    match v {
        Value::String(s) => Value::String(cut(s, MAX_VALUE_CHARS)),
        Value::Array(items) if depth < 2 => Value::Array(
            items
                .iter()
                .take(MAX_LIST_ITEMS)
                .map(|i| cut_value(i, depth + 1))
                .collect(),
        ),
        Value::Object(map) if depth < 2 => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    !SECRET_MARKS.iter().any(|m| k.contains(m))
                })
                .take(MAX_LIST_ITEMS)
                .map(|(k, v)| (cut(k, 64), cut_value(v, depth + 1)))
                .collect(),
        ),
        Value::Array(_) | Value::Object(_) => Value::String("[cut]".into()),
        other => other.clone(),
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn date_of(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn file_name(t: OffsetDateTime) -> String {
    format!("{}.jsonl", date_of(t))
}

fn is_date(s: &str) -> bool {
    s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// The trail's files (`YYYY-MM-DD.jsonl`), in date order.
fn files(dir: &Path) -> Result<Vec<(String, PathBuf)>, AuditError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_at("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.strip_suffix(".jsonl").is_some_and(is_date) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn newest_file(dir: &Path) -> Result<Option<PathBuf>, AuditError> {
    Ok(files(dir)?.pop().map(|(_, p)| p))
}

fn current_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// The hash of the trail's last line ([`GENESIS`] when there is none).
fn last_hash(dir: &Path) -> Result<String, AuditError> {
    for (_, path) in files(dir)?.into_iter().rev() {
        let mut file = File::open(&path).map_err(io_at("open", &path))?;
        let len = file.metadata().map_err(io_at("read", &path))?.len();
        let start = len.saturating_sub(1 << 20);
        file.seek(SeekFrom::Start(start))
            .map_err(io_at("read", &path))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).map_err(io_at("read", &path))?;
        let trimmed = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if trimmed.is_empty() {
            continue;
        }
        let last = trimmed.rsplit(|b| *b == b'\n').next().unwrap_or(trimmed);
        return Ok(hex(&Sha256::digest(last)));
    }
    Ok(GENESIS.to_string())
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_at("create", dir))
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at("open", path))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuditError::Io {
            what: "run a task for",
            path: "the audit trail".into(),
            source: io::Error::other(e.to_string()),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        let mut parameters = Map::new();
        parameters.insert("device_id".into(), Value::String(format!("dev-{i}")));
        parameters.insert("client_secret".into(), Value::String("s3cr3t".into()));
        parameters.insert("content".into(), Value::String("file bytes".into()));
        parameters.insert("comment".into(), Value::String("x".repeat(1000)));
        AuditRecord {
            key: "soc".into(),
            addr: "127.0.0.1".into(),
            request_id: "r".into(),
            asset: "a".into(),
            action: "isolate".into(),
            parameters,
            event_id: Some("e".into()),
            outcome: Some(AuditOutcome {
                status: 200,
                message: "ok".into(),
            }),
        }
    }

    #[test]
    fn chain_verifies_and_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("audit"));
        assert_eq!(verify(log.dir()).unwrap(), 0);
        for i in 0..5 {
            log.append_blocking(record(i)).unwrap();
        }
        assert_eq!(verify(log.dir()).unwrap(), 5);
        let (name, path) = files(log.dir()).unwrap().pop().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cr3t") && !text.contains("file bytes"));
        assert!(text.contains("\"target\":{\"device_id\":\"dev-0\"}"));
        // A previous day's file: today's first line chains to its last line.
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(&format!("\"prev\":\"{GENESIS}\"}}")));
        let edited = text.replacen("dev-2", "dev-9", 1);
        std::fs::write(&path, edited).unwrap();
        match verify(log.dir()) {
            Err(AuditError::Broken { file, line, .. }) => {
                assert_eq!(file, name);
                assert_eq!(line, 4);
            }
            other => panic!("{other:?}"),
        }
        let page = log.read(None, None, 2).unwrap();
        assert_eq!(page.lines.len(), 2);
        let next = log.read(None, page.next.as_deref(), 10).unwrap();
        assert_eq!(next.lines.len(), 3);
        assert!(next.next.is_none());
        assert!(log.read(Some("yesterday"), None, 1).is_err());
    }

    #[test]
    fn chains_across_days() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit");
        let log = AuditLog::new(audit.clone());
        log.append_blocking(record(0)).unwrap();
        let (_, today) = files(&audit).unwrap().pop().unwrap();
        // Move today's lines to an earlier day; the next append chains to them.
        std::fs::rename(&today, audit.join("2000-01-01.jsonl")).unwrap();
        let log = AuditLog::new(audit.clone());
        log.append_blocking(record(1)).unwrap();
        assert_eq!(verify(&audit).unwrap(), 2);
        assert_eq!(
            log.read(Some("2000-01-02"), None, 10).unwrap().lines.len(),
            1
        );
    }

    #[test]
    fn sanitized_parameters_keep_no_secret_nor_a_callback_token() {
        let mut p = Map::new();
        p.insert("device_id".into(), Value::String("pc01".into()));
        p.insert("client_secret".into(), Value::String("hunter2".into()));
        p.insert(
            "callback_url".into(),
            Value::String("https://hooks.example.com/w/abc?token=t0ps3cret".into()),
        );
        let out = sanitize(&p);
        assert_eq!(out["device_id"], "pc01");
        assert!(!out.contains_key("client_secret"));
        assert_eq!(out["callback_url"], "https://hooks.example.com");
        assert!(!serde_json::to_string(&out).unwrap().contains("t0ps3cret"));
    }
}

//! The durable per-asset event journal: append-only JSON lines
//! (`<state_dir>/<asset>_alerts.journal`), each `{"seq": N, "event": {...}}`, fsynced on every
//! append. Event keys already in the journal are skipped (an in-memory index, rebuilt on
//! open). A torn last line left by a crash is dropped (the file is truncated) on open.
//!
//! The journal is the outbox of the webhooks and the store of the feed, and it is bounded: once
//! it holds more than `max_events` (plus a tenth, so compaction is rare) it is rewritten with
//! the newest `max_events` only — into a new file, fsynced, then renamed over the old one, so a
//! crash leaves one or the other. The rewritten file starts with a header line
//! `{"base": B, "alert_ids": [...]}`: the sequence number before its first record, and the ids
//! of every alert ever journaled (so an alert whose events were dropped is still known).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether an event is an alert seen for the first time or an update of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The alert as created (or first seen).
    Created,
    /// The alert after its last update moved.
    Updated,
}

/// One ingested alert (or update of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `<alert id>@<last update>`: stable, so receivers can deduplicate.
    pub event_key: String,
    /// `created` or `updated`.
    pub kind: EventKind,
    /// The asset id.
    pub asset: String,
    /// `graph` or `mde`.
    pub source: String,
    /// The alert as Microsoft returned it.
    pub alert: Value,
}

impl Event {
    /// The alert's `id`, when it has one.
    pub fn alert_id(&self) -> Option<&str> {
        self.alert.get("id").and_then(Value::as_str)
    }
}

/// The first line of a compacted journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    /// Sequence number before the first record.
    base: u64,
    /// Ids of every alert journaled, including those whose events were dropped.
    alert_ids: Vec<String>,
}

/// A journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// Errors of the journal (I/O, or a damaged line before the end).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("alert journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line other than the last is not a journal record.
    #[error("alert journal {path}: line {line} is damaged")]
    Damaged {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    keys: HashSet<String>,
    /// Ids of the alerts with an event in the journal (or dropped from it).
    alert_ids: HashSet<String>,
    /// Sequence number before the first record kept.
    base: u64,
    /// Byte offset of each record's line; record `seq` is at `offsets[seq - base - 1]`.
    offsets: Vec<u64>,
    end: u64,
    /// Most records kept (see the module documentation).
    max_events: usize,
    /// Events dropped by compaction since the journal was opened.
    dropped: u64,
}

/// Default most events a journal keeps.
pub const DEFAULT_MAX_EVENTS: usize = 100_000;

/// The journal file of an asset in a state directory.
pub fn journal_path(state_dir: &Path, asset: &str) -> PathBuf {
    state_dir.join(format!("{asset}_alerts.journal"))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, keeping at most `max_events` events (at
    /// least 1), rebuilding the index and dropping a torn last line.
    pub fn open(path: &Path, max_events: usize) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        // A compaction the host did not finish: the journal itself is intact.
        let _ = std::fs::remove_file(path.with_extension("journal.compacting"));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut keys = HashSet::new();
        let mut alert_ids = HashSet::new();
        let mut offsets = Vec::new();
        let mut pos = 0usize;
        let mut line_no = 0usize;
        let mut base = 0u64;
        if let Some(n) = bytes.iter().position(|b| *b == b'\n')
            && let Ok(header) = serde_json::from_slice::<Header>(&bytes[..n])
        {
            base = header.base;
            alert_ids.extend(header.alert_ids);
            pos = n + 1;
            line_no = 1;
        }
        while pos < bytes.len() {
            line_no += 1;
            let rest = &bytes[pos..];
            let (line, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(n) => (&rest[..n], true),
                None => (rest, false),
            };
            let parsed = serde_json::from_slice::<Record>(line)
                .ok()
                .filter(|r| r.seq == base + offsets.len() as u64 + 1);
            match parsed {
                Some(r) if complete => {
                    offsets.push(pos as u64);
                    if let Some(id) = r.event.alert_id() {
                        alert_ids.insert(id.to_string());
                    }
                    keys.insert(r.event.event_key);
                    pos += line.len() + 1;
                }
                _ => {
                    let last = !complete || pos + line.len() + 1 == bytes.len();
                    if !last {
                        return Err(JournalError::Damaged {
                            path: path.to_owned(),
                            line: line_no,
                        });
                    }
                    tracing::warn!(
                        journal = %path.display(),
                        "dropping a torn last line of the alert journal"
                    );
                    file.set_len(pos as u64).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    break;
                }
            }
        }
        Ok(Journal {
            path: path.to_owned(),
            file,
            keys,
            alert_ids,
            base,
            offsets,
            end: pos as u64,
            max_events: max_events.max(1),
            dropped: 0,
        })
    }

    /// Appends the events whose key is not in the journal yet (nor earlier in `events`),
    /// then fsyncs. Answers how many were appended.
    pub fn append(&mut self, events: &[Event]) -> Result<usize, JournalError> {
        self.append_marking(events).map(|taken| taken.len())
    }

    /// [`Journal::append`], answering the positions in `events` of those appended.
    fn append_marking(&mut self, events: &[Event]) -> Result<Vec<usize>, JournalError> {
        let mut buf = Vec::new();
        let mut new_offsets = Vec::new();
        let mut new_keys = Vec::new();
        let mut taken = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if self.keys.contains(&event.event_key) || new_keys.contains(&&event.event_key) {
                continue;
            }
            taken.push(i);
            let record = Record {
                seq: self.base + (self.offsets.len() + new_offsets.len()) as u64 + 1,
                event: event.clone(),
            };
            new_offsets.push(self.end + buf.len() as u64);
            // Serialising a Value-backed struct cannot fail.
            serde_json::to_writer(&mut buf, &record).map_err(|e| JournalError::Io {
                path: self.path.clone(),
                source: e.into(),
            })?;
            buf.push(b'\n');
            new_keys.push(&event.event_key);
        }
        if buf.is_empty() {
            return Ok(taken);
        }
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no partial record behind: the next open would drop it anyway.
            let _ = self.file.set_len(self.end);
            return Err(io(e));
        }
        for event in events {
            if let Some(id) = event.alert_id() {
                self.alert_ids.insert(id.to_string());
            }
        }
        self.keys.extend(new_keys.into_iter().cloned());
        self.offsets.extend(new_offsets);
        self.end += buf.len() as u64;
        if self.offsets.len() > self.max_events + self.max_events / 10 {
            self.compact()?;
        }
        Ok(taken)
    }

    /// Rewrites the journal with its newest `max_events` records (see the module docs).
    fn compact(&mut self) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let drop_n = self.offsets.len().saturating_sub(self.max_events);
        let Some(&keep_from) = self.offsets.get(drop_n) else {
            return Ok(());
        };
        let mut old = File::open(&self.path).map_err(io)?;
        // The keys of dropped events leave the index: their alerts are past every overlap.
        old.seek(SeekFrom::Start(self.offsets[0])).map_err(io)?;
        let dropped_part = BufReader::new((&mut old).take(keep_from - self.offsets[0]));
        for line in dropped_part.lines() {
            let line = line.map_err(io)?;
            if let Ok(r) = serde_json::from_str::<Record>(&line) {
                self.keys.remove(&r.event.event_key);
            }
        }
        let mut alert_ids: Vec<String> = self.alert_ids.iter().cloned().collect();
        alert_ids.sort();
        let new_base = self.base + drop_n as u64;
        let mut header = serde_json::to_vec(&Header {
            base: new_base,
            alert_ids,
        })
        .map_err(|e| io(e.into()))?;
        header.push(b'\n');
        let tmp = self.path.with_extension("journal.compacting");
        let mut out = File::create(&tmp).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        old.seek(SeekFrom::Start(keep_from)).map_err(io)?;
        std::io::copy(&mut (&mut old).take(self.end - keep_from), &mut out).map_err(io)?;
        out.sync_all().map_err(io)?;
        drop(out);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        let shift = keep_from - header.len() as u64;
        self.offsets = self.offsets[drop_n..].iter().map(|o| o - shift).collect();
        self.end -= shift;
        self.base = new_base;
        self.dropped += drop_n as u64;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        tracing::info!(
            journal = %self.path.display(),
            dropped = drop_n,
            kept = self.offsets.len(),
            "alert journal compacted"
        );
        Ok(())
    }

    /// Everything the journal holds, for `migrate-state`: the sequence number before its
    /// first record, its records, and every alert id journaled (sorted).
    pub fn export(&self) -> Result<JournalCopy, JournalError> {
        let mut alert_ids: Vec<String> = self.alert_ids.iter().cloned().collect();
        alert_ids.sort();
        Ok(JournalCopy {
            base: self.base,
            records: self.read_from(0, usize::MAX)?,
            alert_ids,
        })
    }

    /// Writes `copy` as the journal at `path` (replacing any: temporary file, fsync, rename),
    /// keeping its sequence numbers.
    pub fn import(path: &Path, copy: &JournalCopy) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let mut bytes = serde_json::to_vec(&Header {
            base: copy.base,
            alert_ids: copy.alert_ids.clone(),
        })
        .map_err(|e| io(e.into()))?;
        bytes.push(b'\n');
        for r in &copy.records {
            serde_json::to_writer(&mut bytes, r).map_err(|e| io(e.into()))?;
            bytes.push(b'\n');
        }
        let tmp = path.with_extension("journal.importing");
        let mut out = File::create(&tmp).map_err(io)?;
        out.write_all(&bytes).map_err(io)?;
        out.sync_all().map_err(io)?;
        drop(out);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Whether an event key is in the journal.
    pub fn contains(&self, event_key: &str) -> bool {
        self.keys.contains(event_key)
    }

    /// Whether an event of the alert `id` is in the journal.
    pub fn has_alert(&self, id: &str) -> bool {
        self.alert_ids.contains(id)
    }

    /// The last sequence number (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.base + self.offsets.len() as u64
    }

    /// The sequence number before the oldest event kept (0 until compaction dropped some).
    pub fn first_kept_after(&self) -> u64 {
        self.base
    }

    /// Events kept in the file.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Events dropped by compaction since the journal was opened.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Size of the file in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.end
    }

    /// Up to `limit` records with a sequence number above `cursor`, in order (from the oldest
    /// kept when `cursor` is older than that).
    pub fn read_from(&self, cursor: u64, limit: usize) -> Result<Vec<Record>, JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let cursor = cursor.max(self.base);
        let Some(&start) = usize::try_from(cursor - self.base)
            .ok()
            .and_then(|c| self.offsets.get(c))
        else {
            return Ok(Vec::new());
        };
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let reader = BufReader::new(file.take(self.end - start));
        let mut out = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            if out.len() >= limit {
                break;
            }
            let line = line.map_err(io)?;
            let record: Record =
                serde_json::from_str(&line).map_err(|_| JournalError::Damaged {
                    path: self.path.clone(),
                    line: (cursor - self.base) as usize + i + 1 + usize::from(self.base > 0),
                })?;
            out.push(record);
        }
        Ok(out)
    }
}

/// A whole journal, moved between the file and Redis by `migrate-state`.
#[derive(Debug, Clone, Default)]
pub struct JournalCopy {
    /// The sequence number before the first record.
    pub base: u64,
    /// The records, in order.
    pub records: Vec<Record>,
    /// Every alert id journaled, sorted.
    pub alert_ids: Vec<String>,
}

impl JournalCopy {
    /// The last sequence number.
    pub fn last_seq(&self) -> u64 {
        self.records.last().map_or(self.base, |r| r.seq)
    }

    /// Whether `other` holds the same records (by sequence number and event key) and the same
    /// alert ids.
    pub fn same_as(&self, other: &JournalCopy) -> bool {
        self.base == other.base
            && self.alert_ids == other.alert_ids
            && self.records.len() == other.records.len()
            && self
                .records
                .iter()
                .zip(&other.records)
                .all(|(a, b)| a.seq == b.seq && a.event == b.event)
    }
}

/// Numbers about a journal, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// The last sequence number.
    pub last_seq: u64,
    /// The sequence number before the oldest event kept.
    pub first_kept_after: u64,
    /// Events kept.
    pub events: usize,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Events dropped by compaction since start.
    pub dropped: u64,
}

/// A journal shared by the poller, the webhook deliveries and the feed: the asset's file
/// (file work on the blocking pool, never on the async workers) or, with the Redis backend,
/// the asset's journal in Redis shared by every host. [`SharedJournal::subscribe`] wakes whoever
/// waits for new events (for Redis, appends of other hosts are noticed within
/// [`REDIS_WATCH`]).
#[derive(Debug, Clone)]
pub struct SharedJournal {
    store: Store,
    last_seq: Arc<tokio::sync::watch::Sender<u64>>,
    /// Whether the task following another host's appends runs (Redis only).
    watching: Arc<std::sync::atomic::AtomicBool>,
}

/// Where a [`SharedJournal`] keeps its events.
#[derive(Debug, Clone)]
enum Store {
    File {
        inner: Arc<Mutex<Journal>>,
        path: PathBuf,
    },
    Redis(super::redis_journal::RedisJournal),
}

/// How often a journal in Redis is checked for other hosts' appends while someone waits.
pub const REDIS_WATCH: std::time::Duration = std::time::Duration::from_millis(250);

impl SharedJournal {
    /// Shares `journal`.
    pub fn new(journal: Journal) -> SharedJournal {
        let (tx, _) = tokio::sync::watch::channel(journal.last_seq());
        SharedJournal {
            store: Store::File {
                path: journal.path.clone(),
                inner: Arc::new(Mutex::new(journal)),
            },
            last_seq: Arc::new(tx),
            watching: Arc::default(),
        }
    }

    /// Shares the journal in Redis.
    pub fn redis(journal: super::redis_journal::RedisJournal) -> SharedJournal {
        let (tx, _) = tokio::sync::watch::channel(0);
        SharedJournal {
            store: Store::Redis(journal),
            last_seq: Arc::new(tx),
            watching: Arc::default(),
        }
    }

    /// Runs `f` on the file journal on the blocking pool.
    async fn with<R: Send + 'static>(
        inner: &Arc<Mutex<Journal>>,
        path: &Path,
        f: impl FnOnce(&mut Journal) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        let shared = inner.clone();
        match tokio::task::spawn_blocking(move || {
            let mut journal = shared.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut journal)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => Err(JournalError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("journal task ended: {e}")),
            }),
        }
    }

    /// [`Journal::append`], then wakes the subscribers. Answers the events appended (those
    /// whose key the journal did not hold).
    pub async fn append(&self, events: Vec<Event>) -> Result<Vec<Event>, JournalError> {
        let (taken, last) = match &self.store {
            Store::File { inner, path } => {
                Self::with(inner, path, move |j| {
                    let taken = j.append_marking(&events)?;
                    let mut events: Vec<Option<Event>> = events.into_iter().map(Some).collect();
                    let taken: Vec<Event> = taken
                        .into_iter()
                        .filter_map(|i| events.get_mut(i).and_then(Option::take))
                        .collect();
                    Ok((taken, j.last_seq()))
                })
                .await?
            }
            Store::Redis(j) => j.append(events).await?,
        };
        self.last_seq.send_if_modified(|seq| {
            let moved = *seq != last;
            *seq = last;
            moved
        });
        Ok(taken)
    }

    /// [`Journal::read_from`].
    pub async fn read_from(&self, cursor: u64, limit: usize) -> Result<Vec<Record>, JournalError> {
        match &self.store {
            Store::File { inner, path } => {
                Self::with(inner, path, move |j| j.read_from(cursor, limit)).await
            }
            Store::Redis(j) => j.read_from(cursor, limit).await,
        }
    }

    /// Which of the alert `ids` have an event in the journal.
    pub async fn alerts_known(&self, ids: Vec<String>) -> Result<HashSet<String>, JournalError> {
        match &self.store {
            Store::File { inner, path } => {
                Self::with(inner, path, move |j| {
                    Ok(ids.into_iter().filter(|i| j.has_alert(i)).collect())
                })
                .await
            }
            Store::Redis(j) => j.alerts_known(ids).await,
        }
    }

    /// Numbers about the journal.
    pub async fn stats(&self) -> Result<JournalStats, JournalError> {
        match &self.store {
            Store::File { inner, path } => {
                Self::with(inner, path, |j| {
                    Ok(JournalStats {
                        last_seq: j.last_seq(),
                        first_kept_after: j.first_kept_after(),
                        events: j.len(),
                        size_bytes: j.size_bytes(),
                        dropped: j.dropped(),
                    })
                })
                .await
            }
            Store::Redis(j) => j.stats().await,
        }
    }

    /// The last sequence number, updated after every append (in Redis, also after other
    /// hosts' appends: from the first subscription on, a task checks every [`REDIS_WATCH`]
    /// for as long as the journal lives).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let rx = self.last_seq.subscribe();
        if let Store::Redis(journal) = &self.store
            && !self
                .watching
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let journal = journal.clone();
            let tx = Arc::downgrade(&self.last_seq);
            let watching = self.watching.clone();
            handle.spawn(async move {
                loop {
                    let Some(tx) = tx.upgrade() else { break };
                    if let Ok(last) = journal.last_seq().await {
                        tx.send_if_modified(|seq| {
                            let moved = *seq != last;
                            *seq = last;
                            moved
                        });
                    }
                    drop(tx);
                    tokio::time::sleep(REDIS_WATCH).await;
                }
                watching.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(key: &str) -> Event {
        Event {
            event_key: key.into(),
            kind: EventKind::Created,
            asset: "contoso".into(),
            source: "graph".into(),
            alert: json!({"id": key}),
        }
    }

    #[test]
    fn appends_skip_known_keys_and_read_from_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "contoso");
        let mut j = Journal::open(&path, DEFAULT_MAX_EVENTS).unwrap();
        assert_eq!(
            j.append(&[event("a@1"), event("b@1"), event("a@1")])
                .unwrap(),
            2
        );
        assert_eq!(j.append(&[event("b@1"), event("c@1")]).unwrap(), 1);
        assert_eq!(j.last_seq(), 3);
        let all = j.read_from(0, 100).unwrap();
        let keys: Vec<_> = all.iter().map(|r| r.event.event_key.as_str()).collect();
        assert_eq!(keys, ["a@1", "b@1", "c@1"]);
        assert_eq!(all[2].seq, 3);
        let rest = j.read_from(1, 1).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].event.event_key, "b@1");
        assert!(j.read_from(3, 10).unwrap().is_empty());
        assert!(j.read_from(99, 10).unwrap().is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], 1);
        assert_eq!(first["event"]["kind"], "created");
    }

    #[test]
    fn reopen_keeps_the_index_and_drops_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "contoso");
        {
            let mut j = Journal::open(&path, DEFAULT_MAX_EVENTS).unwrap();
            j.append(&[event("a@1"), event("b@1")]).unwrap();
        }
        let good_len = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"event\":{\"event_k").unwrap();
        drop(f);
        let mut j = Journal::open(&path, DEFAULT_MAX_EVENTS).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(j.last_seq(), 2);
        assert!(j.contains("a@1"));
        assert_eq!(j.append(&[event("a@1"), event("c@1")]).unwrap(), 1);
        let j = Journal::open(&path, DEFAULT_MAX_EVENTS).unwrap();
        assert_eq!(j.last_seq(), 3);
        assert_eq!(j.read_from(2, 10).unwrap()[0].event.event_key, "c@1");
        // Damage before the end is refused, not silently skipped.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("{\"seq\":2", "{\"seq\":x", 1)).unwrap();
        assert!(matches!(
            Journal::open(&path, DEFAULT_MAX_EVENTS),
            Err(JournalError::Damaged { line: 2, .. })
        ));
    }

    #[test]
    fn a_full_journal_keeps_the_newest_events_and_remembers_every_alert() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "contoso");
        let mut j = Journal::open(&path, 10).unwrap();
        for i in 0..25 {
            j.append(&[event(&format!("e{i}@1"))]).unwrap();
        }
        assert_eq!(j.last_seq(), 25);
        assert!(j.len() <= 11, "{}", j.len());
        let base = j.first_kept_after();
        assert!(base >= 14, "{base}");
        assert_eq!(j.dropped(), base);
        // A cursor before the oldest kept reads from the oldest kept.
        let from_start = j.read_from(0, 100).unwrap();
        assert_eq!(from_start[0].seq, base + 1);
        assert_eq!(from_start.last().unwrap().seq, 25);
        assert_eq!(j.read_from(20, 2).unwrap()[0].event.event_key, "e20@1");
        assert!(j.has_alert("e0@1"), "a dropped alert is still known");
        assert!(!j.contains("e0@1"));
        assert!(j.contains("e24@1"));
        // Reopened: the same numbering, the same alerts known, appends continue.
        drop(j);
        let mut j = Journal::open(&path, 10).unwrap();
        assert_eq!((j.last_seq(), j.first_kept_after()), (25, base));
        assert!(j.has_alert("e3@1"));
        assert_eq!(j.append(&[event("e25@1")]).unwrap(), 1);
        assert_eq!(j.read_from(25, 10).unwrap()[0].seq, 26);
        let j = Journal::open(&path, 10).unwrap();
        assert_eq!(j.last_seq(), 26);
        assert!(!path.with_extension("journal.compacting").exists());
    }
}

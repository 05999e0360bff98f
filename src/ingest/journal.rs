//! The durable per-asset event journal: append-only JSON lines
//! (`<state_dir>/<asset>_alerts.journal`), each `{"seq": N, "event": {...}}`, fsynced on every
//! append. Event keys already in the journal are skipped (an in-memory index, rebuilt on
//! open). A torn last line left by a crash is dropped (the file is truncated) on open.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
    /// Ids of the alerts with an event in the journal.
    alert_ids: HashSet<String>,
    /// Byte offset of each record's line; record `seq` is at `offsets[seq - 1]`.
    offsets: Vec<u64>,
    end: u64,
}

/// The journal file of an asset in a state directory.
pub fn journal_path(state_dir: &Path, asset: &str) -> PathBuf {
    state_dir.join(format!("{asset}_alerts.journal"))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, rebuilding the index and dropping a torn
    /// last line.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
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
        while pos < bytes.len() {
            line_no += 1;
            let rest = &bytes[pos..];
            let (line, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(n) => (&rest[..n], true),
                None => (rest, false),
            };
            let parsed = serde_json::from_slice::<Record>(line)
                .ok()
                .filter(|r| r.seq == offsets.len() as u64 + 1);
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
            offsets,
            end: pos as u64,
        })
    }

    /// Appends the events whose key is not in the journal yet (nor earlier in `events`),
    /// then fsyncs. Answers how many were appended.
    pub fn append(&mut self, events: &[Event]) -> Result<usize, JournalError> {
        let mut buf = Vec::new();
        let mut new_offsets = Vec::new();
        let mut new_keys = Vec::new();
        for event in events {
            if self.keys.contains(&event.event_key) || new_keys.contains(&&event.event_key) {
                continue;
            }
            let record = Record {
                seq: (self.offsets.len() + new_offsets.len()) as u64 + 1,
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
            return Ok(0);
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
        let n = new_keys.len();
        for event in events {
            if let Some(id) = event.alert_id() {
                self.alert_ids.insert(id.to_string());
            }
        }
        self.keys.extend(new_keys.into_iter().cloned());
        self.offsets.extend(new_offsets);
        self.end += buf.len() as u64;
        Ok(n)
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
        self.offsets.len() as u64
    }

    /// Size of the file in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.end
    }

    /// Up to `limit` records with a sequence number above `cursor`, in order.
    pub fn read_from(&self, cursor: u64, limit: usize) -> Result<Vec<Record>, JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let Some(&start) = usize::try_from(cursor)
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
                    line: cursor as usize + i + 1,
                })?;
            out.push(record);
        }
        Ok(out)
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
        let mut j = Journal::open(&path).unwrap();
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
            let mut j = Journal::open(&path).unwrap();
            j.append(&[event("a@1"), event("b@1")]).unwrap();
        }
        let good_len = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":3,\"event\":{\"event_k").unwrap();
        drop(f);
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(j.last_seq(), 2);
        assert!(j.contains("a@1"));
        assert_eq!(j.append(&[event("a@1"), event("c@1")]).unwrap(), 1);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.last_seq(), 3);
        assert_eq!(j.read_from(2, 10).unwrap()[0].event.event_key, "c@1");
        // Damage before the end is refused, not silently skipped.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("{\"seq\":2", "{\"seq\":x", 1)).unwrap();
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::Damaged { line: 2, .. })
        ));
    }
}

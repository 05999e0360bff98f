//! The alert journal in Redis (`[server.state] backend = "redis"`), shared by every host: the
//! same records as the file journal (`{"seq": N, "event": {...}}`), in a sorted set scored by
//! sequence number, with the event keys and alert ids in sets beside it. An append is one
//! script: it skips known event keys, numbers the new records, and trims the oldest past
//! `max_events` (plus a tenth), counting what it dropped — so a host that takes the ingestion
//! over continues the same sequence, and the feed and the webhook cursors mean the same thing on
//! every host.
//!
//! Keys, under `<prefix>:journal:<asset>:`: `seq` (last sequence number), `events` (sorted
//! set), `keys` (event keys kept), `alerts` (every alert id journaled), `dropped`, `base`
//! (sequence number before the oldest record kept).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::journal::{Event, JournalCopy, JournalError, JournalStats, Record};
use crate::redis_link::{RedisError, RedisLink};

/// Appends events: `ARGV[1]` = max events, then triples (event key, alert id or "", event
/// JSON). Answers `{last seq, index of each appended event…}` (0-based indexes into the
/// triples).
const APPEND: &str = r#"
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local max = tonumber(ARGV[1])
local out = {0}
local n = 0
local i = 2
while i <= #ARGV do
  local key, alert, ev = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('SISMEMBER', KEYS[3], key) == 0 then
    seq = seq + 1
    redis.call('ZADD', KEYS[2], seq, '{"seq":' .. seq .. ',"event":' .. ev .. '}')
    redis.call('SADD', KEYS[3], key)
    table.insert(out, n)
  end
  if alert ~= '' then
    redis.call('SADD', KEYS[4], alert)
  end
  n = n + 1
  i = i + 3
end
redis.call('SET', KEYS[1], seq)
out[1] = seq
local count = redis.call('ZCARD', KEYS[2])
if count > max + math.floor(max / 10) then
  local drop = count - max
  local old = redis.call('ZRANGE', KEYS[2], 0, drop - 1)
  for _, rec in ipairs(old) do
    local ok, r = pcall(cjson.decode, rec)
    if ok and r.event and r.event.event_key then
      redis.call('SREM', KEYS[3], r.event.event_key)
    end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, drop - 1)
  redis.call('INCRBY', KEYS[5], drop)
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('SET', KEYS[6], tonumber(first[2]) - 1)
  end
end
return out
"#;

/// One asset's journal in Redis.
#[derive(Debug, Clone)]
pub struct RedisJournal {
    link: Arc<RedisLink>,
    asset: String,
    max_events: usize,
}

impl RedisJournal {
    /// The journal of `asset`, keeping at most `max_events` events (at least 1).
    pub fn new(link: Arc<RedisLink>, asset: &str, max_events: usize) -> RedisJournal {
        RedisJournal {
            link,
            asset: asset.to_string(),
            max_events: max_events.max(1),
        }
    }

    fn key(&self, part: &str) -> String {
        self.link.key(&["journal", &self.asset, part])
    }

    /// Where it lives, for messages.
    pub fn label(&self) -> PathBuf {
        PathBuf::from(format!("redis:{}", self.key("events")))
    }

    fn error(&self, e: impl Into<RedisError>) -> JournalError {
        JournalError::Io {
            path: self.label(),
            source: std::io::Error::other(e.into().0),
        }
    }

    /// Appends the events whose key is not in the journal yet; answers those appended and
    /// the last sequence number.
    pub async fn append(&self, events: Vec<Event>) -> Result<(Vec<Event>, u64), JournalError> {
        let mut conn = self.link.conn().await.map_err(|e| self.error(e))?;
        let script = redis::Script::new(APPEND);
        let mut invocation = script.prepare_invoke();
        for part in ["seq", "events", "keys", "alerts", "dropped", "base"] {
            invocation.key(self.key(part));
        }
        invocation.arg(self.max_events);
        for e in &events {
            let json =
                serde_json::to_string(e).map_err(|e| self.error(RedisError(e.to_string())))?;
            invocation
                .arg(&e.event_key)
                .arg(e.alert_id().unwrap_or(""))
                .arg(json);
        }
        let answer: Vec<u64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let last = answer.first().copied().unwrap_or(0);
        let taken: HashSet<usize> = answer
            .iter()
            .skip(1)
            .filter_map(|i| usize::try_from(*i).ok())
            .collect();
        let appended = events
            .into_iter()
            .enumerate()
            .filter(|(i, _)| taken.contains(i))
            .map(|(_, e)| e)
            .collect();
        Ok((appended, last))
    }

    /// Up to `limit` records with a sequence number above `cursor`, in order.
    pub async fn read_from(&self, cursor: u64, limit: usize) -> Result<Vec<Record>, JournalError> {
        let mut conn = self.link.conn().await.map_err(|e| self.error(e))?;
        let lines: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key("events"))
            .arg(format!("({cursor}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str::<Record>(line).map_err(|_| JournalError::Damaged {
                    path: self.label(),
                    line: i + 1,
                })
            })
            .collect()
    }

    /// Which of `ids` have been journaled.
    pub async fn alerts_known(&self, ids: Vec<String>) -> Result<HashSet<String>, JournalError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut conn = self.link.conn().await.map_err(|e| self.error(e))?;
        let known: Vec<bool> = redis::cmd("SMISMEMBER")
            .arg(self.key("alerts"))
            .arg(&ids)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(ids
            .into_iter()
            .zip(known)
            .filter_map(|(id, k)| k.then_some(id))
            .collect())
    }

    /// Numbers about the journal (`size_bytes` is Redis's estimate of the events' memory).
    pub async fn stats(&self) -> Result<JournalStats, JournalError> {
        let mut conn = self.link.conn().await.map_err(|e| self.error(e))?;
        let (seq, events, dropped, base, memory): (
            Option<u64>,
            usize,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        ) = redis::pipe()
            .cmd("GET")
            .arg(self.key("seq"))
            .cmd("ZCARD")
            .arg(self.key("events"))
            .cmd("GET")
            .arg(self.key("dropped"))
            .cmd("GET")
            .arg(self.key("base"))
            .cmd("MEMORY")
            .arg("USAGE")
            .arg(self.key("events"))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(JournalStats {
            last_seq: seq.unwrap_or(0),
            first_kept_after: base.unwrap_or(0),
            events,
            size_bytes: memory.unwrap_or(0),
            dropped: dropped.unwrap_or(0),
        })
    }

    /// The last sequence number.
    pub async fn last_seq(&self) -> Result<u64, JournalError> {
        let mut conn = self.link.conn().await.map_err(|e| self.error(e))?;
        let seq: Option<u64> = redis::cmd("GET")
            .arg(self.key("seq"))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(seq.unwrap_or(0))
    }
}

impl RedisJournal {
    /// Everything the journal holds (`migrate-state`).
    pub async fn export(&self) -> Result<JournalCopy, JournalError> {
        let stats = self.stats().await?;
        let records = self.read_from(0, usize::MAX / 2).await?;
        let mut conn = self.link.conn().await.map_err(|e| self.error(e))?;
        let mut alert_ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key("alerts"))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        alert_ids.sort();
        Ok(JournalCopy {
            base: stats.first_kept_after,
            records,
            alert_ids,
        })
    }

    /// Replaces the journal with `copy`, keeping its sequence numbers (`migrate-state`; run
    /// while no host ingests the asset).
    pub async fn import(&self, copy: &JournalCopy) -> Result<(), JournalError> {
        let mut conn = self.link.conn().await.map_err(|e| self.error(e))?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for part in ["seq", "events", "keys", "alerts", "dropped", "base"] {
            pipe.cmd("DEL").arg(self.key(part)).ignore();
        }
        pipe.cmd("SET")
            .arg(self.key("seq"))
            .arg(copy.last_seq())
            .ignore();
        pipe.cmd("SET")
            .arg(self.key("base"))
            .arg(copy.base)
            .ignore();
        for chunk in copy.records.chunks(500) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(self.key("events"));
            let mut sadd = redis::cmd("SADD");
            sadd.arg(self.key("keys"));
            for r in chunk {
                let line =
                    serde_json::to_string(r).map_err(|e| self.error(RedisError(e.to_string())))?;
                zadd.arg(r.seq).arg(line);
                sadd.arg(&r.event.event_key);
            }
            pipe.add_command(zadd).ignore();
            pipe.add_command(sadd).ignore();
        }
        for chunk in copy.alert_ids.chunks(500) {
            pipe.cmd("SADD").arg(self.key("alerts")).arg(chunk).ignore();
        }
        let _: () = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

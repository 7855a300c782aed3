//! Deferred messages as operators see them (`{p}:deferred`,
//! `{p}:deferred:info`), counted per request (`{p}:req:{rid}:deferred` and
//! the `waiting:{why}:{domain}` counts of `{p}:req:{rid}`), and each
//! message's history of failed attempts (`{p}:history:{mid}`).
//!
//! A message is indexed when it is deferred, by whoever defers it: the
//! retrier after a failed attempt (why `retry`), a sender when the sending
//! policy says not now (why `paused` or `throttled`). It leaves the index
//! when a sender takes it again (the gate of [`crate::calls`]), when it
//! stops (its history's last entry), or when the sampler finds it ended.
//! Each of these steps is one script, so the counts per request move with
//! the index and never twice for one message.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{op, Store, StoreError};

/// Lua functions that index and unindex a deferred message, shared by the
/// scripts of this module and by the sender's calls script (its gate).
/// Every key they touch is passed in, declared by the calling script:
/// `index` (`{p}:deferred`), `infos` (`{p}:deferred:info`), `rkey`
/// (`{p}:req:{rid}`) and `rz` (`{p}:req:{rid}:deferred`).
pub(crate) const INDEX_FUNCTIONS_LUA: &str = r#"
-- Indexes message mid of the request whose keys are rkey and rz, deferred
-- (why: retry, paused, throttled) to domain until due (Unix s), with what
-- operators see (info, JSON with request, domain and why). Counted once
-- per request while indexed; a request whose hash is gone is indexed
-- globally only.
local function index_deferred(index, infos, rkey, rz, mid, why, domain, due, info)
  redis.call('ZADD', index, due, mid)
  redis.call('HSET', infos, mid, info)
  local ttl = redis.call('TTL', rkey)
  if ttl == -2 then return end
  if redis.call('ZADD', rz, due, mid) == 1 then
    redis.call('HINCRBY', rkey, 'waiting:' .. why .. ':' .. domain, 1)
    redis.call('HINCRBY', rkey, 'deferrals', 1)
  end
  if ttl > 0 then redis.call('EXPIRE', rz, ttl) end
end
-- Takes message mid of request req (keys rkey, rz) out of the index, and
-- out of its request's counts. Indexed under another request (its info
-- says which), it leaves the global index only.
local function unindex_deferred(index, infos, rkey, rz, req, mid)
  local info = redis.call('HGET', infos, mid)
  redis.call('ZREM', index, mid)
  redis.call('HDEL', infos, mid)
  if not info then return end
  local ok, i = pcall(cjson.decode, info)
  if not ok or type(i) ~= 'table' or i.request ~= req then return end
  if redis.call('ZREM', rz, mid) == 1 then
    local f = 'waiting:' .. tostring(i.why or 'retry') .. ':' .. tostring(i.domain or '')
    if redis.call('HINCRBY', rkey, f, -1) <= 0 then redis.call('HDEL', rkey, f) end
  end
end
"#;

/// KEYS: deferred index, its info hash, the request's hash, the request's
/// deferred index, the message's history. ARGV: message, request, why,
/// domain, due s, info, history entry ('' none), history ttl s. Indexes a
/// deferred message and adds the entry to its history.
const INDEX_LUA: &str = r#"
local mid = ARGV[1]
index_deferred(KEYS[1], KEYS[2], KEYS[3], KEYS[4], mid, ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if ARGV[7] ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[7])
  redis.call('EXPIRE', KEYS[5], ARGV[8])
end
return 1
"#;

/// KEYS: deferred index, its info hash, the request's hash, the request's
/// deferred index, the message's history ('' none: no entry). ARGV:
/// message, request, history entry, ttl s. Adds the entry to the message's
/// history and takes the message out of the index (it stops, or it ended).
const STOP_LUA: &str = r#"
local mid = ARGV[1]
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[3])
  redis.call('EXPIRE', KEYS[5], ARGV[4])
end
unindex_deferred(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], mid)
return 1
"#;

/// KEYS: deferred index, its info hash, the request's hash, the request's
/// deferred index, the message's lease. ARGV: message, lease owner, why,
/// domain, due s, info. Releases the message's lease (if `owner` holds it)
/// and indexes it as deferred: the sender's one call for a message the
/// policy defers.
const DEFER_LUA: &str = r#"
if redis.call('GET', KEYS[5]) == ARGV[2] then redis.call('DEL', KEYS[5]) end
index_deferred(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1
"#;

/// A script of this module, with the index functions before it.
fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{INDEX_FUNCTIONS_LUA}\n{body}"))
}

static INDEX: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| script(INDEX_LUA));
static STOP: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| script(STOP_LUA));
static DEFER: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| script(DEFER_LUA));

/// Why a message waits in the delay tiers: a failed attempt the retrier
/// retries later.
pub const WHY_RETRY: &str = "retry";
/// Why: its domain is paused (by the breaker or an operator).
pub const WHY_PAUSED: &str = "paused";

/// The `decision` of a history entry the sender writes for an ambiguous
/// attempt (`mailpipe queue list --ambiguous` shows why from it).
pub const DECISION_AMBIGUOUS: &str = "ambiguous";

/// One deferral to index: which message, of which request, to which
/// domain, why, until when, and what operators see of it.
#[derive(Debug, Clone)]
pub struct Deferral {
    pub message: String,
    pub request: String,
    /// `retry` (the retrier), or the sender's reason: `paused`, `throttled`.
    pub why: String,
    /// The recipient's domain, lowercased.
    pub domain: String,
    /// Due time, Unix seconds.
    pub due: i64,
    /// What `queue list --deferred` shows (recipient, campaign, attempt,
    /// reason, ...); `request`, `why` and `domain` are added.
    pub info: serde_json::Value,
}

impl Deferral {
    fn info_text(&self) -> String {
        let mut info = self.info.clone();
        if !info.is_object() {
            info = serde_json::json!({});
        }
        info["request"] = self.request.clone().into();
        info["why"] = self.why.clone().into();
        info["domain"] = self.domain.clone().into();
        info.to_string()
    }
}

/// A request's recipients in the deferred index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestDeferred {
    /// How many.
    pub count: u64,
    /// The earliest and latest due times (Unix s).
    pub first_due: Option<i64>,
    pub last_due: Option<i64>,
    /// What operators see of the earliest one (its reason, tier, ...).
    pub first: Option<serde_json::Value>,
}

impl Store {
    /// The keys the index functions touch for a message of `request`, in
    /// the order of their arguments: the index, its info hash, the
    /// request's hash and its deferred index.
    fn deferred_keys(&self, request: &str) -> [String; 4] {
        [
            self.key(&["deferred"]),
            self.key(&["deferred", "info"]),
            self.key(&["req", request]),
            self.key(&["req", request, "deferred"]),
        ]
    }

    /// Records a deferred message in the index operators list (and in its
    /// request's counts), with an entry of its history.
    pub async fn index_deferred(
        &self,
        deferral: &Deferral,
        history_entry: Option<&serde_json::Value>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let mut inv = INDEX.prepare_invoke();
        for key in self.deferred_keys(&deferral.request) {
            inv.key(key);
        }
        let _: i64 = inv
            .key(self.key(&["history", &deferral.message]))
            .arg(&deferral.message)
            .arg(&deferral.request)
            .arg(&deferral.why)
            .arg(&deferral.domain)
            .arg(deferral.due)
            .arg(deferral.info_text())
            .arg(history_entry.map(|e| e.to_string()).unwrap_or_default())
            .arg(ttl.as_secs().max(1))
            .invoke_async(&mut c)
            .await
            .map_err(op("index deferred"))?;
        Ok(())
    }

    /// Releases a message's lease (when `owner` holds it) and indexes it as
    /// deferred, in one call: what a sender does with a message the sending
    /// policy defers.
    pub async fn defer(&self, deferral: &Deferral, owner: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let mut inv = DEFER.prepare_invoke();
        for key in self.deferred_keys(&deferral.request) {
            inv.key(key);
        }
        let _: i64 = inv
            .key(self.key(&["lease", &deferral.message]))
            .arg(&deferral.message)
            .arg(owner)
            .arg(&deferral.why)
            .arg(&deferral.domain)
            .arg(deferral.due)
            .arg(deferral.info_text())
            .invoke_async(&mut c)
            .await
            .map_err(op("defer"))?;
        Ok(())
    }

    /// Adds a failed attempt to the history of a message of `request` (for
    /// messages that stop), and takes it out of the deferred index.
    pub async fn push_history(
        &self,
        message: &str,
        request: &str,
        entry: &serde_json::Value,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.stop_deferred(message, request, Some(entry), ttl)
            .await
            .map_err(|source| StoreError::Redis {
                op: "history",
                source,
            })
    }

    /// [`STOP_LUA`]: the message out of the deferred index, with an entry
    /// of its history when there is one.
    async fn stop_deferred(
        &self,
        message: &str,
        request: &str,
        entry: Option<&serde_json::Value>,
        ttl: Duration,
    ) -> Result<(), redis::RedisError> {
        let mut c = self.conn.clone();
        let mut inv = STOP.prepare_invoke();
        for key in self.deferred_keys(request) {
            inv.key(key);
        }
        let _: i64 = inv
            .key(self.key(&["history", message]))
            .arg(message)
            .arg(request)
            .arg(entry.map(|e| e.to_string()).unwrap_or_default())
            .arg(ttl.as_secs().max(1))
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// A request's recipients in the deferred index: how many, the
    /// earliest and latest due times, and the earliest one's info.
    pub async fn request_deferred(&self, request: &str) -> Result<RequestDeferred, StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&["req", request, "deferred"]);
        let count: u64 = c.zcard(&key).await.map_err(op("request deferred"))?;
        if count == 0 {
            return Ok(RequestDeferred::default());
        }
        let first: Vec<(String, f64)> = c
            .zrange_withscores(&key, 0, 0)
            .await
            .map_err(op("request deferred"))?;
        let last: Vec<(String, f64)> = c
            .zrange_withscores(&key, -1, -1)
            .await
            .map_err(op("request deferred"))?;
        let info: Option<String> = match first.first() {
            Some((mid, _)) => c
                .hget(self.key(&["deferred", "info"]), mid)
                .await
                .map_err(op("request deferred"))?,
            None => None,
        };
        Ok(RequestDeferred {
            count,
            first_due: first.first().map(|(_, d)| *d as i64),
            last_due: last.first().map(|(_, d)| *d as i64),
            first: info.and_then(|i| serde_json::from_str(&i).ok()),
        })
    }

    /// A message's failed attempts, oldest first.
    pub async fn history(&self, message: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut c = self.conn.clone();
        let raw: Vec<String> = c
            .lrange(self.key(&["history", message]), 0, -1)
            .await
            .map_err(op("history"))?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Deferred messages by due time: `(message id, due, info)`.
    pub async fn deferred(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, i64, serde_json::Value)>, StoreError> {
        let mut c = self.conn.clone();
        let ids: Vec<(String, f64)> = c
            .zrange_withscores(self.key(&["deferred"]), 0, limit.max(1) as isize - 1)
            .await
            .map_err(op("deferred"))?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, due) in ids {
            let info: Option<String> = c
                .hget(self.key(&["deferred", "info"]), &id)
                .await
                .map_err(op("deferred info"))?;
            let info = info
                .and_then(|i| serde_json::from_str(&i).ok())
                .unwrap_or(serde_json::Value::Null);
            out.push((id, due as i64, info));
        }
        Ok(out)
    }

    /// Like [`Self::deferred_summary`], after dropping from the head of the
    /// index up to `clean` entries of messages that already ended (a
    /// message that ended without a sender taking it from its lane would
    /// otherwise look overdue for ever).
    pub async fn deferred_head(&self, clean: usize) -> Result<(u64, Option<i64>), StoreError> {
        let mut c = self.conn.clone();
        let index = self.key(&["deferred"]);
        if clean > 0 {
            // The head, with each entry's request (from its info) and
            // whether it ended; the leading entries that ended leave the
            // index, each by the script that knows its request's keys.
            let head: Vec<String> = c
                .zrange(&index, 0, clean as isize - 1)
                .await
                .map_err(op("deferred head"))?;
            if !head.is_empty() {
                let infos: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(self.key(&["deferred", "info"]))
                    .arg(&head)
                    .query_async(&mut c)
                    .await
                    .map_err(op("deferred head"))?;
                let mut ended = redis::pipe();
                for mid in &head {
                    ended.exists(self.key(&["done", mid]));
                }
                let ended: Vec<bool> = ended
                    .query_async(&mut c)
                    .await
                    .map_err(op("deferred head"))?;
                for ((mid, info), ended) in head.iter().zip(&infos).zip(ended) {
                    if !ended {
                        break;
                    }
                    let request = info
                        .as_deref()
                        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
                        .and_then(|i| i["request"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    self.stop_deferred(mid, &request, None, Duration::from_secs(1))
                        .await
                        .map_err(op("deferred head"))?;
                }
            }
        }
        let n: u64 = c.zcard(&index).await.map_err(op("deferred head"))?;
        let first: Vec<(String, f64)> = c
            .zrange_withscores(&index, 0, 0)
            .await
            .map_err(op("deferred head"))?;
        Ok((n, first.first().map(|(_, d)| *d as i64)))
    }

    /// Number of deferred messages and the earliest due time.
    pub async fn deferred_summary(&self) -> Result<(u64, Option<i64>), StoreError> {
        let mut c = self.conn.clone();
        let n: u64 = c
            .zcard(self.key(&["deferred"]))
            .await
            .map_err(op("deferred"))?;
        let first: Vec<(String, f64)> = c
            .zrange_withscores(self.key(&["deferred"]), 0, 0)
            .await
            .map_err(op("deferred"))?;
        Ok((n, first.first().map(|(_, d)| *d as i64)))
    }
}

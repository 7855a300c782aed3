//! Deferred messages as operators see them (`{p}:deferred`,
//! `{p}:deferred:info`) and each message's history of failed attempts
//! (`{p}:history:{mid}`).

use std::time::Duration;

use redis::AsyncCommands;

use super::{op, Store, StoreError};

/// KEYS: deferred index, its info hash. ARGV: prefix, most entries to drop.
/// Drops the earliest entries whose message already has a terminal record
/// (one that ended without passing a sender's gate, such as a poison
/// message), then answers the number indexed and the earliest due time.
const DEFERRED_HEAD_LUA: &str = r#"
for _ = 1, tonumber(ARGV[2]) do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #first == 0 or redis.call('EXISTS', ARGV[1] .. ':done:' .. first[1]) == 0 then break end
  redis.call('ZREM', KEYS[1], first[1])
  redis.call('HDEL', KEYS[2], first[1])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {redis.call('ZCARD', KEYS[1]), first[2] or ''}
"#;

impl Store {
    /// Records a deferred message in the index operators list.
    pub async fn index_deferred(
        &self,
        message: &str,
        due: i64,
        info: &serde_json::Value,
        history_entry: &serde_json::Value,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let history = self.key(&["history", message]);
        let _: () = redis::pipe()
            .zadd(self.key(&["deferred"]), message, due)
            .ignore()
            .hset(self.key(&["deferred", "info"]), message, info.to_string())
            .ignore()
            .rpush(&history, history_entry.to_string())
            .ignore()
            .expire(&history, ttl.as_secs() as i64)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("index deferred"))?;
        Ok(())
    }

    /// Adds a failed attempt to a message's history (for messages that stop).
    pub async fn push_history(
        &self,
        message: &str,
        entry: &serde_json::Value,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let history = self.key(&["history", message]);
        let _: () = redis::pipe()
            .rpush(&history, entry.to_string())
            .ignore()
            .expire(&history, ttl.as_secs() as i64)
            .ignore()
            .zrem(self.key(&["deferred"]), message)
            .ignore()
            .hdel(self.key(&["deferred", "info"]), message)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("history"))?;
        Ok(())
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
        let (n, first): (u64, String) = redis::Script::new(DEFERRED_HEAD_LUA)
            .key(self.key(&["deferred"]))
            .key(self.key(&["deferred", "info"]))
            .arg(self.prefix())
            .arg(clean)
            .invoke_async(&mut c)
            .await
            .map_err(op("deferred head"))?;
        Ok((n, first.parse::<f64>().ok().map(|d| d as i64)))
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

//! What comes back about sent mail: the bounce qualification table
//! (`{p}:bounce:{id}`, `{p}:bounces`), asynchronous bounces, complaints and
//! unsubscribes counted once per message (`{p}:bounced:{mid}`, …), and the
//! mails the intake could not use (`{p}:intake:unprocessed`).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{op, Store, StoreError};

pub(super) const QUALIFY_LUA: &str = r#"
-- KEYS[1] entry hash, KEYS[2] index zset; ARGV: 1 id, 2 normalized text,
-- 3 raw text, 4 reason, 5 type, 6 rule ('' = none), 7 now, 8 cap
redis.call('HSETNX', KEYS[1], 'text', ARGV[2])
redis.call('HSETNX', KEYS[1], 'first', ARGV[3])
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[7])
redis.call('HSETNX', KEYS[1], 'reason', ARGV[4])
redis.call('HSETNX', KEYS[1], 'type', ARGV[5])
redis.call('HSETNX', KEYS[1], 'rule', ARGV[6])
if ARGV[6] == '' then
  redis.call('HSETNX', KEYS[1], 'qualification', 'to_qualify')
else
  redis.call('HSETNX', KEYS[1], 'qualification', 'keep')
end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[7])
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if count < tonumber(ARGV[8]) then
  count = redis.call('HINCRBY', KEYS[1], 'count', 1)
end
redis.call('ZADD', KEYS[2], count, ARGV[1])
return count
"#;

/// Occurrences of one bounce text are counted up to this (the qualification table
/// shows "at least" beyond it).
pub const QUALIFICATION_CAP: u64 = 100_000;

/// One row of the bounce qualification table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceEntry {
    pub id: String,
    /// Normalized text (variable parts replaced by `#xxx#`, addresses by `*`).
    pub text: String,
    /// The first raw text seen.
    pub first: String,
    pub count: u64,
    pub reason: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Rule that classified it; empty when none did.
    pub rule: String,
    /// `to_qualify`, `keep` or `ignore`.
    pub qualification: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

pub(super) const MARK_LUA: &str = r#"
-- KEYS[1] a marker key, KEYS[2] request hash; ARGV[1] value, ARGV[2] ttl
-- seconds, ARGV[3..] counter fields to raise when the marker is new
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  for i = 3, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
  return 1
end
return 0
"#;

impl Store {
    /// Counts one failure text in the qualification table (`mailpipe bounces`).
    pub async fn qualify(
        &self,
        normalized: &str,
        raw: &str,
        reason: &str,
        kind: &str,
        rule: Option<&str>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let id = crate::message::sha256_hex(normalized.as_bytes())[..16].to_string();
        let mut c = self.conn.clone();
        self.qualify
            .key(self.key(&["bounce", &id]))
            .key(self.key(&["bounces"]))
            .arg(&id)
            .arg(normalized)
            .arg(raw)
            .arg(reason)
            .arg(kind)
            .arg(rule.unwrap_or(""))
            .arg(now)
            .arg(QUALIFICATION_CAP)
            .invoke_async(&mut c)
            .await
            .map_err(op("qualify"))
    }

    /// The qualification table, most frequent first.
    pub async fn bounces(&self, limit: usize) -> Result<Vec<BounceEntry>, StoreError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c
            .zrevrange(self.key(&["bounces"]), 0, limit.max(1) as isize - 1)
            .await
            .map_err(op("bounces"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let f: BTreeMap<String, String> = c
                .hgetall(self.key(&["bounce", &id]))
                .await
                .map_err(op("bounce"))?;
            let get = |k: &str| f.get(k).cloned().unwrap_or_default();
            let num = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or_default();
            out.push(BounceEntry {
                id,
                text: get("text"),
                first: get("first"),
                count: num("count") as u64,
                reason: get("reason"),
                kind: get("type"),
                rule: get("rule"),
                qualification: get("qualification"),
                first_seen: num("first_seen"),
                last_seen: num("last_seen"),
            });
        }
        Ok(out)
    }

    /// Counts an asynchronous bounce of a sent message, once per message:
    /// `false` when it was counted before (a bounce delivered twice, or a
    /// second report for the same message).
    pub async fn record_bounce(
        &self,
        message: &str,
        request: &str,
        reason: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let field = format!("bounced:{reason}");
        self.mark_once(&["bounced", message], request, reason, &[&field], ttl)
            .await
    }

    /// Counts a complaint (feedback-loop report) about a sent message, once
    /// per message.
    pub async fn record_complaint(
        &self,
        message: &str,
        request: &str,
        feedback_type: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.mark_once(
            &["complained", message],
            request,
            feedback_type,
            &["complained"],
            ttl,
        )
        .await
    }

    /// Counts an unsubscribe request about a sent message, once per message.
    pub async fn record_unsubscribe(
        &self,
        message: &str,
        request: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = ["unsubscribed", message];
        self.mark_once(&key, request, "unsubscribed", &["unsubscribed"], ttl)
            .await
    }

    async fn mark_once(
        &self,
        key: &[&str],
        request: &str,
        value: &str,
        counters: &[&str],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inv = self.mark.prepare_invoke();
        inv.key(self.key(key))
            .key(self.key(&["req", request]))
            .arg(value)
            .arg(ttl.as_secs().max(1));
        for f in counters {
            inv.arg(*f);
        }
        let mut c = self.conn.clone();
        let n: i64 = inv.invoke_async(&mut c).await.map_err(op("mark once"))?;
        Ok(n == 1)
    }

    /// Keeps a mail the intake could not use (JSON: why, where from, the
    /// start of the mail), newest first, at most `keep` of them.
    pub async fn record_unprocessed(&self, json: &str, keep: usize) -> Result<(), StoreError> {
        let key = self.key(&["intake", "unprocessed"]);
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .lpush(&key, json)
            .ignore()
            .ltrim(&key, 0, keep.max(1) as isize - 1)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("record unprocessed"))?;
        Ok(())
    }

    /// The latest mails the intake could not use, newest first.
    pub async fn unprocessed(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        c.lrange(
            self.key(&["intake", "unprocessed"]),
            0,
            limit.max(1) as isize - 1,
        )
        .await
        .map_err(op("unprocessed"))
    }
}

//! Domain pauses (the breaker's and `mailpipe domain pause`) and the index
//! of the paused domains.

use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use super::{now_arg, op, Policy};
use crate::store::StoreError;

/// The paused domains of the index, checked against their pause keys:
/// entries whose pause ended (or was removed) leave the index.
const PAUSED_LUA: &str = r#"
-- KEYS: 1 index of paused domains, then for each domain of ARGV its pause
-- key and its pause note key; ARGV: 1 most domains to describe, 2 now ms
-- ('' = the server's clock), then the domains the index held when read.
-- Returns the number paused and, for the first ones by end of pause,
-- domain, end (Unix ms), who paused it and the operator's note ('' none).
local now = tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local limit = tonumber(ARGV[1])
local total, out = 0, {}
for i = 3, #ARGV do
  local d = ARGV[i]
  local pause, note = KEYS[2 * (i - 2)], KEYS[2 * (i - 2) + 1]
  -- Its end as of now (a domain that left the index meanwhile is skipped).
  local till = tonumber(redis.call('ZSCORE', KEYS[1], d))
  if till then
    local ttl = redis.call('PTTL', pause)
    -- Without a time to live a pause key does not pause (the senders' check);
    -- a pause whose end (the index's score) is past has ended as of now.
    if ttl <= 0 or till <= now then
      redis.call('ZREM', KEYS[1], d)
    else
      total = total + 1
      if total <= limit then
        out[#out + 1] = d
        out[#out + 1] = tostring(till)
        out[#out + 1] = redis.call('GET', pause) or ''
        out[#out + 1] = redis.call('GET', note) or ''
      end
    end
  end
end
return {total, out}
"#;

static PAUSED: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PAUSED_LUA));

/// Who paused a domain or a site: the word its pause key holds, and
/// `mailpipe domain list`, `site list` and their JSON show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseBy {
    /// The domain's circuit breaker (its script writes `breaker`).
    Breaker,
    /// `mailpipe domain pause` or `mailpipe site pause`.
    Operator,
    /// A site's adaptive controller, on reputation blocks (its script
    /// writes `adaptive`).
    Adaptive,
}

impl PauseBy {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseBy::Breaker => "breaker",
            PauseBy::Operator => "operator",
            PauseBy::Adaptive => "adaptive",
        }
    }
}

/// A paused domain: until when, by whom, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PausedDomain {
    pub domain: String,
    /// End of the pause, Unix milliseconds.
    pub until_ms: i64,
    /// [`PauseBy::Breaker`] or [`PauseBy::Operator`], as stored.
    pub by: String,
    /// Why an operator paused it (empty: no reason given, or the breaker).
    pub reason: String,
}

/// An operator's pause of a domain: when, why and who (the user that ran
/// `mailpipe domain pause`). Kept as long as the pause; resume clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PauseNote {
    pub at: i64,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub by: String,
}

impl Policy {
    /// Pauses sending to a domain; `note` says when, why and who (an
    /// operator's pause), and lasts as long as the pause. Without a note, an
    /// earlier pause's note is dropped.
    pub async fn pause(
        &self,
        domain: &str,
        for_: Duration,
        by: &str,
        note: Option<&PauseNote>,
    ) -> Result<(), StoreError> {
        let mut c = self.store.connection();
        let secs = for_.as_secs().max(1);
        let until = crate::unix_now_ms() + secs as i64 * 1000;
        let mut pipe = redis::pipe();
        pipe.set_ex(self.key(&["pause", domain]), by, secs)
            .ignore()
            .zadd(self.key(&["paused"]), domain, until)
            .ignore();
        match note {
            Some(n) => pipe.set_ex(
                self.key(&["pausenote", domain]),
                serde_json::to_string(n).unwrap_or_default(),
                secs,
            ),
            None => pipe.del(self.key(&["pausenote", domain])),
        };
        let _: () = pipe
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("pause"))?;
        Ok(())
    }

    /// The paused domains (the first `limit` by end of pause) and how many
    /// there are in all; forgets pauses that ended.
    pub async fn paused(&self, limit: usize) -> Result<(u64, Vec<PausedDomain>), StoreError> {
        self.paused_at(limit, None).await
    }

    /// [`Self::paused`] as of `now_ms` (Unix ms; `None`: the server's
    /// clock): pauses that end at or before it are over.
    pub async fn paused_at(
        &self,
        limit: usize,
        now_ms: Option<i64>,
    ) -> Result<(u64, Vec<PausedDomain>), StoreError> {
        let mut c = self.store.connection();
        // The index as it is now, in order of end of pause; the script
        // checks each entry against its pause key, both declared.
        let index = self.key(&["paused"]);
        let listed: Vec<String> = c
            .zrange(&index, 0, -1)
            .await
            .map_err(op("paused domains"))?;
        let mut inv = PAUSED.prepare_invoke();
        inv.key(&index).arg(limit).arg(now_arg(now_ms));
        for d in &listed {
            inv.key(self.key(&["pause", d]))
                .key(self.key(&["pausenote", d]))
                .arg(d);
        }
        let (total, flat): (u64, Vec<String>) = inv
            .invoke_async(&mut c)
            .await
            .map_err(op("paused domains"))?;
        let domains = flat
            .chunks_exact(4)
            .map(|d| PausedDomain {
                domain: d[0].clone(),
                until_ms: d[1].parse().unwrap_or_default(),
                by: d[2].clone(),
                reason: serde_json::from_str::<PauseNote>(&d[3])
                    .map(|n| n.reason)
                    .unwrap_or_default(),
            })
            .collect();
        Ok((total, domains))
    }

    /// Resumes a paused domain (and forgets its slow-down and breaker window).
    pub async fn resume(&self, domain: &str) -> Result<bool, StoreError> {
        let mut c = self.store.connection();
        let (n,): (i64,) = redis::pipe()
            .del(self.key(&["pause", domain]))
            .del(self.key(&["slow", domain]))
            .ignore()
            .del(self.key(&["pausenote", domain]))
            .ignore()
            .zrem(self.key(&["paused"]), domain)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("resume"))?;
        // The breaker's buckets: how many there are depends on the window
        // of the senders' settings, which an operator's command may not
        // share, so they are found by SCAN (an operator's command, rare).
        let pattern = format!(
            "{}*",
            crate::store::glob_escape(&self.key(&["brk", domain, ""]))
        );
        let keys = self.store.scan_keys(&pattern).await?;
        if !keys.is_empty() {
            let _: i64 = c.del(keys).await.map_err(op("resume"))?;
        }
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::PauseBy;

    #[test]
    fn the_scripts_write_the_words_of_who_paused() {
        let breaker = format!("'{}'", PauseBy::Breaker.as_str());
        assert!(super::super::breaker::BREAKER_LUA.contains(&breaker));
        let adaptive = format!("'{}\\n'", PauseBy::Adaptive.as_str());
        assert!(crate::sitecontrol::APPLY_LUA.contains(&adaptive));
        assert_eq!(PauseBy::Operator.as_str(), "operator");
    }
}

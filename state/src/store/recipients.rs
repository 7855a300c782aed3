//! A request's recipients one by one, as `mailpipe campaign recipients`
//! shows them: each address's screening verdict (`{p}:req:{rid}:rcpts`)
//! and, for the accepted ones, the message's terminal record
//! (`{p}:done:{mid}`). Read in batches; nothing here is on a hot path.

use redis::AsyncCommands;

use super::{op, DoneRecord, Store, StoreError};

/// Records read per round trip.
const BATCH: usize = 500;

impl Store {
    /// Every address of a request with its screening verdict as stored
    /// (`accepted`, `duplicate`, `excluded_by_rule:NAME`, ...), sorted by
    /// address. Empty for an unknown request. Reads the single hash (a
    /// request screened by a version before the buckets) and every bucket
    /// the request's hash names ([`Store::rcpt_buckets`]).
    pub async fn request_recipients(
        &self,
        request: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&["req", request, "rcpts"]);
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut c)
                .await
                .map_err(op("recipients"))?;
            for (address, value) in page {
                let verdict = super::screen::stored_verdict(&value).to_string();
                out.push((address, verdict));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let buckets: Option<u32> = c
            .hget(self.key(&["req", request]), "rcpt_buckets")
            .await
            .map_err(op("recipient buckets"))?;
        let buckets: Vec<u32> = (0..buckets.unwrap_or(0)).collect();
        // Buckets are small (listpacks): read whole, a few dozen a round trip.
        for chunk in buckets.chunks(32) {
            let mut pipe = redis::pipe();
            for n in chunk {
                pipe.hgetall(self.key(&["req", request, "rcpts", &n.to_string()]));
            }
            let pages: Vec<Vec<(String, String)>> =
                pipe.query_async(&mut c).await.map_err(op("recipients"))?;
            for (address, value) in pages.into_iter().flatten() {
                let verdict = super::screen::stored_verdict(&value).to_string();
                out.push((address, verdict));
            }
        }
        out.sort();
        // An address in both layouts (parts screened by two versions) is
        // one recipient.
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    /// The terminal records of several messages, in order (`None`: no
    /// record, or one that cannot be read).
    pub async fn done_many(
        &self,
        messages: &[String],
    ) -> Result<Vec<Option<DoneRecord>>, StoreError> {
        let mut c = self.conn.clone();
        let mut out = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|m| self.key(&["done", m])).collect();
            let raw: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .map_err(op("done records"))?;
            out.extend(
                raw.into_iter()
                    .map(|r| r.and_then(|r| DoneRecord::decode(&r).ok())),
            );
        }
        Ok(out)
    }
}

/// A request's terminal counts: what `mailpipe status` counts as sent,
/// dead (by reason) and removed, from which it derives what is pending.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TerminalCounts {
    pub sent: u64,
    pub dead: std::collections::BTreeMap<String, u64>,
    pub removed: u64,
}

impl TerminalCounts {
    /// The counts a request's hash holds now.
    pub fn stored(s: &super::RequestStatus) -> Self {
        Self {
            sent: s.sent,
            dead: s.dead.clone(),
            removed: s.removed,
        }
    }

    /// Recounted from the request's recipients (address, screening
    /// verdict) and, for each, its message's terminal record (`None`: no
    /// record yet). A dead record's reason is the head of its detail
    /// (`reason: text`).
    pub fn tally(verdicts: &[(String, String)], done: &[Option<DoneRecord>]) -> Self {
        use super::{DoneState, ScreenVerdict};
        let mut out = Self::default();
        for ((_, verdict), record) in verdicts.iter().zip(done) {
            if ScreenVerdict::parse(verdict) != Some(ScreenVerdict::Accepted) {
                continue;
            }
            let Some(r) = record else { continue };
            match r.state {
                DoneState::Sent => out.sent += 1,
                DoneState::Removed => out.removed += 1,
                DoneState::Dead => {
                    let reason = r
                        .detail
                        .split_once(": ")
                        .map_or(r.detail.as_str(), |(reason, _)| reason);
                    let reason = if reason.is_empty() { "unknown" } else { reason };
                    *out.dead.entry(reason.to_string()).or_default() += 1;
                }
            }
        }
        out
    }

    /// Recipients with a terminal record.
    pub fn terminal(&self) -> u64 {
        self.sent + self.removed + self.dead.values().sum::<u64>()
    }
}

/// KEYS: the request hash. ARGV: sent, removed, dead in all, then each
/// dead reason's counter field and count. Replaces the terminal counters;
/// dead reasons not given are dropped.
const SET_TERMINAL_LUA: &str = r#"
local fields = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(fields) do
  if string.sub(f, 1, 5) == 'dead:' then redis.call('HDEL', KEYS[1], f) end
end
redis.call('HSET', KEYS[1], 'sent', ARGV[1], 'removed', ARGV[2], 'dead', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"#;

impl Store {
    /// Replaces a request's terminal counters (`mailpipe campaign recount
    /// --apply`), in one script.
    pub async fn set_terminal_counts(
        &self,
        request: &str,
        counts: &TerminalCounts,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let script = redis::Script::new(SET_TERMINAL_LUA);
        let mut inv = script.key(self.key(&["req", request]));
        inv.arg(counts.sent)
            .arg(counts.removed)
            .arg(counts.dead.values().sum::<u64>());
        for (reason, n) in &counts.dead {
            inv.arg(format!("dead:{reason}")).arg(n);
        }
        let _: i64 = inv
            .invoke_async(&mut c)
            .await
            .map_err(op("set terminal counts"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DoneState;

    #[test]
    fn a_recount_counts_the_accepted_recipients_by_their_terminal_record() {
        let rec = |state, detail: &str| {
            Some(DoneRecord {
                state,
                detail: detail.into(),
                ..Default::default()
            })
        };
        let rows = [
            ("a", "accepted", rec(DoneState::Sent, "250 2.0.0 ok")),
            ("b", "accepted", rec(DoneState::Sent, "250 ok")),
            (
                "c",
                "accepted",
                rec(DoneState::Dead, "user_unknown: 550 5.1.1 no"),
            ),
            (
                "d",
                "accepted",
                rec(DoneState::Dead, "expired: the validity period ended"),
            ),
            (
                "e",
                "accepted",
                rec(DoneState::Dead, "user_unknown: 550 no such user"),
            ),
            ("f", "accepted", rec(DoneState::Dead, "")),
            ("g", "accepted", rec(DoneState::Removed, "cancelled")),
            // Pending: no record yet.
            ("h", "accepted", None),
            // Excluded recipients have no message, whatever is stored.
            ("i", "duplicate", rec(DoneState::Sent, "250 ok")),
            ("j", "excluded_by_rule:roles", None),
        ];
        let verdicts: Vec<(String, String)> = rows
            .iter()
            .map(|(a, v, _)| (a.to_string(), v.to_string()))
            .collect();
        let done: Vec<Option<DoneRecord>> = rows.iter().map(|(_, _, d)| d.clone()).collect();
        let counts = TerminalCounts::tally(&verdicts, &done);
        let dead = [("expired", 1), ("unknown", 1), ("user_unknown", 2)]
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        assert_eq!(
            counts,
            TerminalCounts {
                sent: 2,
                dead,
                removed: 1
            }
        );
        assert_eq!(counts.terminal(), 7);
    }
}

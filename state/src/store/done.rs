//! A message's terminal record (`{p}:done:{mid}`) and lease
//! (`{p}:lease:{mid}`), and named locks (`{p}:lock:{name}`), which a lease
//! shares its compare-and-delete release with. Terminal records are written
//! by the calls script (`crate::calls`): see `Store::record_done`.

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{op, Store, StoreError};

/// What the sender learns about a job before sending it.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// The message's terminal record, if it has one.
    pub done: Option<DoneRecord>,
    /// An operator holds the campaign.
    pub held: bool,
    /// An operator cancelled the campaign.
    pub cancelled: bool,
    /// When the message may be sent (no terminal record, not held, not
    /// cancelled): `None` when the caller took its lease, else how long the
    /// lease another replica holds has left.
    pub lease_wait: Option<Duration>,
    /// The caller took the lease, but an attempt (the delivery named here
    /// by its lease owner) sent the data and never recorded the server's
    /// answer: the recipient may have the message already.
    pub ambiguous: Option<String>,
}

/// One message to check and lease: a [`crate::calls::Call::Gate`].
#[derive(Debug, Clone)]
pub struct GateRequest {
    pub message: String,
    pub request: String,
    /// A retry: the message also leaves the deferred index.
    pub retried: bool,
    /// The lease holder: unique per delivery.
    pub owner: String,
}

/// "Data sent, awaiting reply": written by a delivery just before the final
/// dot of its transaction ([`crate::calls::Call::Mark`]), removed when the
/// server's answer is recorded. A later delivery that finds the mark of
/// another knows that attempt's outcome is unknown; one that finds none
/// knows the message was never handed over.
#[derive(Debug, Clone)]
pub struct MarkRequest {
    pub message: String,
    /// The delivery's lease owner.
    pub owner: String,
    /// How long the mark is kept (as long as the message's records).
    pub ttl: Duration,
}

/// One terminal record to write in [`Store::record_done_many`].
#[derive(Debug, Clone)]
pub struct DoneWrite {
    pub message: String,
    pub record: DoneRecord,
    /// Request-hash counters to raise when the record is new, space-separated.
    pub counters: String,
    /// The address whose soft-failure counter the record resets (a delivery).
    pub reset_address: Option<String>,
    /// How long the record is kept.
    pub ttl: Duration,
}

impl DoneWrite {
    /// The sent record of a delivery to `address`.
    pub fn sent(message: &str, record: DoneRecord, address: &str, ttl: Duration) -> Self {
        Self {
            message: message.to_string(),
            record,
            counters: "sent".into(),
            reset_address: Some(address.to_string()),
            ttl,
        }
    }
}

/// A message's terminal state: `sent`, `dead` or `removed` on the wire and
/// in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneState {
    /// The receiving server accepted the message.
    #[default]
    Sent,
    /// It stopped for good; the record's detail says why.
    Dead,
    /// An operator removed it (a cancelled campaign, `queue remove`).
    Removed,
}

impl DoneState {
    pub fn as_str(self) -> &'static str {
        match self {
            DoneState::Sent => "sent",
            DoneState::Dead => "dead",
            DoneState::Removed => "removed",
        }
    }
}

impl std::fmt::Display for DoneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message's terminal state, kept for the validity period (the archive of
/// the validity period of sent mail).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneRecord {
    pub state: DoneState,
    pub request: String,
    pub at: i64,
    /// For `sent`: the route; for others: empty.
    #[serde(default)]
    pub route: String,
    /// For `sent`: the server's reply; for `dead`/`removed`: the reason.
    pub detail: String,
    /// For `sent`: the recipient, campaign and lane, so that a bounce or a
    /// complaint arriving days later (matched by its VERP token or the
    /// returned message's id) finds who it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<crate::message::Lane>,
}

pub(super) const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// KEYS: the dot mark, the once-counted flag, the request hash, the
/// history. ARGV: ttl s, history entry. Removes the mark and records the
/// ambiguity; counts the recipient once (1 when counted now).
pub(super) const RESOLVE_AMBIGUOUS_LUA: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[4], ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[1])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[3], 'ambiguous', 1)
  return 1
end
return 0
"#;

/// KEYS: the terminal record, the request hash. ARGV: the dead reason's
/// counter field. Lifts a `dead` terminal state so that the message can be
/// sent again: the record goes and the request's dead counters go down.
pub(super) const UNDO_DEAD_LUA: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if not ok or rec.state ~= 'dead' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'dead', -1)
redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
return 1
"#;

impl Store {
    /// Lifts a message's `dead` state (an operator requeues it): `false`
    /// when it is not dead (sent, removed, or no record).
    pub async fn undo_dead(
        &self,
        message: &str,
        request: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(UNDO_DEAD_LUA)
            .key(self.key(&["done", message]))
            .key(self.key(&["req", request]))
            .arg(format!("dead:{reason}"))
            .invoke_async(&mut c)
            .await
            .map_err(op("undo dead"))?;
        Ok(n == 1)
    }

    /// Removes a delivery's "data sent" mark once the server's answer to
    /// the data is known (a refusal: nothing was delivered).
    pub async fn clear_mark(&self, message: &str, owner: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.key(&["dot", message]))
            .arg(owner)
            .invoke_async(&mut c)
            .await
            .map_err(op("clear mark"))?;
        Ok(())
    }

    /// Records that a message's attempt was ambiguous and what was done
    /// about it (`entry`, a history entry): its mark goes, the entry joins
    /// its history, and the request's `ambiguous` counter counts the
    /// recipient once however often it happens. `true` when counted now.
    pub async fn resolve_ambiguous(
        &self,
        message: &str,
        request: &str,
        entry: &serde_json::Value,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(RESOLVE_AMBIGUOUS_LUA)
            .key(self.key(&["dot", message]))
            .key(self.key(&["ambiguous", message]))
            .key(self.key(&["req", request]))
            .key(self.key(&["history", message]))
            .arg(ttl.as_secs().max(1))
            .arg(entry.to_string())
            .invoke_async(&mut c)
            .await
            .map_err(op("resolve ambiguous"))?;
        Ok(n == 1)
    }

    /// A message's "data sent" mark, if a delivery left one: its owner.
    pub async fn mark_of(&self, message: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        c.get(self.key(&["dot", message]))
            .await
            .map_err(op("get mark"))
    }

    /// A message's terminal state, if it has one.
    pub async fn done(&self, message: &str) -> Result<Option<DoneRecord>, StoreError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c
            .get(self.key(&["done", message]))
            .await
            .map_err(op("get done"))?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|e| StoreError::Corrupt {
                what: "done record",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Releases a lease if `owner` still holds it.
    pub async fn release_lease(&self, message: &str, owner: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.key(&["lease", message]))
            .arg(owner)
            .invoke_async(&mut c)
            .await
            .map_err(op("release lease"))?;
        Ok(())
    }

    /// Takes (or renews) a named lock for `owner` for `ttl`; `false` while
    /// someone else holds it.
    pub async fn try_lock(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.key(&["lock", name]);
        let mut c = self.conn.clone();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await
            .map_err(op("lock"))?;
        if taken.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = c.get(&key).await.map_err(op("lock"))?;
        Ok(holder.as_deref() == Some(owner))
    }

    /// Releases a named lock if `owner` holds it.
    pub async fn unlock(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .release
            .key(self.key(&["lock", name]))
            .arg(owner)
            .invoke_async(&mut c)
            .await
            .map_err(op("unlock"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_keep_their_wire_names() {
        for (state, name) in [
            (DoneState::Sent, "sent"),
            (DoneState::Dead, "dead"),
            (DoneState::Removed, "removed"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(state.as_str(), name);
        }
        // A record written before the state was typed reads the same.
        let record: DoneRecord = serde_json::from_str(
            r#"{"state":"dead","request":"r1","at":1,"route":"","detail":"expired: late"}"#,
        )
        .unwrap();
        assert_eq!(record.state, DoneState::Dead);
        assert!(serde_json::from_str::<DoneRecord>(
            r#"{"state":"lost","request":"r1","at":1,"detail":""}"#
        )
        .is_err());
    }
}

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

/// The separator of the fields of a compact record ([`DoneRecord::encode`]).
const SEP: char = '|';

impl DoneRecord {
    /// The record as stored in `{p}:done:{mid}`: compact, without field
    /// names, in the order
    ///
    /// `{state}{at}|{lane}|{request}|{campaign}|{route}|{to}|{detail}`
    ///
    /// where `state` is one letter (`s` sent, `d` dead, `r` removed), `lane`
    /// one letter (`b` bulk, `t` transactional) and an absent lane,
    /// campaign or recipient is empty. The detail is last and may hold
    /// anything. A record that this cannot hold exactly (a `|` in a field
    /// before the detail, an empty but present campaign or recipient) is
    /// stored as JSON, the format of earlier versions, which
    /// [`Self::decode`] reads as well: a JSON record starts with `{`, a
    /// compact one with its state's letter.
    ///
    /// A version that stored JSON cannot read a compact record. During a
    /// rolling upgrade, a sender of that version takes the record it cannot
    /// read for a Redis error: it holds the message, never sends it, and
    /// gives it back at its shutdown; its intake retries the report later.
    /// No message is sent twice; upgrade the senders and the intake first.
    pub fn encode(&self) -> String {
        let fields = [
            self.request.as_str(),
            self.campaign.as_deref().unwrap_or(""),
            self.route.as_str(),
            self.to.as_deref().unwrap_or(""),
        ];
        if fields.iter().any(|f| f.contains(SEP))
            || self.campaign.as_deref() == Some("")
            || self.to.as_deref() == Some("")
        {
            return serde_json::to_string(self).unwrap_or_default();
        }
        let state = match self.state {
            DoneState::Sent => 's',
            DoneState::Dead => 'd',
            DoneState::Removed => 'r',
        };
        let lane = match self.lane {
            Some(crate::message::Lane::Bulk) => "b",
            Some(crate::message::Lane::Transactional) => "t",
            None => "",
        };
        let mut out = String::with_capacity(
            24 + fields.iter().map(|f| f.len()).sum::<usize>() + self.detail.len(),
        );
        out.push(state);
        out.push_str(&self.at.to_string());
        for f in [
            lane,
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            &self.detail,
        ] {
            out.push(SEP);
            out.push_str(f);
        }
        out
    }

    /// A stored record, compact ([`Self::encode`]) or JSON (written by
    /// earlier versions, or by this one when the compact form cannot hold
    /// it): a record written by any version is found, so a redelivered
    /// message is never sent again for want of reading its record.
    pub fn decode(raw: &str) -> Result<Self, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "done record",
            detail,
        };
        if raw.starts_with('{') {
            return serde_json::from_str(raw).map_err(|e| corrupt(e.to_string()));
        }
        let mut chars = raw.chars();
        let state = match chars.next() {
            Some('s') => DoneState::Sent,
            Some('d') => DoneState::Dead,
            Some('r') => DoneState::Removed,
            _ => return Err(corrupt(format!("unknown format: {:.40}", raw))),
        };
        let fields: Vec<&str> = chars.as_str().splitn(7, SEP).collect();
        let [at, lane, request, campaign, route, to, detail] = fields[..] else {
            return Err(corrupt(format!(
                "{} fields of 7: {:.40}",
                fields.len(),
                raw
            )));
        };
        let lane = match lane {
            "b" => Some(crate::message::Lane::Bulk),
            "t" => Some(crate::message::Lane::Transactional),
            "" => None,
            other => return Err(corrupt(format!("unknown lane {other:?}"))),
        };
        let some = |f: &str| (!f.is_empty()).then(|| f.to_string());
        Ok(Self {
            state,
            request: request.to_string(),
            at: at
                .parse()
                .map_err(|_| corrupt(format!("time {at:?} is not a number")))?,
            route: route.to_string(),
            detail: detail.to_string(),
            to: some(to),
            campaign: some(campaign),
            lane,
        })
    }
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
/// The record is compact (its first letter is its state, `d` for dead) or
/// JSON ([`DoneRecord::encode`]).
pub(super) const UNDO_DEAD_LUA: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if string.sub(raw, 1, 1) == '{' then
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or rec.state ~= 'dead' then return 0 end
elseif string.sub(raw, 1, 1) ~= 'd' then
  return 0
end
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
        raw.map(|r| DoneRecord::decode(&r)).transpose()
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

    fn sent() -> DoneRecord {
        DoneRecord {
            state: DoneState::Sent,
            request: "r1".into(),
            at: 1796679970,
            route: "default".into(),
            detail: "250 2.0.0 Ok: queued as 4X|Y".into(),
            to: Some("user1@example.com".into()),
            campaign: Some("spring".into()),
            lane: Some(crate::message::Lane::Bulk),
        }
    }

    #[test]
    fn records_are_stored_compact_and_read_back_unchanged() {
        let dead = DoneRecord {
            state: DoneState::Dead,
            request: "r2".into(),
            at: -5,
            route: String::new(),
            detail: "user_unknown: 550 5.1.1 no\r\nsuch user".into(),
            to: None,
            campaign: None,
            lane: None,
        };
        let removed = DoneRecord {
            state: DoneState::Removed,
            lane: Some(crate::message::Lane::Transactional),
            detail: String::new(),
            ..sent()
        };
        for (record, stored) in [
            (
                sent(),
                "s1796679970|b|r1|spring|default|user1@example.com|250 2.0.0 Ok: queued as 4X|Y",
            ),
            (dead, "d-5||r2||||user_unknown: 550 5.1.1 no\r\nsuch user"),
            (
                removed,
                "r1796679970|t|r1|spring|default|user1@example.com|",
            ),
        ] {
            assert_eq!(record.encode(), stored);
            assert_eq!(DoneRecord::decode(stored).unwrap(), record, "{stored}");
        }
    }

    #[test]
    fn a_record_the_compact_form_cannot_hold_is_stored_as_json() {
        for record in [
            DoneRecord {
                to: Some("a|b@example.com".into()),
                ..sent()
            },
            DoneRecord {
                campaign: Some("q|2".into()),
                ..sent()
            },
            DoneRecord {
                request: "r|1".into(),
                ..sent()
            },
            DoneRecord {
                route: "r|1".into(),
                ..sent()
            },
            DoneRecord {
                campaign: Some(String::new()),
                ..sent()
            },
            DoneRecord {
                to: Some(String::new()),
                ..sent()
            },
        ] {
            let stored = record.encode();
            assert!(stored.starts_with('{'), "{stored}");
            assert_eq!(DoneRecord::decode(&stored).unwrap(), record, "{stored}");
        }
    }

    #[test]
    fn records_of_earlier_versions_are_read() {
        // As the versions that stored JSON wrote them.
        let record = DoneRecord::decode(
            r#"{"state":"sent","request":"r1","at":1796679970,"route":"default","detail":"250 2.0.0 Ok: queued as 4X|Y","to":"user1@example.com","campaign":"spring","lane":"bulk"}"#,
        )
        .unwrap();
        assert_eq!(record, sent());
        let record = DoneRecord::decode(
            r#"{"state":"dead","request":"r1","at":1,"route":"","detail":"expired: late"}"#,
        )
        .unwrap();
        assert_eq!(
            (record.state, record.to, record.lane),
            (DoneState::Dead, None, None)
        );
    }

    #[test]
    fn what_is_not_a_record_is_corrupt_not_a_guess() {
        for raw in [
            "",
            "x1|b|r|c|route|to|d",
            "s1|b|r|c|route|to",
            "snow|b|r|c|route|to|d",
            "s1|x|r|c|route|to|d",
            "{\"state\":\"sent\"",
        ] {
            assert!(
                matches!(DoneRecord::decode(raw), Err(StoreError::Corrupt { .. })),
                "{raw:?}"
            );
        }
    }
}

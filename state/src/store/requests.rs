//! A request's keys: its content (`{p}:content:{id}`), its metadata and
//! counters (`{p}:req:{rid}`), its parts' counts (`{p}:req:{rid}:parts`) and
//! the index of requests (`{p}:requests`); and what `mailpipe status`
//! makes of them ([`RequestStatus`]).

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{op, Store, StoreError};

/// Request metadata written at first sight of a request (first writer wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestMeta {
    pub campaign: Option<String>,
    pub tenant: Option<String>,
    /// The request's lane (stored as its name, `bulk` or `transactional`);
    /// `None` only in the empty metadata of a request not seen yet.
    #[serde(default)]
    pub lane: Option<crate::message::Lane>,
    pub parts_total: u32,
    pub created: i64,
    pub deadline: i64,
}

/// Counts of one expanded part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartCounts {
    /// Recipient entries in the part.
    pub recipients: u64,
    /// Jobs published.
    pub accepted: u64,
    /// Excluded entries by reason (`invalid_address`, `duplicate`, ...).
    pub excluded: BTreeMap<String, u64>,
    /// Of those excluded as `excluded_by_rule`: how many by each rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, u64>,
    /// Accepted recipients flagged by an address check that only flags
    /// (`likely_typo` when so configured), by check.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flagged: BTreeMap<String, u64>,
}

/// The key of [`RequestStatus::refused`] for a refusal of the whole
/// request (its part unknown).
pub const REFUSED_REQUEST: &str = "request";

/// Everything `mailpipe status` shows for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStatus {
    pub request: String,
    pub meta: Option<RequestMeta>,
    pub parts_done: u32,
    pub recipients: u64,
    pub accepted: u64,
    pub excluded: BTreeMap<String, u64>,
    /// Of those excluded as `excluded_by_rule`: how many by each rule.
    #[serde(default)]
    pub rules: BTreeMap<String, u64>,
    /// Accepted recipients an address check flagged (and did not exclude).
    #[serde(default)]
    pub flagged: BTreeMap<String, u64>,
    pub sent: u64,
    pub dead: BTreeMap<String, u64>,
    pub removed: u64,
    /// Failed attempts so far (each retry counts once).
    pub failed_attempts: u64,
    /// Sent messages that bounced later (asynchronous bounces), by reason.
    pub bounced: BTreeMap<String, u64>,
    /// Sent messages whose recipient complained (feedback loops).
    pub complained: u64,
    /// Sent messages whose recipient asked by mail to unsubscribe.
    #[serde(default)]
    pub unsubscribed: u64,
    /// Recipients with an ambiguous attempt: the data was sent and no reply
    /// was read, so they may have received the message twice (with
    /// `sender.on_ambiguous: resend`). Each counted once.
    #[serde(default)]
    pub ambiguous: u64,
    /// Accepted messages without a terminal state yet.
    pub pending: u64,
    /// Pending recipients waiting in the delay tiers (the deferred index),
    /// by why (`retry`: a failed attempt retried later; `paused`: their
    /// domain was paused; `throttled`: a rate limit) and domain.
    #[serde(default)]
    pub waiting: BTreeMap<String, BTreeMap<String, u64>>,
    /// Deferrals so far (a recipient deferred twice counts twice).
    #[serde(default)]
    pub deferrals: u64,
    /// Why an operator holds the campaign, while it is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldNote>,
    /// Parts (`"2"`, or [`REFUSED_REQUEST`] when the part is unknown) the expander
    /// refused, with why: a campaign with a refused part never completes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, Refusal>,
}

impl RequestStatus {
    /// Recipients waiting in the delay tiers for this why, all domains.
    pub fn waiting_for(&self, why: &str) -> u64 {
        self.waiting.get(why).map_or(0, |d| d.values().sum())
    }
}

/// An operator's hold of a campaign: when, why and who.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldNote {
    pub at: i64,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub by: String,
}

/// Why the expander refused a request or one of its parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Short reason, as in the dead-letter record (`invalid_request`, ...).
    pub reason: String,
    /// What was wrong, for a person.
    pub detail: String,
    pub at: i64,
}

impl RequestStatus {
    /// Whether every part was expanded and every recipient has an outcome.
    pub fn is_complete(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|m| self.parts_done >= m.parts_total && self.pending == 0)
    }

    /// Whether nothing more will happen although the request is not
    /// complete: a part (or the whole request) was refused and every
    /// accepted recipient has an outcome.
    pub fn is_incomplete(&self) -> bool {
        !self.refused.is_empty() && self.pending == 0 && !self.is_complete()
    }
}

impl Store {
    /// Stores a request's templates under their content id.
    pub async fn put_content(&self, id: &str, json: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: () = c
            .set_ex(self.key(&["content", id]), json, ttl.as_secs().max(1))
            .await
            .map_err(op("put content"))?;
        Ok(())
    }

    /// Loads a request's templates.
    pub async fn get_content(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut c = self.conn.clone();
        c.get(self.key(&["content", id]))
            .await
            .map_err(op("get content"))
    }

    /// Records a request's metadata (first writer wins, so parts and replays
    /// keep the original creation time), and indexes it by creation time.
    /// Index entries created more than `index_keep` before `meta.created`
    /// (the longest a request's state can live) leave the index in the
    /// same call, so the index does not grow without end.
    pub async fn register_request(
        &self,
        request: &str,
        meta: &RequestMeta,
        ttl: Duration,
        index_keep: Duration,
    ) -> Result<RequestMeta, StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&["req", request]);
        let json = serde_json::to_string(meta).unwrap_or_default();
        let (stored,): (String,) = redis::pipe()
            .atomic()
            .hset_nx(&key, "meta", json)
            .ignore()
            .hget(&key, "meta")
            .expire(&key, ttl.as_secs() as i64)
            .ignore()
            .zadd(self.key(&["requests"]), request, meta.created)
            .ignore()
            .zrembyscore(
                self.key(&["requests"]),
                "-inf",
                format!("({}", meta.created - index_keep.as_secs() as i64),
            )
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("register request"))?;
        serde_json::from_str(&stored).map_err(|e| StoreError::Corrupt {
            what: "request meta",
            detail: e.to_string(),
        })
    }

    /// Stores the counts of a fully published part (idempotent).
    pub async fn record_part(
        &self,
        request: &str,
        part: u32,
        counts: &PartCounts,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&["req", request, "parts"]);
        let json = serde_json::to_string(counts).unwrap_or_default();
        let _: () = redis::pipe()
            .hset(&key, part, json)
            .ignore()
            .expire(&key, ttl.as_secs() as i64)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("record part"))?;
        Ok(())
    }

    /// Whether a part was already fully expanded and published.
    pub async fn part_done(&self, request: &str, part: u32) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.hexists(self.key(&["req", request, "parts"]), part)
            .await
            .map_err(op("part done"))
    }

    /// The ids of the `limit` most recently created requests, newest first.
    pub async fn recent_requests(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        let mut c = self.conn.clone();
        c.zrevrange(self.key(&["requests"]), 0, stop)
            .await
            .map_err(op("recent requests"))
    }

    /// Raises a request counter that is not a terminal state (e.g. failed attempts).
    pub async fn incr_request(&self, request: &str, field: &str) -> Result<(), StoreError> {
        self.incr_request_by(request, field, 1).await
    }

    /// Raises a request counter by `n`.
    pub async fn incr_request_by(
        &self,
        request: &str,
        field: &str,
        n: u64,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .hincr(self.key(&["req", request]), field, n)
            .await
            .map_err(op("count"))?;
        Ok(())
    }

    /// Records that the expander refused a request (`part` = None when it
    /// could not tell which part) so that `mailpipe status` can say so; the
    /// record lives as long as the request's other state (`ttl` when it has
    /// none yet).
    pub async fn record_refusal(
        &self,
        request: &str,
        part: Option<u32>,
        refusal: &Refusal,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let field = format!(
            "refused:{}",
            part.map(|p| p.to_string())
                .unwrap_or_else(|| REFUSED_REQUEST.into())
        );
        let json = serde_json::to_string(refusal).unwrap_or_default();
        let _: i64 = redis::Script::new(
            r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"#,
        )
        .key(self.key(&["req", request]))
        .arg(field)
        .arg(json)
        .arg(ttl.as_secs().max(1))
        .invoke_async(&mut c)
        .await
        .map_err(op("record refusal"))?;
        Ok(())
    }

    /// Everything known about a request.
    pub async fn request_status(&self, request: &str) -> Result<RequestStatus, StoreError> {
        let mut c = self.conn.clone();
        let fields: BTreeMap<String, String> = c
            .hgetall(self.key(&["req", request]))
            .await
            .map_err(op("request status"))?;
        let parts: BTreeMap<String, String> = c
            .hgetall(self.key(&["req", request, "parts"]))
            .await
            .map_err(op("request parts"))?;
        let mut s = RequestStatus {
            request: request.to_string(),
            ..Default::default()
        };
        for (name, value) in &fields {
            let n = value.parse::<u64>().unwrap_or(0);
            match name.as_str() {
                "meta" => s.meta = serde_json::from_str(value).ok(),
                "sent" => s.sent = n,
                "removed" => s.removed = n,
                "failed_attempts" => s.failed_attempts = n,
                "complained" => s.complained = n,
                "unsubscribed" => s.unsubscribed = n,
                "ambiguous" => s.ambiguous = n,
                "deferrals" => s.deferrals = n,
                "hold" => s.hold = serde_json::from_str(value).ok(),
                other => {
                    if let Some(part) = other.strip_prefix("refused:") {
                        if let Ok(r) = serde_json::from_str(value) {
                            s.refused.insert(part.to_string(), r);
                        }
                    } else if let Some(reason) = other.strip_prefix("dead:") {
                        // A reason whose messages were all requeued is gone.
                        if n > 0 {
                            s.dead.insert(reason.to_string(), n);
                        }
                    } else if let Some(reason) = other.strip_prefix("bounced:") {
                        s.bounced.insert(reason.to_string(), n);
                    } else if let Some((why, domain)) = other
                        .strip_prefix("waiting:")
                        .and_then(|w| w.split_once(':'))
                    {
                        if n > 0 {
                            s.waiting
                                .entry(why.to_string())
                                .or_default()
                                .insert(domain.to_string(), n);
                        }
                    }
                }
            }
        }
        for raw in parts.values() {
            let p: PartCounts = serde_json::from_str(raw).map_err(|e| StoreError::Corrupt {
                what: "part counts",
                detail: e.to_string(),
            })?;
            s.parts_done += 1;
            s.recipients += p.recipients;
            s.accepted += p.accepted;
            for (reason, n) in p.excluded {
                *s.excluded.entry(reason).or_default() += n;
            }
            for (rule, n) in p.rules {
                *s.rules.entry(rule).or_default() += n;
            }
            for (check, n) in p.flagged {
                *s.flagged.entry(check).or_default() += n;
            }
        }
        let dead: u64 = s.dead.values().sum();
        s.pending = s.accepted.saturating_sub(s.sent + dead + s.removed);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Lane;

    #[test]
    fn stored_request_metadata_keeps_the_lane_by_name() {
        let stored = r#"{"campaign":"c","tenant":null,"lane":"transactional","parts_total":2,"created":1,"deadline":9}"#;
        let meta: RequestMeta = serde_json::from_str(stored).unwrap();
        assert_eq!(meta.lane, Some(Lane::Transactional));
        assert_eq!(
            serde_json::to_value(&meta).unwrap()["lane"],
            "transactional"
        );
        assert!(
            serde_json::from_str::<RequestMeta>(&stored.replace("transactional", "express"))
                .is_err()
        );
    }
}

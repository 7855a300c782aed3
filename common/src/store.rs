//! mailpipe's shared state in Redis.
//!
//! Keys (all under the configured prefix `{p}`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `{p}:content:{id}` | string | a request's templates (JSON), content-addressed |
//! | `{p}:req:{rid}` | hash | request metadata and terminal-state counters |
//! | `{p}:req:{rid}:parts` | hash | per part: the expansion counts (JSON), written once the part is fully published |
//! | `{p}:req:{rid}:rcpts` | hash | address → `position|verdict`: deduplication across parts, replay-safe |
//! | `{p}:req:{rid}:audience` | string | recipients accepted so far (for `max_audience`) |
//! | `{p}:requests` | zset | request ids by creation time |
//! | `{p}:done:{mid}` | string | a message's terminal state (sent record with route and reply, dead, removed) |
//! | `{p}:lease:{mid}` | string | the sender replica currently submitting the message |
//! | `{p}:coalesce:{tenant}:{key}:{addr}` | string | message id that used the coalescing window |
//! | `{p}:quarantine:{addr}` | string | quarantine record (JSON) |
//! | `{p}:quarantined` | zset | quarantined addresses by expiry time (index for listing) |
//! | `{p}:denylist` / `{p}:allowlist` | set | addresses |
//! | `{p}:errors:{addr}` | hash | soft-failure counter of an address |
//! | `{p}:held:{rid}` / `{p}:cancelled:{rid}` | string | campaign held / cancelled by an operator |
//! | `{p}:deferred` + `{p}:deferred:info` | zset + hash | deferred messages by due time, with what operators see |
//! | `{p}:history:{mid}` | list | a message's failed attempts (JSON), for `mailpipe queue show` |
//! | `{p}:bounced:{mid}` / `{p}:complained:{mid}` / `{p}:unsubscribed:{mid}` | string | an asynchronous bounce / complaint / unsubscribe request for a sent message was counted (once) |
//! | `{p}:intake:unprocessed` | list | the latest mails the intake could not use, and why (JSON, capped) |
//!
//! Every counter is written idempotently: expansion counts are stored per
//! part (overwritten by a replay, never added twice), and terminal states are
//! counted only by the `SET NX` that creates `{p}:done:{mid}`. That is what
//! lets `mailpipe status` agree with the SMTP server after crashes and
//! redeliveries.
//!
//! The scripts name keys they compute from the prefix, which a single Redis
//! (or Sentinel) deployment allows; Redis Cluster is not supported yet.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::calls::{Answer, Call};
use crate::config::RedisSettings;

/// A Redis failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis {op}: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A call that ran for several callers at once failed; each caller gets
    /// its description.
    #[error("{0}")]
    Shared(String),
}

fn op(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { op, source }
}

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

fn unix_now_str() -> String {
    crate::unix_now().to_string()
}

/// Screening of one recipient during expansion.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Canonical address key.
    pub address: String,
    /// Position in the request, `part:index`; identifies a replay.
    pub position: String,
    pub message_id: String,
    /// Already decided to be in the control group (deterministic, computed by the caller).
    pub control_group: bool,
}

/// Per-request screening options.
#[derive(Debug, Clone, Default)]
pub struct ScreenOptions {
    pub max_audience: Option<u64>,
    /// `(tenant, key, window)` of a coalescing request.
    pub coalesce: Option<(String, String, Duration)>,
    /// How long the request's keys live.
    pub ttl: Duration,
}

/// Request metadata written at first sight of a request (first writer wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestMeta {
    pub campaign: Option<String>,
    pub tenant: Option<String>,
    pub lane: String,
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
}

/// A message's terminal state, kept for the validity period (the archive of
/// the validity period of sent mail).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoneRecord {
    /// `sent`, `dead` or `removed`.
    pub state: String,
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

/// Everything `mailpipe status` shows for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStatus {
    pub request: String,
    pub meta: Option<RequestMeta>,
    pub parts_done: u32,
    pub recipients: u64,
    pub accepted: u64,
    pub excluded: BTreeMap<String, u64>,
    pub sent: u64,
    pub dead: BTreeMap<String, u64>,
    pub removed: u64,
    /// Failed attempts so far (each retry counts once).
    pub failed_attempts: u64,
    /// Sent messages that bounced later (asynchronous bounces), by reason.
    pub bounced: BTreeMap<String, u64>,
    /// Sent messages whose recipient complained (feedback loops).
    pub complained: u64,
    /// Accepted messages without a terminal state yet.
    pub pending: u64,
    /// Parts (`"2"`, or `"request"` when the part is unknown) the expander
    /// refused, with why: a campaign with a refused part never completes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, Refusal>,
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

const SCREEN_LUA: &str = r#"
-- KEYS[1] rcpts hash, KEYS[2] audience counter
-- ARGV[1] prefix, ARGV[2] max audience (0 = none), ARGV[3] ttl seconds,
-- ARGV[4] coalesce scope ('' = none), ARGV[5] coalesce window seconds,
-- then groups of 4: address, position, message id, control group flag
local prefix = ARGV[1]
local max = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local cscope = ARGV[4]
local cwindow = tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV, 4 do
  local addr, pos, mid, cg = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local verdict
  -- Claimed as accepted at once (the usual verdict, one command); a
  -- recipient seen before keeps its first verdict, and any other verdict
  -- overwrites the claim below.
  if redis.call('HSETNX', KEYS[1], addr, pos .. '|accepted') == 0 then
    local prev = redis.call('HGET', KEYS[1], addr)
    local sep = string.find(prev, '|', 1, true)
    if string.sub(prev, 1, sep - 1) == pos then
      verdict = string.sub(prev, sep + 1)
    else
      verdict = 'duplicate'
    end
  else
    if redis.call('SISMEMBER', prefix .. ':denylist', addr) == 1 then
      verdict = 'denylisted'
    elseif redis.call('EXISTS', prefix .. ':quarantine:' .. addr) == 1
        and redis.call('SISMEMBER', prefix .. ':allowlist', addr) == 0 then
      verdict = 'quarantined'
    elseif cg == '1' then
      verdict = 'control_group'
    else
      verdict = 'accepted'
      if cscope ~= '' then
        local ckey = prefix .. ':coalesce:' .. cscope .. ':' .. addr
        if not redis.call('SET', ckey, mid, 'NX', 'EX', cwindow) then
          if redis.call('GET', ckey) ~= mid then verdict = 'coalesced' end
        end
      end
      if verdict == 'accepted' and max > 0 then
        if redis.call('INCR', KEYS[2]) > max then verdict = 'target_size_limited' end
      end
    end
    if verdict ~= 'accepted' then
      redis.call('HSET', KEYS[1], addr, pos .. '|' .. verdict)
    end
  end
  out[#out + 1] = verdict
end
redis.call('EXPIRE', KEYS[1], ttl)
if max > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return out
"#;

const MARK_LUA: &str = r#"
-- KEYS[1] a marker key, KEYS[2] request hash; ARGV[1] value, ARGV[2] ttl
-- seconds, ARGV[3..] counter fields to raise when the marker is new
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  for i = 3, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
  return 1
end
return 0
"#;

const FAILURE_LUA: &str = r#"
-- KEYS[1] error counter hash, KEYS[2] quarantine key, KEYS[3] counted marker,
-- KEYS[4] allowlist set, KEYS[5] quarantine index (zset address -> expiry)
-- ARGV: 1 address, 2 reason, 3 immediate (1/0), 4 threshold, 5 expiry s,
--       6 counter ttl s, 7 now, 8 detail
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[6]) then return {-1, 0} end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return {0, 0} end
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HSETNX', KEYS[1], 'first', ARGV[7])
redis.call('HSET', KEYS[1], 'last', ARGV[7], 'reason', ARGV[2], 'detail', ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[3] == '1' or count >= tonumber(ARGV[4]) then
  local record = cjson.encode({
    reason = ARGV[2], count = count,
    first = tonumber(redis.call('HGET', KEYS[1], 'first')),
    last = tonumber(ARGV[7]), detail = ARGV[8],
    expires = tonumber(ARGV[7]) + tonumber(ARGV[5]), source = 'delivery'})
  redis.call('SET', KEYS[2], record, 'EX', ARGV[5])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[7]) + tonumber(ARGV[5]), ARGV[1])
  return {count, 1}
end
return {count, 0}
"#;

const QUALIFY_LUA: &str = r#"
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

/// What [`Store::record_recipient_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCount {
    /// This failure (message and attempt) was counted before; nothing changed.
    AlreadyCounted,
    /// The address is allowlisted: never counted, never quarantined.
    Allowlisted,
    /// Counted; `quarantined` tells whether the address is now quarantined.
    Counted { count: u64, quarantined: bool },
}

/// A recipient-scope failure to count against an address.
#[derive(Debug, Clone)]
pub struct RecipientFailure<'a> {
    pub address: &'a str,
    pub message_id: &'a str,
    pub attempt: u32,
    pub reason: &'a str,
    /// Quarantine now (hard bounce) instead of at the threshold.
    pub immediate: bool,
    pub threshold: u32,
    /// How long a resulting quarantine lasts.
    pub expiry: Duration,
    pub counter_ttl: Duration,
    pub detail: &'a str,
    pub now: i64,
}

impl<'a> RecipientFailure<'a> {
    /// The failure `class` describes, counted against `address` under the
    /// quarantine settings; `None` when it is not about the recipient (a
    /// block aimed at the sender, a domain problem) or never quarantines.
    pub fn of(
        address: &'a str,
        message_id: &'a str,
        attempt: u32,
        class: &crate::classify::Classification,
        settings: &crate::config::QuarantineSettings,
        detail: &'a str,
    ) -> Option<Self> {
        use crate::classify::{Quarantine, Reason, Scope};
        if class.scope != Scope::Recipient || class.quarantine == Quarantine::None {
            return None;
        }
        Some(Self {
            address,
            message_id,
            attempt,
            reason: class.reason.as_str(),
            immediate: class.quarantine == Quarantine::Immediate,
            threshold: settings.threshold,
            expiry: if class.reason == Reason::MailboxFull {
                settings.mailbox_full_expiry
            } else {
                settings.expiry
            },
            counter_ttl: settings.counter_ttl,
            detail,
            now: crate::unix_now(),
        })
    }
}

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

/// How long a parking in progress (or a parking queue being deleted) holds
/// the other side back at most, should its process die in between.
pub const PARKING_GUARD: Duration = Duration::from_secs(120);

/// KEYS: parking counter, closed mark. ARGV: guard (ms).
const BEGIN_PARKING_LUA: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// KEYS: parking counter, parked set. ARGV: request.
const END_PARKING_LUA: &str = r#"
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// KEYS: parking counter, closed mark. ARGV: guard (ms).
const CLOSE_PARKING_LUA: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
"#;

const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Handle to mailpipe's Redis state. Cheap to clone: one multiplexed
/// connection that reconnects by itself.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: String,
    screen: std::sync::Arc<redis::Script>,
    calls: std::sync::Arc<redis::Script>,
    mark: std::sync::Arc<redis::Script>,
    release: std::sync::Arc<redis::Script>,
    failure: std::sync::Arc<redis::Script>,
    qualify: std::sync::Arc<redis::Script>,
}

impl Store {
    /// Connects (fails fast when Redis is unreachable; callers retry).
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        // Nagle off: many small requests share one multiplexed connection,
        // and none should wait for the ACK of the one before.
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.expose_secret())
            .map_err(op("open"))?;
        let info = info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(op("open"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(op("connect"))?;
        Ok(Self {
            conn,
            prefix: settings.prefix.clone(),
            screen: std::sync::Arc::new(redis::Script::new(SCREEN_LUA)),
            calls: std::sync::Arc::new(redis::Script::new(crate::calls::CALLS_LUA)),
            mark: std::sync::Arc::new(redis::Script::new(MARK_LUA)),
            release: std::sync::Arc::new(redis::Script::new(RELEASE_LUA)),
            failure: std::sync::Arc::new(redis::Script::new(FAILURE_LUA)),
            qualify: std::sync::Arc::new(redis::Script::new(QUALIFY_LUA)),
        })
    }

    /// Connects, retrying with backoff until Redis answers; `None` on shutdown.
    pub async fn connect_with_retry(
        settings: &RedisSettings,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Self> {
        let mut delay = Duration::from_millis(200);
        loop {
            match Self::connect(settings).await {
                Ok(s) => return Some(s),
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "cannot connect to Redis"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// A connection for commands this module does not wrap.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(op("ping"))?;
        Ok(())
    }

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
    /// keep the original creation time).
    pub async fn register_request(
        &self,
        request: &str,
        meta: &RequestMeta,
        ttl: Duration,
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
            .query_async(&mut c)
            .await
            .map_err(op("register request"))?;
        serde_json::from_str(&stored).map_err(|e| StoreError::Corrupt {
            what: "request meta",
            detail: e.to_string(),
        })
    }

    /// Screens a batch of recipients: deduplication across the whole request
    /// (replays of the same position keep their first verdict), denylist,
    /// quarantine, control group, coalescing and audience limit. Returns one
    /// verdict per candidate: `accepted` or an exclusion reason.
    pub async fn screen(
        &self,
        request: &str,
        candidates: &[Candidate],
        opts: &ScreenOptions,
    ) -> Result<Vec<String>, StoreError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.screen.prepare_invoke();
        inv.key(self.key(&["req", request, "rcpts"]))
            .key(self.key(&["req", request, "audience"]))
            .arg(&self.prefix)
            .arg(opts.max_audience.unwrap_or(0))
            .arg(opts.ttl.as_secs().max(1));
        match &opts.coalesce {
            Some((tenant, key, window)) => {
                inv.arg(format!("{tenant}:{key}"))
                    .arg(window.as_secs().max(1));
            }
            None => {
                inv.arg("").arg(0);
            }
        }
        for c in candidates {
            inv.arg(&c.address)
                .arg(&c.position)
                .arg(&c.message_id)
                .arg(if c.control_group { "1" } else { "0" });
        }
        let mut c = self.conn.clone();
        inv.invoke_async(&mut c)
            .await
            .map_err(op("screen recipients"))
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

    /// Runs any mix of the per-message calls of a sender in one round trip,
    /// in order ([`crate::calls`]); the answers come back in the order of
    /// `calls`. `lease` is the ttl of message and concurrency leases,
    /// `breaker_window` the domain breaker's window.
    pub async fn calls(
        &self,
        calls: &[Call],
        lease: Duration,
        breaker_window: Duration,
    ) -> Result<Vec<Answer>, StoreError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.calls.prepare_invoke();
        crate::calls::arguments(&mut inv, &self.prefix, calls, lease, breaker_window);
        let mut c = self.conn.clone();
        let reply: Vec<String> = inv.invoke_async(&mut c).await.map_err(op("calls"))?;
        crate::calls::answers(calls, reply)
    }

    /// Sets or clears an operator flag on a campaign (`held`, `cancelled`).
    pub async fn set_campaign_flag(
        &self,
        request: &str,
        flag: &str,
        on: bool,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&[flag, request]);
        if on {
            let _: () = c
                .set_ex(key, unix_now_str(), ttl.as_secs().max(1))
                .await
                .map_err(op("set campaign flag"))?;
        } else {
            let _: i64 = c.del(key).await.map_err(op("clear campaign flag"))?;
        }
        Ok(())
    }

    /// Notes that a held campaign has parked messages (for the sweeper that
    /// moves them back once the campaign is released or cancelled).
    pub async fn mark_parked(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .sadd(self.key(&["parked"]), request)
            .await
            .map_err(op("mark parked"))?;
        Ok(())
    }

    /// Announces that a sender is about to park messages of a held campaign
    /// in its `held.<request>` queue. `false` while the retrier's sweeper is
    /// deleting that queue ([`Self::close_parking`]): the caller must then
    /// not publish there (the sender returns those jobs to their lane, where
    /// they are screened again). Each `true` must be followed by
    /// [`Self::end_parking`]; a sender that dies in between holds the queue
    /// back from deletion for [`PARKING_GUARD`] at most.
    pub async fn begin_parking(&self, request: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(BEGIN_PARKING_LUA)
            .key(self.key(&["parking", request]))
            .key(self.key(&["parking_closed", request]))
            .arg(PARKING_GUARD.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(op("begin parking"))?;
        Ok(n == 1)
    }

    /// Ends [`Self::begin_parking`] once the parked messages are confirmed
    /// by the broker, and marks the campaign as having parked messages (for
    /// the sweeper that moves them back once the campaign is released).
    pub async fn end_parking(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(END_PARKING_LUA)
            .key(self.key(&["parking", request]))
            .key(self.key(&["parked"]))
            .arg(request)
            .invoke_async(&mut c)
            .await
            .map_err(op("end parking"))?;
        Ok(())
    }

    /// Closes a campaign's parking queue to senders before it is deleted:
    /// `false` when a sender is parking into it right now (delete later).
    /// Quorum queues cannot be deleted "if empty", so this fence is what
    /// keeps a message confirmed into the queue from being deleted with it.
    /// Lasts until [`Self::reopen_parking`] or [`PARKING_GUARD`].
    pub async fn close_parking(&self, request: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(CLOSE_PARKING_LUA)
            .key(self.key(&["parking", request]))
            .key(self.key(&["parking_closed", request]))
            .arg(PARKING_GUARD.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(op("close parking"))?;
        Ok(n == 1)
    }

    /// Lifts [`Self::close_parking`].
    pub async fn reopen_parking(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .del(self.key(&["parking_closed", request]))
            .await
            .map_err(op("reopen parking"))?;
        Ok(())
    }

    /// Campaigns that have (or had) parked messages.
    pub async fn parked(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        c.smembers(self.key(&["parked"]))
            .await
            .map_err(op("parked"))
    }

    /// Forgets a campaign's parked queue.
    pub async fn unmark_parked(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .srem(self.key(&["parked"]), request)
            .await
            .map_err(op("unmark parked"))?;
        Ok(())
    }

    /// Whether an operator flag is set on a campaign.
    pub async fn campaign_flag(&self, request: &str, flag: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.exists(self.key(&[flag, request]))
            .await
            .map_err(op("campaign flag"))
    }

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

    /// Quarantines an address by hand (source `operator`).
    pub async fn quarantine_add(
        &self,
        address: &str,
        reason: &str,
        expiry: Duration,
    ) -> Result<(), StoreError> {
        let now = crate::unix_now();
        let record = serde_json::json!({
            "reason": reason, "count": 0, "first": now, "last": now,
            "detail": "added by an operator", "expires": now + expiry.as_secs() as i64,
            "source": "operator",
        });
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .set_ex(
                self.key(&["quarantine", address]),
                record.to_string(),
                expiry.as_secs().max(1),
            )
            .ignore()
            .zadd(
                self.key(&["quarantined"]),
                address,
                now + expiry.as_secs() as i64,
            )
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("quarantine add"))?;
        Ok(())
    }

    /// Lifts an address's quarantine and resets its counter; `false` if it
    /// was not quarantined.
    pub async fn quarantine_remove(&self, address: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let (n,): (i64,) = redis::pipe()
            .del(self.key(&["quarantine", address]))
            .zrem(self.key(&["quarantined"]), address)
            .ignore()
            .del(self.key(&["errors", address]))
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("quarantine remove"))?;
        Ok(n == 1)
    }

    /// Quarantined addresses with their records (expired entries are pruned).
    pub async fn quarantine_list(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut c = self.conn.clone();
        let index = self.key(&["quarantined"]);
        let _: i64 = c
            .zrembyscore(&index, "-inf", crate::unix_now())
            .await
            .map_err(op("quarantine prune"))?;
        let addrs: Vec<String> = c
            .zrange(&index, 0, limit.max(1) as isize - 1)
            .await
            .map_err(op("quarantine list"))?;
        let mut out = Vec::new();
        for a in addrs {
            if let Some(r) = self.quarantine(&a).await? {
                out.push((a, r));
            }
        }
        Ok(out)
    }

    /// Adds addresses to the denylist or allowlist (`list` is `denylist` or
    /// `allowlist`); returns how many were new.
    pub async fn list_add(&self, list: &str, addresses: &[String]) -> Result<u64, StoreError> {
        if addresses.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        c.sadd(self.key(&[list]), addresses)
            .await
            .map_err(op("list add"))
    }

    /// Removes addresses from the denylist or allowlist.
    pub async fn list_remove(&self, list: &str, addresses: &[String]) -> Result<u64, StoreError> {
        if addresses.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        c.srem(self.key(&[list]), addresses)
            .await
            .map_err(op("list remove"))
    }

    /// Every address on the denylist or allowlist, sorted (read with SSCAN,
    /// so a large list never blocks Redis).
    pub async fn list_members(&self, list: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&[list]);
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(op("list members"))?;
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether an address is on the denylist or allowlist.
    pub async fn list_contains(&self, list: &str, address: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.sismember(self.key(&[list]), address)
            .await
            .map_err(op("list contains"))
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

    /// Records a terminal state; returns `false` when the message already had
    /// one (then nothing is counted). `counters` are the request-hash fields
    /// to raise, e.g. `["sent"]` or `["dead", "dead:user_unknown"]`.
    pub async fn record_done(
        &self,
        message: &str,
        record: &DoneRecord,
        counters: &[&str],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let new = self
            .record_done_many(&[DoneWrite {
                message: message.to_string(),
                record: record.clone(),
                counters: counters.join(" "),
                reset_address: None,
                ttl,
            }])
            .await?;
        Ok(new.first().copied().unwrap_or(false))
    }

    /// Records the terminal states of many messages in one round trip;
    /// for each, whether its record is new (only new records are counted).
    pub async fn record_done_many(&self, writes: &[DoneWrite]) -> Result<Vec<bool>, StoreError> {
        let calls: Vec<Call> = writes.iter().cloned().map(Call::Done).collect();
        let answers = self.calls(&calls, Duration::ZERO, Duration::ZERO).await?;
        Ok(answers
            .into_iter()
            .filter_map(|a| match a {
                Answer::Done(new) => Some(new),
                _ => None,
            })
            .collect())
    }

    /// Counts a recipient-scope failure against an address (once per message
    /// and attempt) and quarantines the address when the failure is hard or
    /// the count reaches the threshold. Allowlisted addresses are skipped.
    pub async fn record_recipient_failure(
        &self,
        f: &RecipientFailure<'_>,
    ) -> Result<FailureCount, StoreError> {
        let mut c = self.conn.clone();
        let (count, quarantined): (i64, i64) = self
            .failure
            .key(self.key(&["errors", f.address]))
            .key(self.key(&["quarantine", f.address]))
            .key(self.key(&["counted", f.message_id, &f.attempt.to_string()]))
            .key(self.key(&["allowlist"]))
            .key(self.key(&["quarantined"]))
            .arg(f.address)
            .arg(f.reason)
            .arg(if f.immediate { "1" } else { "0" })
            .arg(f.threshold)
            .arg(f.expiry.as_secs().max(1))
            .arg(f.counter_ttl.as_secs().max(1))
            .arg(f.now)
            .arg(f.detail)
            .invoke_async(&mut c)
            .await
            .map_err(op("record recipient failure"))?;
        Ok(match count {
            -1 => FailureCount::AlreadyCounted,
            0 => FailureCount::Allowlisted,
            n => FailureCount::Counted {
                count: n as u64,
                quarantined: quarantined == 1,
            },
        })
    }

    /// Soft-failure count of an address.
    pub async fn failure_count(&self, address: &str) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let n: Option<u64> = c
            .hget(self.key(&["errors", address]), "count")
            .await
            .map_err(op("failure count"))?;
        Ok(n.unwrap_or(0))
    }

    /// The quarantine record of an address (JSON), if quarantined.
    pub async fn quarantine(&self, address: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c
            .get(self.key(&["quarantine", address]))
            .await
            .map_err(op("quarantine"))?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

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

    /// The ids of the `limit` most recently created requests, newest first.
    pub async fn recent_requests(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        let mut c = self.conn.clone();
        c.zrevrange(self.key(&["requests"]), 0, stop)
            .await
            .map_err(op("recent requests"))
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

    /// Whether a key (under the prefix) exists.
    pub async fn exists(&self, key: &[&str]) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.exists(self.key(key)).await.map_err(op("exists"))
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
                .unwrap_or_else(|| "request".into())
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
                other => {
                    if let Some(part) = other.strip_prefix("refused:") {
                        if let Ok(r) = serde_json::from_str(value) {
                            s.refused.insert(part.to_string(), r);
                        }
                    } else if let Some(reason) = other.strip_prefix("dead:") {
                        s.dead.insert(reason.to_string(), n);
                    } else if let Some(reason) = other.strip_prefix("bounced:") {
                        s.bounced.insert(reason.to_string(), n);
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
        }
        let dead: u64 = s.dead.values().sum();
        s.pending = s.accepted.saturating_sub(s.sent + dead + s.removed);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_redis_urls_are_understood() {
        assert!(redis::Client::open("rediss://cache.example:6380/0").is_ok());
        assert!(redis::Client::open("redis://127.0.0.1:6379").is_ok());
    }
}

//! The sending policy every sender replica shares, kept in Redis and
//! applied by scripts that read the server's clock (`TIME`), so any number
//! of replicas share one budget and no replica's clock matters. The
//! breaker's and the paused index's scripts here, like the slow-down's, take
//! the time as an argument as well (Unix ms, '' for the server's clock), so
//! tests pass it in:
//!
//! * per-domain and per-route rate limits (GCRA: one "theoretical arrival
//!   time" per key; a burst allowance lets `burst` messages through at once);
//! * per-domain and per-route concurrency, as leases in a sorted set that
//!   expire on their own if a replica dies mid-transaction;
//! * domain pauses (the circuit breaker and `mailpipe domain
//!   pause`), and slow-downs after throttling replies that recover linearly
//!   ([`crate::slowdown`]);
//! * run-time overrides of a domain's limits (`mailpipe domain limit`).
//!
//! Keys: `{p}:pause:{domain}`, `{p}:tat:{domain}`, `{p}:limit:{domain}`,
//! `{p}:slow:{domain}`, `{p}:seen:{domain}` (decaying attempt counts, the
//! rate a slow-down lowers when no limit is set), `{p}:conc:{domain}`, `{p}:rtat:{route}`,
//! `{p}:rconc:{route}`, `{p}:brk:{domain}:{minute}` (breaker buckets),
//! `{p}:paused` (index of the paused domains by the end of their pause, so
//! the paused domains are listed without scanning the key space; the pause
//! key decides, the index only points at it and forgets a domain once its
//! pause key is gone or its end has passed), `{p}:pausenote:{domain}` (an
//! operator's pause: when, why and who, JSON, with the pause's time to live).
//!
//! Whether a message may go now ([`Ask`] → [`Verdict`]) is decided by the
//! script of [`crate::calls`], together with the sender's other calls for
//! its messages; this module releases leases and counts failures, and keeps
//! the operators' view and controls.

use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use crate::config::{BreakerSettings, DomainPolicy};
use crate::store::{Store, StoreError};

/// How many one-minute buckets the breaker sums for a window of
/// `window_secs`: every minute the window touches, at least one. The
/// breaker's Lua counts the same, so `mailpipe domain show` reports the
/// counts the breaker decided on.
pub fn breaker_buckets(window_secs: u64) -> u64 {
    window_secs.div_ceil(60).max(1)
}

/// The time argument of the policy's scripts: `now_ms` (Unix ms), or ''
/// for the server's clock, which the senders use so that every replica
/// counts on one clock (the calls script counts the attempts on it).
pub(crate) fn now_arg(now_ms: Option<i64>) -> String {
    now_ms.map(|n| n.to_string()).unwrap_or_default()
}

const BREAKER_LUA: &str = r#"
-- KEYS: 1 pause, 2 index of paused domains; ARGV: 1 bucket prefix, 2 window s,
-- 3 min attempts, 4 ratio, 5 pause s, 6 count this failure (1/0), 7 domain,
-- 8 count it as an attempt too (1/0: it failed before the sending policy
-- was asked, which counts the attempts that reach it), 9 now ms ('' = the
-- server's clock). Returns whether it opened, and the window's attempts
-- and failures.
local now = tonumber(ARGV[9])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local minute = math.floor(now / 60000)
local window = tonumber(ARGV[2])
if ARGV[6] == '1' then
  local cur = ARGV[1] .. minute
  redis.call('HINCRBY', cur, 'f', 1)
  if ARGV[8] == '1' then redis.call('HINCRBY', cur, 'a', 1) end
  redis.call('EXPIRE', cur, window + 120)
end
local a, f = 0, 0
-- As many minute buckets as breaker_buckets() in policy.rs (what
-- `mailpipe domain show` sums): ceil(window / 60), at least one.
for i = 0, math.max(math.ceil(window / 60) - 1, 0) do
  local h = redis.call('HMGET', ARGV[1] .. (minute - i), 'a', 'f')
  a = a + (tonumber(h[1]) or 0)
  f = f + (tonumber(h[2]) or 0)
end
local opened = 0
if a >= tonumber(ARGV[3]) and a > 0 and f / a >= tonumber(ARGV[4]) then
  if redis.call('SET', KEYS[1], 'breaker', 'NX', 'EX', ARGV[5]) then
    opened = 1
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]) * 1000, ARGV[7])
  end
end
return {opened, a, f}
"#;

/// The paused domains of the index, checked against their pause keys:
/// entries whose pause ended (or was removed) leave the index.
const PAUSED_LUA: &str = r#"
-- KEYS: 1 index of paused domains; ARGV: 1 pause key prefix, 2 most domains
-- to describe, 3 pause note key prefix, 4 now ms ('' = the server's clock).
-- Returns the number paused and, for the first ones by end of pause,
-- domain, end (Unix ms), who paused it and the operator's note ('' none).
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local limit = tonumber(ARGV[2])
local total, out = 0, {}
local index = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #index, 2 do
  local d, till = index[i], tonumber(index[i + 1])
  local ttl = redis.call('PTTL', ARGV[1] .. d)
  -- Without a time to live a pause key does not pause (the senders' check);
  -- a pause whose end (the index's score) is past has ended as of now.
  if ttl <= 0 or till <= now then
    redis.call('ZREM', KEYS[1], d)
  else
    total = total + 1
    if total <= limit then
      out[#out + 1] = d
      out[#out + 1] = tostring(till)
      out[#out + 1] = redis.call('GET', ARGV[1] .. d) or ''
      out[#out + 1] = redis.call('GET', ARGV[3] .. d) or ''
    end
  end
end
return {total, out}
"#;

/// What one failure did to its domain's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerCount {
    /// This failure opened the breaker: the domain is paused.
    pub opened: bool,
    /// Attempts and failures in the window, this failure included.
    pub attempts: u64,
    pub failures: u64,
}

/// A paused domain: until when, by whom, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PausedDomain {
    pub domain: String,
    /// End of the pause, Unix milliseconds.
    pub until_ms: i64,
    /// `breaker` or `operator`.
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

/// What the policy says about sending one message now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go; when `lease` is set, concurrency leases were taken under that
    /// id: [`Policy::release`] them when the transaction is over.
    Go {
        lease: Option<String>,
        /// The site's MX rule: close the connection after this many messages.
        per_connection: Option<u32>,
        /// The message's place under the rates was reserved this far ahead:
        /// wait this long, then send without asking again.
        after: Duration,
    },
    /// A limit is reached: try again after this long.
    Wait(Duration),
    /// The domain is paused for this long.
    Paused(Duration),
}

/// One message to ask the sending policy about: a [`crate::calls::Call::Acquire`].
#[derive(Debug, Clone)]
pub struct Ask {
    pub domain: String,
    /// The domain's site ([`mailpipe_core::sites`]): its attempts are counted there.
    pub site: String,
    /// The domain's configured limits (run-time overrides win).
    pub limits: DomainPolicy,
    /// The site's configured MX rule (run-time overrides win).
    pub site_limits: crate::config::SiteLimits,
    /// Whether the site's adaptive rate applies.
    pub adaptive: bool,
    /// The warm-up ceiling of the message's sending domain at the site.
    pub warmup: Option<WarmupAsk>,
    pub route: RouteLimits,
    /// Names the message's concurrency leases.
    pub lease_id: String,
    /// The longest the message may still wait for a rate: within it, its
    /// place is reserved ([`Verdict::Go`] with `after`); beyond it, the
    /// answer is [`Verdict::Wait`] and nothing is taken.
    pub max_wait: Duration,
}

/// The warm-up count a message joins ([`mailpipe_core::warmup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmupAsk {
    /// `{sending domain}:{site}:{day}`.
    pub key: String,
    /// At most this many messages that day.
    pub cap: u64,
    /// Until the day ends.
    pub day_left: Duration,
}

/// Limits of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub name: String,
    pub interval: Option<Duration>,
    pub concurrency: Option<u32>,
}

/// A domain's state as operators see it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DomainState {
    pub domain: String,
    /// Remaining pause, seconds.
    pub paused_for: Option<u64>,
    /// What paused it (`breaker` or `operator`).
    pub paused_by: Option<String>,
    /// End of the pause, Unix seconds.
    pub paused_until: Option<i64>,
    /// An operator's pause: when, why and who.
    pub pause_note: Option<PauseNote>,
    /// Run-time overrides: messages per second, burst, concurrency.
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub concurrency: Option<u32>,
    /// Current slow-down factor, if any.
    pub slowdown: Option<f64>,
    /// The rate the slow-down allows now, messages per second (when the
    /// rate it lowered is known: a limit, or the rate measured before).
    pub slowed_rate_per_second: Option<f64>,
    /// Attempts and failures in the breaker window.
    pub attempts: u64,
    pub failures: u64,
    /// Transactions in flight across all senders.
    pub in_flight: u64,
}

/// Handle to the shared policy state.
#[derive(Clone)]
pub struct Policy {
    store: Store,
    breaker: std::sync::Arc<redis::Script>,
}

fn op(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { op, source }
}

impl Policy {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            breaker: std::sync::Arc::new(redis::Script::new(BREAKER_LUA)),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut k = self.store.prefix().to_string();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Returns the concurrency leases of a finished transaction.
    pub async fn release(
        &self,
        domain: &str,
        site: &str,
        route: &str,
        lease: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.store.connection();
        let _: () = redis::pipe()
            .zrem(self.key(&["conc", domain]), lease)
            .ignore()
            .zrem(self.key(&["site", "conc", site]), lease)
            .ignore()
            .zrem(self.key(&["rconc", route]), lease)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("release"))?;
        Ok(())
    }

    /// Counts a failure against the domain's breaker (when `counts`) and
    /// opens it when the window's attempts and failure ratio say so. Returns
    /// whether this call paused the domain.
    pub async fn record_failure(
        &self,
        domain: &str,
        counts: bool,
        breaker: &BreakerSettings,
    ) -> Result<bool, StoreError> {
        let b = self
            .record_failure_of(domain, counts, false, breaker, None)
            .await?;
        Ok(b.opened)
    }

    /// [`Self::record_failure`] at a given time (Unix ms) instead of the
    /// server's clock, with the window's counts: for tests of the script.
    pub async fn record_failure_at(
        &self,
        domain: &str,
        counts: bool,
        breaker: &BreakerSettings,
        now_ms: i64,
    ) -> Result<BreakerCount, StoreError> {
        self.record_failure_of(domain, counts, false, breaker, Some(now_ms))
            .await
    }

    /// [`Self::record_failure`]; `unasked` counts the failure as an attempt
    /// as well (it failed before the sending policy counted it: a refused
    /// connection).
    async fn record_failure_of(
        &self,
        domain: &str,
        counts: bool,
        unasked: bool,
        breaker: &BreakerSettings,
        now_ms: Option<i64>,
    ) -> Result<BreakerCount, StoreError> {
        let mut c = self.store.connection();
        let (opened, attempts, failures): (i64, u64, u64) = self
            .breaker
            .key(self.key(&["pause", domain]))
            .key(self.key(&["paused"]))
            .arg(self.key(&["brk", domain, ""]))
            .arg(breaker.window.as_secs())
            .arg(breaker.min_attempts)
            .arg(breaker.failure_ratio)
            .arg(breaker.pause.as_secs().max(1))
            .arg(if counts { "1" } else { "0" })
            .arg(domain)
            .arg(if unasked { "1" } else { "0" })
            .arg(now_arg(now_ms))
            .invoke_async(&mut c)
            .await
            .map_err(op("breaker"))?;
        Ok(BreakerCount {
            opened: opened == 1,
            attempts,
            failures,
        })
    }

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
        let (total, flat): (u64, Vec<String>) = redis::Script::new(PAUSED_LUA)
            .key(self.key(&["paused"]))
            .arg(self.key(&["pause", ""]))
            .arg(limit)
            .arg(self.key(&["pausenote", ""]))
            .arg(now_arg(now_ms))
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

    /// Sets run-time limits of a domain (over the configured ones);
    /// `None` leaves a field as configured.
    pub async fn set_limit(
        &self,
        domain: &str,
        rate: Option<crate::ratelimit::Rate>,
        burst: Option<u32>,
        concurrency: Option<u32>,
    ) -> Result<(), StoreError> {
        let mut fields: Vec<(&str, String)> = Vec::new();
        if let Some(r) = rate {
            fields.push((
                "interval_ms",
                (r.interval().as_secs_f64() * 1000.0).to_string(),
            ));
        }
        if let Some(b) = burst {
            fields.push(("burst", b.to_string()));
        }
        if let Some(c) = concurrency {
            fields.push(("concurrency", c.to_string()));
        }
        if fields.is_empty() {
            return Ok(());
        }
        let mut c = self.store.connection();
        let _: () = c
            .hset_multiple(self.key(&["limit", domain]), &fields)
            .await
            .map_err(op("set limit"))?;
        Ok(())
    }

    /// Drops a domain's run-time limits.
    pub async fn clear_limit(&self, domain: &str) -> Result<(), StoreError> {
        let mut c = self.store.connection();
        let _: i64 = c
            .del(self.key(&["limit", domain]))
            .await
            .map_err(op("clear limit"))?;
        Ok(())
    }

    /// The state of one domain.
    pub async fn state(
        &self,
        domain: &str,
        breaker: &BreakerSettings,
    ) -> Result<DomainState, StoreError> {
        let mut c = self.store.connection();
        let pause: Option<String> = c
            .get(self.key(&["pause", domain]))
            .await
            .map_err(op("state"))?;
        let ttl: i64 = c
            .ttl(self.key(&["pause", domain]))
            .await
            .map_err(op("state"))?;
        let note: Option<String> = c
            .get(self.key(&["pausenote", domain]))
            .await
            .map_err(op("state"))?;
        let ov: (Option<f64>, Option<u32>, Option<u32>) = redis::cmd("HMGET")
            .arg(self.key(&["limit", domain]))
            .arg("interval_ms")
            .arg("burst")
            .arg("concurrency")
            .query_async(&mut c)
            .await
            .map_err(op("state"))?;
        let slow: (Option<f64>, Option<i64>, Option<i64>, Option<f64>) = redis::cmd("HMGET")
            .arg(self.key(&["slow", domain]))
            .arg("factor")
            .arg("since")
            .arg("until")
            .arg("base")
            .query_async(&mut c)
            .await
            .map_err(op("state"))?;
        let now = crate::unix_now_ms();
        let slowdown = match slow {
            (Some(f), Some(since), Some(until), base) => {
                crate::slowdown::slowdown_at(f, since, until, base, now)
            }
            _ => None,
        };
        let in_flight: u64 = redis::cmd("ZCOUNT")
            .arg(self.key(&["conc", domain]))
            .arg(now)
            .arg("+inf")
            .query_async(&mut c)
            .await
            .map_err(op("state"))?;
        let minute = crate::unix_now() / 60;
        let (mut attempts, mut failures) = (0, 0);
        for i in 0..breaker_buckets(breaker.window.as_secs()) as i64 {
            let (a, f): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(self.key(&["brk", domain, &(minute - i).to_string()]))
                .arg("a")
                .arg("f")
                .query_async(&mut c)
                .await
                .map_err(op("state"))?;
            attempts += a.unwrap_or(0);
            failures += f.unwrap_or(0);
        }
        Ok(DomainState {
            domain: domain.to_string(),
            paused_for: (ttl > 0).then_some(ttl as u64),
            paused_by: pause,
            paused_until: (ttl > 0).then(|| crate::unix_now() + ttl),
            pause_note: note
                .filter(|_| ttl > 0)
                .and_then(|n| serde_json::from_str(&n).ok()),
            rate_per_second: ov.0.filter(|i| *i > 0.0).map(|i| 1000.0 / i),
            burst: ov.1,
            concurrency: ov.2,
            slowdown: slowdown.map(|s| s.factor),
            slowed_rate_per_second: slowdown.and_then(|s| s.rate_per_second),
            attempts,
            failures,
            in_flight,
        })
    }

    /// A domain's attempts per second lately (its decaying attempt count,
    /// as `site list` reads a site's) and failures per second over the
    /// last minute or two (the breaker's buckets of this minute and the
    /// one before).
    pub async fn domain_rates(&self, domain: &str) -> Result<(f64, f64), StoreError> {
        let mut c = self.store.connection();
        let (count, t, f): (Option<f64>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.key(&["seen", domain]))
            .arg("c")
            .arg("t")
            .arg("f")
            .query_async(&mut c)
            .await
            .map_err(op("domain rates"))?;
        let now = crate::unix_now_ms();
        let attempts = match (count, t, f) {
            (Some(count), Some(t), Some(f)) => {
                crate::slowdown::decayed_rate(count, t, f, now, crate::slowdown::SEEN_TAU_MS as f64)
            }
            _ => 0.0,
        };
        let minute = now / 60_000;
        let mut failures = 0u64;
        for m in [minute, minute - 1] {
            let n: Option<u64> = c
                .hget(self.key(&["brk", domain, &m.to_string()]), "f")
                .await
                .map_err(op("domain rates"))?;
            failures += n.unwrap_or(0);
        }
        let span = 60.0 + (now % 60_000) as f64 / 1000.0;
        Ok((attempts, failures as f64 / span))
    }

    /// Domains with a pause, a run-time limit, a slow-down or recent
    /// attempts. The paused ones come from their index ([`Self::paused`]);
    /// limits, slow-downs and rate budgets have none and are found by SCAN
    /// (for `mailpipe domain list`, an operator's command).
    pub async fn known_domains(&self) -> Result<Vec<String>, StoreError> {
        let (_, paused) = self.paused(usize::MAX).await?;
        let mut out: std::collections::BTreeSet<String> =
            paused.into_iter().map(|p| p.domain).collect();
        for kind in ["limit", "slow", "tat"] {
            let strip = self.key(&[kind, ""]);
            let keys = self
                .store
                .scan_keys(&format!("{}*", crate::store::glob_escape(&strip)))
                .await?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&strip).map(str::to_string)),
            );
        }
        Ok(out.into_iter().collect())
    }
}

/// What a classified failure did to its domain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainReaction {
    /// The breaker opened: the domain is paused.
    pub paused: bool,
    /// The domain's rate was lowered.
    pub slowed: bool,
}

impl Policy {
    /// Applies one classified failure to its domain, at once (the sender
    /// calls this right after the attempt, so the breaker sees failures as
    /// they happen): failures about the domain or the sender (blocks,
    /// unreachable, throttling) count toward the breaker — a recipient's own
    /// failure (user unknown, greylisting) never does — and a throttling
    /// reply slows the domain down (`Classification::domain_effect` decides)
    /// when `may_slow` (not when the site's adaptive controller takes the
    /// throttling for all the site's domains).
    pub async fn react(
        &self,
        domain: &str,
        class: &crate::classify::Classification,
        settings: &crate::config::PolicySettings,
        may_slow: bool,
    ) -> Result<DomainReaction, StoreError> {
        self.react_to(domain, class, settings, false, may_slow)
            .await
    }

    /// [`Self::react`] to a failure that came before the sending policy was
    /// asked (a connection to the domain's MX host refused, or answered 421
    /// at connect): the breaker counts it as an attempt too. `may_slow`:
    /// whether a throttling reply slows the domain down (not when the host
    /// only refused one connection more than it takes, the others open).
    pub async fn react_unasked(
        &self,
        domain: &str,
        class: &crate::classify::Classification,
        settings: &crate::config::PolicySettings,
        may_slow: bool,
    ) -> Result<DomainReaction, StoreError> {
        self.react_to(domain, class, settings, true, may_slow).await
    }

    async fn react_to(
        &self,
        domain: &str,
        class: &crate::classify::Classification,
        settings: &crate::config::PolicySettings,
        unasked: bool,
        may_slow: bool,
    ) -> Result<DomainReaction, StoreError> {
        let effect = class.domain_effect();
        let mut r = DomainReaction::default();
        if effect.counts_toward_breaker {
            r.paused = self
                .record_failure_of(domain, true, unasked, &settings.breaker, None)
                .await?
                .opened;
        }
        if effect.slows_down && may_slow {
            let configured = settings.for_domain(domain).rate.map(|r| r.interval());
            self.slow_down(domain, configured, &settings.slowdown)
                .await?;
            r.slowed = true;
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::breaker_buckets;

    #[test]
    fn the_breaker_sums_every_minute_its_window_touches() {
        // (window in seconds, buckets), as the breaker's Lua counts them.
        for (window, buckets) in [
            (0, 1),
            (1, 1),
            (59, 1),
            (60, 1),
            (61, 2),
            (90, 2),
            (120, 2),
            (121, 3),
            (600, 10),
        ] {
            assert_eq!(breaker_buckets(window), buckets, "window {window}s");
            let lua = ((window as f64 / 60.0).ceil() - 1.0).max(0.0) as u64 + 1;
            assert_eq!(lua, buckets, "the Lua formula, window {window}s");
        }
    }
}

//! The run-time controls of a site, shared by every sender replica through
//! Redis: an operator's pause (with its reason), the run-time MX rule over
//! the configured one, and the adaptive controller's state
//! ([`crate::adaptive`]). The calls script ([`crate::calls`]) applies all
//! three to every message, beside the domain's own limits.
//!
//! Keys: `{p}:site:pause:{site}` (who and why, `by\nreason`, expiring with
//! the pause), `{p}:site:paused` (index of paused sites by end of pause),
//! `{p}:site:limit:{site}` (interval_ms, burst, concurrency,
//! per_connection), `{p}:site:tat:{site}` and `{p}:site:conc:{site}` (the
//! rate and concurrency budgets), `{p}:site:ctl:{site}` (the controller's
//! state, kept 30 days: its history), `{p}:site:counts:{site}` (counts
//! waiting for the next step), `{p}:site:log:{site}` (the last changes of
//! state, for `mailpipe site show`).
//!
//! A step is two scripts around the pure [`crate::adaptive::step`]:
//! [`STEP_LUA`] adds a sender's counts and, when a step is due and no other
//! sender is stepping, hands out the state and every pending count under a
//! lock; [`APPLY_LUA`] stores the new state if the lock is still this
//! sender's, and suspends the site when the step says so. Both take the time
//! as an argument, so tests pass it in.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use crate::adaptive::{Counts, SiteControl};
use crate::policy::Policy;
use crate::store::StoreError;

/// How long a site's controller state (its history) is kept.
pub const STATE_TTL_MS: u64 = 30 * 86_400_000;
/// How long a step's lock holds when its sender never applies it.
pub const LOCK_MS: u64 = 5_000;
/// Changes of state kept for `site show`.
const LOG_LINES: isize = 20;

const STEP_LUA: &str = r#"
-- KEYS: 1 state, 2 pending counts, 3 run-time MX rule; ARGV: 1 sent,
-- 2 throttled, 3 blocked, 4 last throttling reply ('' none), 5 last block
-- ('' none), 6 now ms, 7 least ms between steps, 8 step now anyway (1/0),
-- 9 lock ms. Adds the counts to the pending ones; when a step is due and no
-- other sender holds the lock, takes the lock and every pending count and
-- returns {1, lock, state fields, counts, run-time interval ms or ''};
-- else {0}.
local now = tonumber(ARGV[6])
for i, f in ipairs({'sent', 'throttled', 'blocked'}) do
  if ARGV[i] ~= '0' then redis.call('HINCRBY', KEYS[2], f, ARGV[i]) end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'throttle_reply', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'block_reply', ARGV[5]) end
redis.call('PEXPIRE', KEYS[2], 3600000)
local h = redis.call('HMGET', KEYS[1], 'last_step', 'lock')
local last, lock = tonumber(h[1]) or 0, tonumber(h[2]) or 0
if lock > now then return {0} end
if ARGV[8] ~= '1' and now - last < tonumber(ARGV[7]) then return {0} end
local mine = tostring(now + tonumber(ARGV[9]))
redis.call('HSET', KEYS[1], 'lock', mine)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[9]) + 86400000 * 30)
local state = redis.call('HGETALL', KEYS[1])
local counts = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
return {1, mine, state, counts, redis.call('HGET', KEYS[3], 'interval_ms') or ''}
"#;

pub(crate) const APPLY_LUA: &str = r#"
-- KEYS: 1 state, 2 site pause, 3 index of paused sites, 4 log; ARGV: 1 the
-- lock STEP gave, 2 now ms, 3 site, 4 state ttl ms, 5 log line ('' none),
-- 6 suspension ms (0 none), 7 its reason, then the state's fields and
-- values. Returns 1 when stored, 0 when the lock was no longer this step's.
if redis.call('HGET', KEYS[1], 'lock') ~= ARGV[1] then return 0 end
local now = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local ms = tonumber(ARGV[6])
-- A suspension never shortens a longer pause (an operator's).
if ms > 0 and redis.call('PTTL', KEYS[2]) < ms then
  redis.call('SET', KEYS[2], 'adaptive\n' .. ARGV[7], 'PX', ms)
  redis.call('ZADD', KEYS[3], now + ms, ARGV[3])
end
if ARGV[5] ~= '' then
  redis.call('LPUSH', KEYS[4], ARGV[5])
  redis.call('LTRIM', KEYS[4], 0, 19)
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
return 1
"#;

/// A due step: the lock, the stored state (`None`: a new site), the counts
/// of every sender since the last step, the run-time MX rule's rate.
#[derive(Debug, Clone, PartialEq)]
pub struct DueStep {
    pub lock: String,
    pub state: Option<SiteControl>,
    pub counts: Counts,
    /// The run-time MX rule's rate, messages per second.
    pub rule_rate: Option<f64>,
}

/// A paused site: until when, by whom ([`crate::policy::PauseBy::Operator`]
/// or [`crate::policy::PauseBy::Adaptive`], as stored), why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SitePause {
    /// Remaining, seconds.
    pub for_s: u64,
    pub by: String,
    pub reason: String,
}

/// The run-time MX rule of a site.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SiteRule {
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub concurrency: Option<u32>,
    pub messages_per_connection: Option<u32>,
}

impl SiteRule {
    pub fn is_empty(&self) -> bool {
        *self == SiteRule::default()
    }
}

/// What operators see of a site's controls.
#[derive(Debug, Clone, Serialize)]
pub struct SiteControls {
    pub pause: Option<SitePause>,
    pub rule: SiteRule,
    pub control: Option<SiteControl>,
    /// The last changes of state, newest first.
    pub log: Vec<String>,
    /// Transactions in flight to the site across all senders.
    pub in_flight: u64,
}

fn op(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { op, source }
}

impl Policy {
    /// Adds one sender's counts for a site and, when a step is due (or
    /// `force`, and no other sender is stepping), takes the step's lock,
    /// state and pending counts. `now_ms` is passed in (tests).
    pub async fn site_step_begin(
        &self,
        site: &str,
        counts: &Counts,
        force: bool,
        step: Duration,
        now_ms: i64,
    ) -> Result<Option<DueStep>, StoreError> {
        let mut c = self.store().connection();
        let reply: redis::Value = redis::Script::new(STEP_LUA)
            .key(self.key(&["site", "ctl", site]))
            .key(self.key(&["site", "counts", site]))
            .key(self.key(&["site", "limit", site]))
            .arg(counts.sent)
            .arg(counts.throttled)
            .arg(counts.blocked)
            .arg(counts.throttle_reply.as_deref().unwrap_or(""))
            .arg(counts.block_reply.as_deref().unwrap_or(""))
            .arg(now_ms)
            .arg(step.as_millis() as u64)
            .arg(if force { "1" } else { "0" })
            .arg(LOCK_MS)
            .invoke_async(&mut c)
            .await
            .map_err(op("site step"))?;
        let corrupt = |detail: &str| StoreError::Corrupt {
            what: "site step reply",
            detail: detail.to_string(),
        };
        let redis::Value::Array(items) = reply else {
            return Err(corrupt("not an array"));
        };
        let flat = |v: &redis::Value| -> Result<HashMap<String, String>, StoreError> {
            let list: Vec<String> =
                redis::from_redis_value(v.clone()).map_err(|e| corrupt(&e.to_string()))?;
            Ok(list
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect())
        };
        match items.as_slice() {
            [status] if redis::from_redis_value::<i64>(status.clone()).ok() == Some(0) => Ok(None),
            [_, lock, state, counts, rule] => {
                let lock: String =
                    redis::from_redis_value(lock.clone()).map_err(|e| corrupt(&e.to_string()))?;
                let state = SiteControl::from_fields(&flat(state)?);
                let counts = flat(counts)?;
                let n = |k: &str| counts.get(k).and_then(|v| v.parse().ok()).unwrap_or(0u64);
                let rule: String = redis::from_redis_value(rule.clone()).unwrap_or_default();
                Ok(Some(DueStep {
                    lock,
                    state,
                    counts: Counts {
                        sent: n("sent"),
                        throttled: n("throttled"),
                        blocked: n("blocked"),
                        throttle_reply: counts.get("throttle_reply").cloned(),
                        block_reply: counts.get("block_reply").cloned(),
                    },
                    rule_rate: rule
                        .parse::<f64>()
                        .ok()
                        .filter(|i| *i > 0.0)
                        .map(|i| 1000.0 / i),
                }))
            }
            _ => Err(corrupt("unexpected length")),
        }
    }

    /// Stores a step's new state under its lock (false: another sender
    /// took over), with a line for the log when something changed, and
    /// suspends the site for `suspend` (with its reason) when asked.
    #[allow(clippy::too_many_arguments)]
    pub async fn site_step_apply(
        &self,
        site: &str,
        lock: &str,
        state: &SiteControl,
        log_line: Option<&str>,
        suspend: Option<(Duration, &str)>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut c = self.store().connection();
        let script = redis::Script::new(APPLY_LUA);
        let mut inv = script.prepare_invoke();
        inv.key(self.key(&["site", "ctl", site]))
            .key(self.key(&["site", "pause", site]))
            .key(self.key(&["site", "paused"]))
            .key(self.key(&["site", "log", site]))
            .arg(lock)
            .arg(now_ms)
            .arg(site)
            .arg(STATE_TTL_MS)
            .arg(log_line.unwrap_or(""))
            .arg(suspend.map_or(0, |(d, _)| d.as_millis().max(1) as u64))
            .arg(suspend.map_or("", |(_, r)| r));
        for (k, v) in state.to_fields() {
            inv.arg(k).arg(v);
        }
        let stored: i64 = inv.invoke_async(&mut c).await.map_err(op("site apply"))?;
        Ok(stored == 1)
    }

    /// Pauses sending to a site (every domain of it) for `for_`, saying why.
    pub async fn pause_site(
        &self,
        site: &str,
        for_: Duration,
        by: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.store().connection();
        let ms = for_.as_millis().max(1000) as u64;
        let until = crate::unix_now_ms() + ms as i64;
        let _: () = redis::pipe()
            .pset_ex(
                self.key(&["site", "pause", site]),
                format!("{by}\n{reason}"),
                ms,
            )
            .ignore()
            .zadd(self.key(&["site", "paused"]), site, until)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("pause site"))?;
        Ok(())
    }

    /// Resumes a paused site (an operator's pause or the controller's
    /// suspension, which then ends at the next step). Whether it was paused.
    pub async fn resume_site(&self, site: &str) -> Result<bool, StoreError> {
        let mut c = self.store().connection();
        let ctl = self.key(&["site", "ctl", site]);
        let (n, phase): (i64, Option<String>) = redis::pipe()
            .del(self.key(&["site", "pause", site]))
            .zrem(self.key(&["site", "paused"]), site)
            .ignore()
            .hget(&ctl, "phase")
            .query_async(&mut c)
            .await
            .map_err(op("resume site"))?;
        if phase.as_deref() == Some("suspended") {
            let _: () = c
                .hset(&ctl, "until", crate::unix_now_ms())
                .await
                .map_err(op("resume site"))?;
        }
        Ok(n == 1)
    }

    /// Sets the run-time MX rule of a site (fields left `None` stay).
    pub async fn set_site_limit(&self, site: &str, rule: &SiteRule) -> Result<(), StoreError> {
        let mut fields: Vec<(&str, String)> = Vec::new();
        if let Some(r) = rule.rate_per_second {
            fields.push(("interval_ms", (1000.0 / r).to_string()));
        }
        if let Some(b) = rule.burst {
            fields.push(("burst", b.to_string()));
        }
        if let Some(c) = rule.concurrency {
            fields.push(("concurrency", c.to_string()));
        }
        if let Some(m) = rule.messages_per_connection {
            fields.push(("per_connection", m.to_string()));
        }
        if fields.is_empty() {
            return Ok(());
        }
        let mut c = self.store().connection();
        let _: () = c
            .hset_multiple(self.key(&["site", "limit", site]), &fields)
            .await
            .map_err(op("set site limit"))?;
        Ok(())
    }

    /// Drops a site's run-time MX rule.
    pub async fn clear_site_limit(&self, site: &str) -> Result<(), StoreError> {
        let mut c = self.store().connection();
        let _: i64 = c
            .del(self.key(&["site", "limit", site]))
            .await
            .map_err(op("clear site limit"))?;
        Ok(())
    }

    /// The controls of a site as operators see them.
    pub async fn site_controls(&self, site: &str) -> Result<SiteControls, StoreError> {
        let mut c = self.store().connection();
        let now = crate::unix_now_ms();
        let pause_key = self.key(&["site", "pause", site]);
        #[allow(clippy::type_complexity)]
        let (pause, ttl, rule, ctl, log, in_flight): (
            Option<String>,
            i64,
            (Option<f64>, Option<u32>, Option<u32>, Option<u32>),
            HashMap<String, String>,
            Vec<String>,
            u64,
        ) = redis::pipe()
            .get(&pause_key)
            .pttl(&pause_key)
            .cmd("HMGET")
            .arg(self.key(&["site", "limit", site]))
            .arg("interval_ms")
            .arg("burst")
            .arg("concurrency")
            .arg("per_connection")
            .hgetall(self.key(&["site", "ctl", site]))
            .lrange(self.key(&["site", "log", site]), 0, LOG_LINES - 1)
            .cmd("ZCOUNT")
            .arg(self.key(&["site", "conc", site]))
            .arg(now)
            .arg("+inf")
            .query_async(&mut c)
            .await
            .map_err(op("site controls"))?;
        let pause = match pause {
            Some(v) if ttl > 0 => {
                let (by, reason) = v.split_once('\n').unwrap_or((v.as_str(), ""));
                Some(SitePause {
                    for_s: (ttl as u64).div_ceil(1000),
                    by: by.to_string(),
                    reason: reason.to_string(),
                })
            }
            _ => None,
        };
        Ok(SiteControls {
            pause,
            rule: SiteRule {
                rate_per_second: rule.0.filter(|i| *i > 0.0).map(|i| 1000.0 / i),
                burst: rule.1,
                concurrency: rule.2,
                messages_per_connection: rule.3,
            },
            control: SiteControl::from_fields(&ctl),
            log,
            in_flight,
        })
    }

    /// Day 1 of the warm-up of `key` (`{sending domain}:{site}`): the
    /// first time it was asked (`now_ms`), kept 90 days.
    pub async fn warmup_start(&self, key: &str, now_ms: i64) -> Result<i64, StoreError> {
        let mut c = self.store().connection();
        let k = self.key(&["warm", "first", key]);
        let (_, start): (Option<String>, i64) = redis::pipe()
            .cmd("SET")
            .arg(&k)
            .arg(now_ms)
            .arg("NX")
            .arg("EX")
            .arg(90 * 86_400)
            .get(&k)
            .query_async(&mut c)
            .await
            .map_err(op("warm-up start"))?;
        Ok(start)
    }

    /// Sites with a pause, a run-time MX rule or a controller state. The
    /// paused ones come from their index (`{p}:site:paused`), each checked
    /// against its pause key, which decides (the index keeps a site until it
    /// is resumed); MX rules and controller states have no index and are
    /// found by SCAN (for `mailpipe site list`, an operator's command).
    pub async fn controlled_sites(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.store().connection();
        let indexed: Vec<String> = c
            .zrange(self.key(&["site", "paused"]), 0, -1)
            .await
            .map_err(op("sites"))?;
        let mut pipe = redis::pipe();
        for site in &indexed {
            pipe.exists(self.key(&["site", "pause", site]));
        }
        let paused: Vec<bool> = if indexed.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut c).await.map_err(op("sites"))?
        };
        let mut out: std::collections::BTreeSet<String> = indexed
            .into_iter()
            .zip(paused)
            .filter_map(|(site, paused)| paused.then_some(site))
            .collect();
        for kind in ["limit", "ctl"] {
            out.extend(
                self.store()
                    .names_after(&self.key(&["site", kind, ""]))
                    .await?,
            );
        }
        Ok(out.into_iter().collect())
    }
}

/// The line a change of state leaves in the site's log: when, what, the
/// rate before and after, and the reply behind it.
pub fn log_line(
    now_ms: i64,
    action: crate::adaptive::Action,
    before: Option<f64>,
    after: &SiteControl,
) -> String {
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64),
    );
    let rate = match before {
        Some(b) if (b - after.rate).abs() > 1e-9 => format!("{b:.1}/s -> {:.1}/s", after.rate),
        _ => format!("{:.1}/s", after.rate),
    };
    let mut line = format!("{when} {} {} {rate}", action.as_str(), after.phase.as_str());
    if matches!(
        action,
        crate::adaptive::Action::Cut | crate::adaptive::Action::Suspended
    ) && !after.reason.is_empty()
    {
        line.push_str(": ");
        line.push_str(&after.reason);
    }
    line
}

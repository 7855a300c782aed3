//! The circuit breaker: failures counted in one-minute buckets per domain,
//! the domain paused when a window's failure ratio says so; and what a
//! classified failure does to its domain (the breaker, a slow-down).

use super::{now_arg, op, Policy};
use crate::config::BreakerSettings;
use crate::store::StoreError;

/// How many one-minute buckets the breaker sums for a window of
/// `window_secs`: every minute the window touches, at least one. The
/// breaker's Lua counts the same, so `mailpipe domain show` reports the
/// counts the breaker decided on.
pub fn breaker_buckets(window_secs: u64) -> u64 {
    window_secs.div_ceil(60).max(1)
}

pub(super) const BREAKER_LUA: &str = r#"
-- KEYS: 1 pause, 2 index of paused domains, 3... the window's minute
-- buckets, this minute's first (as many as breaker_buckets() above: what
-- `mailpipe domain show` sums); ARGV: 1 unused, 2 window s,
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
local window = tonumber(ARGV[2])
if ARGV[6] == '1' then
  local cur = KEYS[3]
  redis.call('HINCRBY', cur, 'f', 1)
  if ARGV[8] == '1' then redis.call('HINCRBY', cur, 'a', 1) end
  redis.call('EXPIRE', cur, window + 120)
end
local a, f = 0, 0
for i = 3, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'a', 'f')
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

/// What one failure did to its domain's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerCount {
    /// This failure opened the breaker: the domain is paused.
    pub opened: bool,
    /// Attempts and failures in the window, this failure included.
    pub attempts: u64,
    pub failures: u64,
}

impl Policy {
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
        // The window's buckets, by the minute of the caller's clock (or of
        // `now_ms`): declared, so the script builds no key names.
        let minute = now_ms.unwrap_or_else(crate::unix_now_ms).div_euclid(60_000);
        let mut inv = self.breaker.prepare_invoke();
        inv.key(self.key(&["pause", domain]))
            .key(self.key(&["paused"]));
        for i in 0..breaker_buckets(breaker.window.as_secs()) as i64 {
            inv.key(self.key(&["brk", domain, &(minute - i).to_string()]));
        }
        let (opened, attempts, failures): (i64, u64, u64) = inv
            .arg("")
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

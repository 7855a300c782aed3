//! Slow-downs: a throttling reply (421, 4.7.28, 450 4.2.1, ...) lowers the
//! domain's rate to `policy.slowdown.factor` of what it was at once, and the
//! rate recovers linearly over `policy.slowdown.recovery`.
//!
//! "What it was" is the domain's run-time limit, else its configured rate,
//! else, for a domain without any limit, the rate the senders were sending
//! at: the calls script keeps a decaying count of every domain's attempts
//! (`{p}:seen:{domain}`: count `c` at time `t`, first counted at `f`, time
//! constant [`SEEN_TAU_MS`]), from which the rate since `f` is estimated
//! once it rests on ten recent attempts at least (below that there is no
//! rate to speak of, and the slow-down has nothing to lower).
//! That base is kept while the slow-down lasts, so a burst of throttling
//! replies (every transaction in flight answered at once) cuts the rate once,
//! not once per reply. The calls script applies it: the domain's interval is
//! the base divided by the factor of the moment.
//!
//! Keys: `{p}:slow:{domain}` (factor, since, until, base interval ms),
//! expiring when the recovery ends.

use std::time::Duration;

use crate::config::SlowdownSettings;
use crate::policy::Policy;
use crate::store::StoreError;

/// The time constant of the decaying attempt counts (ms): the measured rate
/// follows what the senders did in the last ten seconds or so.
pub const SEEN_TAU_MS: u64 = 10_000;

const SLOW_LUA: &str = r#"
-- KEYS: 1 slow, 2 seen, 3 run-time limits; ARGV: 1 factor, 2 recovery ms,
-- 3 seen time constant ms, 4 configured interval ms (0 none), 5 now ms
-- ('' = the server's clock). Returns the base interval ms ('' none).
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local tau = tonumber(ARGV[3])
local base = tonumber(redis.call('HGET', KEYS[1], 'base'))
if not base then
  base = tonumber(redis.call('HGET', KEYS[3], 'interval_ms'))
  if not base or base <= 0 then base = tonumber(ARGV[4]) end
  if not base or base <= 0 then
    base = nil
    local s = redis.call('HMGET', KEYS[2], 'c', 't', 'f')
    local c, t, f = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
    if c and t and f then
      c = c * math.exp(-math.max(now - t, 0) / tau)
      -- The decayed count over the time it covers: the rate since f.
      local span = tau * (1 - math.exp(-math.max(now - f, 1000) / tau))
      -- A rate is measured from ten recent attempts at least.
      if c >= 10 then base = span / c end
    end
  end
end
local recovery = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'factor', ARGV[1], 'since', tostring(now), 'until', tostring(now + recovery))
if base then redis.call('HSET', KEYS[1], 'base', tostring(base)) end
redis.call('PEXPIRE', KEYS[1], recovery)
if base then return tostring(base) end
return ''
"#;

/// A slow-down in progress, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowdown {
    /// The share of the base rate allowed now (recovering toward 1).
    pub factor: f64,
    /// The rate allowed now, messages per second, when a base is known.
    pub rate_per_second: Option<f64>,
}

/// The slow-down at `now_ms` of the stored fields (factor, since, until,
/// base interval ms): `None` once it is over.
pub fn slowdown_at(
    factor: f64,
    since: i64,
    until: i64,
    base_ms: Option<f64>,
    now_ms: i64,
) -> Option<Slowdown> {
    if now_ms >= until || until <= since {
        return None;
    }
    let f = factor + (1.0 - factor) * (now_ms - since).max(0) as f64 / (until - since) as f64;
    Some(Slowdown {
        factor: f,
        rate_per_second: base_ms
            .filter(|b| *b > 0.0)
            .map(|b| 1000.0 * f.max(0.01) / b),
    })
}

impl Policy {
    /// Lowers a domain's rate after a throttling reply (see the module
    /// header); `configured` is the domain's configured rate interval.
    /// Returns the base interval the slow-down divides, when one is known.
    pub async fn slow_down(
        &self,
        domain: &str,
        configured: Option<Duration>,
        s: &SlowdownSettings,
    ) -> Result<Option<f64>, StoreError> {
        self.slow_down_at(domain, configured, s, None).await
    }

    /// [`Self::slow_down`] at a given time (Unix ms) instead of the
    /// server's clock: for tests of the script.
    pub async fn slow_down_at(
        &self,
        domain: &str,
        configured: Option<Duration>,
        s: &SlowdownSettings,
        now_ms: Option<i64>,
    ) -> Result<Option<f64>, StoreError> {
        let mut c = self.store().connection();
        let base: String = redis::Script::new(SLOW_LUA)
            .key(self.key(&["slow", domain]))
            .key(self.key(&["seen", domain]))
            .key(self.key(&["limit", domain]))
            .arg(s.factor)
            .arg(s.recovery.as_millis().max(1) as u64)
            .arg(SEEN_TAU_MS)
            .arg(configured.map(|i| i.as_secs_f64() * 1000.0).unwrap_or(0.0))
            .arg(crate::policy::now_arg(now_ms))
            .invoke_async(&mut c)
            .await
            .map_err(|source| StoreError::Redis {
                op: "slow down",
                source,
            })?;
        Ok(base.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_down_recovers_linearly_and_then_ends() {
        // Half of a 10/s base (100 ms), recovering over 10 s from t = 0.
        let table = [
            (0, Some((0.5, 5.0))),
            (5_000, Some((0.75, 7.5))),
            (9_999, Some((0.99995, 9.9995))),
            (10_000, None),
        ];
        for (now, want) in table {
            let got = slowdown_at(0.5, 0, 10_000, Some(100.0), now);
            match (got, want) {
                (None, None) => {}
                (Some(s), Some((factor, rate))) => {
                    assert!((s.factor - factor).abs() < 1e-9, "at {now} ms: {s:?}");
                    let r = s.rate_per_second.unwrap();
                    assert!((r - rate).abs() < 1e-9, "at {now} ms: {s:?}");
                }
                _ => panic!("at {now} ms: {got:?}, expected {want:?}"),
            }
        }
        let unknown = slowdown_at(0.5, 0, 10_000, None, 0).unwrap();
        assert_eq!(unknown.rate_per_second, None, "no base, no rate");
    }
}

/// The rate (messages per second) of a decaying count `c` kept at `t`,
/// counted since `f`, at `now` (all ms), with time constant `tau` ms: the
/// estimate the slow-down script makes, for operators' views.
pub fn decayed_rate(c: f64, t: i64, f: i64, now: i64, tau: f64) -> f64 {
    let c = c * (-((now - t).max(0) as f64) / tau).exp();
    let span = tau * (1.0 - (-((now - f).max(1_000) as f64) / tau).exp());
    if span <= 0.0 {
        return 0.0;
    }
    1000.0 * c / span
}

#[cfg(test)]
mod rate_tests {
    use super::decayed_rate;

    #[test]
    fn a_steady_count_reads_as_its_rate_and_fades_once_it_stops() {
        let tau = 10_000.0;
        // 50/s for a minute: the count settles at rate × tau.
        let steady = 50.0 * tau / 1000.0 * (1.0 - (-6.0f64).exp());
        let r = decayed_rate(steady, 60_000, 0, 60_000, tau);
        assert!((r - 50.0).abs() < 0.01, "{r}");
        // Ten seconds after the last attempt, it has faded by e.
        let later = decayed_rate(steady, 60_000, 0, 70_000, tau);
        assert!((later - 50.0 / std::f64::consts::E).abs() < 0.05, "{later}");
        // Two attempts in the first 100 ms read over a second, not 20/s.
        assert!(
            (decayed_rate(2.0, 100, 0, 100, tau) - 2.0 / (1.0 - (-0.1f64).exp()) / 10.0).abs()
                < 1e-9
        );
    }
}

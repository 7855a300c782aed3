//! Run-time limits of a domain (`mailpipe domain limit`) and what
//! operators see of a domain (`mailpipe domain show`, `domain list`).

use redis::AsyncCommands;
use serde::Serialize;

use super::{breaker_buckets, op, PauseNote, Policy};
use crate::config::BreakerSettings;
use crate::store::StoreError;

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

impl Policy {
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
            out.extend(self.store.names_after(&self.key(&[kind, ""])).await?);
        }
        Ok(out.into_iter().collect())
    }
}

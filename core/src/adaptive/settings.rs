//! The controller's settings (`sites.adaptive`), with their defaults and
//! the check that refuses settings that cannot work.

use std::time::Duration;

use serde::Deserialize;

use crate::ratelimit::Rate;

/// The controller's settings (`sites.adaptive`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveSettings {
    /// Whether sites get an adaptive rate (and a reputation block suspends
    /// the site and defers its mail instead of failing it).
    pub enabled: bool,
    /// The rate of a site without history.
    pub start_rate: Rate,
    /// The rate is never cut below this.
    pub min_rate: Rate,
    /// How often the rate may rise.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub step: Duration,
    /// Factor per used step while probing (below the rate that last held).
    pub ramp: f64,
    /// Factor per used step of a site's start: while it probes and nothing
    /// throttled it since it (re)started, its rate rises by this factor
    /// every `start_step`, so that a provider that takes 1,500/s is found
    /// in seconds, not in the minute that `ramp` every `step` takes from
    /// the start rate. The first throttling reply ends the start.
    pub start_ramp: f64,
    /// How often the rate may rise during a site's start.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub start_step: Duration,
    /// Factor per used step while steady (above the rate that last held).
    pub probe: f64,
    /// Factor of a cut on throttling.
    pub cut: f64,
    /// A steady site throttled right after a probe's rise goes back to
    /// this factor of the rate before the rise (which held a step ago),
    /// when that is above the `cut`: the limit was found just above it.
    pub steady_cut: f64,
    /// Used steps in a row without throttling, at or above the rate the
    /// last cut came from, after which a steady site probes again (0:
    /// never). A limit that throttled once and no longer does (a burst
    /// the provider refused at the start, a limit the provider raised)
    /// then stops holding the site down for minutes of 5 % steps.
    pub reprobe_after: u32,
    /// Times a sender tries a message again itself, at the site's cut
    /// rate, after a throttling reply (`rate_limited`) at the site, before
    /// the message goes to the retrier's throttled schedule (minutes). The
    /// cut is the answer to the provider's "slow down"; sending the message
    /// a moment later at the lower rate keeps a campaign from ending with a
    /// tail of messages that wait a minute or more for one refused RCPT.
    pub throttled_retries: u32,
    /// How long a throttled message waits before it goes again, doubled
    /// for each further try (1 s, then 2 s, ...). At once, it met the
    /// provider's budget still empty from the burst that was throttled,
    /// and a burst's messages used up their tries within milliseconds.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub throttled_retry_after: Duration,
    /// Share of the allowed rate a step must have used for the rate to rise.
    pub used_share: f64,
    /// Throttling replies this soon after a cut do not cut again.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub cut_hold: Duration,
    /// Reputation blocks in a row that suspend the site.
    pub suspend_after: u32,
    /// How long a suspension lasts.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub suspend_for: Duration,
    /// Age at which the rate that last held counts for half at a restart.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub history_half_life: Duration,
    /// A site not stepped for this long starts again from its history.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub idle_restart: Duration,
}

impl Default for AdaptiveSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            start_rate: Rate {
                count: 20.0,
                period: Duration::from_secs(1),
            },
            min_rate: Rate {
                count: 1.0,
                period: Duration::from_secs(1),
            },
            step: Duration::from_secs(2),
            ramp: 1.5,
            start_ramp: 2.0,
            start_step: Duration::from_secs(1),
            probe: 1.05,
            cut: 0.75,
            steady_cut: 0.9,
            reprobe_after: 3,
            throttled_retries: 2,
            throttled_retry_after: Duration::from_secs(1),
            used_share: 0.5,
            cut_hold: Duration::from_secs(2),
            suspend_after: 3,
            suspend_for: Duration::from_secs(1800),
            history_half_life: Duration::from_secs(86_400),
            idle_restart: Duration::from_secs(600),
        }
    }
}

impl AdaptiveSettings {
    /// The least time between two steps of a site: its start's steps are
    /// the shorter ones.
    pub fn least_step(&self) -> Duration {
        self.step.min(self.start_step)
    }

    /// How long a message waits before its `tried`-th throttled retry
    /// (from 1): `throttled_retry_after`, doubled for each retry before it.
    pub fn throttled_retry_delay(&self, tried: u32) -> Duration {
        let doublings = tried.saturating_sub(1).min(16);
        self.throttled_retry_after.saturating_mul(1 << doublings)
    }

    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let ok = self.ramp >= 1.0
            && self.start_ramp >= 1.0
            && !self.start_step.is_zero()
            && self.probe >= 1.0
            && self.cut > 0.0
            && self.cut < 1.0
            && self.steady_cut > 0.0
            && self.steady_cut <= 1.0
            && (0.0..=1.0).contains(&self.used_share)
            && self.suspend_after >= 1
            && !self.step.is_zero()
            && !self.history_half_life.is_zero()
            && self.min_rate.per_second() <= self.start_rate.per_second();
        if ok {
            Ok(())
        } else {
            Err(
                "sites.adaptive: ramp, start_ramp and probe must be at least 1, cut between 0 \
                 and 1 (exclusive), steady_cut above 0 and at most 1, used_share between 0 and 1, suspend_after at least 1, \
                 step, start_step and history_half_life above zero, min_rate at most \
                 start_rate"
                    .into(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_retry_waits_longer_each_time() {
        let s = AdaptiveSettings::default();
        let table = [(1, 1_000), (2, 2_000), (3, 4_000)];
        for (tried, ms) in table {
            assert_eq!(
                s.throttled_retry_delay(tried),
                Duration::from_millis(ms),
                "retry {tried}"
            );
        }
        let none = AdaptiveSettings {
            throttled_retry_after: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(none.throttled_retry_delay(2), Duration::ZERO);
        assert_eq!(s.throttled_retry_delay(1_000), Duration::from_secs(65_536));
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(AdaptiveSettings::default().check().is_ok());
        for bad in [
            AdaptiveSettings {
                cut: 1.0,
                ..Default::default()
            },
            AdaptiveSettings {
                ramp: 0.9,
                ..Default::default()
            },
            AdaptiveSettings {
                start_ramp: 0.5,
                ..Default::default()
            },
            AdaptiveSettings {
                start_step: Duration::ZERO,
                ..Default::default()
            },
            AdaptiveSettings {
                suspend_after: 0,
                ..Default::default()
            },
            AdaptiveSettings {
                min_rate: "50/s".parse().unwrap(),
                ..Default::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}

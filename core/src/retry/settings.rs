//! The retrier's settings (`retrier.*`): delay tiers and the retry
//! schedules, each merged field by field with its default. Plain serde
//! structs: `mailpipe_common::config` reads them as part of its settings.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::duration::{duration, durations};

/// The retrier's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrierSettings {
    /// Address of the health and metrics endpoint.
    pub listen: String,
    /// Failures processed at once.
    pub prefetch: u16,
    /// The delay tiers: one queue per tier and lane, each with this fixed
    /// TTL. A retry waits in the smallest tier that is at least its delay,
    /// so every delay of the policies below should be a tier.
    #[serde(deserialize_with = "durations")]
    pub tiers: Vec<Duration>,
    /// Spread of each retry delay (0.1 = ±10 %), so the retries of a
    /// campaign that failed at once do not come back at once. Delays no tier
    /// matches are reached by hopping through shorter tiers.
    pub jitter: f64,
    /// Retry schedules per kind of failure.
    pub policies: RetryPolicies,
    /// How often the retrier reads the backlog it exports as metrics: the
    /// depth of every queue, the deferred retries, the paused domains.
    #[serde(deserialize_with = "duration")]
    pub backlog_interval: Duration,
}

/// Which schedule a failure follows (routing, throttling or other soft failures).
///
/// Each policy merges field by field with its own default: setting only
/// `retrier.policies.soft.schedule` keeps the soft policy's `max_attempts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "PartialRetryPolicies")]
pub struct RetryPolicies {
    /// Routing and connection failures (4.4.x, relay unreachable): 1 h, 2 h,
    /// 4 h, 8 h, 24 h.
    pub routing: RetryPolicy,
    /// 421 and rate limiting: exponential 1, 2, 4, 8, 16 min, 5 attempts.
    pub throttled: RetryPolicy,
    /// Other transient failures: 5 attempts in the first 24 h at least an
    /// hour apart, then one a day for 4 days.
    pub soft: RetryPolicy,
}

/// One retry schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay before attempt 2, 3, ...; the last one repeats.
    #[serde(deserialize_with = "durations")]
    pub schedule: Vec<Duration>,
    /// Attempts (including the first) after which the message is
    /// dead-lettered as `exhausted`.
    pub max_attempts: u32,
}

/// [`RetryPolicies`] as written: any policy and any field may be missing.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PartialRetryPolicies {
    routing: PartialRetryPolicy,
    throttled: PartialRetryPolicy,
    soft: PartialRetryPolicy,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PartialRetryPolicy {
    #[serde(deserialize_with = "some_durations")]
    schedule: Option<Vec<Duration>>,
    max_attempts: Option<u32>,
}

impl PartialRetryPolicy {
    fn over(self, default: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            schedule: self.schedule.unwrap_or(default.schedule),
            max_attempts: self.max_attempts.unwrap_or(default.max_attempts),
        }
    }
}

impl From<PartialRetryPolicies> for RetryPolicies {
    fn from(p: PartialRetryPolicies) -> Self {
        let d = RetryPolicies::default();
        Self {
            routing: p.routing.over(d.routing),
            throttled: p.throttled.over(d.throttled),
            soft: p.soft.over(d.soft),
        }
    }
}

fn some_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
    durations(d).map(Some)
}

impl Default for RetryPolicies {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        let h = |n: u64| Duration::from_secs(3600 * n);
        Self {
            routing: RetryPolicy {
                schedule: vec![h(1), h(2), h(4), h(8), h(24)],
                max_attempts: 6,
            },
            throttled: RetryPolicy {
                schedule: vec![m(1), m(2), m(4), m(8), m(16)],
                max_attempts: 5,
            },
            soft: RetryPolicy {
                schedule: vec![h(1), h(1), h(1), h(1), h(24), h(24), h(24), h(24)],
                max_attempts: 9,
            },
        }
    }
}

impl Default for RetrierSettings {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        let h = |n: u64| Duration::from_secs(3600 * n);
        Self {
            listen: "0.0.0.0:9103".into(),
            prefetch: 32,
            tiers: vec![m(1), m(2), m(4), m(8), m(16), h(1), h(2), h(4), h(8), h(24)],
            jitter: 0.1,
            policies: RetryPolicies::default(),
            backlog_interval: Duration::from_secs(15),
        }
    }
}

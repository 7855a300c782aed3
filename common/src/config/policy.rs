//! The sending policy shared by every sender replica: per-domain limits
//! and routes, the domain circuit breaker and slow-downs.

use std::time::Duration;

use serde::Deserialize;

use super::values::duration;

/// Sending policy shared by every sender replica (per-domain and per-route
/// rates, concurrency, the circuit breaker and slow-downs).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Limits of every destination domain without its own entry.
    pub default: DomainPolicy,
    /// Per-domain limits and route overrides, e.g. `gmail.com: {rate: 50/s}`.
    pub domains: std::collections::BTreeMap<String, DomainPolicy>,
    pub breaker: BreakerSettings,
    pub slowdown: SlowdownSettings,
}

impl PolicySettings {
    /// The policy of a domain: its own entry over the default, field by field.
    pub fn for_domain(&self, domain: &str) -> DomainPolicy {
        let d = &self.default;
        match self.domains.get(domain) {
            Some(p) => DomainPolicy {
                rate: p.rate.or(d.rate),
                burst: p.burst.or(d.burst),
                concurrency: p.concurrency.or(d.concurrency),
                route: p.route.clone(),
            },
            None => d.clone(),
        }
    }
}

/// Limits for one destination domain.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DomainPolicy {
    /// Messages per period across all senders, e.g. "50/s".
    pub rate: Option<crate::ratelimit::Rate>,
    /// Messages allowed at once above the rate.
    pub burst: Option<u32>,
    /// Transactions in flight to the domain across all senders.
    pub concurrency: Option<u32>,
    /// Send this domain's mail through this route only (by name).
    pub route: Option<String>,
}

/// The domain circuit breaker: a domain whose recent attempts mostly failed is
/// paused for a while, so the sender stops hurting its reputation there.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Sliding window over which attempts and failures are counted.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Attempts in the window before the breaker may open.
    pub min_attempts: u64,
    /// Share of failures (domain- or sender-scope, e.g. blocks) that opens it.
    pub failure_ratio: f64,
    /// How long sending to the domain pauses.
    #[serde(deserialize_with = "duration")]
    pub pause: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            min_attempts: 300,
            failure_ratio: 0.9,
            pause: Duration::from_secs(3 * 3600),
        }
    }
}

/// What a throttling reply (421, 4.7.28, TSS04, ...) does to a domain's rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowdownSettings {
    /// The rate drops to this share at once ...
    pub factor: f64,
    /// ... and recovers linearly to the full rate over this long.
    #[serde(deserialize_with = "duration")]
    pub recovery: Duration,
}

impl Default for SlowdownSettings {
    fn default() -> Self {
        Self {
            factor: 0.5,
            recovery: Duration::from_secs(600),
        }
    }
}

//! When to try a failed message again: a pure function of the attempt
//! number, the failure's classification, the policy and the clock.

use std::time::Duration;

use crate::classify::{Classification, Reason};
use crate::config::{RetryPolicies, RetryPolicy};

/// What the retrier does with a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after `delay`.
    Retry { delay: Duration },
    /// Stop: dead-letter with this reason.
    Dead { reason: String },
}

/// The schedule a classified failure follows: rate limiting, greylisting and
/// 421 back off fast and briefly (a greylisting server accepts the retry
/// after a few minutes), routing and connection failures slowly, everything
/// else on the soft schedule.
pub fn policy_for<'a>(policies: &'a RetryPolicies, c: &Classification) -> &'a RetryPolicy {
    match c.reason {
        Reason::RateLimited | Reason::Greylisted => &policies.throttled,
        Reason::Unreachable => &policies.routing,
        _ => &policies.soft,
    }
}

/// A deterministic spread in [-1, 1) for a message and attempt, so the
/// retries of one campaign do not come back in one wave, and a redelivered
/// failure decides the same.
pub fn jitter_sample(message_id: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_id.bytes().chain(attempt.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Spreads a delay by ±`jitter` (a fraction) according to `sample`.
pub fn jittered(delay: Duration, jitter: f64, sample: f64) -> Duration {
    delay.mul_f64((1.0 + jitter * sample).max(0.0))
}

/// Decides the fate of a message after its `attempts`-th failed attempt.
///
/// * not retryable → dead with the failure's own reason;
/// * `attempts` reached the policy's `max_attempts` → dead `exhausted`;
/// * the next attempt would fall after `deadline` → dead `expired`;
/// * otherwise retry after `schedule[attempts - 1]` (the last entry repeats).
pub fn decide(
    attempts: u32,
    retryable: bool,
    reason: &str,
    policy: &RetryPolicy,
    now: i64,
    deadline: i64,
) -> RetryDecision {
    if !retryable {
        return RetryDecision::Dead {
            reason: reason.to_string(),
        };
    }
    if attempts >= policy.max_attempts {
        return RetryDecision::Dead {
            reason: "exhausted".into(),
        };
    }
    let idx = (attempts.max(1) - 1) as usize;
    let delay = policy
        .schedule
        .get(idx)
        .or(policy.schedule.last())
        .copied()
        .unwrap_or(Duration::from_secs(60));
    if now + delay.as_secs() as i64 > deadline {
        return RetryDecision::Dead {
            reason: "expired".into(),
        };
    }
    RetryDecision::Retry { delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().copied().map(Duration::from_secs).collect()
    }

    fn run(policy: &RetryPolicy, deadline: i64) -> Vec<i64> {
        (1..=12)
            .map(|a| match decide(a, true, "x", policy, 0, deadline) {
                RetryDecision::Retry { delay } => delay.as_secs() as i64,
                RetryDecision::Dead { .. } => -1,
            })
            .take_while(|d| *d >= 0)
            .collect()
    }

    #[test]
    fn default_schedules_follow_the_seeds() {
        let p = RetryPolicies::default();
        let h = 3600;
        // 4.4.3: 1 h, 2 h, 4 h, 8 h, then a last attempt 24 h later.
        assert_eq!(
            run(&p.routing, i64::MAX),
            vec![h, 2 * h, 4 * h, 8 * h, 24 * h]
        );
        // 421: 1, 2, 4, 8 minutes; 5 attempts in all.
        assert_eq!(run(&p.throttled, i64::MAX), vec![60, 120, 240, 480]);
        // Soft: 5 attempts in the first day an hour apart, then daily for 4 days.
        assert_eq!(
            run(&p.soft, i64::MAX),
            vec![h, h, h, h, 24 * h, 24 * h, 24 * h, 24 * h]
        );
    }

    #[test]
    fn each_reason_follows_its_schedule() {
        use crate::classify::{FailureType, Quarantine, Scope};
        let p = RetryPolicies::default();
        let class = |reason| Classification {
            kind: FailureType::Soft,
            reason,
            retry: true,
            quarantine: Quarantine::None,
            scope: Scope::Domain,
            rule: None,
        };
        for reason in Reason::ALL {
            let want = match reason {
                Reason::RateLimited | Reason::Greylisted => &p.throttled,
                Reason::Unreachable => &p.routing,
                _ => &p.soft,
            };
            assert!(
                std::ptr::eq(policy_for(&p, &class(reason)), want),
                "{reason}"
            );
        }
        // Greylisting is retried within minutes, as throttling is.
        assert_eq!(
            policy_for(&p, &class(Reason::Greylisted)).schedule[0],
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_default_soft_schedule_fits_in_the_default_validity() {
        let p = RetryPolicies::default();
        let total: i64 = run(&p.soft, i64::MAX).iter().sum();
        assert!(total <= crate::message::DEFAULT_VALIDITY_SECONDS as i64);
        // And a message whose validity is shorter stops as expired.
        assert_eq!(run(&p.soft, 10 * 3600).len(), 4);
    }

    #[test]
    fn hard_bounce_is_not_retried() {
        let p = RetryPolicies::default();
        assert_eq!(
            decide(1, false, "user_unknown", &p.soft, 0, i64::MAX),
            RetryDecision::Dead {
                reason: "user_unknown".into()
            }
        );
    }

    #[test]
    fn jitter_spreads_delays_within_bounds() {
        let base = Duration::from_secs(3600);
        let delays: Vec<u64> = (0..500)
            .map(|i| {
                let s = jitter_sample(&format!("msg-{i}"), 1);
                assert!((-1.0..1.0).contains(&s));
                jittered(base, 0.1, s).as_secs()
            })
            .collect();
        assert!(delays.iter().all(|d| (3240..=3960).contains(d)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 200, "jitter should spread delays");
        assert_eq!(jitter_sample("m", 1), jitter_sample("m", 1));
        assert_ne!(jitter_sample("m", 1), jitter_sample("m", 2));
    }

    #[test]
    fn exhausted_after_max_attempts() {
        let policy = RetryPolicy {
            schedule: secs(&[1]),
            max_attempts: 3,
        };
        assert!(matches!(
            decide(2, true, "x", &policy, 0, i64::MAX),
            RetryDecision::Retry { .. }
        ));
        assert_eq!(
            decide(3, true, "x", &policy, 0, i64::MAX),
            RetryDecision::Dead {
                reason: "exhausted".into()
            }
        );
    }

    #[test]
    fn nothing_outlives_the_deadline() {
        let p = RetryPolicies::default();
        assert_eq!(
            decide(1, true, "x", &p.throttled, 1_000, 1_030),
            RetryDecision::Dead {
                reason: "expired".into()
            }
        );
    }
}

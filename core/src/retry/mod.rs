//! When to try a failed message again: a pure function of the attempt
//! number, the failure's classification, the policy and the clock.
//!
//! [`decide`] is the schedule; [`outcome`] is the retrier's whole decision
//! on a failed attempt (the schedule, the poison check, the quarantine and
//! the jitter), which the retrier's shell only carries out.

use std::time::Duration;

use crate::classify::{Classification, FailureType, Reason};
use crate::message::Job;

mod settings;

pub use settings::{RetrierSettings, RetryPolicies, RetryPolicy};

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

/// What the retrier does with one failed attempt, all things considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Publish attempt number `attempt` to go after `delay` (jitter
    /// included).
    Retry { attempt: u32, delay: Duration },
    /// Stop after `attempt` attempts: terminal record and dead letter with
    /// this reason, and a `bounced` event first when the failure is hard.
    Dead {
        attempt: u32,
        reason: String,
        bounced: bool,
    },
}

/// The retrier's decision on the failed attempt of `job`, classified as
/// `class`, at `now`:
///
/// * a failure record on its last allowed delivery (`poisoned`, see
///   `mailpipe_common::amqp::poisoned`) stops the message as `poison_message`;
/// * otherwise [`decide`] on the schedule [`policy_for`] the class, with
///   the request's own number of retries (`job.retries`) in place of the
///   policy's when it set one (`retries + 1` attempts in all);
/// * a retry of an address that is quarantined (`quarantined`, by this
///   failure or before) stops with the failure's own reason instead;
/// * a retry's delay is spread by the configured jitter, the same for the
///   same message and attempt.
pub fn outcome(
    job: &Job,
    class: &Classification,
    quarantined: bool,
    poisoned: bool,
    now: i64,
    settings: &RetrierSettings,
) -> RetryOutcome {
    let attempt = job.attempt + 1;
    let reason = class.reason.as_str();
    let dead = |reason: &str| RetryOutcome::Dead {
        attempt,
        reason: reason.to_string(),
        bounced: class.kind == FailureType::Hard,
    };
    if poisoned {
        return dead("poison_message");
    }
    let policy = policy_for(&settings.policies, class);
    let own;
    let policy = match job.retries {
        Some(retries) => {
            own = RetryPolicy {
                max_attempts: retries.saturating_add(1),
                schedule: policy.schedule.clone(),
            };
            &own
        }
        None => policy,
    };
    match decide(attempt, class.retry, reason, policy, now, job.deadline) {
        RetryDecision::Retry { .. } if quarantined => dead(reason),
        RetryDecision::Retry { delay } => RetryOutcome::Retry {
            attempt,
            delay: jittered(delay, settings.jitter, jitter_sample(&job.id, attempt)),
        },
        RetryDecision::Dead { reason } => dead(&reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Quarantine, Scope};

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

    fn class(kind: FailureType, reason: Reason, retry: bool) -> Classification {
        Classification {
            kind,
            reason,
            retry,
            quarantine: Quarantine::None,
            scope: Scope::Recipient,
            rule: None,
        }
    }

    fn job(attempt: u32, deadline: i64) -> Job {
        Job {
            v: 1,
            id: "m1".into(),
            request: "r1".into(),
            tenant: None,
            campaign: None,
            lane: crate::message::Lane::Bulk,
            content: "c1".into(),
            to: "bob@example.com".parse().unwrap(),
            name: None,
            vars: Default::default(),
            created: 0,
            deadline,
            attempt,
            last_reason: None,
            retries: None,
        }
    }

    #[test]
    fn the_retrier_decides_from_the_class_the_quarantine_and_the_poison_check() {
        let settings = RetrierSettings {
            jitter: 0.0,
            ..Default::default()
        };
        let h = Duration::from_secs(3600);
        let m = Duration::from_secs(60);
        let soft = class(FailureType::Soft, Reason::MailboxFull, true);
        let hard = class(FailureType::Hard, Reason::UserUnknown, false);
        let throttled = class(FailureType::Soft, Reason::RateLimited, true);
        let unreachable = class(FailureType::Soft, Reason::Unreachable, true);
        let retry = |attempt, delay| RetryOutcome::Retry { attempt, delay };
        let dead = |attempt, reason: &str, bounced| RetryOutcome::Dead {
            attempt,
            reason: reason.into(),
            bounced,
        };
        // (attempts made before, class, quarantined, poisoned, deadline, outcome)
        let table = [
            (0, &soft, false, false, i64::MAX, retry(1, h)),
            (4, &soft, false, false, i64::MAX, retry(5, 24 * h)),
            (0, &throttled, false, false, i64::MAX, retry(1, m)),
            (2, &throttled, false, false, i64::MAX, retry(3, 4 * m)),
            (0, &unreachable, false, false, i64::MAX, retry(1, h)),
            (
                0,
                &hard,
                false,
                false,
                i64::MAX,
                dead(1, "user_unknown", true),
            ),
            // Quarantined: a retry would be pointless.
            (
                0,
                &soft,
                true,
                false,
                i64::MAX,
                dead(1, "mailbox_full", false),
            ),
            (
                0,
                &hard,
                true,
                false,
                i64::MAX,
                dead(1, "user_unknown", true),
            ),
            // Poison wins over everything, and a hard failure still bounces.
            (
                0,
                &soft,
                false,
                true,
                i64::MAX,
                dead(1, "poison_message", false),
            ),
            (
                0,
                &hard,
                false,
                true,
                i64::MAX,
                dead(1, "poison_message", true),
            ),
            // The schedule's own ends.
            (
                8,
                &soft,
                false,
                false,
                i64::MAX,
                dead(9, "exhausted", false),
            ),
            (
                4,
                &throttled,
                false,
                false,
                i64::MAX,
                dead(5, "exhausted", false),
            ),
            (
                0,
                &soft,
                false,
                false,
                1_000 + 3_599,
                dead(1, "expired", false),
            ),
            (0, &soft, false, false, 1_000 + 3_600, retry(1, h)),
        ];
        for (attempt, class, quarantined, poisoned, deadline, want) in table {
            let got = outcome(
                &job(attempt, deadline),
                class,
                quarantined,
                poisoned,
                1_000,
                &settings,
            );
            assert_eq!(
                got, want,
                "attempt {attempt}, {:?}, quarantined {quarantined}, poisoned {poisoned}",
                class.reason
            );
        }
    }

    #[test]
    fn a_request_s_own_retries_replace_the_policy_s_max_attempts() {
        let settings = RetrierSettings {
            jitter: 0.0,
            ..Default::default()
        };
        let h = Duration::from_secs(3600);
        let m = Duration::from_secs(60);
        let soft = class(FailureType::Soft, Reason::MailboxFull, true);
        let throttled = class(FailureType::Soft, Reason::RateLimited, true);
        let hard = class(FailureType::Hard, Reason::UserUnknown, false);
        let retry = |attempt, delay| RetryOutcome::Retry { attempt, delay };
        let dead = |attempt, reason: &str, bounced| RetryOutcome::Dead {
            attempt,
            reason: reason.into(),
            bounced,
        };
        // (request's retries, attempts made before, class, deadline, outcome)
        let table = [
            // 0: the first soft failure stops, where the policy retries.
            (Some(0), 0, &soft, i64::MAX, dead(1, "exhausted", false)),
            (None, 0, &soft, i64::MAX, retry(1, h)),
            // 1: one retry, on the policy's schedule, then stop.
            (Some(1), 0, &soft, i64::MAX, retry(1, h)),
            (Some(1), 1, &soft, i64::MAX, dead(2, "exhausted", false)),
            (None, 1, &soft, i64::MAX, retry(2, h)),
            (Some(1), 0, &throttled, i64::MAX, retry(1, m)),
            (
                Some(1),
                1,
                &throttled,
                i64::MAX,
                dead(2, "exhausted", false),
            ),
            // More than the policy's: the schedule's last delay repeats.
            (Some(12), 9, &soft, i64::MAX, retry(10, 24 * h)),
            (None, 8, &soft, i64::MAX, dead(9, "exhausted", false)),
            // A hard failure is never retried, whatever the request says.
            (Some(5), 0, &hard, i64::MAX, dead(1, "user_unknown", true)),
            // The validity period still ends them.
            (Some(5), 0, &soft, 1_000 + 3_599, dead(1, "expired", false)),
        ];
        for (retries, attempt, class, deadline, want) in table {
            let job = Job {
                retries,
                ..job(attempt, deadline)
            };
            let got = outcome(&job, class, false, false, 1_000, &settings);
            assert_eq!(
                got, want,
                "retries {retries:?}, attempt {attempt}, {:?}",
                class.reason
            );
        }
    }

    #[test]
    fn a_retry_is_jittered_the_same_way_for_the_same_message_and_attempt() {
        let settings = RetrierSettings::default();
        let soft = class(FailureType::Soft, Reason::MailboxFull, true);
        let delay = |j: &Job| match outcome(j, &soft, false, false, 0, &settings) {
            RetryOutcome::Retry { delay, .. } => delay.as_secs(),
            other => panic!("{other:?}"),
        };
        let first = delay(&job(0, i64::MAX));
        assert!((3240..=3960).contains(&first), "{first}");
        assert_eq!(first, delay(&job(0, i64::MAX)));
        let other = Job {
            id: "m2".into(),
            ..job(0, i64::MAX)
        };
        assert_ne!(first, delay(&other));
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

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
mod tests;

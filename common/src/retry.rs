//! When to try a failed message again: a pure function of the attempt
//! number, the failure's retryability, the schedule and the clock.

use std::time::Duration;

/// What the retrier does with a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after `delay`.
    Retry { delay: Duration },
    /// Stop: dead-letter with this reason.
    Dead { reason: String },
}

/// Decides the fate of a message after its `attempts`-th failed attempt.
///
/// * not retryable → dead with the failure's own reason;
/// * `attempts` reached `max_attempts` → dead `exhausted`;
/// * the next attempt would fall after `deadline` → dead `expired`;
/// * otherwise retry after `schedule[attempts - 1]` (the last entry repeats).
pub fn decide(
    attempts: u32,
    retryable: bool,
    reason: &str,
    schedule: &[Duration],
    max_attempts: u32,
    now: i64,
    deadline: i64,
) -> RetryDecision {
    if !retryable {
        return RetryDecision::Dead {
            reason: reason.to_string(),
        };
    }
    if attempts >= max_attempts {
        return RetryDecision::Dead {
            reason: "exhausted".into(),
        };
    }
    let idx = (attempts.max(1) - 1) as usize;
    let delay = schedule
        .get(idx)
        .or(schedule.last())
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

    fn schedule() -> Vec<Duration> {
        [60, 120, 240, 480, 960]
            .into_iter()
            .map(Duration::from_secs)
            .collect()
    }

    #[test]
    fn transient_failures_follow_the_schedule_then_exhaust() {
        let delays: Vec<_> = (1..=6)
            .map(|a| decide(a, true, "undefined", &schedule(), 6, 0, i64::MAX))
            .collect();
        let secs: Vec<_> = delays
            .iter()
            .map(|d| match d {
                RetryDecision::Retry { delay } => delay.as_secs() as i64,
                RetryDecision::Dead { .. } => -1,
            })
            .collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 960, -1]);
        assert_eq!(
            delays[5],
            RetryDecision::Dead {
                reason: "exhausted".into()
            }
        );
    }

    #[test]
    fn hard_failure_is_not_retried() {
        assert_eq!(
            decide(1, false, "user_unknown", &schedule(), 6, 0, i64::MAX),
            RetryDecision::Dead {
                reason: "user_unknown".into()
            }
        );
    }

    #[test]
    fn nothing_outlives_the_deadline() {
        assert_eq!(
            decide(1, true, "undefined", &schedule(), 6, 1_000, 1_030),
            RetryDecision::Dead {
                reason: "expired".into()
            }
        );
    }
}

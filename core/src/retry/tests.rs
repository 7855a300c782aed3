//! The retry schedules, the jitter and the retrier's whole decision, as
//! tables of attempts and outcomes.

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

//! The site controls' Redis scripts, against Redis (a random prefix each),
//! with the time passed in: the adaptive controller's step (begin, apply)
//! and the calls script's site pause, MX rule and adaptive rate, and its
//! rates' reservations (a waiting message's place, taken once).
//!
//! Over 500 lines: one theme's tables (the site controls' Redis scripts),
//! kept together.

use std::time::Duration;

use mailpipe_common::adaptive::{self, Action, AdaptiveSettings, Counts, Phase};
use mailpipe_common::config::{RedisSettings, SiteLimits};
use mailpipe_state::calls::{Answer, Call};
use mailpipe_state::policy::{Ask, Policy, RouteLimits, Verdict};
use mailpipe_state::sitecontrol::{SiteRule, LOCK_MS};
use mailpipe_state::store::Store;

async fn store() -> Store {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let settings = RedisSettings {
        prefix: format!("test-{}", &id[..12]),
        ..RedisSettings::default()
    };
    Store::connect(&settings).await.expect("Redis on localhost")
}

fn counts(sent: u64, throttled: u64, blocked: u64) -> Counts {
    Counts {
        sent,
        throttled,
        blocked,
        throttle_reply: (throttled > 0).then(|| "421 4.7.0 Try again later".to_string()),
        block_reply: (blocked > 0).then(|| "550 5.7.1 poor reputation".to_string()),
    }
}

#[tokio::test]
async fn a_step_gathers_every_sender_s_counts_under_one_lock_and_stores_its_result() {
    let policy = Policy::new(store().await);
    let s = AdaptiveSettings {
        enabled: true,
        ..Default::default()
    };
    let site = "google";
    let step = s.step;
    let t0 = 1_000_000_000i64;

    // A new site: the step is due at once; the state is empty.
    let due = policy
        .site_step_begin(site, &counts(5, 0, 0), false, step, t0)
        .await
        .unwrap()
        .expect("due");
    assert_eq!(due.state, None);
    assert_eq!(due.counts, counts(5, 0, 0));
    assert_eq!(due.rule_rate, None);
    assert_eq!(due.lock, (t0 + LOCK_MS as i64).to_string());
    // Another sender meanwhile, even forced: its counts wait, no step.
    let other = policy
        .site_step_begin(site, &counts(0, 1, 0), true, step, t0 + 100)
        .await
        .unwrap();
    assert_eq!(other, None, "locked");
    let first = adaptive::step(&s, None, due.state.as_ref(), &due.counts, t0);
    assert_eq!(first.action, Action::Started);
    assert!(policy
        .site_step_apply(site, &due.lock, &first.state, Some("started"), None, t0)
        .await
        .unwrap());
    // The lock is spent: applying again stores nothing.
    assert!(!policy
        .site_step_apply(site, &due.lock, &first.state, None, None, t0)
        .await
        .unwrap());

    // Not due (a step 200 ms ago) and not forced: only counted.
    let not_due = policy
        .site_step_begin(site, &counts(2, 0, 0), false, step, t0 + 200)
        .await
        .unwrap();
    assert_eq!(not_due, None);
    // An operator's MX rule of 50/s.
    policy
        .set_site_limit(
            site,
            &SiteRule {
                rate_per_second: Some(50.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Forced: everything pending since the last step, from both senders.
    let due = policy
        .site_step_begin(site, &Counts::default(), true, step, t0 + 300)
        .await
        .unwrap()
        .expect("forced");
    assert_eq!(
        due.state.as_ref(),
        Some(&first.state),
        "the state read back"
    );
    assert_eq!(due.counts, counts(2, 1, 0));
    assert!((due.rule_rate.unwrap() - 50.0).abs() < 1e-9);

    // A suspension: the site's pause, with the reply as its reason.
    let mut suspended = first.state.clone();
    suspended.phase = Phase::Suspended;
    assert!(policy
        .site_step_apply(
            site,
            &due.lock,
            &suspended,
            Some("suspended"),
            Some((Duration::from_secs(60), "550 5.7.1 poor reputation")),
            t0 + 300,
        )
        .await
        .unwrap());
    let controls = policy.site_controls(site).await.unwrap();
    let pause = controls.pause.expect("paused");
    assert_eq!(
        (pause.by.as_str(), pause.reason.as_str()),
        ("adaptive", "550 5.7.1 poor reputation")
    );
    assert!((59..=60).contains(&pause.for_s), "{pause:?}");
    assert_eq!(controls.log, ["suspended", "started"], "newest first");
    assert_eq!(controls.control.map(|c| c.phase), Some(Phase::Suspended));
    assert!((controls.rule.rate_per_second.unwrap() - 50.0).abs() < 1e-9);

    // A suspension never shortens an operator's longer pause.
    policy
        .pause_site(site, Duration::from_secs(7200), "operator", "maintenance")
        .await
        .unwrap();
    let due = policy
        .site_step_begin(site, &Counts::default(), true, step, t0 + 400)
        .await
        .unwrap()
        .expect("forced");
    assert!(policy
        .site_step_apply(
            site,
            &due.lock,
            &suspended,
            None,
            Some((Duration::from_secs(60), "550 again")),
            t0 + 400,
        )
        .await
        .unwrap());
    let pause = policy.site_controls(site).await.unwrap().pause.unwrap();
    assert_eq!(
        (pause.by.as_str(), pause.reason.as_str()),
        ("operator", "maintenance")
    );

    // A lock left by a sender that never applied it expires; the late
    // sender's apply is then refused.
    let stale = policy
        .site_step_begin(site, &Counts::default(), true, step, t0 + 500)
        .await
        .unwrap()
        .expect("forced");
    let taken = policy
        .site_step_begin(
            site,
            &Counts::default(),
            true,
            step,
            t0 + 500 + LOCK_MS as i64 + 1,
        )
        .await
        .unwrap()
        .expect("the lock expired");
    assert!(!policy
        .site_step_apply(site, &stale.lock, &suspended, None, None, t0 + 600)
        .await
        .unwrap());
    assert!(policy
        .site_step_apply(site, &taken.lock, &suspended, None, None, t0 + 600)
        .await
        .unwrap());

    // Resuming ends the pause and the suspension (at the next step).
    assert!(policy.resume_site(site).await.unwrap());
    let controls = policy.site_controls(site).await.unwrap();
    assert!(controls.pause.is_none());
    let c = controls.control.unwrap();
    assert_eq!(c.phase, Phase::Suspended);
    assert!(c.until_ms <= mailpipe_common::unix_now_ms());
    assert!(
        !policy.resume_site(site).await.unwrap(),
        "not paused any more"
    );
    assert!(policy
        .controlled_sites()
        .await
        .unwrap()
        .contains(&site.to_string()));
}

fn ask(domain: &str, site: &str, lease: &str, site_limits: SiteLimits, adaptive: bool) -> Call {
    Call::Acquire(Ask {
        domain: domain.into(),
        site: site.into(),
        limits: Default::default(),
        site_limits,
        adaptive,
        warmup: None,
        route: RouteLimits {
            name: "r".into(),
            ..Default::default()
        },
        lease_id: lease.into(),
        // No reservation: a rate that is not free now answers a wait.
        max_wait: Duration::ZERO,
    })
}

fn verdicts(answers: Vec<Answer>) -> Vec<Verdict> {
    answers
        .into_iter()
        .map(|a| match a {
            Answer::Acquire(v) => v,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn the_calls_script_applies_the_site_s_pause_rule_and_adaptive_rate_to_every_domain_of_it() {
    let store = store().await;
    let policy = Policy::new(store.clone());
    let lease = Duration::from_secs(60);
    let window = Duration::from_secs(600);
    let none = SiteLimits::default();

    // A concurrency of one at the site, across its domains; the messages
    // per connection come back with the go.
    let rule = SiteLimits {
        concurrency: Some(1),
        messages_per_connection: Some(7),
        ..Default::default()
    };
    let got = verdicts(
        store
            .calls(
                &[
                    ask("a.test", "s1", "l1", rule.clone(), false),
                    ask("b.test", "s1", "l2", rule.clone(), false),
                    ask("c.test", "s2", "l3", none.clone(), false),
                ],
                lease,
                window,
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        got[0],
        Verdict::Go {
            lease: Some("l1".into()),
            per_connection: Some(7),
            after: Duration::ZERO,
        }
    );
    assert!(matches!(got[1], Verdict::Wait(_)), "{got:?}");
    assert_eq!(
        got[2],
        Verdict::Go {
            lease: None,
            per_connection: None,
            after: Duration::ZERO,
        }
    );
    // Released, the site has room again.
    policy.release("a.test", "s1", "r", "l1").await.unwrap();
    let got = verdicts(
        store
            .calls(
                &[ask("b.test", "s1", "l2", rule.clone(), false)],
                lease,
                window,
            )
            .await
            .unwrap(),
    );
    assert!(matches!(got[0], Verdict::Go { .. }), "{got:?}");

    // A run-time rule wins over the configured one.
    policy
        .set_site_limit(
            "s1",
            &SiteRule {
                messages_per_connection: Some(3),
                concurrency: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = verdicts(
        store
            .calls(
                &[ask("c.test", "s1", "l4", rule.clone(), false)],
                lease,
                window,
            )
            .await
            .unwrap(),
    );
    assert!(
        matches!(
            got[0],
            Verdict::Go {
                per_connection: Some(3),
                ..
            }
        ),
        "{got:?}"
    );

    // A paused site stops every domain of it, and only its own.
    policy
        .pause_site(
            "s1",
            Duration::from_secs(30),
            "operator",
            "provider incident",
        )
        .await
        .unwrap();
    let got = verdicts(
        store
            .calls(
                &[
                    ask("x.test", "s1", "l5", none.clone(), false),
                    ask("y.test", "s2", "l6", none.clone(), false),
                ],
                lease,
                window,
            )
            .await
            .unwrap(),
    );
    assert!(
        matches!(got[0], Verdict::Paused(d) if d > Duration::from_secs(25)),
        "{got:?}"
    );
    assert!(matches!(got[1], Verdict::Go { .. }), "{got:?}");
    policy.resume_site("s1").await.unwrap();
    // A domain's own pause still applies.
    policy
        .pause("paused.test", Duration::from_secs(30), "operator", None)
        .await
        .unwrap();
    let got = verdicts(
        store
            .calls(
                &[ask("paused.test", "s1", "l10", none.clone(), false)],
                lease,
                window,
            )
            .await
            .unwrap(),
    );
    assert!(matches!(got[0], Verdict::Paused(_)), "{got:?}");

    // The adaptive rate: 2/s allowed (a tenth of a second's burst: one at
    // once), applied only when adaptive sending is on.
    let s = AdaptiveSettings {
        enabled: true,
        start_rate: "2/s".parse().unwrap(),
        ..Default::default()
    };
    let now = mailpipe_common::unix_now_ms();
    let due = policy
        .site_step_begin("s3", &Counts::default(), true, s.step, now)
        .await
        .unwrap()
        .unwrap();
    let started = adaptive::step(&s, None, None, &Counts::default(), now);
    assert!(policy
        .site_step_apply("s3", &due.lock, &started.state, None, None, now)
        .await
        .unwrap());
    let got = verdicts(
        store
            .calls(
                &[
                    ask("p.test", "s3", "l7", none.clone(), true),
                    ask("q.test", "s3", "l8", none.clone(), true),
                    ask("r.test", "s3", "l9", none.clone(), false),
                ],
                lease,
                window,
            )
            .await
            .unwrap(),
    );
    assert!(matches!(got[0], Verdict::Go { .. }), "{got:?}");
    assert!(
        matches!(got[1], Verdict::Wait(d) if d > Duration::from_millis(300) && d <= Duration::from_millis(500)),
        "the second waits for the rate: {got:?}"
    );
    assert!(
        matches!(got[2], Verdict::Go { .. }),
        "adaptive off: {got:?}"
    );
}

#[tokio::test]
async fn past_the_warm_up_cap_of_its_day_a_message_waits_for_the_next_day() {
    use mailpipe_state::policy::WarmupAsk;
    let store = store().await;
    let policy = Policy::new(store.clone());
    let warm = |key: &str, cap: u64| {
        let mut a = ask("x.test", "google", "l", SiteLimits::default(), false);
        if let Call::Acquire(ref mut a) = a {
            a.warmup = Some(WarmupAsk {
                key: key.into(),
                cap,
                day_left: Duration::from_secs(3600),
            });
        }
        a
    };
    // Cap 2 on day 1: two go (one call, counted as they go), the third waits
    // for the day to end; another day, sending domain or site counts apart.
    let got = verdicts(
        store
            .calls(
                &[
                    warm("news.example:google:1", 2),
                    warm("news.example:google:1", 2),
                    warm("news.example:google:1", 2),
                    warm("news.example:google:2", 2),
                    warm("other.example:google:1", 2),
                ],
                Duration::from_secs(60),
                Duration::from_secs(600),
            )
            .await
            .unwrap(),
    );
    assert!(matches!(got[0], Verdict::Go { .. }), "{got:?}");
    assert!(matches!(got[1], Verdict::Go { .. }), "{got:?}");
    assert_eq!(got[2], Verdict::Wait(Duration::from_secs(3600)));
    assert!(matches!(got[3], Verdict::Go { .. }), "{got:?}");
    assert!(matches!(got[4], Verdict::Go { .. }), "{got:?}");
    // The next call reads the count back.
    let got = verdicts(
        store
            .calls(
                &[
                    warm("news.example:google:1", 3),
                    warm("news.example:google:1", 3),
                ],
                Duration::from_secs(60),
                Duration::from_secs(600),
            )
            .await
            .unwrap(),
    );
    assert!(matches!(got[0], Verdict::Go { .. }), "{got:?}");
    assert!(matches!(got[1], Verdict::Wait(_)), "{got:?}");

    // Day 1 of a pair is its first send, and stays.
    assert_eq!(
        policy
            .warmup_start("news.example:google", 5_000)
            .await
            .unwrap(),
        5_000
    );
    assert_eq!(
        policy
            .warmup_start("news.example:google", 9_000)
            .await
            .unwrap(),
        5_000
    );
}

#[tokio::test]
async fn the_sites_an_operator_sees_are_the_paused_ones_and_those_with_a_rule_or_a_state() {
    let s = store().await;
    let p = s.prefix().to_string();
    let policy = Policy::new(s.clone());
    let mut c = s.connection();
    policy
        .pause_site(
            "paused",
            Duration::from_secs(600),
            "operator",
            "maintenance",
        )
        .await
        .unwrap();
    policy
        .set_site_limit(
            "limited",
            &SiteRule {
                burst: Some(3),
                ..SiteRule::default()
            },
        )
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    pipe.hset(format!("{p}:site:ctl:adapted"), "phase", "steady")
        .ignore()
        // A pause that ended: still in the index, no longer a pause.
        .zadd(format!("{p}:site:paused"), "ended", 1)
        .ignore()
        // Budgets and logs alone do not make a site controlled.
        .set(format!("{p}:site:tat:budget-only"), 1)
        .ignore();
    let _: () = pipe.query_async(&mut c).await.unwrap();
    assert_eq!(
        policy.controlled_sites().await.unwrap(),
        ["adapted", "limited", "paused"]
    );
    assert!(policy.resume_site("paused").await.unwrap());
    assert_eq!(
        policy.controlled_sites().await.unwrap(),
        ["adapted", "limited"]
    );
    let keys = s.scan_keys(&format!("{p}:*")).await.unwrap();
    let _: i64 = redis::cmd("UNLINK")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .unwrap();
}

/// An ask for `domain` at 10/s (one at a time unless `burst`), through
/// route "r", willing to wait `max_wait` ms for its place.
fn rated(domain: &str, lease: &str, burst: u32, max_wait: u64, route_ms: Option<u64>) -> Call {
    Call::Acquire(Ask {
        domain: domain.into(),
        site: domain.into(),
        limits: mailpipe_common::config::DomainPolicy {
            rate: Some("10/s".parse().unwrap()),
            burst: Some(burst),
            ..Default::default()
        },
        site_limits: SiteLimits::default(),
        adaptive: false,
        warmup: None,
        route: RouteLimits {
            name: format!("r-{domain}"),
            interval: route_ms.map(Duration::from_millis),
            ..Default::default()
        },
        lease_id: lease.into(),
        max_wait: Duration::from_millis(max_wait),
    })
}

/// What each ask was answered, in ms: `Ok(after)` for a go, `Err(wait)`.
fn places(answers: Vec<Answer>) -> Vec<Result<u64, u64>> {
    verdicts(answers)
        .into_iter()
        .map(|v| match v {
            Verdict::Go { after, .. } => Ok(after.as_millis() as u64),
            Verdict::Wait(d) => Err(d.as_millis() as u64),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_rate_reserves_each_waiting_message_its_own_place_in_the_order_asked() {
    let store = store().await;
    let (lease, window) = (Duration::from_secs(60), Duration::from_secs(600));
    let t = 1_800_000_000_000_i64;
    let at = |calls: Vec<Call>, now: i64| {
        let store = store.clone();
        async move {
            places(
                store
                    .calls_at(&calls, lease, window, Some(now))
                    .await
                    .unwrap(),
            )
        }
    };
    // 10/s, one at a time: the first goes now, the next two are given the
    // next two places (100 and 200 ms on), the fourth would wait 300 ms,
    // past its 250: it is told to wait and takes nothing.
    let asks = |n: usize, max: u64| {
        (0..n)
            .map(|i| rated("a.test", &format!("l{i}"), 1, max, None))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        at(asks(4, 250), t).await,
        [Ok(0), Ok(100), Ok(200), Err(300)]
    );
    // 50 ms later the next free place is still 300 ms from the start (the
    // refused ask took none): 250 ms to wait, just within the budget.
    assert_eq!(at(asks(2, 250), t + 50).await, [Ok(250), Err(350)]);
    // Without a budget for waiting, nothing is reserved: the wait is told.
    assert_eq!(at(asks(1, 0), t + 350).await, [Err(50)]);
    // Time passes the reserved places: the rate is free again.
    assert_eq!(at(asks(1, 0), t + 400).await, [Ok(0)]);

    // A burst of 3: three go at once, the fourth takes the next place.
    let burst = (0..4)
        .map(|i| rated("b.test", &format!("b{i}"), 3, 1_000, None))
        .collect();
    assert_eq!(at(burst, t).await, [Ok(0), Ok(0), Ok(0), Ok(100)]);

    // Two rates: the place is the later of the two, and both are taken at
    // it (the route allows one per 300 ms, the domain one per 100 ms).
    let both = (0..3)
        .map(|i| rated("c.test", &format!("c{i}"), 1, 1_000, Some(300)))
        .collect();
    assert_eq!(at(both, t).await, [Ok(0), Ok(300), Ok(600)]);
}

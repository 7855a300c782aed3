//! Redis scripts tested directly against Redis (a random prefix each), as
//! tables of steps and expected answers.
//!
//! Over 500 lines: one theme's tables (the store's Redis scripts), kept
//! together.

use std::time::Duration;

use mailpipe_common::config::RedisSettings;
use mailpipe_state::store::Store;

async fn store() -> Store {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let settings = RedisSettings {
        prefix: format!("test-{}", &id[..12]),
        ..RedisSettings::default()
    };
    Store::connect(&settings).await.expect("Redis on localhost")
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Begin,
    End,
    Close,
    Reopen,
}

#[tokio::test]
async fn a_parking_queue_is_closed_only_when_no_sender_parks_and_senders_are_turned_away_while_closed(
) {
    use Step::*;
    let s = store().await;
    let r = "campaign-1";
    // (step, answer of begin/close; None for the steps without one)
    let table = [
        (Begin, Some(true)),
        (Begin, Some(true)),
        (Close, Some(false)), // two senders parking
        (End, None),
        (Close, Some(false)), // one still parking
        (End, None),
        (Close, Some(true)),  // nobody parks: closed for deletion
        (Begin, Some(false)), // a sender is turned away meanwhile
        (Close, Some(true)),  // a second closer (a release and a sweep at once)
        (Reopen, None),
        (Begin, Some(false)), // still closed: the second closer deletes
        (Reopen, None),
        (Begin, Some(true)), // open again once both reopened
        (End, None),
    ];
    for (i, (step, expected)) in table.into_iter().enumerate() {
        let got = match step {
            Begin => Some(s.begin_parking(r).await.unwrap()),
            Close => Some(s.close_parking(r).await.unwrap()),
            End => {
                s.end_parking(r).await.unwrap();
                None
            }
            Reopen => {
                s.reopen_parking(r).await.unwrap();
                None
            }
        };
        assert_eq!(got, expected, "step {i} ({step:?})");
    }
    // Each end of a parking marks the campaign for the sweeper.
    assert_eq!(s.parked().await.unwrap(), vec![r.to_string()]);
    // A turned-away begin did not count as a parking in progress.
    assert!(s.close_parking(r).await.unwrap());
    let p = s.prefix();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{p}:parked"))
        .arg(format!("{p}:parking:{r}"))
        .arg(format!("{p}:parking_closed:{r}"))
        .query_async(&mut s.connection())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_paused_domains_are_indexed_by_the_breaker_and_by_operators_and_leave_when_their_pause_ends(
) {
    use mailpipe_common::config::BreakerSettings;
    use mailpipe_state::policy::Policy;
    let s = store().await;
    let p = s.prefix().to_string();
    let policy = Policy::new(s.clone());
    let mut c = s.connection();
    let breaker = BreakerSettings {
        min_attempts: 5,
        pause: Duration::from_secs(3 * 3600),
        ..BreakerSettings::default()
    };
    // Five attempts to blocked.example this minute: their failures open the
    // breaker on the fifth (a failure ratio of 1, over the 0.9 default).
    let minute = mailpipe_common::unix_now() / 60;
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}:brk:blocked.example:{minute}"))
        .arg("a")
        .arg(5)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut opened = Vec::new();
    for _ in 0..5 {
        opened.push(
            policy
                .record_failure("blocked.example", true, &breaker)
                .await
                .unwrap(),
        );
    }
    assert_eq!(opened, [false, false, false, false, true]);
    let now_ms = mailpipe_common::unix_now_ms();
    policy
        .pause("slow.example", Duration::from_secs(600), "operator", None)
        .await
        .unwrap();
    let (total, domains) = policy.paused(10).await.unwrap();
    assert_eq!(total, 2);
    let shown: Vec<(&str, &str)> = domains
        .iter()
        .map(|d| (d.domain.as_str(), d.by.as_str()))
        .collect();
    // Soonest end first.
    assert_eq!(
        shown,
        [("slow.example", "operator"), ("blocked.example", "breaker")]
    );
    let ends = [now_ms + 600_000, now_ms + 3 * 3600 * 1000];
    for (d, end) in domains.iter().zip(ends) {
        assert!(
            (end - 5_000..=end + 5_000).contains(&d.until_ms),
            "{}: until {} expected about {end}",
            d.domain,
            d.until_ms
        );
    }
    // The limit shows the first ones; the count stays whole.
    let (total, domains) = policy.paused(1).await.unwrap();
    assert_eq!((total, domains.len()), (2, 1));
    // Resumed: gone. A pause key removed by other means: forgotten.
    assert!(policy.resume("blocked.example").await.unwrap());
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{p}:pause:slow.example"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(policy.paused(10).await.unwrap(), (0, vec![]));
    let left: i64 = redis::cmd("ZCARD")
        .arg(format!("{p}:paused"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0, "the index forgets ended pauses");
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{p}:brk:blocked.example:{minute}"))
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_data_sent_mark_makes_the_next_delivery_ambiguous_until_the_answer_or_the_resolution_is_recorded(
) {
    use mailpipe_state::calls::{Answer, Call};
    use mailpipe_state::store::{DoneRecord, DoneWrite, GateRequest, MarkRequest};
    let s = store().await;
    let lease = Duration::from_secs(30);
    let window = Duration::from_secs(60);
    let day = Duration::from_secs(86_400);
    let gate = |mid: &str, owner: &str| {
        Call::Gate(GateRequest {
            message: mid.into(),
            request: "req-1".into(),
            retried: false,
            owner: owner.into(),
        })
    };
    let mark = |mid: &str, owner: &str| {
        Call::Mark(MarkRequest {
            message: mid.into(),
            owner: owner.into(),
            ttl: day,
        })
    };
    let call = |c: Call| {
        let s = s.clone();
        async move { s.calls(&[c], lease, window).await.unwrap().pop().unwrap() }
    };
    let ambiguity = |a: Answer| match a {
        Answer::Gate(g) => {
            assert!(g.done.is_none() && g.lease_wait.is_none(), "{g:?}");
            g.ambiguous
        }
        other => panic!("{other:?}"),
    };
    // A first delivery: nothing in doubt. It marks, then its sender dies
    // (its lease ends) before the answer is recorded.
    assert_eq!(ambiguity(call(gate("m1", "a:1")).await), None);
    call(mark("m1", "a:1")).await;
    s.release_lease("m1", "a:1").await.unwrap();
    // The next delivery takes the lease and learns whose attempt is unknown.
    assert_eq!(
        ambiguity(call(gate("m1", "b:1")).await).as_deref(),
        Some("a:1")
    );
    // A mark left by the same delivery (Redis failed after its dot) is in
    // doubt too.
    assert_eq!(
        ambiguity(call(gate("m1", "b:1")).await).as_deref(),
        Some("a:1")
    );
    // Only the owner clears its mark (a known answer).
    s.clear_mark("m1", "b:1").await.unwrap();
    assert_eq!(s.mark_of("m1").await.unwrap().as_deref(), Some("a:1"));
    // Resolving removes the mark and counts the recipient once.
    let entry = serde_json::json!({"decision": "ambiguous"});
    assert!(s
        .resolve_ambiguous("m1", "req-1", &entry, day)
        .await
        .unwrap());
    assert_eq!(ambiguity(call(gate("m1", "b:1")).await), None);
    call(mark("m1", "b:1")).await;
    assert!(!s
        .resolve_ambiguous("m1", "req-1", &entry, day)
        .await
        .unwrap());
    assert_eq!(s.request_status("req-1").await.unwrap().ambiguous, 1);
    assert_eq!(s.history("m1").await.unwrap().len(), 2);
    // A known refusal clears the owner's mark: the next delivery is clean.
    call(mark("m1", "b:1")).await;
    s.clear_mark("m1", "b:1").await.unwrap();
    s.release_lease("m1", "b:1").await.unwrap();
    assert_eq!(ambiguity(call(gate("m1", "c:1")).await), None);
    // The sent record clears the mark with it.
    call(mark("m1", "c:1")).await;
    let record = DoneRecord {
        request: "req-1".into(),
        ..Default::default()
    };
    match call(Call::Done(DoneWrite::sent(
        "m1",
        record,
        "x@example.com",
        day,
    )))
    .await
    {
        Answer::Done(new) => assert!(new),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.mark_of("m1").await.unwrap(), None);
    let p = s.prefix().to_string();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut s.connection())
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut s.connection())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn screening_records_the_exclusion_decided_before_it_after_the_lists_and_answers_the_rules_version(
) {
    use mailpipe_state::store::{Candidate, ScreenOptions, ScreenVerdict, Screened};
    let s = store().await;
    s.list_add("denylist", &["deny@example.com".to_string()])
        .await
        .unwrap();
    let opts = ScreenOptions {
        ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let rule = |n: &str| Some(Screened::by_rule(n));
    let check = |v| Some(Screened::new(v));
    // (address, position, exclusion decided before, control group, verdict)
    let table: Vec<(&str, &str, Option<Screened>, bool, Screened)> = vec![
        (
            "a@example.com",
            "1:0",
            rule("r1"),
            false,
            Screened::by_rule("r1"),
        ),
        // A replay of the position keeps its first verdict, whatever the rules say now.
        ("a@example.com", "1:0", None, false, Screened::by_rule("r1")),
        (
            "a@example.com",
            "1:1",
            None,
            false,
            Screened::new(ScreenVerdict::Duplicate),
        ),
        (
            "deny@example.com",
            "1:2",
            rule("r1"),
            false,
            Screened::new(ScreenVerdict::Denylisted),
        ),
        (
            "b@example.com",
            "1:3",
            check(ScreenVerdict::NoMailHost),
            true,
            Screened::new(ScreenVerdict::NoMailHost),
        ),
        (
            "c@example.com",
            "1:4",
            check(ScreenVerdict::LikelyTypo),
            false,
            Screened::new(ScreenVerdict::LikelyTypo),
        ),
        (
            "d@example.com",
            "1:5",
            None,
            true,
            Screened::new(ScreenVerdict::ControlGroup),
        ),
        (
            "e@example.com",
            "1:6",
            None,
            false,
            Screened::new(ScreenVerdict::Accepted),
        ),
    ];
    for (i, (address, position, excluded, control_group, want)) in table.into_iter().enumerate() {
        let c = Candidate {
            address: address.into(),
            position: position.into(),
            message_id: format!("m-{address}"),
            control_group,
            excluded,
        };
        let got = s.screen("r", &[c], &opts).await.unwrap();
        assert_eq!(
            got.verdicts,
            vec![want],
            "step {i}: {address} at {position}"
        );
        assert_eq!(got.rules_version, 0);
    }
    let rule = mailpipe_common::rules::Rule {
        name: "r2".into(),
        matches: mailpipe_common::rules::RuleMatch::Local(vec!["x".into()]),
        scope: Default::default(),
        expires: None,
        enabled: true,
        note: None,
        created: 0,
    };
    assert!(s.put_rule(&rule, false).await.unwrap());
    assert!(
        !s.put_rule(&rule, false).await.unwrap(),
        "the name is taken"
    );
    let c = Candidate {
        address: "f@example.com".into(),
        position: "1:7".into(),
        message_id: "m-f".into(),
        control_group: false,
        excluded: None,
    };
    let got = s.screen("r", &[c], &opts).await.unwrap();
    assert_eq!(got.rules_version, 1, "a stored rule raises the version");
    assert!(s.remove_rule("r2").await.unwrap());
    assert_eq!(s.rules_version().await.unwrap(), 2);
    let p = s.prefix().to_string();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut s.connection())
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut s.connection())
            .await
            .unwrap();
    }
}

/// One call screens a batch: each recipient is checked against its own
/// quarantine and coalescing keys (declared per recipient, in order), the
/// allowlist lifts a quarantine, and a second request in the same
/// coalescing scope finds the first one's recipients taken.
#[tokio::test]
async fn screening_a_batch_reads_each_recipient_s_own_quarantine_and_coalescing_keys() {
    use mailpipe_state::store::{Candidate, ScreenOptions, ScreenVerdict, Screened};
    let s = store().await;
    for address in ["q@example.com", "qa@example.com"] {
        s.quarantine_add(address, "test", Duration::from_secs(60))
            .await
            .unwrap();
    }
    s.list_add("allowlist", &["qa@example.com".to_string()])
        .await
        .unwrap();
    let batch = |request: &str, addresses: &[&str]| -> Vec<Candidate> {
        addresses
            .iter()
            .enumerate()
            .map(|(i, a)| Candidate {
                address: a.to_string(),
                position: format!("1:{i}"),
                message_id: format!("{request}-{a}"),
                control_group: false,
                excluded: None,
            })
            .collect()
    };
    let v = |v| Screened::new(v);
    for coalesce in [
        None,
        Some(("t".to_string(), "k".to_string(), Duration::from_secs(60))),
    ] {
        let opts = ScreenOptions {
            ttl: Duration::from_secs(60),
            coalesce: coalesce.clone(),
            ..Default::default()
        };
        let first = format!("first-{}", coalesce.is_some());
        let got = s
            .screen(
                &first,
                &batch(
                    &first,
                    &[
                        "ok@example.com",
                        "q@example.com",
                        "qa@example.com",
                        "ok2@example.com",
                    ],
                ),
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(
            got.verdicts,
            [
                v(ScreenVerdict::Accepted),
                v(ScreenVerdict::Quarantined),
                v(ScreenVerdict::Accepted),
                v(ScreenVerdict::Accepted)
            ],
            "coalescing: {}",
            coalesce.is_some()
        );
        let second = format!("second-{}", coalesce.is_some());
        let got = s
            .screen(
                &second,
                &batch(&second, &["new@example.com", "ok2@example.com"]),
                &opts,
            )
            .await
            .unwrap();
        let taken = if coalesce.is_some() {
            ScreenVerdict::Coalesced
        } else {
            ScreenVerdict::Accepted
        };
        assert_eq!(
            got.verdicts,
            [v(ScreenVerdict::Accepted), v(taken)],
            "coalescing: {}",
            coalesce.is_some()
        );
    }
    forget(&s).await;
}

/// The operators' scripts on the qualification table: a kept row is a rule
/// and raises the version the workers watch; ignoring it takes it out of the
/// rules (and raises the version); resetting zeroes its count; an unknown
/// id writes nothing.
#[tokio::test]
async fn rows_are_kept_ignored_and_reset_and_unknown_ids_write_nothing() {
    use mailpipe_common::classify::{
        qualification_text, Classification, Failure, FailureType, Quarantine, Reason, Scope,
    };
    use mailpipe_state::store::{row_id, Qualification};
    use redis::AsyncCommands;

    let s = store().await;
    let failure = Failure::from_reply_text("550 5.0.0 <ann@example.com>: not on the guest list");
    let undefined = Classification {
        kind: FailureType::Soft,
        reason: Reason::Undefined,
        retry: false,
        quarantine: Quarantine::Count,
        scope: Scope::Recipient,
        rule: None,
    };
    for n in 1..=3 {
        assert_eq!(
            s.count_failure_text(&failure, &undefined, 100)
                .await
                .unwrap(),
            n
        );
    }
    let id = row_id(&qualification_text(&failure));
    let row = s.bounce(&id).await.unwrap().expect("the row");
    assert_eq!(row.qualification, "to_qualify");
    assert_eq!(row.count, 3);
    assert_eq!(s.kept_rules().await.unwrap(), (0, vec![]));

    let q = Qualification {
        kind: FailureType::Hard,
        reason: Reason::UserUnknown,
        scope: Scope::Recipient,
        retry: None,
        quarantine: None,
        pattern: None,
    };
    // Unknown ids: nothing written, no version raised.
    let ghost = mailpipe_state::store::BounceEntry {
        id: "0000000000000000".into(),
        ..row.clone()
    };
    assert_eq!(s.keep_bounce(&ghost, &q, "ops", 200).await.unwrap(), None);
    assert_eq!(s.ignore_bounce(&ghost.id, "ops", 200).await.unwrap(), None);
    assert!(!s.reset_bounce(&ghost.id, "ops", 200).await.unwrap());
    assert!(s.bounce(&ghost.id).await.unwrap().is_none());
    let mut c = s.connection();
    let ghost_key = format!("{}:bounce:{}", s.prefix(), ghost.id);
    assert!(!c.exists::<_, bool>(&ghost_key).await.unwrap());
    assert_eq!(s.kept_rules_version().await.unwrap(), 0);

    // Kept: a rule, version 1, the operator's decision on the row.
    assert_eq!(s.keep_bounce(&row, &q, "ops", 200).await.unwrap(), Some(1));
    let (version, rules) = s.kept_rules().await.unwrap();
    assert_eq!(version, 1);
    assert_eq!(rules, vec![q.rule(&row)]);
    let kept = s.bounce(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            kept.qualification.as_str(),
            kept.kind.as_str(),
            kept.reason.as_str()
        ),
        ("keep", "hard", "user_unknown")
    );
    assert_eq!(kept.rule, format!("kept:{id}"));
    assert_eq!(
        (kept.qualified_by.as_str(), kept.qualified_at),
        ("ops", 200)
    );
    // Counting goes on and does not undo the decision.
    s.count_failure_text(&failure, &undefined, 300)
        .await
        .unwrap();
    let kept = s.bounce(&id).await.unwrap().unwrap();
    assert_eq!((kept.count, kept.qualification.as_str()), (4, "keep"));

    // Reset: count 0, the rest stays; the index follows.
    assert!(s.reset_bounce(&id, "ann", 400).await.unwrap());
    let reset = s.bounce(&id).await.unwrap().unwrap();
    assert_eq!(
        (reset.count, reset.reset_by.as_str(), reset.reset_at),
        (0, "ann", 400)
    );
    assert_eq!(s.bounces(10).await.unwrap()[0].count, 0);
    assert_eq!(s.kept_rules_version().await.unwrap(), 1);

    // Ignored: out of the rules, version raised; ignoring again changes nothing.
    assert_eq!(s.ignore_bounce(&id, "bob", 500).await.unwrap(), Some(2));
    assert_eq!(s.kept_rules().await.unwrap(), (2, vec![]));
    let ignored = s.bounce(&id).await.unwrap().unwrap();
    assert_eq!(ignored.qualification, "ignore");
    assert_eq!(ignored.rule, "");
    assert_eq!(
        (ignored.qualified_by.as_str(), ignored.qualified_at),
        ("bob", 500)
    );
    assert_eq!(s.ignore_bounce(&id, "bob", 600).await.unwrap(), Some(2));
    // Still counted.
    s.count_failure_text(&failure, &undefined, 700)
        .await
        .unwrap();
    let ignored = s.bounce(&id).await.unwrap().unwrap();
    assert_eq!(
        (ignored.count, ignored.qualification.as_str()),
        (1, "ignore")
    );
}

#[tokio::test]
async fn a_slow_down_lowers_the_limit_or_the_measured_rate_and_keeps_its_base() {
    use mailpipe_common::config::SlowdownSettings;
    use mailpipe_state::policy::Policy;
    let s = store().await;
    let p = s.prefix().to_string();
    let policy = Policy::new(s.clone());
    let mut c = s.connection();
    let settings = SlowdownSettings::default();
    let t = 1_000_000_000_000_i64;
    let tau = mailpipe_state::slowdown::SEEN_TAU_MS as f64;
    // The decaying attempt counts the calls script keeps: (domain, c, t, f).
    for (domain, count, at, first) in [
        ("measured.example", 40.0, t - 1_000, t - 30_000),
        ("few.example", 5.0, t, t - 30_000),
        ("limited.example", 40.0, t, t - 30_000),
        ("override.example", 40.0, t, t - 30_000),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(format!("{p}:seen:{domain}"))
            .arg("c")
            .arg(count)
            .arg("t")
            .arg(at)
            .arg("f")
            .arg(first)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg(format!("{p}:limit:override.example"))
        .arg("interval_ms")
        .arg(50)
        .query_async(&mut c)
        .await
        .unwrap();
    // 40 attempts decayed over 1 s, over the 30 s they cover.
    let measured = tau * (1.0 - (-30_000.0 / tau).exp()) / (40.0 * (-1_000.0 / tau).exp());
    let hundred_ms = Some(Duration::from_millis(100));
    // (domain, configured interval, now, expected base interval ms)
    let table = [
        ("measured.example", None, t, Some(measured)),
        ("few.example", None, t, None),
        ("limited.example", hundred_ms, t, Some(100.0)),
        ("override.example", hundred_ms, t, Some(50.0)),
        // Again while it lasts, after many more attempts: the base stays.
        ("measured.example", None, t + 5_000, Some(measured)),
    ];
    for (domain, configured, now, want) in table {
        if now > t {
            let _: () = redis::cmd("HSET")
                .arg(format!("{p}:seen:{domain}"))
                .arg("c")
                .arg(1_000)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        let base = policy
            .slow_down_at(domain, configured, &settings, Some(now))
            .await
            .unwrap();
        match (base, want) {
            (Some(b), Some(w)) => assert!((b - w).abs() < 1e-6, "{domain}: {b} against {w}"),
            (None, None) => {}
            _ => panic!("{domain} at {now}: base {base:?}, expected {want:?}"),
        }
        let (factor, since, until): (f64, i64, i64) = redis::cmd("HMGET")
            .arg(format!("{p}:slow:{domain}"))
            .arg("factor")
            .arg("since")
            .arg("until")
            .query_async(&mut c)
            .await
            .unwrap();
        let recovery = settings.recovery.as_millis() as i64;
        assert_eq!(
            (factor, since, until),
            (settings.factor, now, now + recovery),
            "{domain}"
        );
    }
    for domain in [
        "measured.example",
        "few.example",
        "limited.example",
        "override.example",
    ] {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{p}:seen:{domain}"))
            .arg(format!("{p}:slow:{domain}"))
            .arg(format!("{p}:limit:{domain}"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// One event of a breaker scenario, at a time of its own.
#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// An attempt that went through (the calls script counts it).
    Sent,
    /// An attempt that failed for a reason about the domain: counted as an
    /// attempt, then as a failure by the breaker, which answers.
    Failed,
}

#[tokio::test]
async fn the_breaker_opens_on_the_failure_ratio_of_its_window_and_forgets_failures_older_than_the_window(
) {
    use mailpipe_common::config::BreakerSettings;
    use mailpipe_state::policy::{BreakerCount, Policy};
    use redis::AsyncCommands;
    use Attempt::*;
    let s = store().await;
    let p = s.prefix().to_string();
    let policy = Policy::new(s.clone());
    let mut c = s.connection();
    // Two one-minute buckets; at least 4 attempts, half of them failed.
    let breaker = BreakerSettings {
        window: Duration::from_secs(120),
        min_attempts: 4,
        failure_ratio: 0.5,
        pause: Duration::from_secs(600),
    };
    // Half past a minute, far from the real clock: only the time passed in counts.
    let minute: i64 = 30_000_000;
    let t = minute * 60_000 + 30_000;
    let count = |opened, attempts, failures| {
        Some(BreakerCount {
            opened,
            attempts,
            failures,
        })
    };
    // (domain, attempt, at, the breaker's answer to a failure)
    let table = [
        // Three sent and one failed: a ratio of 1/4.
        ("ratio.example", Sent, t, None),
        ("ratio.example", Sent, t, None),
        ("ratio.example", Sent, t, None),
        ("ratio.example", Failed, t, count(false, 4, 1)),
        // 2/5, then 3/6 a minute later, still within the window: opens.
        ("ratio.example", Failed, t + 1_000, count(false, 5, 2)),
        ("ratio.example", Failed, t + 60_000, count(true, 6, 3)),
        // Too few attempts for any ratio to open it.
        ("old.example", Failed, t, count(false, 1, 1)),
        ("old.example", Failed, t, count(false, 2, 2)),
        ("old.example", Failed, t, count(false, 3, 3)),
        // Two minutes later the window starts after them: they no longer count.
        ("old.example", Failed, t + 120_000, count(false, 1, 1)),
        ("recent.example", Failed, t, count(false, 1, 1)),
        ("recent.example", Failed, t, count(false, 2, 2)),
        ("recent.example", Failed, t, count(false, 3, 3)),
        // One minute later they still count: 4/4 opens.
        ("recent.example", Failed, t + 60_000, count(true, 4, 4)),
    ];
    for (i, (domain, attempt, at, want)) in table.into_iter().enumerate() {
        let bucket = format!("{p}:brk:{domain}:{}", at / 60_000);
        let _: i64 = c.hincr(&bucket, "a", 1).await.unwrap();
        let _: bool = c.expire(&bucket, 600).await.unwrap();
        let got = match attempt {
            Sent => None,
            Failed => Some(
                policy
                    .record_failure_at(domain, true, &breaker, at)
                    .await
                    .unwrap(),
            ),
        };
        assert_eq!(
            got,
            want,
            "step {i}: {domain} {attempt:?} at t+{} ms",
            at - t
        );
    }
    // The open breakers paused their domains, indexed by the end of the
    // pause from the time passed in.
    let opened_at = [
        ("ratio.example", t + 60_000),
        ("recent.example", t + 60_000),
    ];
    for (domain, at) in opened_at {
        let by: Option<String> = c.get(format!("{p}:pause:{domain}")).await.unwrap();
        assert_eq!(by.as_deref(), Some("breaker"), "{domain}");
        let end: Option<i64> = c.zscore(format!("{p}:paused"), domain).await.unwrap();
        assert_eq!(end, Some(at + 600_000), "{domain}");
    }
    let none: Option<String> = c.get(format!("{p}:pause:old.example")).await.unwrap();
    assert_eq!(none, None);
    for (domain, paused) in [
        ("ratio.example", true),
        ("old.example", false),
        ("recent.example", true),
    ] {
        assert_eq!(policy.resume(domain).await.unwrap(), paused, "{domain}");
    }
    let left: Vec<String> = c.keys(format!("{p}:*")).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn the_paused_index_drops_a_domain_whose_pause_ended_as_of_the_time_passed_in() {
    use mailpipe_state::policy::Policy;
    use redis::AsyncCommands;
    let s = store().await;
    let p = s.prefix().to_string();
    let policy = Policy::new(s.clone());
    let mut c = s.connection();
    policy
        .pause("short.example", Duration::from_secs(600), "operator", None)
        .await
        .unwrap();
    policy
        .pause("long.example", Duration::from_secs(3600), "operator", None)
        .await
        .unwrap();
    // The ends the pauses were indexed by.
    let short: i64 = c
        .zscore(format!("{p}:paused"), "short.example")
        .await
        .unwrap();
    let long: i64 = c
        .zscore(format!("{p}:paused"), "long.example")
        .await
        .unwrap();
    // (now, paused domains listed), in order of time: a pause is over at its end.
    let table = [
        (
            short - 1,
            vec![("short.example", short), ("long.example", long)],
        ),
        (short, vec![("long.example", long)]),
        (long - 1, vec![("long.example", long)]),
        (long, vec![]),
    ];
    for (now, want) in table {
        let (total, domains) = policy.paused_at(10, Some(now)).await.unwrap();
        let got: Vec<(&str, i64)> = domains
            .iter()
            .map(|d| (d.domain.as_str(), d.until_ms))
            .collect();
        assert_eq!(got, want, "at end of the short pause {:+} ms", now - short);
        assert_eq!(total, want.len() as u64);
        let indexed: Vec<String> = c.zrange(format!("{p}:paused"), 0, -1).await.unwrap();
        let listed: Vec<&str> = want.iter().map(|(d, _)| *d).collect();
        assert_eq!(indexed, listed, "the index keeps only the pauses listed");
    }
    // Their keys still pause on the server's clock: the index forgot them
    // because the time passed in says they ended.
    for domain in ["short.example", "long.example"] {
        assert!(policy.resume(domain).await.unwrap(), "{domain}");
    }
}

#[tokio::test]
async fn a_deferral_is_counted_once_per_request_and_leaves_the_counts_with_the_index() {
    use mailpipe_state::calls::Call;
    use mailpipe_state::store::{Deferral, DoneRecord, GateRequest};
    use redis::AsyncCommands;
    let s = store().await;
    let p = s.prefix().to_string();
    let mut c = s.connection();
    // A known request (its hash has a time to live), and one Redis forgot.
    let _: () = c.hset(format!("{p}:req:r1"), "sent", 0).await.unwrap();
    let _: () = c.expire(format!("{p}:req:r1"), 3600).await.unwrap();
    let deferral = |mid: &str, request: &str, why: &str, domain: &str, due: i64| Deferral {
        message: mid.into(),
        request: request.into(),
        why: why.into(),
        domain: domain.into(),
        due,
        info: serde_json::json!({"recipient": format!("x@{domain}")}),
    };
    let ttl = Duration::from_secs(600);
    let counts = |s: Store| async move {
        let st = s.request_status("r1").await.unwrap();
        let d = s.request_deferred("r1").await.unwrap();
        let waiting: Vec<(String, String, u64)> = st
            .waiting
            .iter()
            .flat_map(|(why, ds)| ds.iter().map(move |(d, n)| (why.clone(), d.clone(), *n)))
            .collect();
        (waiting, st.deferrals, d.count, d.first_due, d.last_due)
    };
    let w = |v: &[(&str, &str, u64)]| -> Vec<(String, String, u64)> {
        v.iter()
            .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
            .collect()
    };
    // The retrier indexes m1; a redelivery of its failure indexes it again:
    // counted once.
    for _ in 0..2 {
        s.index_deferred(&deferral("m1", "r1", "retry", "a.example", 100), None, ttl)
            .await
            .unwrap();
    }
    assert_eq!(
        counts(s.clone()).await,
        (w(&[("retry", "a.example", 1)]), 1, 1, Some(100), Some(100))
    );
    // A sender defers m2 (its lease released in the same call) and m3
    // (whose lease another delivery holds: kept).
    let _: () = c.set(format!("{p}:lease:m2"), "owner-2").await.unwrap();
    let _: () = c
        .set(format!("{p}:lease:m3"), "someone-else")
        .await
        .unwrap();
    s.defer(&deferral("m2", "r1", "paused", "b.example", 200), "owner-2")
        .await
        .unwrap();
    s.defer(&deferral("m3", "r1", "paused", "b.example", 300), "owner-3")
        .await
        .unwrap();
    assert!(!s.exists(&["lease", "m2"]).await.unwrap());
    assert!(s.exists(&["lease", "m3"]).await.unwrap());
    assert_eq!(
        counts(s.clone()).await,
        (
            w(&[("paused", "b.example", 2), ("retry", "a.example", 1)]),
            3,
            3,
            Some(100),
            Some(300)
        )
    );
    let (n, first) = s.deferred_summary().await.unwrap();
    assert_eq!((n, first), (3, Some(100)));
    // A sender takes m2 again (a first attempt: not "retried"): out of the
    // index and the counts.
    let gate = Call::Gate(GateRequest {
        message: "m2".into(),
        request: "r1".into(),
        retried: false,
        owner: "owner-9".into(),
    });
    s.calls(&[gate], Duration::from_secs(30), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        counts(s.clone()).await,
        (
            w(&[("paused", "b.example", 1), ("retry", "a.example", 1)]),
            3,
            2,
            Some(100),
            Some(300)
        )
    );
    // m1 stops (its history's last entry): out.
    s.push_history(
        "m1",
        "r1",
        &serde_json::json!({"decision": "exhausted"}),
        ttl,
    )
    .await
    .unwrap();
    assert_eq!(s.history("m1").await.unwrap().len(), 1);
    assert_eq!(
        counts(s.clone()).await,
        (w(&[("paused", "b.example", 1)]), 3, 1, Some(300), Some(300))
    );
    // m3 ended without a sender taking it: the sampler's cleanup drops it.
    s.record_done(
        "m3",
        &DoneRecord {
            request: "r1".into(),
            ..Default::default()
        },
        &[],
        ttl,
    )
    .await
    .unwrap();
    assert_eq!(s.deferred_head(10).await.unwrap(), (0, None));
    assert_eq!(counts(s.clone()).await, (w(&[]), 3, 0, None, None));
    // A request Redis no longer knows: indexed for operators, no counts
    // (and no hash made for it).
    s.index_deferred(&deferral("m4", "gone", "retry", "a.example", 50), None, ttl)
        .await
        .unwrap();
    assert_eq!(s.deferred_summary().await.unwrap(), (1, Some(50)));
    assert!(!s.exists(&["req", "gone"]).await.unwrap());
    assert!(!s.exists(&["req", "gone", "deferred"]).await.unwrap());
}

/// Removes every key of a test store (by SCAN, as the product does).
async fn forget(s: &Store) {
    let keys = s
        .scan_keys(&format!(
            "{}:*",
            mailpipe_state::store::glob_escape(s.prefix())
        ))
        .await
        .unwrap();
    let mut c = s.connection();
    for chunk in keys.chunks(500) {
        let _: i64 = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_domains_an_operator_sees_are_found_over_many_scan_pages_and_a_resume_clears_every_breaker_bucket(
) {
    use mailpipe_state::policy::Policy;
    use mailpipe_state::store::SCAN_COUNT;
    let s = store().await;
    let p = s.prefix().to_string();
    let policy = Policy::new(s.clone());
    let mut c = s.connection();
    // More run-time limits than one SCAN call walks, so the listing must
    // follow the cursor through several pages.
    let limited = 3 * SCAN_COUNT as usize;
    let mut pipe = redis::pipe();
    for i in 0..limited {
        pipe.hset(format!("{p}:limit:d{i}.example"), "burst", 1)
            .ignore();
    }
    for key in [
        format!("{p}:slow:slowed.example"),
        format!("{p}:tat:busy.example"),
        // Not a domain key: a route's budget.
        format!("{p}:rtat:relay-1"),
    ] {
        pipe.set(key, 1).ignore();
    }
    let minute = mailpipe_common::unix_now() / 60;
    for m in [minute - 2, minute - 1, minute] {
        pipe.hset(format!("{p}:brk:blocked.example:{m}"), "a", 1)
            .ignore();
    }
    pipe.hset(format!("{p}:brk:blocked.example.org:{minute}"), "a", 1)
        .ignore();
    let _: () = pipe.query_async(&mut c).await.unwrap();
    policy
        .pause("blocked.example", Duration::from_secs(600), "breaker", None)
        .await
        .unwrap();
    // A pause that ended: still in the index, no longer a pause.
    let _: () = redis::cmd("ZADD")
        .arg(format!("{p}:paused"))
        .arg(1)
        .arg("ended.example")
        .query_async(&mut c)
        .await
        .unwrap();

    let known = policy.known_domains().await.unwrap();
    let mut expected: Vec<String> = (0..limited).map(|i| format!("d{i}.example")).collect();
    expected.extend(["blocked.example", "busy.example", "slowed.example"].map(String::from));
    expected.sort();
    assert_eq!(known, expected);

    assert!(policy.resume("blocked.example").await.unwrap());
    let left = s.scan_keys(&format!("{p}:brk:*")).await.unwrap();
    assert_eq!(
        left,
        [format!("{p}:brk:blocked.example.org:{minute}")],
        "a resume clears the domain's breaker buckets and no other domain's"
    );
    assert!(!policy
        .known_domains()
        .await
        .unwrap()
        .contains(&"blocked.example".to_string()));
    forget(&s).await;
}

#[tokio::test]
async fn the_request_index_forgets_requests_older_than_any_state_can_live() {
    use mailpipe_state::store::RequestMeta;
    let store = store().await;
    let day = 24 * 3600;
    let keep = Duration::from_secs(37 * day as u64);
    let meta = |created: i64| RequestMeta {
        campaign: None,
        tenant: None,
        lane: None,
        parts_total: 1,
        created,
        deadline: created + day,
    };
    let t0 = 1_800_000_000;
    let ttl = Duration::from_secs(60);
    for (id, created) in [("old", t0), ("kept", t0 + day), ("edge", t0 + 2 * day)] {
        store
            .register_request(id, &meta(created), ttl, keep)
            .await
            .unwrap();
    }
    assert_eq!(
        store.recent_requests(10).await.unwrap(),
        ["edge", "kept", "old"]
    );
    // 37 days and one second after "old" was created: it leaves the index
    // with the next registration; "kept" (36 days old) stays.
    store
        .register_request("new", &meta(t0 + 37 * day + 1), ttl, keep)
        .await
        .unwrap();
    assert_eq!(
        store.recent_requests(10).await.unwrap(),
        ["new", "edge", "kept"]
    );
    // Exactly 37 days old is still kept.
    store
        .register_request("newer", &meta(t0 + 38 * day), ttl, keep)
        .await
        .unwrap();
    assert_eq!(
        store.recent_requests(10).await.unwrap(),
        ["newer", "new", "edge", "kept"]
    );
}

#[tokio::test]
async fn the_calls_script_holds_a_concurrency_lease_until_its_end_and_counts_attempts_at_the_time_passed_in(
) {
    use mailpipe_state::calls::{Answer, AttemptCount, Call};
    use mailpipe_state::policy::{Ask, RouteLimits, Verdict};
    let s = store().await;
    // Leases of a minute, at most two messages at once for the domain.
    let (lease, window) = (Duration::from_secs(60), Duration::from_secs(600));
    let t = 1_800_000_000_000_i64;
    let ask = |id: &str| {
        Call::Acquire(Ask {
            domain: "conc.test".into(),
            site: "conc.test".into(),
            limits: mailpipe_common::config::DomainPolicy {
                concurrency: Some(2),
                ..Default::default()
            },
            site_limits: Default::default(),
            adaptive: false,
            warmup: None,
            route: RouteLimits {
                name: "r".into(),
                ..Default::default()
            },
            lease_id: id.into(),
            max_wait: Duration::ZERO,
        })
    };
    // What each ask is answered: the lease id of a go, or the wait in ms.
    // The messages that go are then counted as attempts, as a sender
    // counts them (an ask alone counts nothing).
    let at = |ids: &[&str], now: i64| {
        let s = s.clone();
        let calls: Vec<Call> = ids.iter().map(|id| ask(id)).collect();
        async move {
            let answers = s
                .calls_at(&calls, lease, window, Some(now))
                .await
                .unwrap()
                .into_iter()
                .map(|a| match a {
                    Answer::Acquire(Verdict::Go { lease, .. }) => Ok(lease.unwrap()),
                    Answer::Acquire(Verdict::Wait(d)) => Err(d.as_millis() as u64),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>();
            let went = answers.iter().filter(|a| a.is_ok()).count() as u64;
            let count = Call::Attempts(AttemptCount {
                domain: "conc.test".into(),
                site: "conc.test".into(),
                count: went,
            });
            let counted = s.calls_at(&[count], lease, window, Some(now)).await;
            assert!(matches!(counted.unwrap()[..], [Answer::Attempts]));
            answers
        }
    };
    let go = |id: &str| Ok::<String, u64>(id.to_string());
    // (when, asks, answers): two leases, the third waits its 20 ms step; the
    // leases hold until 1 ms before their end and are gone at it.
    let table = [
        (t, &["a", "b", "c"][..], vec![go("a"), go("b"), Err(20)]),
        (t + 30_000, &["c"], vec![Err(20)]),
        (t + 59_999, &["c"], vec![Err(20)]),
        (
            t + 60_000,
            &["c", "d", "e"],
            vec![go("c"), go("d"), Err(20)],
        ),
    ];
    for (i, (now, ids, expected)) in table.into_iter().enumerate() {
        assert_eq!(at(ids, now).await, expected, "row {i} (t + {} ms)", now - t);
    }
    // The breaker counts the attempts that went in the minute of the time
    // passed in (two at t, two a minute later); the decaying count was last
    // raised at the last time passed in.
    let p = s.prefix().to_string();
    let mut c = s.connection();
    let minute = t / 60_000;
    for (m, expected) in [(minute, 2), (minute + 1, 2)] {
        let attempts: Option<u64> = redis::cmd("HGET")
            .arg(format!("{p}:brk:conc.test:{m}"))
            .arg("a")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(attempts, Some(expected), "minute {}", m - minute);
    }
    let seen_at: Option<i64> = redis::cmd("HGET")
        .arg(format!("{p}:seen:conc.test"))
        .arg("t")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(seen_at, Some(t + 60_000));
    forget(&s).await;
}

#[tokio::test]
async fn a_terminal_record_releases_the_lease_and_a_record_of_either_format_blocks_a_resend() {
    use mailpipe_state::calls::{Answer, Call};
    use mailpipe_state::store::{DoneRecord, DoneState, DoneWrite, Gate, GateRequest};
    let s = store().await;
    let lease = Duration::from_secs(30);
    let window = Duration::from_secs(60);
    let day = Duration::from_secs(86_400);
    let p = s.prefix().to_string();
    let gate = |mid: &str, owner: &str| {
        let s = s.clone();
        let call = Call::Gate(GateRequest {
            message: mid.into(),
            request: "req-1".into(),
            retried: false,
            owner: owner.into(),
        });
        async move {
            match s.calls(&[call], lease, window).await.unwrap().pop() {
                Some(Answer::Gate(g)) => g,
                other => panic!("{other:?}"),
            }
        }
    };
    let leased = |g: &Gate| g.done.is_none() && g.lease_wait.is_none() && !g.held;
    let raw = |mid: &str| {
        let mut c = s.connection();
        let key = format!("{p}:done:{mid}");
        async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut c)
                .await
                .unwrap()
        }
    };
    let record = DoneRecord {
        state: DoneState::Sent,
        request: "req-1".into(),
        at: 1_796_679_970,
        route: "default".into(),
        detail: "250 2.0.0 Ok".into(),
        to: Some("x@example.com".into()),
        campaign: Some("spring".into()),
        lane: Some(mailpipe_common::message::Lane::Bulk),
    };

    // A delivery takes the lease, sends, and records: the lease goes with
    // the record, which is stored compact.
    assert!(leased(&gate("m1", "a:1").await));
    assert!(s.exists(&["lease", "m1"]).await.unwrap());
    let write = DoneWrite::sent("m1", record.clone(), "x@example.com", day);
    let answers = s
        .calls(&[Call::Done(write.clone())], lease, window)
        .await
        .unwrap();
    assert!(matches!(answers[..], [Answer::Done(true)]), "{answers:?}");
    assert!(!s.exists(&["lease", "m1"]).await.unwrap());
    assert!(!s.exists(&["dot", "m1"]).await.unwrap());
    assert_eq!(
        raw("m1").await.as_deref(),
        Some("s1796679970|b|req-1|spring|default|x@example.com|250 2.0.0 Ok")
    );
    assert_eq!(s.done("m1").await.unwrap().as_ref(), Some(&record));
    // A redelivery finds the record before any lease, takes none, and a
    // second record of it is not counted.
    let again = gate("m1", "b:1").await;
    assert_eq!(again.done.as_ref(), Some(&record));
    assert!(!s.exists(&["lease", "m1"]).await.unwrap());
    let answers = s.calls(&[Call::Done(write)], lease, window).await.unwrap();
    assert!(matches!(answers[..], [Answer::Done(false)]), "{answers:?}");

    // A record written by an earlier version (JSON) blocks a resend alike.
    let old = r#"{"state":"sent","request":"req-1","at":1796679970,"route":"default","detail":"250 2.0.0 Ok","to":"x@example.com","campaign":"spring","lane":"bulk"}"#;
    let _: () = redis::cmd("SET")
        .arg(format!("{p}:done:m2"))
        .arg(old)
        .query_async(&mut s.connection())
        .await
        .unwrap();
    let found = gate("m2", "a:2").await;
    assert_eq!(found.done.as_ref(), Some(&record));
    assert!(!s.exists(&["lease", "m2"]).await.unwrap());
    assert!(!s.record_done("m2", &record, &["sent"], day).await.unwrap());
    assert_eq!(raw("m2").await.as_deref(), Some(old));
    assert_eq!(s.request_status("req-1").await.unwrap().sent, 1);

    // A record written while another delivery holds the lease (an
    // operator's removal) ends the lease too; the next gate sees the record.
    assert!(leased(&gate("m3", "a:3").await));
    let removed = DoneRecord {
        state: DoneState::Removed,
        detail: "removed by an operator".into(),
        ..record.clone()
    };
    assert!(s
        .record_done("m3", &removed, &["removed"], day)
        .await
        .unwrap());
    assert!(!s.exists(&["lease", "m3"]).await.unwrap());
    assert_eq!(gate("m3", "b:3").await.done, Some(removed));

    // An operator lifts a dead state of either format, and nothing else.
    let dead = DoneRecord {
        state: DoneState::Dead,
        detail: "user_unknown: 550 5.1.1".into(),
        ..record.clone()
    };
    assert!(s
        .record_done("m4", &dead, &["dead", "dead:user_unknown"], day)
        .await
        .unwrap());
    assert!(raw("m4").await.unwrap().starts_with('d'));
    let _: () = redis::cmd("SET")
        .arg(format!("{p}:done:m5"))
        .arg(r#"{"state":"dead","request":"req-1","at":1,"route":"","detail":"user_unknown: 550"}"#)
        .query_async(&mut s.connection())
        .await
        .unwrap();
    for (mid, lifted) in [
        ("m1", false),
        ("m2", false),
        ("m3", false),
        ("m4", true),
        ("m5", true),
    ] {
        assert_eq!(
            s.undo_dead(mid, "req-1", "user_unknown").await.unwrap(),
            lifted,
            "{mid}"
        );
        assert_eq!(raw(mid).await.is_none(), lifted, "{mid}");
    }
    let status = s.request_status("req-1").await.unwrap();
    assert_eq!((status.sent, status.removed), (1, 1));
    forget(&s).await;
}

/// A request's verdicts in buckets: the first screened part fixes the
/// bucket count, every part finds an address where another part put it
/// (a duplicate across parts, a replay keeping its verdict), each bucket
/// stays a listpack with the request's expiry, and `campaign recipients`
/// reads them all. A request whose screening began in the single hash (a
/// version before the buckets) keeps it.
#[tokio::test]
async fn screening_in_buckets_finds_an_address_from_every_part_and_an_older_request_keeps_its_single_hash(
) {
    use mailpipe_state::store::{rcpt_bucket, Candidate, ScreenOptions, ScreenVerdict, Screened};
    let s = store().await;
    let p = s.prefix().to_string();
    let candidate = |request: &str, address: &str, position: &str| Candidate {
        address: address.into(),
        position: position.into(),
        message_id: format!("{request}-{address}"),
        control_group: false,
        excluded: None,
    };
    // The first proposal is kept; later parts' proposals are not.
    assert_eq!(s.rcpt_buckets("r", 4).await.unwrap(), 4);
    assert_eq!(s.rcpt_buckets("r", 9).await.unwrap(), 4);
    let opts = ScreenOptions {
        ttl: Duration::from_secs(60),
        buckets: 4,
        ..Default::default()
    };
    let addresses: Vec<String> = (0..40).map(|i| format!("u{i}@example.com")).collect();
    let part1: Vec<Candidate> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| candidate("r", a, &format!("1:{i}")))
        .collect();
    let got = s.screen("r", &part1, &opts).await.unwrap();
    assert!(got
        .verdicts
        .iter()
        .all(|v| *v == Screened::new(ScreenVerdict::Accepted)));
    // Part 2 repeats two addresses of part 1, and excludes a new one;
    // then part 1's first recipient is replayed.
    let mut denied = candidate("r", "new@example.com", "2:2");
    denied.excluded = Some(Screened::by_rule("roles"));
    let part2 = vec![
        candidate("r", &addresses[3], "2:0"),
        candidate("r", &addresses[17], "2:1"),
        denied,
        candidate("r", &addresses[0], "1:0"),
    ];
    let got = s.screen("r", &part2, &opts).await.unwrap();
    assert_eq!(
        got.verdicts,
        [
            Screened::new(ScreenVerdict::Duplicate),
            Screened::new(ScreenVerdict::Duplicate),
            Screened::by_rule("roles"),
            Screened::new(ScreenVerdict::Accepted),
        ]
    );
    let mut c = s.connection();
    let mut held = 0;
    for n in 0..4 {
        let key = format!("{p}:req:r:rcpts:{n}");
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(encoding, "listpack", "{key}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!((1..=60).contains(&ttl), "{key}: ttl {ttl}");
        let fields: i64 = redis::cmd("HLEN")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        held += fields;
    }
    assert_eq!(held, 41);
    // An accepted recipient is stored as its position alone.
    let stored: String = redis::cmd("HGET")
        .arg(format!("{p}:req:r:rcpts:{}", rcpt_bucket(&addresses[5], 4)))
        .arg(&addresses[5])
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, "1:5");
    let listed = s.request_recipients("r").await.unwrap();
    assert_eq!(listed.len(), 41);
    assert!(listed.contains(&(addresses[3].clone(), "accepted".into())));
    assert!(listed.contains(&("new@example.com".into(), "excluded_by_rule:roles".into())));

    // A request an earlier version began screening in the single hash.
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{p}:req:old:rcpts"))
        .arg("a@example.com")
        .arg("1:0|accepted")
        .query_async(&mut c)
        .await
        .unwrap();
    let buckets = s.rcpt_buckets("old", 8).await.unwrap();
    assert_eq!(buckets, 0, "the single hash stays in use");
    let opts = ScreenOptions { buckets, ..opts };
    let got = s
        .screen(
            "old",
            &[
                candidate("old", "a@example.com", "2:0"),
                candidate("old", "b@example.com", "2:1"),
            ],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        got.verdicts,
        [
            Screened::new(ScreenVerdict::Duplicate),
            Screened::new(ScreenVerdict::Accepted)
        ]
    );
    assert_eq!(
        s.request_recipients("old").await.unwrap(),
        [
            ("a@example.com".to_string(), "accepted".to_string()),
            ("b@example.com".to_string(), "accepted".to_string())
        ]
    );
    let stored: String = redis::cmd("HGET")
        .arg(format!("{p}:req:old:rcpts"))
        .arg("b@example.com")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, "2:1|accepted", "as earlier versions read it");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut c)
        .await
        .unwrap();
}

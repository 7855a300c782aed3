//! Failure handling against an SMTP server scripted per recipient: every
//! reply ends in the state, after the number of attempts, that the policy
//! says; quarantine follows the seeds' rules; nothing is lost or duplicated.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_lite::StreamExt;
use mailpipe_common::message::message_id;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{events_in, request_for, wait_for, TestPipeline, Workers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_ends_in_the_state_and_after_the_attempts_the_policy_says() {
    let smtp = ScriptedSmtp::start_with_slow_seconds(3.0);
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        // Jittered delays reach their due time by hopping through the tiers.
        s.retrier.jitter = 0.3;
        s.retrier.tiers = vec![
            Duration::from_millis(50),
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(400),
            Duration::from_secs(1),
        ];
        s.quarantine.threshold = 3;
        s.sender.smtp.timeout = Duration::from_secs(1);
        s.sender.lease = Duration::from_secs(3);
    })
    .await;
    let (_events_conn, mut events) = p.subscribe_events().await;

    // (recipient, final state, attempts, quarantine reason)
    let table: &[(&str, &str, usize, Option<&str>)] = &[
        ("ok-0-a", "sent", 1, None),
        ("r421-2-a", "sent", 3, None),      // 421 + disconnect, twice
        ("r421-0-a", "exhausted", 5, None), // throttled policy: 5 attempts
        ("r443-1-a", "sent", 2, None),      // 451 4.4.3 routing failure once
        ("r443-0-a", "exhausted", 4, None), // routing policy (tests): 4 attempts
        ("r452-0-a", "mailbox_full", 3, Some("mailbox_full")), // counter reaches 3
        ("r452-2-b", "sent", 3, None),      // mailbox full twice, then delivered
        ("r450-1-a", "sent", 2, None),      // 450 4.2.1 rate limited once
        ("grey-1-a", "sent", 2, None),      // greylisting
        ("r550-0-a", "user_unknown", 1, Some("user_unknown")),
        ("r554-0-a", "refused", 1, None), // spam block: never the recipient's fault
        ("r552-0-a", "message_too_large", 1, None),
        ("drop-1-a", "sent", 2, None), // disconnect during DATA
        ("slow-1-a", "sent", 2, None), // timeout
    ];
    let locals: Vec<&str> = table.iter().map(|r| r.0).collect();
    p.publish_json(&request_for("failures", &locals)).await;
    let status = p.wait_complete("failures", Duration::from_secs(120)).await;

    for (local, state, attempts, quarantine) in table {
        let address = format!("{local}@example.com");
        let done = p
            .store
            .done(&message_id("failures", &address))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{address} has no terminal state"));
        if *state == "sent" {
            assert_eq!(done.state.as_str(), "sent", "{address}: {}", done.detail);
        } else {
            assert_eq!(done.state.as_str(), "dead", "{address}");
            assert!(
                done.detail.starts_with(&format!("{state}:")),
                "{address} ended as {:?}, expected {state}",
                done.detail
            );
        }
        let seen = smtp
            .attempts_for(&address)
            .iter()
            .filter(|a| a.stage == "rcpt")
            .count();
        assert_eq!(seen, *attempts, "{address}: attempts seen by the server");
        let q = p.store.quarantine(&address).await.unwrap();
        match quarantine {
            Some(reason) => assert_eq!(
                q.as_ref().and_then(|v| v["reason"].as_str()),
                Some(*reason),
                "{address} should be quarantined"
            ),
            None => assert!(q.is_none(), "{address} must not be quarantined: {q:?}"),
        }
    }

    // Counts: nothing lost, nothing duplicated.
    let sent = table.iter().filter(|r| r.1 == "sent").count() as u64;
    assert_eq!(status.accepted, table.len() as u64);
    assert_eq!(status.sent, sent);
    assert_eq!(
        status.sent + status.dead.values().sum::<u64>(),
        status.accepted
    );
    assert_eq!(status.dead.get("exhausted"), Some(&2));
    assert_eq!(status.pending, 0);
    let per = smtp.per_recipient();
    for (local, state, ..) in table {
        let n = per
            .get(&format!("{local}@example.com"))
            .copied()
            .unwrap_or(0);
        assert_eq!(
            n,
            usize::from(*state == "sent"),
            "{local} received {n} message(s)"
        );
    }

    // Jittered retries reached their due time through more than one tier.
    assert!(
        p.metric(
            "sender",
            "mailpipe_deliveries_total{lane=\"bulk\",outcome=\"not_due\"}"
        )
        .await
            > 0.0,
        "no retry hopped through a second tier"
    );

    // A delivery resets the soft-failure counter; a hard bounce counted once.
    assert_eq!(
        p.store.failure_count("r452-2-b@example.com").await.unwrap(),
        0
    );
    assert_eq!(
        p.store.failure_count("r452-0-a@example.com").await.unwrap(),
        3
    );

    // Applications saw it happen.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, events.next()).await {
        for e in events_in(&d.data) {
            *kinds
                .entry(e["event"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        if kinds.get("sent") == Some(&(sent as usize)) && kinds.get("dead") == Some(&6) {
            break;
        }
    }
    assert_eq!(kinds.get("sent"), Some(&(sent as usize)), "{kinds:?}");
    assert_eq!(kinds.get("dead"), Some(&6), "{kinds:?}");
    assert_eq!(kinds.get("quarantined"), Some(&2), "{kinds:?}");
    assert!(
        kinds.get("deferred").copied().unwrap_or(0) >= 14,
        "{kinds:?}"
    );
    assert!(kinds.get("bounced").copied().unwrap_or(0) >= 2, "{kinds:?}");

    // The qualification table counted the texts.
    let bounces = p.store.bounces(100).await.unwrap();
    assert!(bounces
        .iter()
        .any(|b| b.reason == "user_unknown" && b.count == 1));
    assert!(bounces.iter().all(|b| !b.text.contains("@example.com")));

    // ... and `mailpipe bounces` lists them by count.
    let (code, out) = p.cli(&["--json", "bounces"]);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), bounces.len());
    let counts: Vec<u64> = rows.iter().map(|r| r["count"].as_u64().unwrap()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "sorted by count: {counts:?}"
    );
    assert!(rows
        .iter()
        .any(|r| r["reason"] == "rate_limited" && r["count"].as_u64() >= Some(4)));

    // Quarantined addresses are excluded from later requests.
    p.publish_json(&request_for("later", &["r550-0-a", "r452-0-a", "ok-0-b"]))
        .await;
    let later = p.wait_complete("later", Duration::from_secs(60)).await;
    assert_eq!(later.excluded.get("quarantined"), Some(&2));
    assert_eq!(later.sent, 1);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_outage_defers_mail_and_loses_nothing() {
    let mut smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.retrier.policies.routing.schedule = vec![Duration::from_millis(400)];
        s.retrier.policies.routing.max_attempts = 50;
    })
    .await;
    smtp.stop();
    let locals: Vec<String> = (0..60).map(|i| format!("ok-0-{i}")).collect();
    let refs: Vec<&str> = locals.iter().map(String::as_str).collect();
    p.publish_json(&request_for("outage", &refs)).await;
    wait_for(
        "every message to fail at least once",
        Duration::from_secs(60),
        || async { (p.status("outage").await.failed_attempts >= 60).then_some(()) },
    )
    .await;
    assert_eq!(p.status("outage").await.sent, 0);
    smtp.restart();
    let s = p.wait_complete("outage", Duration::from_secs(60)).await;
    assert_eq!(s.sent, 60);
    let per = smtp.per_recipient();
    assert_eq!(per.len(), 60);
    assert!(per.values().all(|n| *n == 1));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_prints_one_json_object_per_input_line_in_order() {
    let p = TestPipeline::spawn_for_port(
        1,
        Workers {
            expander: false,
            sender: false,
            retrier: false,
        },
        |_| {},
    )
    .await;
    let input = "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown\n\
                 421 4.7.0 Service not available, closing transmission channel\n\
                 451 4.4.3 Routing server failure\n\
                 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org\n\
                 552 5.2.2 Mailbox full\n";
    let (code, out) = p.cli_with_stdin(&["classify"], input);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    let got: Vec<(&str, &str, bool, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["retry"].as_bool().expect("retry is a JSON boolean"),
                r["quarantine"].as_str().unwrap(),
                r["scope"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("user_unknown", "hard", false, "immediate", "recipient"),
            ("rate_limited", "soft", true, "none", "domain"),
            ("unreachable", "soft", true, "none", "domain"),
            ("refused", "hard", false, "none", "sender"),
            ("mailbox_full", "soft", true, "count", "recipient"),
        ]
    );
    // Arguments work too, one object per argument.
    let (_, out) = p.cli(&["classify", "550 5.1.1 no such user", "250 ok"]);
    assert_eq!(out.lines().count(), 2);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrier_decides_on_the_classification_the_sender_carried() {
    // The sender classifies a failure once and carries the verdict in the
    // failure record; the retrier decides on that verdict, not on its own
    // rules (two deployments may load different rule files). A record
    // without one, from a sender that did not carry it yet, is classified
    // by the retrier.
    use mailpipe_common::classify::{
        Classification, Failure, FailureType, Quarantine, Reason, Scope,
    };
    use mailpipe_common::message::FailedJob;
    use mailpipe_tests::faults::publish_raw;
    use mailpipe_tests::{sample_request, SmtpSink};

    let p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: true,
        },
        |_| {},
    )
    .await;
    let rid = "carried-classification";
    p.publish_json(&sample_request(rid, 2, "example.com")).await;
    p.wait_expanded(rid).await;
    let jobs = p.drain_jobs("send.bulk").await;
    assert_eq!(jobs.len(), 2);
    // A greylisting reply, which the rules retry, carried once with a
    // verdict that says stop.
    let failure = Failure::from_reply_text("451 4.7.1 Greylisted, please try again later");
    let stop = Classification {
        kind: FailureType::Hard,
        reason: Reason::UserUnknown,
        retry: false,
        quarantine: Quarantine::None,
        scope: Scope::Recipient,
        rule: Some("carried".into()),
    };
    for (job, classification) in jobs.iter().zip([Some(stop), None]) {
        let failed = FailedJob {
            v: 1,
            job: job.clone(),
            failure: failure.clone(),
            route: "default".into(),
            at: mailpipe_common::unix_now(),
            classification,
        };
        publish_raw(&p, "failed", &serde_json::to_vec(&failed).unwrap()).await;
    }
    wait_for("the carried verdict", Duration::from_secs(30), || async {
        (p.status(rid).await.dead.get("user_unknown") == Some(&1)).then_some(())
    })
    .await;
    let stopped = p
        .store
        .done(&jobs[0].id)
        .await
        .unwrap()
        .expect("a terminal record");
    assert_eq!(stopped.state.as_str(), "dead");
    assert!(
        stopped.detail.starts_with("user_unknown: 451"),
        "{}",
        stopped.detail
    );
    // The record without a verdict: greylisting, retried by the rules.
    wait_for(
        "the other one deferred",
        Duration::from_secs(30),
        || async {
            let deferred = p.store.deferred(1000).await.unwrap();
            deferred
                .iter()
                .any(|(id, ..)| *id == jobs[1].id)
                .then_some(())
        },
    )
    .await;
    assert!(p.store.done(&jobs[1].id).await.unwrap().is_none());
    let status = p.status(rid).await;
    assert_eq!(status.dead.values().sum::<u64>(), 1, "{status:?}");
    p.shutdown().await;
}

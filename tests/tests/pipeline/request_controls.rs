//! Per-request controls: parts, audience limit, control group, coalescing.

use std::time::Duration;

use mailpipe_tests::{sample_request, wait_for, TestPipeline};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_of_one_request_are_one_campaign() {
    let p = TestPipeline::spawn().await;
    let rid = "three-parts";
    // 3 parts; user5 appears in parts 1 and 3, so it is a duplicate across parts.
    for (index, range) in [(1, 0..10), (2, 10..20), (3, 20..30)] {
        let mut recipients: Vec<_> = range
            .map(|i| json!({"email": format!("user{i}@example.com")}))
            .collect();
        if index == 3 {
            recipients.push(json!({"email": "user5@example.com"}));
        }
        let mut r = sample_request(rid, 0, "example.com");
        r["recipients"] = json!(recipients);
        r["part"] = json!({"index": index, "total": 3});
        p.publish_json(&r).await;
    }
    let s = p.wait_complete(rid, Duration::from_secs(60)).await;
    assert_eq!(s.parts_done, 3);
    assert_eq!(s.recipients, 31);
    assert_eq!(s.accepted, 30);
    assert_eq!(s.excluded.get("duplicate"), Some(&1));
    assert_eq!(s.sent, 30);
    assert_eq!(p.sink().per_recipient().get("user5@example.com"), Some(&1));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_limit_and_control_group_exclude_with_their_reasons() {
    let p = TestPipeline::spawn().await;
    let mut r = sample_request("limited", 100, "example.com");
    r["max_audience"] = json!(30);
    p.publish_json(&r).await;
    let s = p.wait_complete("limited", Duration::from_secs(60)).await;
    assert_eq!(s.sent, 30);
    assert_eq!(s.excluded.get("target_size_limited"), Some(&70));

    let mut r = sample_request("control", 400, "example.com");
    r["control_group"] = json!(0.25);
    p.publish_json(&r).await;
    let s = p.wait_complete("control", Duration::from_secs(60)).await;
    let held: u64 = (0..400)
        .filter(|i| {
            mailpipe_common::message::in_control_group(
                "control",
                &format!("user{i}@example.com"),
                0.25,
            )
        })
        .count() as u64;
    assert!(held > 50 && held < 150, "sample size {held}");
    assert_eq!(s.excluded.get("control_group"), Some(&held));
    assert_eq!(s.sent, 400 - held);
    assert_eq!(p.sink().count() as u64, 30 + 400 - held);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_sends_one_notice_per_recipient_and_window() {
    let p = TestPipeline::spawn().await;
    for (i, pct) in [70, 80, 90].into_iter().enumerate() {
        let mut r = sample_request(&format!("usage-{pct}"), 5, "example.com");
        r["tenant"] = json!("acme");
        r["subject"] = json!(format!("Usage at {pct} %"));
        r["coalesce"] = json!({"key": "usage-warning", "window_seconds": 3600});
        if i == 2 {
            // A new recipient in the last request is not coalesced.
            r["recipients"]
                .as_array_mut()
                .unwrap()
                .push(json!({"email": "new@example.com"}));
        }
        p.publish_json(&r).await;
        p.wait_complete(&format!("usage-{pct}"), Duration::from_secs(60))
            .await;
    }
    assert_eq!(p.status("usage-70").await.sent, 5);
    let s80 = p.status("usage-80").await;
    assert_eq!((s80.sent, s80.excluded.get("coalesced")), (0, Some(&5)));
    let s90 = p.status("usage-90").await;
    assert_eq!((s90.sent, s90.excluded.get("coalesced")), (1, Some(&5)));
    let per = p.sink().per_recipient();
    assert_eq!(per.len(), 6);
    assert!(per.values().all(|n| *n == 1));
    assert!(
        p.sink()
            .received()
            .iter()
            .filter(|m| m.header("Subject") == Some("Usage at 70 %"))
            .count()
            == 5
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_request_is_expanded_while_a_large_campaign_expands() {
    let p = TestPipeline::spawn_with(
        mailpipe_tests::SmtpSink::start(),
        mailpipe_tests::Workers {
            expander: true,
            sender: false,
            retrier: false,
        },
        |_| {},
    )
    .await;
    // Two bulk requests queued first; the transactional one behind them.
    p.publish_json(&sample_request("big-1", 40_000, "bulk.example"))
        .await;
    p.publish_json(&sample_request("big-2", 40_000, "bulk.example"))
        .await;
    let mut t = sample_request("password-reset", 1, "people.example");
    t["lane"] = json!("transactional");
    p.publish_json(&t).await;
    let t_done = mailpipe_tests::wait_for(
        "the transactional request expanded",
        Duration::from_secs(60),
        || async {
            let s = p.status("password-reset").await;
            (s.parts_done == 1).then_some(s)
        },
    )
    .await;
    assert_eq!(t_done.accepted, 1);
    // It did not wait for the campaigns ahead of it.
    let big1 = p.status("big-1").await;
    let big2 = p.status("big-2").await;
    assert!(
        big1.parts_done == 0 || big2.parts_done == 0,
        "the transactional request waited for both campaigns: {big1:?} {big2:?}"
    );
    // The campaigns themselves are expanded in full, in order.
    let big2 = mailpipe_tests::wait_for("big-2 expanded", Duration::from_secs(120), || async {
        let s = p.status("big-2").await;
        (s.parts_done == 1).then_some(s)
    })
    .await;
    assert_eq!(big2.accepted, 40_000);
    assert_eq!(p.status("big-1").await.accepted, 40_000);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_and_a_refused_part_are_visible_in_status() {
    let p = TestPipeline::spawn().await;
    // A template that does not compile: refused as a whole.
    let mut bad = sample_request("bad-template", 3, "example.com");
    bad["subject"] = json!("Hello {{ name");
    p.publish_json(&bad).await;
    let out = wait_for(
        "the refusal to be recorded",
        Duration::from_secs(30),
        || async {
            let (code, out) = p.cli(&["--json", "status", "bad-template"]);
            (code == 0).then_some(out)
        },
    )
    .await;
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["refused"]["request"]["reason"], "invalid_template", "{s}");
    let (code, text) = p.cli(&["status", "bad-template"]);
    assert_eq!(code, 0);
    assert!(text.contains("state      refused"), "{text}");
    assert!(text.contains("invalid_template"), "{text}");

    // Parts 1/2 and 2/2 arrive, then a part "3/2": refused, out of range.
    // Part 2 never arrives under a valid index, so the campaign is incomplete.
    let rid = "refused-part";
    for (index, range) in [(1, 0..5), (3, 5..10)] {
        let mut r = sample_request(rid, 0, "example.com");
        r["recipients"] = json!(range
            .map(|i| json!({"email": format!("user{i}@example.com")}))
            .collect::<Vec<_>>());
        r["part"] = json!({"index": index, "total": 2});
        p.publish_json(&r).await;
    }
    let s = wait_for(
        "part 1 sent and part 3 refused",
        Duration::from_secs(60),
        || async {
            let s = p.status(rid).await;
            (s.sent == 5 && !s.refused.is_empty()).then_some(s)
        },
    )
    .await;
    assert!(s.is_incomplete(), "{s:?}");
    assert_eq!(s.refused["3"].reason, "invalid_request");
    assert!(
        s.refused["3"].detail.contains("out of range"),
        "{:?}",
        s.refused
    );
    // `status --watch` ends (exit 4: incomplete) instead of waiting forever.
    let (code, text) = p.cli(&["status", "--watch", rid]);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains("incomplete") && text.contains("part 3"),
        "{text}"
    );
    p.shutdown().await;
}

/// A request's own `retries` replaces the retry policy's number of
/// attempts for its messages: with a policy that retries a soft failure 5
/// times, a request asking for 1 stops after one retry and one asking for 0
/// (through `mailpipe submit --retries 0`) is dead-lettered at its first
/// failure; a request that says nothing follows the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_s_own_retries_replace_the_policy_s() {
    use mailpipe_common::message::message_id;
    use mailpipe_tests::request_for;
    use mailpipe_tests::scripted::ScriptedSmtp;
    use mailpipe_tests::Workers;

    let smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        // Soft failures (mailbox full, for ever): 6 attempts, 5 retries.
        s.retrier.policies.soft.schedule = vec![Duration::from_millis(200)];
        s.retrier.policies.soft.max_attempts = 6;
        // Never quarantined on the way: the retries alone decide.
        s.quarantine.threshold = 100;
    })
    .await;

    // (request, recipient, retries, attempts the server sees)
    let table: &[(&str, &str, Option<u32>, usize)] = &[
        ("retries-policy", "r452-0-policy", None, 6),
        ("retries-one", "r452-0-one", Some(1), 2),
        ("retries-zero", "r452-0-zero", Some(0), 1),
    ];
    for (rid, local, retries, _) in table {
        let mut request = request_for(rid, &[local]);
        match retries {
            Some(0) => {
                // Through the CLI's flag.
                let file = tempfile::NamedTempFile::new().unwrap();
                std::fs::write(file.path(), serde_json::to_vec(&request).unwrap()).unwrap();
                let path = file.path().to_str().unwrap();
                let (code, _) = p.cli(&["submit", path, "--retries", "21"]);
                assert_eq!(code, 2, "--retries above 20 is bad usage");
                let (code, out) = p.cli(&["submit", path, "--retries", "0"]);
                assert_eq!(code, 0, "submit failed: {out}");
                assert_eq!(out.trim(), *rid);
            }
            Some(n) => {
                request["retries"] = json!(n);
                p.publish_json(&request).await;
            }
            None => p.publish_json(&request).await,
        }
    }
    for (rid, local, retries, attempts) in table {
        let status = p.wait_complete(rid, Duration::from_secs(60)).await;
        assert_eq!(status.dead.get("exhausted"), Some(&1), "{rid}: {status:?}");
        let address = format!("{local}@example.com");
        let done = p
            .store
            .done(&message_id(rid, &address))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{address} has no terminal record"));
        assert!(
            done.detail.starts_with("exhausted:"),
            "{rid}: {}",
            done.detail
        );
        let seen = smtp
            .attempts_for(&address)
            .iter()
            .filter(|a| a.stage == "rcpt")
            .count();
        assert_eq!(seen, *attempts, "{rid} (retries {retries:?}): attempts");
    }
    // Each stop left one dead letter, with the attempts made and the
    // request's own retries in its job.
    let records = p.drain_queue("dead").await;
    assert_eq!(records.len(), table.len(), "{records:?}");
    for (rid, _, retries, attempts) in table {
        let record = records
            .iter()
            .find(|r| r["request"] == *rid)
            .unwrap_or_else(|| panic!("no dead letter for {rid}: {records:?}"));
        assert_eq!(record["reason"], "exhausted");
        assert_eq!(record["job"]["attempt"], *attempts as u64, "{rid}");
        assert_eq!(record["job"]["retries"], json!(retries), "{rid}");
    }
    p.shutdown().await;
}

//! Per-request controls: parts, audience limit, control group, coalescing.

use std::time::Duration;

use mailpipe_tests::{sample_request, TestPipeline};
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

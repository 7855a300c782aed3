//! Retries while a campaign drains: the delay tiers hand bulk jobs that
//! fall due to `send.retry`, which the senders consume beside the bulk
//! lane, so a retry runs close to its due time instead of behind the whole
//! backlog of the bulk lane.

use std::time::Duration;

use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{TestPipeline, Workers};
use serde_json::json;

fn bulk(id: &str, addresses: &[String]) -> serde_json::Value {
    let recipients: Vec<serde_json::Value> =
        addresses.iter().map(|a| json!({ "email": a })).collect();
    json!({
        "schema_version": 1, "request_id": id,
        "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
        "recipients": recipients,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_retry_runs_near_its_due_time_while_a_campaign_backlog_drains() {
    // Every backlog message takes half a second at the server and the bulk
    // lane has two in flight: 40 of them (one per lane message) keep the
    // lane busy for about ten seconds.
    let smtp = ScriptedSmtp::start_with_slow_seconds(0.5);
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.sender.bulk_concurrency = 2;
        s.sender.retry_concurrency = 2;
        s.expander.jobs_per_message = 1;
        // Greylisting is retried on the throttled schedule: 2 s, through
        // two hops of the 1 s tier.
        s.retrier.policies.throttled.schedule = vec![Duration::from_secs(2)];
    })
    .await;

    let grey = "grey-1-late@retry.test".to_string();
    p.publish_json(&bulk("greylisted", std::slice::from_ref(&grey)))
        .await;
    // Its first attempt is refused (451 4.7.1); the backlog is published
    // right after, and is still draining when the retry falls due.
    let first = p
        .wait_for("the first attempt", Duration::from_secs(30), || async {
            smtp.attempts_for(&grey)
                .into_iter()
                .find(|a| a.stage == "rcpt" && a.code == 451)
        })
        .await;
    let backlog: Vec<String> = (0..40)
        .map(|i| format!("slow-0-b{i}@backlog.test"))
        .collect();
    p.publish_json(&bulk("backlog", &backlog)).await;

    let s = p.wait_complete("greylisted", Duration::from_secs(60)).await;
    assert_eq!(s.sent, 1, "{s:?}");
    let delivered = smtp
        .attempts_for(&grey)
        .into_iter()
        .find(|a| a.stage == "data" && a.code == 250)
        .expect("the retry was delivered");
    let waited = delivered.time - first.time;
    eprintln!("retry delivered {waited:.2} s after the refusal (due after 2 s)");
    // Due 2 s after the refusal; behind the backlog it would take ~10 s.
    assert!(
        (1.8..5.0).contains(&waited),
        "the retry was delivered {waited:.2} s after the refusal (due after 2 s)"
    );
    let s = p.wait_complete("backlog", Duration::from_secs(90)).await;
    assert_eq!(s.sent, 40, "{s:?}");
    let later = smtp
        .attempts()
        .into_iter()
        .filter(|a| a.stage == "data" && a.code == 250 && a.rcpt.ends_with("@backlog.test"))
        .filter(|a| a.time > delivered.time)
        .count();
    assert!(
        later >= 10,
        "the backlog was nearly drained ({later} of 40 left) when the retry went: \
         the scenario did not test a retry beside a backlog"
    );
    assert!(smtp.per_recipient().values().all(|n| *n == 1));
    for key in ["send.bulk", "send.retry", "failed"] {
        assert_eq!(p.queue_depth(key).await, 0, "{key} is not drained");
    }
    p.shutdown().await;
}

//! A bulk request becomes exactly one personalized message per valid
//! recipient at a real SMTP server; replays and redeliveries add nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use mailpipe_tests::{sample_request, wait_for, SmtpSink, TestPipeline, Workers};
use serde_json::json;

/// 10,000 entries: 9,850 distinct valid addresses, 100 duplicates (some
/// differing only by case), 40 invalid addresses, 10 without an address.
fn ten_thousand(request_id: &str) -> (serde_json::Value, BTreeSet<String>) {
    let mut recipients = Vec::new();
    let mut valid = BTreeSet::new();
    for i in 0..9_850 {
        let email = format!("user{i}@example.com");
        valid.insert(email.clone());
        recipients.push(json!({"email": email, "name": format!("User {i}"), "vars": {"code": i, "plan": if i % 2 == 0 {"pro"} else {"free"}}}));
    }
    for i in 0..100 {
        let email = if i % 2 == 0 {
            format!("USER{i}@Example.COM")
        } else {
            format!("user{i}@example.com")
        };
        recipients.push(json!({"email": email, "vars": {"code": -1}}));
    }
    for i in 0..40 {
        let bad = match i % 4 {
            0 => format!("broken{i}.example.com"),
            1 => format!("a{i}@@example.com"),
            2 => format!("line{i}@example.com\r\nBcc: victim@example.com"),
            _ => format!("space {i}@example.com"),
        };
        recipients.push(json!({"email": bad}));
    }
    for _ in 0..10 {
        recipients.push(json!({"email": ""}));
    }
    let request = json!({
        "schema_version": 1,
        "request_id": request_id,
        "tenant": "acme",
        "campaign": "spring-sale",
        "lane": "bulk",
        "from": "ACME News <news@acme.example>",
        "reply_to": "support@acme.example",
        "subject": "{{ name }}, your {{ plan }} offer",
        "text": "Hello {{ name }}, your code is {{ code }}.",
        "html": "<p>Hello {{ name }}, your code is <b>{{ code }}</b>.</p>",
        "headers": {"X-Campaign": "spring-{{ plan }}"},
        "unsubscribe_url": "https://acme.example/unsubscribe?u={{ email | urlencode }}",
        "recipients": recipients,
    });
    (request, valid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_recipients_get_exactly_one_personalized_message_each() {
    let mut p = TestPipeline::spawn().await;
    let rid = "e2e-10k";
    let (request, valid) = ten_thousand(rid);
    // Submit through the operator CLI, as an application's operator would.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&request).unwrap()).unwrap();
    let (code, out) = p.cli(&[
        "submit",
        file.path().to_str().unwrap(),
        "--part-size",
        "3000",
    ]);
    assert_eq!(code, 0, "submit failed: {out}");
    assert_eq!(out.trim(), rid);

    let status = p.wait_complete(rid, Duration::from_secs(240)).await;
    // Every message the sender recorded is at the server.
    let received = wait_for(
        "all mail at the SMTP server",
        Duration::from_secs(30),
        || async {
            let r = p.sink().received();
            (r.len() >= valid.len()).then_some(r)
        },
    )
    .await;

    // Exactly one message per valid recipient, and nothing else.
    let per = p.sink().per_recipient();
    assert_eq!(per.len(), valid.len());
    assert!(
        per.values().all(|n| *n == 1),
        "a recipient got more than one message"
    );
    assert_eq!(per.keys().cloned().collect::<BTreeSet<_>>(), valid);

    // Personalization and headers, checked on every message.
    for mail in &received {
        let to = &mail.rcpt[0];
        let i: usize = to
            .trim_start_matches("user")
            .split('@')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("recipient {to:?} of {mail:?}: {e}"));
        let plan = if i.is_multiple_of(2) { "pro" } else { "free" };
        assert_eq!(
            mail.header("Subject"),
            Some(format!("User {i}, your {plan} offer").as_str())
        );
        assert_eq!(
            mail.header("To"),
            Some(format!("\"User {i}\" <{to}>").as_str())
        );
        assert_eq!(
            mail.header("From"),
            Some("\"ACME News\" <news@acme.example>")
        );
        assert_eq!(mail.header("Reply-To"), Some("support@acme.example"));
        assert_eq!(
            mail.header("X-Campaign"),
            Some(format!("spring-{plan}").as_str())
        );
        assert_eq!(
            mail.header("List-Unsubscribe"),
            Some(format!("<https://acme.example/unsubscribe?u=user{i}%40example.com>").as_str())
        );
        assert_eq!(
            mail.header("List-Unsubscribe-Post"),
            Some("List-Unsubscribe=One-Click")
        );
        assert!(mail
            .header("Message-ID")
            .is_some_and(|m| m.ends_with("@localhost>")));
        assert!(mail.header("Date").is_some());
        assert!(mail
            .header("Content-Type")
            .is_some_and(|c| c.starts_with("multipart/alternative")));
        assert!(mail
            .body
            .contains(&format!("Hello User {i}, your code is {i}.")));
        assert!(mail.body.contains(&format!("<b>{i}</b>")));
        assert_eq!(mail.mail_from, "news@acme.example");
        assert!(mail.header("Bcc").is_none());
    }

    // Redis agrees.
    assert_eq!(status.recipients, 10_000);
    assert_eq!(status.accepted, valid.len() as u64);
    assert_eq!(status.sent, valid.len() as u64);
    assert_eq!(status.excluded.get("duplicate"), Some(&100));
    assert_eq!(status.excluded.get("invalid_address"), Some(&40));
    assert_eq!(status.excluded.get("address_not_specified"), Some(&10));
    assert_eq!(status.pending, 0);
    assert_eq!(status.parts_done, 4);

    // And so does `mailpipe status`, on every count.
    let (code, out) = p.cli(&["status", rid, "--json"]);
    assert_eq!(code, 0);
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["sent"], received.len() as u64);
    assert_eq!(cli["accepted"], valid.len() as u64);
    assert_eq!(cli["recipients"], 10_000);
    assert_eq!(cli["excluded"]["duplicate"], 100);
    assert_eq!(cli["excluded"]["invalid_address"], 40);
    assert_eq!(cli["excluded"]["address_not_specified"], 10);
    assert_eq!(cli["pending"], 0);
    let (_, human) = p.cli(&["status", rid]);
    assert!(
        human.contains(&format!("sent       {}", valid.len())),
        "{human}"
    );

    // Publishing the same request again adds nothing.
    let (code, _) = p.cli(&[
        "submit",
        file.path().to_str().unwrap(),
        "--part-size",
        "3000",
    ]);
    assert_eq!(code, 0);
    wait_for(
        "the replayed parts to be acknowledged",
        Duration::from_secs(60),
        || async {
            (p.metric("expander", "mailpipe_requests_total{outcome=\"replayed\"}")
                .await
                >= 4.0)
                .then_some(())
        },
    )
    .await;
    p.stop_worker("sender").await;
    assert_eq!(p.queue_depth("send.bulk").await, 0);
    assert_eq!(p.sink().count(), valid.len());
    assert_eq!(p.status(rid).await.sent, valid.len() as u64);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_messages_are_not_sent_twice() {
    // Expand with no sender running, so the lane holds every job.
    let mut p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: true,
        },
        |_| {},
    )
    .await;
    let rid = "redeliver";
    p.publish_json(&sample_request(rid, 3_000, "example.org"))
        .await;
    p.wait_expanded(rid).await;
    let messages = p.lane_messages(3_000);
    assert_eq!(p.queue_depth("send.bulk").await, messages);

    // Put every lane message back, plus a second copy of the first ones
    // (500 recipients): what the broker does when an ack is lost or a
    // consumer dies.
    let batches = p.drain_queue("send.bulk").await;
    let recipients = |m: &serde_json::Value| m["recipients"].as_array().map_or(1, Vec::len);
    assert_eq!(batches.iter().map(recipients).sum::<usize>(), 3_000);
    let mut copies = 0;
    let twice: Vec<&serde_json::Value> = batches
        .iter()
        .take_while(|m| {
            copies += recipients(m);
            copies <= 500
        })
        .collect();
    let conn = mailpipe_common::amqp::connect_once(&p.settings.amqp, "test")
        .await
        .unwrap();
    let ch = mailpipe_common::amqp::channel(&conn, None).await.unwrap();
    for job in batches.iter().chain(twice.iter().copied()) {
        mailpipe_common::amqp::publish_confirmed(
            &ch,
            &p.topology.exchange(),
            "send.bulk",
            &serde_json::to_vec(job).unwrap(),
            mailpipe_common::amqp::properties(),
        )
        .await
        .unwrap();
    }
    let _ = conn.close(200, "ok".into()).await;
    assert_eq!(
        p.queue_depth("send.bulk").await,
        messages + twice.len() as u32
    );

    // Start and stop the sender several times mid-run: every stop hands back
    // the prefetched, unacked messages, which the broker redelivers.
    for round in 0..3 {
        p.start_worker("sender");
        wait_for("some progress", Duration::from_secs(60), || async {
            (p.sink().count() > (round + 1) * 600).then_some(())
        })
        .await;
        p.stop_worker("sender").await;
    }
    p.start_worker("sender");
    let status = p.wait_complete(rid, Duration::from_secs(120)).await;
    wait_for("the lane to drain", Duration::from_secs(60), || async {
        (p.queue_depth("send.bulk").await == 0).then_some(())
    })
    .await;
    p.stop_worker("sender").await;

    let per = p.sink().per_recipient();
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(per.len(), 3_000);
    assert_eq!(p.sink().count(), 3_000);
    assert_eq!(status.sent, 3_000);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_dead_lettered_and_the_expander_keeps_serving() {
    let p = TestPipeline::spawn().await;
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed_request"),
        (br#"{"schema_version":9,"recipients":[]}"#.to_vec(), "unsupported_schema_version"),
        (br#"{"schema_version":1,"from":"a@example.com","recipients":[]}"#.to_vec(), "malformed_request"),
        (
            br#"{"schema_version":1,"from":"nobody","subject":"s","text":"t","recipients":[]}"#.to_vec(),
            "invalid_request",
        ),
        (
            br#"{"schema_version":1,"from":"a@example.com","subject":"{% if %}","text":"t","recipients":[]}"#.to_vec(),
            "invalid_template",
        ),
    ];
    for (body, _) in &bad {
        p.publish_request(body).await;
    }
    p.publish_json(&sample_request("after-the-bad-ones", 20, "example.net"))
        .await;
    let status = p
        .wait_complete("after-the-bad-ones", Duration::from_secs(60))
        .await;
    assert_eq!(status.sent, 20);
    assert_eq!(p.sink().count(), 20);

    wait_for("dead-letter records", Duration::from_secs(30), || async {
        // Records arrive in order; take them only once all are there.
        (p.queue_depth("dead").await as usize >= bad.len()).then_some(())
    })
    .await;
    let records = p.drain_queue("dead").await;
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = bad.iter().map(|(_, r)| *r).collect();
    assert_eq!(reasons, expected);
    for r in &records {
        assert!(!r["detail"].as_str().unwrap().is_empty());
        assert!(
            r["payload"].is_string(),
            "the original request is kept for operators"
        );
    }
    assert_eq!(
        p.metric("expander", "mailpipe_requests_total{outcome=\"invalid\"}")
            .await,
        5.0
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sender_process_mid_run_loses_nothing() {
    let mut p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: true,
        },
        |_| {},
    )
    .await;
    let rid = "kill-9";
    let n = 5_000;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let first = p.spawn_process("mailpipe-sender");
    wait_for(
        "the sender to be mid-run",
        Duration::from_secs(120),
        || async { (p.sink().count() > n / 4).then_some(()) },
    )
    .await;
    p.kill_process(first);
    let at_kill = p.sink().count();
    assert!(
        at_kill < n,
        "the campaign finished before the kill; nothing was tested"
    );
    p.spawn_process("mailpipe-sender");
    let status = p.wait_complete(rid, Duration::from_secs(180)).await;
    let per = p.sink().per_recipient();
    let duplicates: usize = per.values().map(|c| c - 1).sum();
    eprintln!(
        "kill -9 after {at_kill} of {n} messages: {duplicates} duplicate(s) at the SMTP server"
    );
    // Nothing lost.
    assert_eq!(per.len(), n);
    assert_eq!(status.sent, n as u64);
    // A duplicate is only possible for a message whose 250 reply arrived in
    // the instant between the server's commit and the sent record: at most
    // the transactions in flight at the kill.
    assert!(
        duplicates <= p.settings.sender.bulk_concurrency,
        "{duplicates} duplicates exceed the {} transactions that can be in flight",
        p.settings.sender.bulk_concurrency
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_recipient_per_lane_message_is_a_setting_that_still_delivers_everything_once() {
    let mut p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: true,
        },
        |s| s.expander.jobs_per_message = 1,
    )
    .await;
    let rid = "one-per-message";
    p.publish_json(&sample_request(rid, 30, "example.org"))
        .await;
    p.wait_expanded(rid).await;
    assert_eq!(p.queue_depth("send.bulk").await, 30);
    p.start_worker("sender");
    let status = p.wait_complete(rid, Duration::from_secs(60)).await;
    assert_eq!(status.sent, 30);
    let per = p.sink().per_recipient();
    assert_eq!(per.len(), 30);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    p.shutdown().await;
}

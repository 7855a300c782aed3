//! The operator CLI against a running pipeline: queue list/show/flush/
//! remove/purge, campaign hold/release/cancel, address lists, help.
//!
//! Over 500 lines: one theme's scenarios (the operator CLI, command by
//! command), kept together.

use std::ops::Not;
use std::time::Duration;

use mailpipe_common::message::message_id;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{sample_request, wait_for, SmtpSink, TestPipeline, Workers};
use serde_json::json;

fn request(id: &str, locals: &[&str]) -> serde_json::Value {
    let recipients: Vec<_> = locals
        .iter()
        .map(|l| json!({"email": format!("{l}@example.com")}))
        .collect();
    json!({
        "schema_version": 1, "request_id": id, "campaign": "ops",
        "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
        "recipients": recipients,
    })
}

/// A pipeline whose routing failures wait an hour, as in production.
async fn hour_long_retries(smtp: &ScriptedSmtp) -> TestPipeline {
    TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.retrier.tiers = vec![Duration::from_millis(200), Duration::from_secs(3600)];
        s.retrier.policies.routing.schedule = vec![Duration::from_secs(3600)];
        s.retrier.policies.routing.max_attempts = 5;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_delivers_a_message_scheduled_an_hour_ahead_within_seconds() {
    let smtp = ScriptedSmtp::start();
    let p = hour_long_retries(&smtp).await;
    p.publish_json(&request("flush", &["r443-1-a", "ok-0-a"]))
        .await;
    let id = message_id("flush", "r443-1-a@example.com");
    wait_for(
        "the message to be deferred",
        Duration::from_secs(30),
        || async {
            let (_, out) = p.cli(&["--json", "queue", "list", "--deferred"]);
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
            rows.iter().any(|r| r["id"] == id.as_str()).then_some(())
        },
    )
    .await;

    // postqueue -p
    let (code, out) = p.cli(&["queue", "list", "--deferred"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("r443-1-a@example.com") && out.contains("unreachable"),
        "{out}"
    );
    assert!(
        out.contains("in 59m") || out.contains("in 60m"),
        "due in an hour: {out}"
    );
    let (_, out) = p.cli(&["--json", "queue", "list"]);
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["deferred"], 1);
    let tier = summary["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"].as_str().unwrap().ends_with("retry.1h.bulk"))
        .unwrap();
    assert_eq!(tier["messages"], 1);

    // queue show: the attempt with the server's reply and its classification.
    let (code, out) = p.cli(&["--json", "queue", "show", &id]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "deferred");
    assert_eq!(shown["history"][0]["reason"], "unreachable");
    assert!(shown["history"][0]["reply"]
        .as_str()
        .unwrap()
        .contains("4.4.3"));

    // postqueue -f
    let started = std::time::Instant::now();
    let (code, out) = p.cli(&["queue", "flush"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("1 deferred"), "{out}");
    let s = p.wait_complete("flush", Duration::from_secs(30)).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(s.sent, 2);
    assert_eq!(smtp.per_recipient().get("r443-1-a@example.com"), Some(&1));
    let (_, out) = p.cli(&["--json", "queue", "show", &id]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "sent");
    assert_eq!(
        p.cli(&["queue", "show", "0000"]).0,
        3,
        "unknown message: exit 3"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_deferred_message_is_never_sent() {
    let smtp = ScriptedSmtp::start();
    let p = hour_long_retries(&smtp).await;
    p.publish_json(&request("remove", &["r443-1-a", "r443-1-b"]))
        .await;
    let a = message_id("remove", "r443-1-a@example.com");
    wait_for(
        "both messages to be deferred",
        Duration::from_secs(30),
        || async { (p.store.deferred(10).await.ok()?.len() == 2).then_some(()) },
    )
    .await;
    assert_eq!(
        p.cli(&["queue", "remove", &a]).0,
        2,
        "destructive commands need --yes"
    );
    let (code, out) = p.cli(&["queue", "remove", &a, "--yes"]);
    assert_eq!(code, 0, "{out}");
    // Flush everything: the removed message comes back to a sender, which must skip it.
    p.cli(&["queue", "flush"]);
    let s = p.wait_complete("remove", Duration::from_secs(30)).await;
    assert_eq!((s.sent, s.removed, s.pending), (1, 1, 0));
    wait_for("the lanes to drain", Duration::from_secs(30), || async {
        (p.queue_depth("send.bulk").await == 0 && p.queue_depth("retry.1h.bulk").await == 0)
            .then_some(())
    })
    .await;
    let per = smtp.per_recipient();
    assert_eq!(
        per.get("r443-1-a@example.com"),
        None,
        "a removed message was sent"
    );
    assert_eq!(per.get("r443-1-b@example.com"), Some(&1));
    let (_, out) = p.cli(&["--json", "queue", "show", &a]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "removed");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_and_releasing_a_campaign_mid_flight_sends_everyone_exactly_once() {
    const N: usize = 20_000;
    let p = TestPipeline::spawn().await;
    let rid = "held-campaign";
    p.publish_json(&sample_request(rid, N, "example.com")).await;
    wait_for(
        "the campaign to be mid-flight",
        Duration::from_secs(180),
        || async { (p.sink().count() > N / 10).then_some(()) },
    )
    .await;
    let (code, out) = p.cli(&["campaign", "hold", rid, "--reason", "complaint spike"]);
    assert_eq!(code, 0, "{out}");
    // Within seconds nothing more goes out.
    let settled = wait_for("sending to stop", Duration::from_secs(10), || async {
        let before = p.sink().count();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (p.sink().count() == before).then_some(before)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        p.sink().count(),
        settled,
        "messages were sent while the campaign was held"
    );
    assert!(
        settled < N,
        "the campaign finished before the hold; nothing was tested"
    );
    let s = p.status(rid).await;
    assert_eq!(s.sent as usize, settled);
    let state_in_list = || {
        let (code, out) = p.cli(&["--json", "campaign", "list"]);
        assert_eq!(code, 0, "{out}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let row = rows
            .iter()
            .find(|r| r["status"]["request"] == rid)
            .unwrap_or_else(|| panic!("{rid} not in campaign list: {out}"));
        row["state"].as_str().unwrap().to_string()
    };
    assert_eq!(state_in_list(), "held");
    // Held mail is visible: its parking queue in `queue list`, the state
    // in `status`.
    let (code, out) = p.cli(&["--json", "queue", "list"]);
    assert_eq!(code, 0, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let held_queue = format!("{}.held.{rid}", p.settings.amqp.prefix);
    let parked = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == held_queue.as_str())
        .unwrap_or_else(|| panic!("no {held_queue} in queue list: {out}"));
    assert!(parked["messages"].as_u64().unwrap() > 0, "{parked}");
    let (code, out) = p.cli(&["status", rid]);
    assert_eq!(code, 0);
    assert!(out.contains("state      held"), "{out}");
    assert!(out.contains(": complaint spike"), "{out}");
    let (code, table) = p.cli(&["campaign", "list"]);
    assert_eq!(code, 0);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(rid) && l.ends_with("held")),
        "{table}"
    );

    let (code, out) = p.cli(&["--json", "campaign", "release", rid]);
    assert_eq!(code, 0, "{out}");
    let released: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(released["resumed"].as_u64().unwrap() > 0, "{released}");
    let s = p.wait_complete(rid, Duration::from_secs(300)).await;
    let per = p.sink().per_recipient();
    assert_eq!(per.len(), N, "every recipient was sent to");
    assert!(
        per.values().all(|n| *n == 1),
        "a recipient got two messages"
    );
    assert_eq!(s.sent as usize, N);
    assert!(s.hold.is_none(), "the hold's reason outlived the hold");
    assert_eq!(state_in_list(), "complete");
    // The parking queue is deleted once empty (quorum queues cannot be
    // deleted "if empty": the sweeper fences senders off instead), and
    // the health check of shutdown() sees no worker knocked off the broker.
    let held = format!("held.{rid}");
    wait_for(
        "the parking queue to be deleted",
        Duration::from_secs(20),
        || async { p.queue_exists(&held).await.not().then_some(()) },
    )
    .await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_cancel_leave_the_counts_consistent() {
    // No sender: everything stays queued.
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
    p.publish_json(&sample_request("keep", 100, "example.com"))
        .await;
    p.publish_json(&sample_request("purge-me", 300, "example.com"))
        .await;
    wait_for("expansion", Duration::from_secs(60), || async {
        (p.status("keep").await.parts_done == 1 && p.status("purge-me").await.parts_done == 1)
            .then_some(())
    })
    .await;
    assert_eq!(p.cli(&["queue", "purge", "--campaign", "purge-me"]).0, 2);
    let (code, out) = p.cli(&[
        "--json",
        "queue",
        "purge",
        "--campaign",
        "purge-me",
        "--yes",
    ]);
    assert_eq!(code, 0, "{out}");
    let counts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counts["removed"], 300);
    assert_eq!(counts["kept"], 100);
    let s = p.status("purge-me").await;
    assert_eq!((s.accepted, s.removed, s.pending), (300, 300, 0));
    assert_eq!(p.status("keep").await.pending, 100);
    assert_eq!(p.queue_depth("send.bulk").await, p.lane_messages(100));

    // Cancel the other one while its messages are queued, then let a sender run.
    let (code, _) = p.cli(&["campaign", "cancel", "keep", "--yes"]);
    assert_eq!(code, 0);
    let mut p = p;
    p.start_worker("sender");
    let s = p.wait_complete("keep", Duration::from_secs(60)).await;
    assert_eq!((s.sent, s.removed), (0, 100));
    assert_eq!(p.sink().count(), 0);

    // purge --all on an empty installation is fine, and counts nothing.
    let (code, out) = p.cli(&["--json", "queue", "purge", "--all", "--yes"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["removed"],
        0
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_lists_steer_expansion() {
    let p = TestPipeline::spawn().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "email,source\nuser1@example.com,list-a\nnot an address\nUSER2@example.com,list-b\n",
    )
    .unwrap();
    let (code, out) = p.cli(&["denylist", "import", file.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("2 new address(es)") && out.contains("1 invalid"),
        "{out}"
    );
    assert_eq!(p.cli(&["denylist", "check", "user2@example.com"]).0, 0);
    assert_eq!(p.cli(&["denylist", "check", "user9@example.com"]).0, 3);

    assert_eq!(
        p.cli(&[
            "quarantine",
            "add",
            "user3@example.com",
            "--reason",
            "complaint"
        ])
        .0,
        0
    );
    let (_, out) = p.cli(&["--json", "quarantine", "list"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["record"]["reason"], "complaint");
    let (code, out) = p.cli(&["--json", "quarantine", "show", "user3@example.com"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"quarantined\": true"));
    let (code, out) = p.cli(&["quarantine", "show", "user3@example.com"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("quarantined  yes") && out.contains("complaint"),
        "{out}"
    );
    let (_, csv) = p.cli(&["quarantine", "export"]);
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("user3@example.com,complaint"),
        "{csv}"
    );

    p.publish_json(&sample_request("lists", 5, "example.com"))
        .await;
    let s = p.wait_complete("lists", Duration::from_secs(60)).await;
    assert_eq!(s.excluded.get("denylisted"), Some(&2));
    assert_eq!(s.excluded.get("quarantined"), Some(&1));
    assert_eq!(s.sent, 2);

    // Lifting the quarantine and the allowlist work for the next request.
    assert_eq!(
        p.cli(&["quarantine", "remove", "user3@example.com", "--yes"])
            .0,
        0
    );
    assert_eq!(p.cli(&["quarantine", "show", "user3@example.com"]).0, 3);
    assert_eq!(p.cli(&["allowlist", "add", "user4@example.com"]).0, 0);
    assert_eq!(p.cli(&["allowlist", "check", "user4@example.com"]).0, 0);
    assert_eq!(p.cli(&["denylist", "remove", "user1@example.com"]).0, 0);
    p.publish_json(&sample_request("lists-2", 5, "example.com"))
        .await;
    let s = p.wait_complete("lists-2", Duration::from_secs(60)).await;
    assert_eq!(s.excluded.get("denylisted"), Some(&1));
    assert_eq!(s.excluded.get("quarantined"), None);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_complete_help() {
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
    let (code, top) = p.cli(&["--help"]);
    assert_eq!(code, 0);
    let commands = [
        vec!["submit"],
        vec!["status"],
        vec!["queue", "list"],
        vec!["queue", "show"],
        vec!["queue", "flush"],
        vec!["queue", "remove"],
        vec!["queue", "purge"],
        vec!["campaign", "hold"],
        vec!["campaign", "release"],
        vec!["campaign", "cancel"],
        vec!["campaign", "list"],
        vec!["quarantine", "list"],
        vec!["quarantine", "import"],
        vec!["denylist", "import"],
        vec!["allowlist", "add"],
        vec!["classify"],
        vec!["bounces"],
        vec!["bounces", "qualify"],
        vec!["bounces", "ignore"],
        vec!["bounces", "reset"],
        vec!["bounces", "show"],
        vec!["bounces", "export-rules"],
        vec!["site", "list"],
        vec!["site", "show"],
        vec!["site", "pause"],
        vec!["site", "resume"],
        vec!["site", "limit"],
    ];
    for c in &commands {
        assert!(top.contains(c[0]), "mailpipe --help lacks {}", c[0]);
        let mut args = c.clone();
        args.push("--help");
        let (code, help) = p.cli(&args);
        assert_eq!(code, 0, "{c:?} --help");
        // Every subcommand explains itself beyond the usage line.
        assert!(help.lines().count() >= 4, "{c:?} help is too thin:\n{help}");
        assert!(
            !help.lines().next().unwrap_or("").starts_with("Usage"),
            "{c:?} has no description:\n{help}"
        );
    }
    // Usage errors exit 2.
    assert_eq!(p.cli(&["queue", "purge", "--yes"]).0, 2);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_a_csv_splits_it_into_parts_and_is_idempotent() {
    const N: usize = 5_000;
    let mut p = TestPipeline::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let mut rows = String::from("email,name,plan,\"note, with comma\"\n");
    for i in 0..N {
        rows.push_str(&format!(
            "user{i}@example.com,User {i},p{},\"n {i}\"\n",
            i % 3
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "Plan {{ plan }}, {{ name }}.").unwrap();
    let args = [
        "--json",
        "submit",
        "--csv",
        csv.to_str().unwrap(),
        "--from",
        "ACME <news@acme.example>",
        "--subject",
        "Hi {{ name }}",
        "--text",
        body.to_str().unwrap(),
        "--request-id",
        "csv-run",
        "--part-size",
        "2000",
    ];
    let (code, out) = p.cli(&args);
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["recipients"].as_u64(), r["parts"].as_u64()),
        (Some(N as u64), Some(3))
    );
    let s = p.wait_complete("csv-run", Duration::from_secs(180)).await;
    assert_eq!((s.parts_done, s.sent), (3, N as u64));
    let mail = p.sink().received();
    let one = mail
        .iter()
        .find(|m| m.rcpt[0] == "user7@example.com")
        .unwrap();
    assert!(one.body.contains("Plan p1, User 7."), "{}", one.body);

    // Re-running the same submission sends nothing more.
    let (code, _) = p.cli(&args);
    assert_eq!(code, 0);
    wait_for("the replayed parts", Duration::from_secs(60), || async {
        (p.metric("expander", "mailpipe_requests_total{outcome=\"replayed\"}")
            .await
            >= 3.0)
            .then_some(())
    })
    .await;
    p.stop_worker("sender").await;
    assert_eq!(p.sink().count(), N);
    p.shutdown().await;
}

/// Every Redis key under the pipeline's prefix.
async fn redis_keys(p: &TestPipeline) -> std::collections::BTreeSet<String> {
    let mut c = p.store.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", p.settings.redis.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    keys.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_given_an_unknown_id_exits_3_and_writes_nothing() {
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
    // A known request, so that the keyspace is not empty to begin with.
    p.publish_json(&request("known", &["a"])).await;
    let mut p = p;
    p.start_worker("expander");
    p.wait_expanded("known").await;
    p.stop_worker("expander").await;
    let before = redis_keys(&p).await;
    assert!(!before.is_empty());
    let unknown_message = message_id("nosuchreq", "a@example.com");
    let commands: Vec<Vec<&str>> = vec![
        vec!["status", "nosuchreq"],
        vec!["status", "--watch", "nosuchreq"],
        vec!["queue", "show", &unknown_message],
        vec!["queue", "remove", &unknown_message, "--yes"],
        vec!["queue", "release", &unknown_message, "--yes"],
        vec![
            "queue",
            "remove",
            "--request",
            "nosuchreq",
            "a@example.com",
            "--yes",
        ],
        vec!["queue", "purge", "--campaign", "nosuchreq", "--yes"],
        vec!["queue", "flush", "--campaign", "nosuchreq"],
        vec!["campaign", "hold", "nosuchreq"],
        vec!["campaign", "recipients", "nosuchreq"],
        vec!["campaign", "release", "nosuchreq"],
        vec!["campaign", "cancel", "nosuchreq", "--yes"],
        vec!["campaign", "recount", "nosuchreq", "--apply"],
        vec!["quarantine", "show", "nobody@example.com"],
        vec!["quarantine", "remove", "nobody@example.com", "--yes"],
        vec!["denylist", "remove", "nobody@example.com"],
        vec!["allowlist", "remove", "nobody@example.com"],
        vec!["bounces", "show", "0123456789abcdef"],
        vec!["bounces", "reset", "0123456789abcdef"],
        vec!["bounces", "ignore", "0123456789abcdef"],
        vec![
            "bounces",
            "qualify",
            "0123456789abcdef",
            "--type",
            "hard",
            "--reason",
            "user_unknown",
        ],
    ];
    for c in &commands {
        for json in [false, true] {
            let mut args = if json { vec!["--json"] } else { vec![] };
            args.extend(c.iter().copied());
            let (code, out) = p.cli(&args);
            assert_eq!(code, 3, "{args:?} exited {code}: {out}");
            assert_eq!(
                redis_keys(&p).await,
                before,
                "{args:?} wrote to Redis for an unknown id"
            );
        }
    }
    // Nor was any queue declared for it.
    assert!(!p.queue_exists("held.nosuchreq").await);
    // The id stays free: submitting it later sends to everyone.
    let mut p = p;
    p.start_worker("expander");
    p.publish_json(&request("nosuchreq", &["a", "b"])).await;
    p.wait_expanded("nosuchreq").await;
    let s = p.status("nosuchreq").await;
    assert_eq!(
        s.removed, 0,
        "a purge of the unknown id cancelled it ahead of time"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_binaries_answer_help_and_version_without_starting() {
    let version = mailpipe_common::metrics::this_version();
    for name in [
        "mailpipe-expander",
        "mailpipe-sender",
        "mailpipe-retrier",
        "mailpipe-intake",
    ] {
        for (arg, code, expect) in [
            ("--help", 0, "Usage:"),
            ("--version", 0, version.as_str()),
            ("--bogus", 2, "unexpected argument"),
        ] {
            // Pointed at a broker that does not exist: a worker that started
            // instead of answering would retry it forever.
            let mut child = std::process::Command::new(mailpipe_tests::binary(name))
                .arg(arg)
                .env("MAILPIPE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
                .env("MAILPIPE__REDIS__URL", "redis://127.0.0.1:1/")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let started = std::time::Instant::now();
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break Some(s);
                }
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let status =
                status.unwrap_or_else(|| panic!("{name} {arg} started instead of exiting: {text}"));
            assert_eq!(status.code(), Some(code), "{name} {arg}: {text}");
            assert!(text.contains(expect), "{name} {arg}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_checks_the_request_locally_and_dry_run_publishes_nothing() {
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
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "Hello {{ name }}, plan {{ plan }}.").unwrap();
    let csv = dir.path().join("people.csv");
    std::fs::write(
        &csv,
        "email,name,plan\nann@example.com,Ann,gold\nnot-an-address,Bob,silver\ncid@example.com,Cid,free\n",
    )
    .unwrap();
    let submit = |extra: &[&str], csv: &std::path::Path| {
        let mut args = vec![
            "submit",
            "--csv",
            csv.to_str().unwrap(),
            "--from",
            "ACME <news@acme.example>",
            "--text",
            body.to_str().unwrap(),
            "--request-id",
            "checked",
        ];
        args.extend_from_slice(extra);
        p.cli(&args)
    };
    // A subject template that does not compile: refused here (exit 2).
    let (code, out) = submit(&["--subject", "Hi {{ name"], &csv);
    assert_eq!(code, 2, "{out}");
    // --dry-run renders the first messages and names the bad address.
    let (code, out) = submit(&["--subject", "Hi {{ name }}", "--dry-run"], &csv);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("To: ann@example.com"), "{out}");
    assert!(out.contains("Subject: Hi Ann"), "{out}");
    assert!(out.contains("Hello Ann, plan gold."), "{out}");
    assert!(out.contains("not-an-address"), "{out}");
    assert!(out.contains("1 would be excluded"), "{out}");
    // A CSV with only its header is not a campaign of 0.
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "email,name\n").unwrap();
    let (code, out) = submit(&["--subject", "Hi"], &empty);
    assert_eq!(code, 2, "{out}");
    // Nothing was published by any of these.
    assert_eq!(p.queue_depth("requests").await, 0);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_and_the_retriers_sweep_at_once_move_each_parked_message_once_and_keep_both_on_the_broker(
) {
    use mailpipe_common::amqp;
    use mailpipe_state::queue_ops::QueueOps;
    // No sender and no retrier: this test plays both the operator's
    // `campaign release` and the retrier's sweep, on the same parking queue
    // at the same moment, as happens when an operator releases a campaign.
    let p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: false,
        },
        |_| {},
    )
    .await;
    let rid = "swept-twice";
    let n = 60;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    p.wait_expanded(rid).await;
    let mut jobs = p.drain_jobs("send.bulk").await;
    assert_eq!(jobs.len(), n);
    let connect = |name: &'static str| {
        let settings = p.settings.amqp.clone();
        async move {
            let conn = amqp::connect_once(&settings, name).await.expect("RabbitMQ");
            let ch = amqp::channel(&conn, None).await.expect("channel");
            (conn, ch)
        }
    };
    let (c1, ch1) = connect("test-release").await;
    let (c2, ch2) = connect("test-sweep").await;
    for round in 0..12u64 {
        // Park every job, one message each, as senders do for a held campaign.
        p.topology.declare_held(&ch1, rid).await.unwrap();
        for j in &jobs {
            amqp::publish_confirmed(
                &ch1,
                &p.topology.exchange(),
                &format!("held.{rid}"),
                &serde_json::to_vec(j).unwrap(),
                amqp::properties(),
            )
            .await
            .unwrap();
        }
        p.store.mark_parked(rid).await.unwrap();
        let a = QueueOps {
            conn: &c1,
            channel: &ch1,
            store: &p.store,
            topology: &p.topology,
        };
        let b = QueueOps {
            conn: &c2,
            channel: &ch2,
            store: &p.store,
            topology: &p.topology,
        };
        // The second starts a little later each round, so that over the
        // rounds it meets the first at every step: both draining, one
        // deleting while the other still takes messages.
        let (ra, rb) = tokio::join!(a.sweep_parked(rid), async {
            tokio::time::sleep(Duration::from_millis(round * 15)).await;
            b.sweep_parked(rid).await
        });
        let (ra, rb) = (
            ra.unwrap_or_else(|e| panic!("round {round}: release failed: {e:#}")),
            rb.unwrap_or_else(|e| panic!("round {round}: sweep failed: {e:#}")),
        );
        assert_eq!(
            ra.moved + rb.moved,
            n as u64,
            "round {round}: each parked message moves once ({ra:?}, {rb:?})"
        );
        assert!(
            ch1.status().connected() && ch2.status().connected(),
            "round {round}: a sweep lost the channel it publishes on"
        );
        assert!(
            c1.status().connected() && c2.status().connected(),
            "round {round}: a sweep lost its connection"
        );
        jobs = p.drain_jobs("send.bulk").await;
        assert_eq!(jobs.len(), n, "round {round}: every job back in its lane");
        // Whoever deleted last, the queue is gone and open for parking again.
        if p.store.parked().await.unwrap().is_empty() {
            assert!(!p.queue_exists(&format!("held.{rid}")).await);
        } else {
            // A sweep saw the other's messages still there: the next sweep
            // deletes it.
            a.sweep_parked(rid).await.unwrap();
            assert!(!p.queue_exists(&format!("held.{rid}")).await);
        }
        assert!(p.store.begin_parking(rid).await.unwrap());
        p.store.end_parking(rid).await.unwrap();
        p.store.unmark_parked(rid).await.unwrap();
    }
    let _ = c1.close(200, "ok".into()).await;
    let _ = c2.close(200, "ok".into()).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_requeued_by_the_operator() {
    let smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |_| {}).await;
    let rid = "dead-letters";
    // Two addresses the server refuses once with 550 5.1.1 (dead at once:
    // the user is unknown), and one it accepts.
    p.publish_json(&mailpipe_tests::request_for(
        rid,
        &["r550-1-a", "r550-1-b", "ok-0-c"],
    ))
    .await;
    let s = wait_for("two dead, one sent", Duration::from_secs(60), || async {
        let s = p.status(rid).await;
        (s.pending == 0 && s.parts_done == 1).then_some(s)
    })
    .await;
    assert_eq!(s.sent, 1);
    assert_eq!(s.dead.get("user_unknown"), Some(&2), "{:?}", s.dead);
    let (code, out) = p.cli(&["--json", "dead", "list", "--request", rid]);
    assert_eq!(code, 0, "{out}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(
        listed.iter().all(|r| r["reason"] == "user_unknown"),
        "{out}"
    );
    let (code, table) = p.cli(&["dead", "list", "--reason", "user_unknown"]);
    assert_eq!(code, 0);
    assert!(table.contains("r550-1-a@example.com"), "{table}");
    // The campaign's recipients, one by one, with their states and why.
    let (code, out) = p.cli(&["--json", "campaign", "recipients", rid]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let state_of = |r: &str| {
        rows.iter()
            .find(|x| x["recipient"] == r)
            .map(|x| x["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of("r550-1-a@example.com").as_deref(), Some("dead"));
    assert_eq!(state_of("ok-0-c@example.com").as_deref(), Some("sent"));
    let (code, out) = p.cli(&["campaign", "recipients", rid, "--state", "dead"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("5.1.1")).count(),
        2,
        "{out}"
    );
    let a = message_id(rid, "r550-1-a@example.com");
    let (code, out) = p.cli(&["dead", "show", &a]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5.1.1"), "{out}");
    // Unknown ids: exit 3, nothing requeued.
    let (code, _) = p.cli(&["dead", "show", "no-such-id"]);
    assert_eq!(code, 3);
    let (code, _) = p.cli(&["dead", "requeue", "no-such-id", "--yes"]);
    assert_eq!(code, 3);
    assert_eq!(p.status(rid).await.dead.get("user_unknown"), Some(&2));
    // Requeued, the message is tried again (the server now accepts it);
    // its dead state is lifted and its record leaves the queue.
    let (code, out) = p.cli(&["dead", "requeue", &a, "--yes"]);
    assert_eq!(code, 0, "{out}");
    let s = wait_for(
        "the requeued message to be sent",
        Duration::from_secs(60),
        || async {
            let s = p.status(rid).await;
            (s.sent == 2 && s.pending == 0).then_some(s)
        },
    )
    .await;
    assert_eq!(s.dead.get("user_unknown"), Some(&1), "{:?}", s.dead);
    assert_eq!(smtp.per_recipient().get("r550-1-a@example.com"), Some(&1));
    let (_, out) = p.cli(&["--json", "dead", "list", "--request", rid]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1, "{out}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_answers_json_that_parses_with_json_and_its_errors_too() {
    let smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |_| {}).await;
    let rid = "json-everywhere";
    p.publish_json(&mailpipe_tests::request_for(rid, &["ok-0-a", "r550-0-b"]))
        .await;
    p.wait_complete(rid, Duration::from_secs(60)).await;
    let sent = message_id(rid, "ok-0-a@example.com");
    let dead = message_id(rid, "r550-0-b@example.com");
    // Every command that reads, and a few that write, with --json: stdout
    // is one JSON document, exit code 0.
    let commands: Vec<Vec<&str>> = vec![
        vec!["status", rid],
        vec!["queue", "list"],
        vec!["queue", "list", "--deferred"],
        vec!["queue", "list", "--ambiguous"],
        vec!["queue", "summary"],
        vec!["queue", "summary", "--by", "campaign"],
        vec!["top", "--once", "--interval", "0.3"],
        vec!["queue", "show", &sent],
        vec!["queue", "flush"],
        vec!["campaign", "list"],
        vec!["campaign", "recipients", rid],
        vec!["campaign", "recount", rid],
        vec!["dead", "list"],
        vec!["dead", "show", &dead],
        vec!["quarantine", "list"],
        vec!["quarantine", "add", "q@example.com"],
        vec!["quarantine", "show", "q@example.com"],
        vec!["quarantine", "export"],
        vec!["denylist", "add", "d@example.com"],
        vec!["denylist", "check", "d@example.com"],
        vec!["denylist", "list"],
        vec!["allowlist", "list"],
        vec![
            "domain",
            "pause",
            "paused.example",
            "--for",
            "1m",
            "--reason",
            "provider asked us to slow down",
        ],
        vec!["domain", "limit", "paused.example", "--rate", "5/s"],
        vec!["domain", "limit", "paused.example", "--clear"],
        vec!["domain", "list"],
        vec!["domain", "show", "example.com"],
        vec!["domain", "resume", "paused.example"],
        vec![
            "site", "pause", "google", "--reason", "a test", "--for", "1m",
        ],
        vec!["site", "limit", "google", "--rate", "5/s"],
        vec!["site", "limit", "google", "--clear"],
        vec!["site", "list"],
        vec!["site", "show", "example.com"],
        vec!["site", "show", "google"],
        vec!["site", "resume", "google"],
        vec!["rules", "list"],
        vec!["bounces"],
        vec!["bounces", "--to-qualify"],
        vec!["bounces", "--unprocessed"],
    ];
    for c in &commands {
        let mut args = vec!["--json"];
        args.extend(c.iter().copied());
        let (code, out, err) = p.cli_full(&args);
        assert_eq!(code, 0, "{c:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("{c:?} printed no JSON ({e}):\n{out}"));
    }
    // Errors under --json: one JSON object with an error on stderr.
    for (c, expected) in [
        (vec!["status", "nosuchreq"], 3),
        (vec!["queue", "show", "nosuchmessage"], 3),
        (vec!["campaign", "recipients", "nosuchreq"], 3),
        (vec!["queue", "purge", "--all"], 2),
    ] {
        let mut args = vec!["--json"];
        args.extend(c.iter().copied());
        let (code, _, err) = p.cli_full(&args);
        assert_eq!(code, expected, "{c:?}: {err}");
        let line = err.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{c:?}: stderr is not JSON ({e}): {err}"));
        assert!(v["error"].is_string(), "{c:?}: {v}");
    }
    p.shutdown().await;
}

/// Replaces some of a request's counters, as a Redis that lost its last
/// writes would leave them.
async fn lose_counts(p: &TestPipeline, request: &str, fields: &[(&str, u64)]) {
    let mut c = p.store.connection();
    let key = format!("{}:req:{request}", p.settings.redis.prefix);
    for (f, n) in fields {
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(f)
            .arg(n)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_s_counts_are_rebuilt_from_its_messages_records_after_redis_lost_writes() {
    let p = TestPipeline::spawn().await;
    let locals: Vec<String> = (0..20).map(|i| format!("rc{i}")).collect();
    p.publish_json(&mailpipe_tests::request_for("recount", &locals))
        .await;
    let s = p.wait_complete("recount", Duration::from_secs(60)).await;
    assert_eq!(s.sent, 20, "{s:?}");

    // Redis lost the last writes: 7 sent counts, and it counts 2 dead
    // that never were. The campaign looks unfinished for ever.
    lose_counts(
        &p,
        "recount",
        &[("sent", 13), ("dead", 2), ("dead:user_unknown", 2)],
    )
    .await;
    let s = p.status("recount").await;
    assert_eq!((s.sent, s.pending), (13, 5), "{s:?}");

    // The recount shows the difference and writes nothing.
    let (code, out) = p.cli(&["--json", "campaign", "recount", "recount"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["differs"], true, "{v}");
    assert_eq!(v["applied"], false, "{v}");
    assert_eq!(v["stored"]["sent"], 13, "{v}");
    assert_eq!(v["stored"]["dead"]["user_unknown"], 2, "{v}");
    assert_eq!(v["recounted"]["sent"], 20, "{v}");
    assert_eq!(v["recounted"]["dead"], json!({}), "{v}");
    assert_eq!(v["pending"], 0, "{v}");
    assert_eq!(p.status("recount").await.sent, 13);
    let (_, text) = p.cli(&["campaign", "recount", "recount"]);
    assert!(
        text.contains("differs") && text.contains("--apply"),
        "{text}"
    );

    // Every recipient has its record: nothing can be recorded meanwhile,
    // so --apply replaces the counts and the campaign is complete again.
    let (code, out) = p.cli(&["--json", "campaign", "recount", "recount", "--apply"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["applied"], true, "{v}");
    let s = p.status("recount").await;
    assert_eq!((s.sent, s.pending), (20, 0), "{s:?}");
    assert!(s.dead.is_empty(), "{s:?}");
    assert!(s.is_complete(), "{s:?}");
    let (code, out) = p.cli(&["--json", "campaign", "recount", "recount"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"differs\": false"), "{out}");

    // An unknown request is an error that writes nothing.
    let (code, out) = p.cli(&["campaign", "recount", "no-such-request", "--apply"]);
    assert_eq!(code, 3, "{out}");
    let mut c = p.store.connection();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{}:req:no-such-request", p.settings.redis.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_still_sending_is_recounted_only_once_held() {
    // No sender: the campaign's messages wait in their lane, unrecorded.
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
    let locals: Vec<String> = (0..5).map(|i| format!("rs{i}")).collect();
    p.publish_json(&mailpipe_tests::request_for("sending", &locals))
        .await;
    p.wait_expanded("sending").await;
    lose_counts(&p, "sending", &[("sent", 3)]).await;

    // A record written between the reading and the writing would be lost
    // again: refused, nothing written.
    let (code, out, err) = p.cli_full(&["campaign", "recount", "sending", "--apply"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("campaign hold sending"), "{err}");
    assert_eq!(p.status("sending").await.sent, 3);

    // Held, it is recounted: nothing was sent, 5 are pending again.
    let (code, out) = p.cli(&["campaign", "hold", "sending"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = p.cli(&["--json", "campaign", "recount", "sending", "--apply"]);
    assert_eq!(code, 0, "{out}");
    let s = p.status("sending").await;
    assert_eq!((s.sent, s.pending), (0, 5), "{s:?}");
    p.shutdown().await;
}

//! What the workers export on `/metrics`: each its own families (no other
//! binary's as zeros), the build info and process metrics, the retrier's
//! view of the backlog (queue depths, retries overdue, paused domains, for
//! as long as the pause lasts) and the sender's lane entry times.

use std::time::Duration;

use mailpipe_state::policy::Policy;
use mailpipe_tests::{http_get, request_for, wait_for, TestPipeline, Workers};

/// The families a scrape exports (its `# TYPE` lines).
fn families(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The value of one series of a scrape (labels as Prometheus writes them:
/// sorted by name), if it is there.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A worker's /metrics (empty while it does not answer yet).
async fn scrape(listen: &str) -> String {
    http_get(listen, "/metrics").await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_exports_its_own_families_with_build_info_and_process_metrics() {
    let p = TestPipeline::spawn().await;
    let rid = "obs-families";
    let locals: Vec<String> = (0..5).map(|i| format!("user{i}")).collect();
    let mut request = request_for(rid, &locals);
    request["lane"] = "bulk".into();
    p.publish_json(&request).await;
    p.wait_complete(rid, Duration::from_secs(60)).await;

    let s = &p.settings;
    // Ready workers (the retrier has read the backlog once by then).
    for listen in [&s.expander.listen, &s.sender.listen, &s.retrier.listen] {
        wait_for(
            "the workers to be ready",
            Duration::from_secs(20),
            || async {
                http_get(listen, "/readyz")
                    .await
                    .filter(|b| b.starts_with("ready"))
            },
        )
        .await;
    }
    let expander = scrape(&s.expander.listen).await;
    let sender = scrape(&s.sender.listen).await;
    let retrier = scrape(&s.retrier.listen).await;
    // (family, exported by the expander, the sender, the retrier)
    let table = [
        ("mailpipe_requests_total", [true, false, false]),
        ("mailpipe_recipients_total", [true, false, false]),
        ("mailpipe_expand_seconds", [true, false, false]),
        ("mailpipe_mail_host_lookups_total", [true, false, false]),
        ("mailpipe_deliveries_total", [false, true, false]),
        ("mailpipe_smtp_transaction_seconds", [false, true, false]),
        ("mailpipe_route_transactions_total", [false, true, false]),
        ("mailpipe_in_flight_messages", [false, true, false]),
        ("mailpipe_domain_pauses_total", [false, true, false]),
        (
            "mailpipe_lane_entered_timestamp_seconds",
            [false, true, false],
        ),
        (
            "mailpipe_recipients_near_deadline_total",
            [false, true, false],
        ),
        ("mailpipe_retrier_decisions_total", [false, false, true]),
        ("mailpipe_queue_messages", [false, false, true]),
        ("mailpipe_queue_consumers", [false, false, true]),
        ("mailpipe_deferred_recipients", [false, false, true]),
        ("mailpipe_deferred_overdue_seconds", [false, false, true]),
        ("mailpipe_paused_domains", [false, false, true]),
        ("mailpipe_intake_mails_total", [false, false, false]),
        // What every process exports.
        ("mailpipe_dead_letters_total", [true, true, true]),
        ("mailpipe_build_info", [true, true, true]),
        ("mailpipe_broker_connected", [true, true, true]),
        ("mailpipe_broker_reconnects_total", [true, true, true]),
        ("mailpipe_redis_connected", [true, true, true]),
        ("process_cpu_seconds_total", [true, true, true]),
        ("process_resident_memory_bytes", [true, true, true]),
        ("process_start_time_seconds", [true, true, true]),
    ];
    let scrapes = [
        ("expander", families(&expander)),
        ("sender", families(&sender)),
        ("retrier", families(&retrier)),
    ];
    for (family, exported) in table {
        for ((worker, found), expected) in scrapes.iter().zip(exported) {
            assert_eq!(
                found.iter().any(|f| f == family),
                expected,
                "the {worker} {} {family}",
                if expected { "lacks" } else { "exports" }
            );
        }
    }
    // The build info names this version and a commit (or "unknown").
    let info = format!(
        "mailpipe_build_info{{commit=\"{}\",version=\"{}\"}}",
        mailpipe_common::metrics::COMMIT,
        env!("CARGO_PKG_VERSION")
    );
    for (worker, scrape) in [
        ("expander", &expander),
        ("sender", &sender),
        ("retrier", &retrier),
    ] {
        assert_eq!(value(scrape, &info), Some(1.0), "{worker}: {info}");
        assert!(
            value(scrape, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
            "{worker}: no resident memory"
        );
    }
    // The sender took the request's lane message: it entered the lane
    // when the request was accepted, less than a minute ago. Nothing was
    // taken from the other lane.
    let entered = |lane: &str| {
        value(
            &sender,
            &format!("mailpipe_lane_entered_timestamp_seconds{{lane=\"{lane}\"}}"),
        )
    };
    let now = mailpipe_common::unix_now() as f64;
    let bulk = entered("bulk").expect("the bulk lane's entry time");
    assert!(
        bulk > now - 60.0 && bulk <= now,
        "bulk lane entry time {bulk}, now {now}"
    );
    assert_eq!(entered("transactional"), Some(0.0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrier_exports_the_backlog_and_a_paused_domain_for_as_long_as_its_pause() {
    // No sender: what the expander publishes stays in its lane.
    let workers = Workers {
        expander: true,
        sender: false,
        retrier: true,
    };
    let p = TestPipeline::spawn_with(mailpipe_tests::SmtpSink::start(), workers, |s| {
        s.expander.jobs_per_message = 10;
        s.retrier.backlog_interval = Duration::from_millis(100);
    })
    .await;
    let retrier = p.settings.retrier.listen.clone();
    let gauge = |series: &'static str| {
        let retrier = retrier.clone();
        async move { value(&scrape(&retrier).await, series) }
    };
    let lane = "mailpipe_queue_messages{lane=\"bulk\",queue=\"send.bulk\"}";
    // Sampled before the retrier is ready: the lane is there, empty.
    wait_for(
        "the retrier's first sample",
        Duration::from_secs(20),
        || async { (gauge(lane).await == Some(0.0)).then_some(()) },
    )
    .await;
    // 25 recipients in lane messages of 10: three messages in the lane.
    let locals: Vec<String> = (0..25).map(|i| format!("user{i}")).collect();
    let mut request = request_for("obs-backlog", &locals);
    request["lane"] = "bulk".into();
    p.publish_json(&request).await;
    p.wait_expanded("obs-backlog").await;
    wait_for(
        "three messages in the bulk lane",
        Duration::from_secs(10),
        || async { (gauge(lane).await == Some(3.0)).then_some(()) },
    )
    .await;
    // Every other queue is sampled too, the delay tiers by lane.
    let all = scrape(&retrier).await;
    for series in [
        "mailpipe_queue_messages{lane=\"\",queue=\"requests\"}",
        "mailpipe_queue_messages{lane=\"\",queue=\"failed\"}",
        "mailpipe_queue_messages{lane=\"\",queue=\"dead\"}",
        "mailpipe_queue_messages{lane=\"\",queue=\"held\"}",
        "mailpipe_queue_messages{lane=\"transactional\",queue=\"send.transactional\"}",
        "mailpipe_queue_messages{lane=\"bulk\",queue=\"retry.200ms.bulk\"}",
    ] {
        assert_eq!(value(&all, series), Some(0.0), "{series}");
    }
    // The expander consumes the requests; the retrier the failures.
    for queue in ["requests", "failed"] {
        let series = format!("mailpipe_queue_consumers{{lane=\"\",queue=\"{queue}\"}}");
        assert_eq!(value(&all, &series), Some(1.0), "{series}");
    }
    assert_eq!(
        value(
            &all,
            "mailpipe_queue_consumers{lane=\"bulk\",queue=\"send.bulk\"}"
        ),
        Some(0.0)
    );

    // A retry due two minutes ago that no sender took: two minutes
    // overdue. One due ten minutes ago whose message ended without a sender
    // taking it (it has a terminal record) is dropped from the index.
    let now = mailpipe_common::unix_now();
    for (id, due) in [("obs-overdue", now - 120), ("obs-ended", now - 600)] {
        p.store
            .index_deferred(
                &mailpipe_state::store::Deferral {
                    message: id.into(),
                    request: "obs-backlog".into(),
                    why: "retry".into(),
                    domain: "example.com".into(),
                    due,
                    info: serde_json::json!({}),
                },
                Some(&serde_json::json!({"at": now})),
                Duration::from_secs(600),
            )
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg(format!("{}:done:obs-ended", p.settings.redis.prefix))
        .arg("{}")
        .query_async(&mut p.store.connection())
        .await
        .unwrap();
    let overdue = wait_for("the overdue retry", Duration::from_secs(10), || async {
        gauge("mailpipe_deferred_overdue_seconds")
            .await
            .filter(|v| *v >= 120.0)
    })
    .await;
    assert!(overdue < 180.0, "overdue {overdue}");
    assert_eq!(gauge("mailpipe_deferred_recipients").await, Some(1.0));

    // A domain paused for three hours is exported with the end of its
    // pause until it is resumed; a pause that ran out goes by itself.
    let policy = Policy::new(p.store.clone());
    policy
        .pause(
            "example.com",
            Duration::from_secs(3 * 3600),
            "operator",
            None,
        )
        .await
        .unwrap();
    policy
        .pause("short.example", Duration::from_secs(1), "operator", None)
        .await
        .unwrap();
    let paused = "mailpipe_domain_paused_until_seconds{by=\"operator\",domain=\"example.com\"}";
    let until = wait_for("the paused domain", Duration::from_secs(10), || async {
        gauge(paused).await
    })
    .await;
    let end = (mailpipe_common::unix_now() + 3 * 3600) as f64;
    assert!(
        (end - 5.0..=end).contains(&until),
        "until {until}, end {end}"
    );
    wait_for(
        "the short pause to end",
        Duration::from_secs(10),
        || async {
            let s = scrape(&retrier).await;
            (!s.contains("domain=\"short.example\"")
                && value(&s, "mailpipe_paused_domains") == Some(1.0))
            .then_some(())
        },
    )
    .await;
    assert!(gauge(paused).await.is_some(), "example.com is still paused");
    policy.resume("example.com").await.unwrap();
    wait_for(
        "the resumed domain to go",
        Duration::from_secs(10),
        || async {
            let s = scrape(&retrier).await;
            (value(&s, "mailpipe_paused_domains") == Some(0.0)
                && !s.contains("mailpipe_domain_paused_until_seconds{"))
            .then_some(())
        },
    )
    .await;
    p.shutdown().await;
}

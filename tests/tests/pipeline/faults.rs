//! Crashes, restarts, outages and hostile input lose nothing.
//!
//! Each outage scenario runs a campaign, takes something away in the middle
//! of it (the broker, Redis, the SMTP relay, the sender with SIGTERM), gives
//! it back, and then checks, from the files the SMTP server wrote, that
//! every valid recipient received exactly one message, that Redis counts
//! them all as sent, and prints the duplicates it saw. The broker and Redis
//! taken away are private instances ([`PrivateRabbit`], [`PrivateRedis`]),
//! never the machine's shared ones.
//!
//! The hostile-input scenario replays the corpus in `tests/hostile/`
//! (described in its README and `expected.json`).
//!
//! Over 500 lines: one theme's scenarios (each outage in turn, and hostile
//! input), kept together.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mailpipe_common::classify::Failure;
use mailpipe_common::message::FailedJob;
use mailpipe_state::store::RequestStatus;
use mailpipe_tests::faults::{
    blocking, check_delivered, duplicates, http_status, publish_raw, PrivateRabbit, PrivateRedis,
    WorkerProcess,
};
use mailpipe_tests::{sample_request, wait_for, SmtpSink, TestPipeline, Workers};
use secrecy::SecretString;
use serde_json::Value;

/// Recipients of the outage campaigns. Big enough that the outage lands in
/// the middle of the sending (a few seconds of work here) with hundreds of
/// messages in flight or queued on each side of it; small enough for the
/// 2-core CI machine (the 10,000 and 20,000 recipient runs live in
/// `end_to_end`).
const CAMPAIGN: usize = 3_000;

/// Longest any campaign may take to finish after its fault was repaired.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(150);

/// The addresses of [`sample_request`].
fn addresses(n: usize, domain: &str) -> BTreeSet<String> {
    (0..n).map(|i| format!("user{i}@{domain}")).collect()
}

/// Like [`TestPipeline::wait_complete`], but tolerates Redis errors (the
/// scenario's Redis may just have come back).
async fn wait_complete(p: &TestPipeline, rid: &str, timeout: Duration) -> RequestStatus {
    wait_for(&format!("request {rid} to complete"), timeout, || async {
        let s = p.store.request_status(rid).await.ok()?;
        let parts = s.meta.as_ref().map(|m| m.parts_total).unwrap_or(u32::MAX);
        (s.parts_done >= parts && s.pending == 0).then_some(s)
    })
    .await
}

/// Waits until the SMTP server holds at least `n` messages.
async fn wait_received(count: impl Fn() -> usize, n: usize, timeout: Duration) -> usize {
    wait_for(
        &format!("{n} messages at the SMTP server"),
        timeout,
        || async {
            let c = count();
            (c >= n).then_some(c)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_campaign_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let mut rabbit = blocking(PrivateRabbit::start);
    let mut p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.amqp.url = SecretString::from(rabbit.url());
    })
    .await;
    // The scenario takes the broker (or Redis) away: reconnects are its point.
    p.expect_reconnects();
    let rid = "faults-rabbit-restart";
    let n = CAMPAIGN;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let at_stop = wait_received(|| p.sink().count(), n / 3, Duration::from_secs(90)).await;
    assert!(at_stop < n, "the campaign finished before the restart");

    let restart = Instant::now();
    blocking(|| rabbit.restart());
    let took = restart.elapsed();
    eprintln!(
        "broker restarted after {at_stop} of {n} messages; down for {took:.1?} (start {:.1?})",
        rabbit.last_start
    );

    // No manual step: the workers reconnect, re-declare and resume.
    let status = wait_complete(&p, rid, COMPLETE_TIMEOUT).await;
    let per = wait_for(
        "every message at the server",
        Duration::from_secs(30),
        || async {
            let per = p.sink().per_recipient();
            (per.len() >= n).then_some(per)
        },
    )
    .await;
    check_delivered(
        "rabbitmq restart",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
        0,
    );
    // The lanes and the failure queue are empty: nothing is stuck.
    for key in ["send.bulk", "failed", "requests"] {
        assert_eq!(p.queue_depth(key).await, 0, "{key} is not empty");
    }
    p.shutdown().await;
    blocking(|| rabbit.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_killed_mid_campaign_loses_nothing() {
    // The crash variant: SIGKILL of the whole node, no clean shutdown.
    let started = Instant::now();
    let mut rabbit = blocking(PrivateRabbit::start);
    let mut p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.amqp.url = SecretString::from(rabbit.url());
    })
    .await;
    // The scenario takes the broker (or Redis) away: reconnects are its point.
    p.expect_reconnects();
    let rid = "faults-rabbit-kill";
    let n = CAMPAIGN;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let at_kill = wait_received(|| p.sink().count(), n / 3, Duration::from_secs(90)).await;
    assert!(at_kill < n, "the campaign finished before the kill");
    blocking(|| {
        rabbit.kill();
        std::thread::sleep(Duration::from_secs(2));
        rabbit.start_again();
    });
    eprintln!("broker killed after {at_kill} of {n} messages and started again");
    let status = wait_complete(&p, rid, COMPLETE_TIMEOUT).await;
    let per = wait_for(
        "every message at the server",
        Duration::from_secs(30),
        || async {
            let per = p.sink().per_recipient();
            (per.len() >= n).then_some(per)
        },
    )
    .await;
    check_delivered(
        "rabbitmq kill -9",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
        0,
    );
    p.shutdown().await;
    blocking(|| rabbit.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_campaign_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let mut redis = blocking(PrivateRedis::start);
    let mut p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.redis.url = Some(SecretString::from(redis.url()));
    })
    .await;
    // The scenario takes the broker (or Redis) away: reconnects are its point.
    p.expect_reconnects();
    let ready = p.settings.sender.listen.clone();
    let rid = "faults-redis-restart";
    let n = CAMPAIGN;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    wait_for(
        "the sender to be ready",
        Duration::from_secs(30),
        || async { (http_status(&ready, "/readyz").await == Some(200)).then_some(()) },
    )
    .await;
    let at_stop = wait_received(|| p.sink().count(), n / 3, Duration::from_secs(90)).await;
    assert!(at_stop < n, "the campaign finished before Redis stopped");

    blocking(|| redis.stop());
    let down = Instant::now();
    let at_down = p.sink().count();
    // Readiness goes false: the sender will not send without its
    // idempotency check.
    wait_for(
        "the sender's /readyz to fail while Redis is down",
        Duration::from_secs(15),
        || async { (http_status(&ready, "/readyz").await != Some(200)).then_some(()) },
    )
    .await;
    let not_ready_after = down.elapsed();
    let at_not_ready = p.sink().count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = p.sink().count() - at_down;
    assert_eq!(
        http_status(&ready, "/readyz").await,
        Some(503),
        "still not ready while Redis is down"
    );
    // At most the transactions that had their lease before Redis went away
    // may complete; nothing new is started.
    let in_flight =
        p.settings.sender.bulk_concurrency + p.settings.sender.transactional_concurrency;
    assert!(
        during <= in_flight,
        "{during} messages were sent while Redis was down (at most {in_flight} were in flight)"
    );
    eprintln!(
        "Redis stopped after {at_stop} of {n} messages ({at_down} when it was down); /readyz failed \
         after {not_ready_after:.1?}; {during} messages completed while down ({} after /readyz failed)",
        p.sink().count() - at_not_ready
    );

    blocking(|| redis.start_again());
    wait_for(
        "the sender's /readyz to recover after Redis came back",
        Duration::from_secs(30),
        || async { (http_status(&ready, "/readyz").await == Some(200)).then_some(()) },
    )
    .await;
    let status = wait_complete(&p, rid, COMPLETE_TIMEOUT).await;
    let per = p.sink().per_recipient();
    check_delivered(
        "redis restart",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
        0,
    );
    assert_eq!(http_status(&ready, "/readyz").await, Some(200));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_does_not_drop_failures_waiting_for_the_retrier() {
    // The retrier needs Redis for every failure it handles (qualification
    // table, quarantine counters, terminal records). A failure that arrives
    // while Redis is away (a sender whose SMTP transaction failed as Redis
    // went down publishes it without Redis) must wait for Redis, not be
    // bounced through the failure queue's delivery limit and dead-lettered
    // by the broker, which would leave the message pending forever.
    let started = Instant::now();
    let mut redis = blocking(PrivateRedis::start);
    let mut p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: true,
        },
        |s| {
            s.redis.url = Some(SecretString::from(redis.url()));
            // Production default is 10; a small limit keeps the outage short.
            s.amqp.delivery_limit = 3;
        },
    )
    .await;
    p.expect_reconnects();
    let rid = "faults-redis-retrier";
    let n = 4;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    p.wait_expanded(rid).await;
    let jobs = p.drain_jobs("send.bulk").await;
    assert_eq!(jobs.len(), n);

    blocking(|| redis.stop());
    // Each job's first attempt was greylisted, as the sender reports it.
    let failure = Failure::from_reply_text("451 4.7.1 Greylisted, please try again later");
    for job in jobs {
        let failed = FailedJob {
            v: 1,
            job,
            failure: failure.clone(),
            route: "default".into(),
            at: mailpipe_common::unix_now(),
            // As a sender that did not carry it yet: the retrier classifies.
            classification: None,
        };
        publish_raw(&p, "failed", &serde_json::to_vec(&failed).unwrap()).await;
    }
    // Long enough for a retrier that returns each failure to the queue
    // every 500 ms to exceed the delivery limit several times over.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let dead_meanwhile = p.drain_queue("dead").await;
    blocking(|| redis.start_again());
    p.start_worker("sender");
    eprintln!(
        "{} of {n} failures dead-lettered during a 10 s Redis outage: {:?}",
        dead_meanwhile.len(),
        dead_meanwhile
            .iter()
            .map(|d| d.get("job").map(|j| j["to"].clone()).unwrap_or(d.clone()))
            .collect::<Vec<_>>()
    );
    assert!(
        dead_meanwhile.is_empty(),
        "{} failure(s) were dead-lettered by the broker while Redis was down; their messages will never be retried",
        dead_meanwhile.len()
    );
    let status = wait_complete(&p, rid, Duration::from_secs(60)).await;
    let per = p.sink().per_recipient();
    check_delivered(
        "redis outage, retrier",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
        0,
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_server_stopped_mid_campaign_defers_and_loses_nothing() {
    let started = Instant::now();
    let mut sink = SmtpSink::start();
    let p = TestPipeline::spawn_for_port(sink.port, Workers::ALL, |s| {
        // Relay unreachable is a routing failure: tests retry it every
        // 400 ms; enough attempts to outlast the outage (production retries
        // it for 39 hours).
        s.retrier.policies.routing.schedule = vec![Duration::from_millis(400)];
        s.retrier.policies.routing.max_attempts = 1_000;
    })
    .await;
    let rid = "faults-smtp-outage";
    let n = CAMPAIGN;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let at_stop = wait_received(|| sink.count(), n / 3, Duration::from_secs(90)).await;
    assert!(at_stop < n, "the campaign finished before the outage");
    sink.stop();
    // Messages fail and wait in the retry tiers meanwhile.
    wait_for(
        "failed attempts during the outage",
        Duration::from_secs(30),
        || async { (p.status(rid).await.failed_attempts >= 50).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = p.status(rid).await;
    eprintln!(
        "SMTP server stopped after {at_stop} of {n} messages; {} failed attempts during the outage",
        during.failed_attempts
    );
    assert!(
        during.dead.is_empty(),
        "messages died during the outage: {:?}",
        during.dead
    );
    sink.restart();
    let status = wait_complete(&p, rid, COMPLETE_TIMEOUT).await;
    // A message the server was receiving when it was killed may have left a
    // partial file; only complete messages count as delivered.
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    let mut partial = 0;
    for mail in sink.received() {
        let complete = mail.body.contains("Your code is");
        for r in mail.rcpt {
            if complete {
                *per.entry(r.to_ascii_lowercase()).or_default() += 1;
            } else {
                partial += 1;
            }
        }
    }
    if partial > 0 {
        eprintln!("{partial} partial message file(s) from the killed server ignored");
    }
    check_delivered(
        "smtp outage",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
        0,
    );
    p.shutdown().await;
}

/// How long a sender may take to stop after SIGTERM (well inside
/// Kubernetes' default 30 s grace period).
const SIGTERM_DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_sender_within_the_deadline_and_the_campaign_completes() {
    let started = Instant::now();
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
    let rid = "faults-sigterm";
    let n = CAMPAIGN;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let mut first = WorkerProcess::spawn(&p, "mailpipe-sender", &[]);
    let at_term = wait_received(|| p.sink().count(), n / 3, Duration::from_secs(90)).await;
    assert!(at_term < n, "the campaign finished before SIGTERM");
    let term = Instant::now();
    first.sigterm();
    let status = first.wait_exit(SIGTERM_DEADLINE);
    let took = term.elapsed();
    let log = first.log();
    let events: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("INFO"))
        .collect();
    eprintln!(
        "SIGTERM after {at_term} of {n} messages; exit {status:?} after {took:.1?}; sender log:\n{}",
        events.join("\n")
    );
    let Some(status) = status else {
        panic!("the sender did not exit within {SIGTERM_DEADLINE:?} of SIGTERM");
    };
    assert!(
        status.success(),
        "the sender exited with {status} after SIGTERM"
    );
    // A graceful stop is not an error: nothing at ERROR in the log (the
    // broker client logged "invalid channel state: Closing" at every stop,
    // its channels closing themselves beside the connection's close).
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "the sender logged errors running and stopping: {errors:#?}"
    );
    // Nothing sends while no sender runs.
    let after_exit = p.sink().count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(p.sink().count(), after_exit);

    let metrics = format!("127.0.0.1:{}", mailpipe_tests::free_port());
    let _second = WorkerProcess::spawn(
        &p,
        "mailpipe-sender",
        &[("MAILPIPE__SENDER__LISTEN", metrics.as_str())],
    );
    let done = wait_complete(&p, rid, COMPLETE_TIMEOUT).await;
    let per = p.sink().per_recipient();
    // Messages the second sender received that were already sent: the
    // in-flight work the first one finished but did not ack.
    let body = mailpipe_tests::http_get(&metrics, "/metrics")
        .await
        .unwrap_or_default();
    let redelivered_done: f64 = body
        .lines()
        .filter(|l| {
            l.starts_with("mailpipe_deliveries_total") && l.contains("outcome=\"duplicate\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let unsettled = log.matches("delivery not settled").count();
    eprintln!(
        "after SIGTERM: {unsettled} in-flight deliveries not acked by the stopping sender; \
         {redelivered_done} already-sent messages redelivered to its successor"
    );
    check_delivered(
        "sigterm",
        &per,
        &addresses(n, "example.com"),
        &done,
        started,
        0,
    );
    // A graceful stop finishes in-flight work: it acks what it sent, so
    // its successor gets none of it again. (Whether the failed acks are
    // logged as "delivery not settled" depends on timing; the redelivery is
    // what counts.)
    assert_eq!(
        redelivered_done, 0.0,
        "{redelivered_done} messages sent before SIGTERM were redelivered to the next sender"
    );
    p.shutdown().await;
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

const HOSTILE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hostile");

/// `expander.max_request_bytes` in the hostile-input test: every corpus
/// file is below it, the generated oversized request above.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The payload a dead-letter record keeps of a refused request.
fn kept_payload(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_is_answered_and_the_pipeline_keeps_serving() {
    let started = Instant::now();
    let expected: BTreeMap<String, Value> = serde_json::from_slice(
        &std::fs::read(format!("{HOSTILE_DIR}/expected.json")).expect("expected.json"),
    )
    .expect("expected.json is a JSON object");
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in std::fs::read_dir(HOSTILE_DIR).expect("tests/hostile") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "expected.json" || name == "README.md" {
            continue;
        }
        files.insert(name, std::fs::read(&path).unwrap());
    }
    let unlisted: Vec<_> = files
        .keys()
        .filter(|f| !expected.contains_key(*f))
        .collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|f| !files.contains_key(*f))
        .collect();
    assert!(
        unlisted.is_empty(),
        "corpus files without an expected outcome: {unlisted:?}"
    );
    assert!(
        missing.is_empty(),
        "expected outcomes without a file: {missing:?}"
    );

    let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.expander.max_request_bytes = MAX_REQUEST_BYTES;
    })
    .await;

    // The corpus, then an oversized request, then a valid one.
    for (name, body) in &files {
        assert!(
            body.len() < MAX_REQUEST_BYTES,
            "{name} is too large for this test"
        );
        p.publish_request(body).await;
    }
    let oversized =
        serde_json::to_vec(&sample_request("hostile-oversized", 2_000, "example.com")).unwrap();
    assert!(oversized.len() > MAX_REQUEST_BYTES);
    p.publish_request(&oversized).await;
    p.publish_json(&sample_request("hostile-after", 20, "after.example"))
        .await;

    // The pipeline kept serving.
    let after = p
        .wait_complete("hostile-after", Duration::from_secs(120))
        .await;
    assert_eq!(after.sent, 20);

    // Request-level refusals, matched to their file by the kept payload.
    let mut by_payload: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, body) in &files {
        if let Some(reason) = expected[name].get("dead").and_then(Value::as_str) {
            by_payload.insert(kept_payload(body), (name.clone(), reason.to_string()));
        }
    }
    by_payload.insert(
        kept_payload(&oversized),
        ("<generated oversized>".into(), "oversized_request".into()),
    );
    let mut message_dead_expected = 0u64;
    for case in expected.values() {
        if let Some(dead) = case.get("dead").and_then(Value::as_object) {
            message_dead_expected += dead.values().filter_map(Value::as_u64).sum::<u64>();
        }
    }
    // Per-recipient cases complete (every recipient sent, excluded or dead).
    let mut statuses = BTreeMap::new();
    for (name, case) in &expected {
        if let Some(rid) = case.get("request_id").and_then(Value::as_str) {
            let s = wait_for(
                &format!("{name} ({rid}) to complete"),
                Duration::from_secs(120),
                || async {
                    let s = p.status(rid).await;
                    (s.meta.is_some() && s.parts_done >= 1 && s.pending == 0).then_some(s)
                },
            )
            .await;
            statuses.insert(name.clone(), s);
        }
    }
    let total_dead = by_payload.len() as u64 + message_dead_expected;
    // Wait for every record, but go on after a while to report which are
    // missing instead of only that some are.
    let waiting = Instant::now();
    let mut depth = p.queue_depth("dead").await as u64;
    while depth < total_dead && waiting.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        depth = p.queue_depth("dead").await as u64;
    }
    let records = p.drain_queue("dead").await;

    let mut failures: Vec<String> = Vec::new();
    let mut seen_request_level: BTreeMap<String, String> = BTreeMap::new();
    let mut message_dead: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &records {
        let reason = r["reason"].as_str().unwrap_or("<none>").to_string();
        match (r["request"].as_str(), r["payload"].as_str()) {
            (Some(rid), _) if r.get("job").is_some() => {
                *message_dead.entry((rid.to_string(), reason)).or_default() += 1;
            }
            (_, Some(payload)) => match by_payload.get(payload) {
                Some((name, want)) => {
                    if &reason != want {
                        failures.push(format!(
                            "{name}: dead-lettered as {reason}, expected {want} ({})",
                            r["detail"]
                        ));
                    }
                    if r["detail"].as_str().unwrap_or_default().is_empty() {
                        failures.push(format!("{name}: dead-letter record has no detail"));
                    }
                    seen_request_level.insert(name.clone(), reason);
                }
                None => failures.push(format!(
                    "a dead-letter record matches no corpus file: {reason}: {} (payload {:.120})",
                    r["detail"], payload
                )),
            },
            _ => failures.push(format!("unexpected dead-letter record: {r}")),
        }
    }
    for (name, _) in by_payload.values() {
        if !seen_request_level.contains_key(name) {
            let rid_note = files
                .get(name)
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v["request_id"].as_str().map(str::to_string));
            let outcome = match &rid_note {
                Some(rid) => format!("{:?}", p.status(rid).await),
                None => "no record".into(),
            };
            failures.push(format!(
                "{name}: no dead-letter record (expected {}); {outcome}",
                by_payload
                    .values()
                    .find(|(n, _)| n == name)
                    .map(|(_, r)| r.as_str())
                    .unwrap_or("?")
            ));
        }
    }

    // Per-recipient outcomes.
    let per = p.sink().per_recipient();
    for (name, status) in &statuses {
        let case = &expected[name];
        let rid = case["request_id"].as_str().unwrap();
        let want_u64 = |k: &str| case.get(k).and_then(Value::as_u64);
        let want_map = |k: &str| -> BTreeMap<String, u64> {
            case.get(k)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(n) = want_u64("recipients") {
            if status.recipients != n {
                failures.push(format!(
                    "{name}: {} recipients counted, expected {n}",
                    status.recipients
                ));
            }
        }
        if let Some(n) = want_u64("sent") {
            if status.sent != n {
                failures.push(format!("{name}: sent {}, expected {n}", status.sent));
            }
        }
        if status.excluded != want_map("excluded") {
            failures.push(format!(
                "{name}: excluded {:?}, expected {:?}",
                status.excluded,
                want_map("excluded")
            ));
        }
        if status.dead != want_map("dead") {
            failures.push(format!(
                "{name}: dead {:?}, expected {:?}",
                status.dead,
                want_map("dead")
            ));
        }
        for (reason, n) in want_map("dead") {
            let got = message_dead
                .get(&(rid.to_string(), reason.clone()))
                .copied()
                .unwrap_or(0);
            if got != n {
                failures.push(format!(
                    "{name}: {got} dead-letter record(s) {reason}, expected {n}"
                ));
            }
        }
        for a in case
            .get("delivered")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let a = a.as_str().unwrap();
            if per.get(a) != Some(&1) {
                failures.push(format!(
                    "{name}: {a} received {:?} message(s), expected 1",
                    per.get(a)
                ));
            }
        }
        for a in case
            .get("not_delivered")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let a = a.as_str().unwrap().to_ascii_lowercase();
            if per.contains_key(&a) {
                failures.push(format!("{name}: {a} received a message"));
            }
        }
    }
    // Envelope senders (a display name that looks like an address must not
    // become the sender).
    let received = p.sink().received();
    for (name, case) in &expected {
        let Some(want) = case.get("mail_from").and_then(Value::as_str) else {
            continue;
        };
        for a in case
            .get("delivered")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for mail in received
                .iter()
                .filter(|m| m.rcpt.iter().any(|r| Some(r.as_str()) == a.as_str()))
            {
                if mail.mail_from != want {
                    failures.push(format!(
                        "{name}: envelope sender {:?}, expected {want}",
                        mail.mail_from
                    ));
                }
            }
        }
    }
    // No injected header reached any message, nor a local file.
    for mail in &received {
        for (n, v) in &mail.headers {
            if n.eq_ignore_ascii_case("X-Injected") || n.eq_ignore_ascii_case("Bcc") {
                failures.push(format!("a message to {:?} carries {n}: {v}", mail.rcpt));
            }
        }
        if mail.body.contains("root:x:0:0") {
            failures.push(format!("a message to {:?} contains /etc/passwd", mail.rcpt));
        }
    }
    let dups = duplicates(&per);
    eprintln!(
        "hostile corpus: {} files + oversized, {} dead-letter records ({} request-level), duplicates {:?}, took {:.1?}",
        files.len(),
        depth,
        seen_request_level.len(),
        dups,
        started.elapsed()
    );
    assert!(dups.is_empty(), "duplicates: {dups:?}");
    assert!(
        failures.is_empty(),
        "{} hostile case(s) answered wrongly:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    assert_eq!(records.len() as u64, total_dead, "dead-letter records");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_and_failures_are_dead_lettered_not_redelivered_forever() {
    let p = TestPipeline::spawn().await;
    let poison: &[(&str, &[u8], &str)] = &[
        ("send.bulk", b"this is not json", "malformed_job"),
        ("send.bulk", b"{\"hello\": \"world\"}", "malformed_job"),
        ("send.bulk", b"\xff\xfe\x00garbage", "malformed_job"),
        (
            "send.bulk",
            br#"{"v":99,"id":"x","request":"r","lane":"bulk","content":"c","to":"a@example.com","created":0,"deadline":0}"#,
            "malformed_job",
        ),
        ("send.transactional", b"[1,2,3]", "malformed_job"),
        ("failed", b"not a failure", "malformed_failure"),
    ];
    for (key, body, _) in poison {
        publish_raw(&p, key, body).await;
    }
    // The pipeline keeps serving.
    p.publish_json(&sample_request("after-poison", 20, "example.net"))
        .await;
    let status = p
        .wait_complete("after-poison", Duration::from_secs(60))
        .await;
    assert_eq!(status.sent, 20);
    wait_for(
        "the dead-letter records",
        Duration::from_secs(30),
        || async { (p.queue_depth("dead").await as usize >= poison.len()).then_some(()) },
    )
    .await;
    // Nothing is left to be redelivered.
    for key in ["send.bulk", "send.transactional", "failed"] {
        assert_eq!(p.queue_depth(key).await, 0, "{key} still holds a message");
    }
    let records = p.drain_queue("dead").await;
    let mut got: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or("<no reason>").to_string(),
                r["payload"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = poison
        .iter()
        .map(|(_, body, reason)| (reason.to_string(), kept_payload(body)))
        .collect();
    want.sort();
    assert_eq!(got, want);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_crashing_its_consumer_is_stopped_by_the_delivery_limit() {
    use lapin::options::{BasicGetOptions, BasicRejectOptions};
    // No sender: the test plays a consumer that dies on the message every
    // time (a return to the queue, as when a consumer's channel closes).
    let p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: false,
        },
        |s| s.amqp.delivery_limit = 3,
    )
    .await;
    p.publish_json(&sample_request("crashing", 1, "example.com"))
        .await;
    wait_for("the job", Duration::from_secs(30), || async {
        (p.queue_depth("send.bulk").await == 1).then_some(())
    })
    .await;
    let conn = mailpipe_common::amqp::connect_once(&p.settings.amqp, "test-crasher")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut returns = 0;
    for _ in 0..20 {
        let Some(m) = ch
            .basic_get(
                p.topology.queue("send.bulk").into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
        else {
            break;
        };
        m.delivery
            .reject(BasicRejectOptions { requeue: true })
            .await
            .unwrap();
        returns += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "ok".into()).await;
    eprintln!("the job came back {returns} time(s) before the broker stopped it");
    assert!(
        returns <= 4,
        "redelivered {returns} times with a delivery limit of 3"
    );
    wait_for(
        "the job in the dead-letter queue",
        Duration::from_secs(10),
        || async { (p.queue_depth("dead").await == 1).then_some(()) },
    )
    .await;
    assert_eq!(p.queue_depth("send.bulk").await, 0);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_stopped_in_the_middle_of_a_lane_message_hands_back_exactly_the_unsent_recipients()
{
    // One lane message of 400 recipients, sent one at a time, so that the
    // stop lands in the middle of it.
    let mut p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: true,
            sender: false,
            retrier: true,
        },
        |s| {
            s.expander.jobs_per_message = 400;
            s.sender.bulk_concurrency = 1;
        },
    )
    .await;
    let rid = "stop-mid-message";
    let n = 400;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    p.wait_expanded(rid).await;
    assert_eq!(p.queue_depth("send.bulk").await, 1);
    p.start_worker("sender");
    wait_for("some of it sent", Duration::from_secs(60), || async {
        (p.sink().count() >= 20).then_some(())
    })
    .await;
    p.stop_worker("sender").await;
    let sent = p.status(rid).await.sent as usize;
    assert!(sent < n, "the whole message went out before the stop");
    // What is back in the lane is one message holding exactly the
    // recipients without a sent record: the stop returned them, it did not
    // leave the whole message to be redelivered.
    let back = p.drain_jobs("send.bulk").await;
    assert_eq!(back.len(), n - sent, "{} back, {sent} sent", back.len());
    for job in &back {
        assert!(p.store.done(&job.id).await.unwrap().is_none(), "{job:?}");
    }
    let batch = mailpipe_common::message::JobBatch::from_jobs(&back).unwrap();
    publish_raw(&p, "send.bulk", &serde_json::to_vec(&batch).unwrap()).await;
    p.start_worker("sender");
    let status = p.wait_complete(rid, COMPLETE_TIMEOUT).await;
    assert_eq!(status.sent, n as u64);
    let per = p.sink().per_recipient();
    assert_eq!(per.len(), n);
    assert!(per.values().all(|c| *c == 1), "sent twice: {per:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_of_a_lane_message_on_its_last_allowed_delivery_ends_as_poison() {
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
    let rid = "poison-lane-message";
    p.publish_json(&sample_request(rid, 3, "example.com")).await;
    p.wait_expanded(rid).await;
    // The lane message comes back as the broker hands it out after it was
    // returned `delivery_limit - 1` times (a consumer crashing on it): on
    // this last allowed delivery the sender ends each recipient with a
    // terminal record instead of sending, so the campaign's counts close.
    let message = p
        .drain_queue("send.bulk")
        .await
        .pop()
        .expect("the lane message");
    assert_eq!(message["recipients"].as_array().map(Vec::len), Some(3));
    let returned = (p.settings.amqp.delivery_limit - 1).to_string();
    let conn = mailpipe_common::amqp::connect_once(&p.settings.amqp, "test")
        .await
        .unwrap();
    let ch = mailpipe_common::amqp::channel(&conn, None).await.unwrap();
    mailpipe_common::amqp::publish_confirmed(
        &ch,
        &p.topology.exchange(),
        "send.bulk",
        &serde_json::to_vec(&message).unwrap(),
        mailpipe_common::amqp::with_headers(
            mailpipe_common::amqp::properties(),
            &[("x-delivery-count", returned)],
        ),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "ok".into()).await;
    p.start_worker("sender");
    let status = p.wait_complete(rid, Duration::from_secs(60)).await;
    assert_eq!(status.dead.get("poison_message"), Some(&3), "{status:?}");
    assert_eq!(status.sent, 0);
    assert_eq!(p.sink().count(), 0);
    let dead = p.drain_queue("dead").await;
    assert_eq!(
        dead.iter()
            .filter(|d| d["reason"] == "poison_message")
            .count(),
        3,
        "{dead:?}"
    );
    p.shutdown().await;
}

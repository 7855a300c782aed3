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

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mailpipe_common::classify::Failure;
use mailpipe_common::message::FailedJob;
use mailpipe_common::store::RequestStatus;
use mailpipe_tests::faults::{
    blocking, duplicate_count, duplicates, http_status, publish_raw, PrivateRabbit, PrivateRedis,
    WorkerProcess,
};
use mailpipe_tests::{sample_request, wait_for, SmtpSink, TestPipeline, Workers};
use secrecy::SecretString;
use serde_json::{json, Value};

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
    wait_for(
        &format!("request {rid} to complete"),
        timeout,
        || async {
            let s = p.store.request_status(rid).await.ok()?;
            let parts = s.meta.as_ref().map(|m| m.parts_total).unwrap_or(u32::MAX);
            (s.parts_done >= parts && s.pending == 0).then_some(s)
        },
    )
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

/// The verdict of an outage scenario: every valid recipient exactly once,
/// nothing else, Redis agrees. Prints the duplicates first so a failing run
/// still reports them.
fn check_exactly_once(
    scenario: &str,
    per: &BTreeMap<String, usize>,
    valid: &BTreeSet<String>,
    status: &RequestStatus,
    started: Instant,
) {
    let dups = duplicates(per);
    let missing: Vec<&String> = valid.iter().filter(|a| !per.contains_key(*a)).collect();
    let unexpected: Vec<&String> = per.keys().filter(|a| !valid.contains(*a)).collect();
    eprintln!(
        "[{scenario}] {} recipients, {} received, {} duplicate(s) {:?}, {} missing, sent={} dead={:?}, took {:.1?}",
        valid.len(),
        per.len(),
        duplicate_count(per),
        dups,
        missing.len(),
        status.sent,
        status.dead,
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "[{scenario}] {} recipient(s) never received their message, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        unexpected.is_empty(),
        "[{scenario}] mail for unexpected recipients: {unexpected:?}"
    );
    assert!(
        dups.is_empty(),
        "[{scenario}] {} recipient(s) received more than one message: {dups:?}",
        dups.len()
    );
    assert_eq!(status.sent, valid.len() as u64, "[{scenario}] status.sent");
    assert!(status.dead.is_empty(), "[{scenario}] dead: {:?}", status.dead);
    assert_eq!(status.pending, 0, "[{scenario}] pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_mid_campaign_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let mut rabbit = blocking(PrivateRabbit::start);
    let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.amqp.url = SecretString::from(rabbit.url());
    })
    .await;
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
    let per = wait_for("every message at the server", Duration::from_secs(30), || async {
        let per = p.sink().per_recipient();
        (per.len() >= n).then_some(per)
    })
    .await;
    check_exactly_once(
        "rabbitmq restart",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
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
    let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.amqp.url = SecretString::from(rabbit.url());
    })
    .await;
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
    let per = wait_for("every message at the server", Duration::from_secs(30), || async {
        let per = p.sink().per_recipient();
        (per.len() >= n).then_some(per)
    })
    .await;
    check_exactly_once(
        "rabbitmq kill -9",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
    );
    p.shutdown().await;
    blocking(|| rabbit.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_campaign_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let mut redis = blocking(PrivateRedis::start);
    let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.redis.url = SecretString::from(redis.url());
    })
    .await;
    let ready = p.settings.sender.listen.clone();
    let rid = "faults-redis-restart";
    let n = CAMPAIGN;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    wait_for("the sender to be ready", Duration::from_secs(30), || async {
        (http_status(&ready, "/readyz").await == Some(200)).then_some(())
    })
    .await;
    let at_stop = wait_received(|| p.sink().count(), n / 3, Duration::from_secs(90)).await;
    assert!(at_stop < n, "the campaign finished before Redis stopped");

    blocking(|| redis.stop());
    let down = Instant::now();
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
    let during = p.sink().count() - at_stop;
    assert_eq!(
        http_status(&ready, "/readyz").await,
        Some(503),
        "still not ready while Redis is down"
    );
    // At most the transactions that had their lease before Redis went away
    // may complete; nothing new is started.
    let in_flight = p.settings.sender.bulk_concurrency + p.settings.sender.transactional_concurrency;
    assert!(
        during <= in_flight,
        "{during} messages were sent while Redis was down (at most {in_flight} were in flight)"
    );
    eprintln!(
        "Redis stopped after {at_stop} of {n} messages; /readyz failed after {not_ready_after:.1?}; \
         {} more messages while down ({during} in all)",
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
    check_exactly_once(
        "redis restart",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
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
            s.redis.url = SecretString::from(redis.url());
            // Production default is 10; a small limit keeps the outage short.
            s.amqp.delivery_limit = 3;
        },
    )
    .await;
    let rid = "faults-redis-retrier";
    let n = 4;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    wait_for("the jobs in the lane", Duration::from_secs(60), || async {
        (p.queue_depth("send.bulk").await as usize >= n).then_some(())
    })
    .await;
    let jobs = p.drain_queue("send.bulk").await;
    assert_eq!(jobs.len(), n);

    blocking(|| redis.stop());
    // Each job's first attempt was greylisted, as the sender reports it.
    let failure = Failure::from_reply_text("451 4.7.1 Greylisted, please try again later");
    for job in jobs {
        let failed = FailedJob {
            v: 1,
            job: serde_json::from_value(job).expect("a job"),
            failure: failure.clone(),
            route: "default".into(),
            at: mailpipe_common::unix_now(),
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
    check_exactly_once(
        "redis outage, retrier",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
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
    wait_for("failed attempts during the outage", Duration::from_secs(30), || async {
        (p.status(rid).await.failed_attempts >= 50).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = p.status(rid).await;
    eprintln!(
        "SMTP server stopped after {at_stop} of {n} messages; {} failed attempts during the outage",
        during.failed_attempts
    );
    assert!(during.dead.is_empty(), "messages died during the outage: {:?}", during.dead);
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
    check_exactly_once(
        "smtp outage",
        &per,
        &addresses(n, "example.com"),
        &status,
        started,
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
    assert!(status.success(), "the sender exited with {status} after SIGTERM");
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
        .filter(|l| l.starts_with("mailpipe_deliveries_total") && l.contains("outcome=\"duplicate\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let unsettled = log.matches("delivery not settled").count();
    eprintln!(
        "after SIGTERM: {unsettled} in-flight deliveries not acked by the stopping sender; \
         {redelivered_done} already-sent messages redelivered to its successor"
    );
    check_exactly_once(
        "sigterm",
        &per,
        &addresses(n, "example.com"),
        &done,
        started,
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

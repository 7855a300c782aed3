//! The workers' start-up check of Redis persistence, against a private Redis
//! started without AOF or RDB ([`PrivateRedis::start_volatile`]): every
//! worker binary refuses it, says why and writes nothing; with
//! `redis.allow_volatile` it starts and works; once snapshots are turned on
//! it starts without the setting. Where `CONFIG` is forbidden, as on some
//! managed services, `INFO persistence` tells AOF, and a worker that cannot
//! tell starts with a warning.

use std::time::Duration;

use mailpipe_tests::faults::{blocking, PrivateRedis, WorkerProcess};
use mailpipe_tests::{request_for, SmtpSink, TestPipeline, Workers};
use secrecy::SecretString;

const NO_WORKERS: Workers = Workers {
    expander: false,
    sender: false,
    retrier: false,
};

/// Environment every binary of this test gets on top of the pipeline's:
/// the intake's listeners on free ports (the pipeline's environment leaves
/// them at their defaults).
const LISTENERS: [(&str, &str); 2] = [
    ("MAILPIPE__BOUNCES__LISTEN", "127.0.0.1:0"),
    ("MAILPIPE__BOUNCES__SMTP_LISTEN", "127.0.0.1:0"),
];

async fn dbsize(p: &TestPipeline) -> i64 {
    let mut c = p.store.connection();
    redis::cmd("DBSIZE").query_async(&mut c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_refuse_a_redis_that_forgets_its_writes_unless_allowed() {
    let redis = blocking(PrivateRedis::start_volatile);
    let p = TestPipeline::spawn_with(SmtpSink::start(), NO_WORKERS, |s| {
        s.redis.url = Some(SecretString::from(redis.url()));
        s.redis.allow_volatile = false;
    })
    .await;

    for binary in [
        "mailpipe-expander",
        "mailpipe-sender",
        "mailpipe-retrier",
        "mailpipe-intake",
    ] {
        let mut w = WorkerProcess::spawn(&p, binary, &LISTENERS);
        let status = blocking(|| w.wait_exit(Duration::from_secs(30)));
        let log = w.log();
        let status = status.unwrap_or_else(|| panic!("{binary} started: {log}"));
        assert_eq!(status.code(), Some(1), "{binary}: {log}");
        for why in [
            "refusing to start against Redis at redis://127.0.0.1:",
            "keeps no data across a restart",
            "sent twice",
            "quarantined",
            "redis.allow_volatile",
        ] {
            assert!(log.contains(why), "{binary}: {why:?} missing from: {log}");
        }
    }
    assert_eq!(dbsize(&p).await, 0, "a refused worker wrote to Redis");

    // Allowed: the expander starts, says what it runs on, and expands.
    let mut expander = WorkerProcess::spawn(
        &p,
        "mailpipe-expander",
        &[("MAILPIPE__REDIS__ALLOW_VOLATILE", "true")],
    );
    p.publish_json(&request_for("durability-allowed", &["a", "b"]))
        .await;
    p.wait_expanded("durability-allowed").await;
    assert!(
        expander
            .log()
            .contains("starting because redis.allow_volatile is true"),
        "{}",
        expander.log()
    );
    expander.sigterm();
    let status = blocking(|| expander.wait_exit(Duration::from_secs(30)));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", expander.log());

    // With RDB snapshots on, no setting is needed.
    let mut c = p.store.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("save")
        .arg("3600 1")
        .query_async(&mut c)
        .await
        .unwrap();
    let retrier = WorkerProcess::spawn(&p, "mailpipe-retrier", &[]);
    blocking(|| started_saying(retrier, "Redis persists its data"));
    p.shutdown().await;
}

/// Waits until a worker's log says `what`, then checks it is still running
/// and stops it.
fn started_saying(mut w: WorkerProcess, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !w.log().contains(what) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not say {what:?}: {}",
            w.name,
            w.log()
        );
        if let Some(status) = w.wait_exit(Duration::from_millis(100)) {
            panic!("{} exited ({status}): {}", w.name, w.log());
        }
    }
    assert!(
        w.wait_exit(Duration::from_millis(300)).is_none(),
        "{} exited: {}",
        w.name,
        w.log()
    );
    w.sigterm();
    let status = w.wait_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", w.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_config_persistence_is_read_from_info_or_warned_about() {
    // As on managed Redis services that forbid CONFIG.
    let no_config = ["--rename-command", "CONFIG", ""];
    // AOF on: INFO persistence says so, and the worker starts quietly.
    let aof = blocking(|| PrivateRedis::start_with(true, &no_config));
    let p = TestPipeline::spawn_with(SmtpSink::start(), NO_WORKERS, |s| {
        s.redis.url = Some(SecretString::from(aof.url()));
        s.redis.allow_volatile = false;
    })
    .await;
    let w = WorkerProcess::spawn(&p, "mailpipe-retrier", &[]);
    blocking(|| started_saying(w, "Redis persists its data"));
    p.shutdown().await;

    // AOF off and no snapshot yet: INFO cannot tell whether snapshots are
    // scheduled; the worker warns and starts.
    let volatile = blocking(|| PrivateRedis::start_with(false, &no_config));
    let p = TestPipeline::spawn_with(SmtpSink::start(), NO_WORKERS, |s| {
        s.redis.url = Some(SecretString::from(volatile.url()));
        s.redis.allow_volatile = false;
    })
    .await;
    let w = WorkerProcess::spawn(&p, "mailpipe-retrier", &[]);
    blocking(|| started_saying(w, "cannot tell whether Redis persists its data"));
    p.shutdown().await;
}

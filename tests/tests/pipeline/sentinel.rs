//! Redis behind Sentinels: the master dies mid-campaign, the Sentinels
//! promote its replica, and the workers find the new master by themselves.
//!
//! The set ([`SentinelSet`]: master, replica, three Sentinels) is the
//! test's own, on free loopback ports; the pipeline's `redis.sentinel`
//! names the Sentinels, never a server. The old master is not started
//! again, so the campaign can only finish through the promoted replica.
//! A second scenario fails over while the master is healthy: the old
//! master stays up as a replica that answers writes with `READONLY`, and
//! the store must leave it for the new one.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mailpipe_common::config::{RedisSettings, SentinelSettings};
use mailpipe_state::store::Store;
use mailpipe_tests::faults::{blocking, check_delivered};
use mailpipe_tests::sentinel::{command, SentinelSet, MASTER_NAME};
use mailpipe_tests::{sample_request, wait_for, SmtpSink, TestPipeline, Workers};

/// Recipients: enough that the kill lands mid-campaign with hundreds of
/// messages on each side of it, small enough to stay well under a minute.
const CAMPAIGN: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_mid_campaign_is_followed_without_a_restart() {
    let started = Instant::now();
    let mut set = blocking(SentinelSet::start);
    eprintln!(
        "Sentinel set up in {:.1?} ({})",
        started.elapsed(),
        set.dir().display()
    );
    let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.redis.url = None;
        s.redis.sentinel = Some(SentinelSettings {
            addresses: set.addresses(),
            master_name: MASTER_NAME.into(),
            ..Default::default()
        });
        // The start-up durability check must read the master (AOF on), not
        // the replica (no persistence), which it would refuse.
        s.redis.allow_volatile = false;
    })
    .await;
    let rid = "sentinel-failover";
    let n = CAMPAIGN;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let at_kill = wait_for(
        "a third of the campaign at the SMTP server",
        Duration::from_secs(60),
        || async {
            let c = p.sink().count();
            (c >= n / 3).then_some(c)
        },
    )
    .await;
    assert!(at_kill < n, "the campaign finished before the kill");

    let killed_at = Instant::now();
    let (old, new) = blocking(|| {
        let old = set.kill_master();
        let new = set.wait_failover(old, Duration::from_secs(30));
        (old, new)
    });
    let failover = killed_at.elapsed();
    let at_failover = p.sink().count();

    // No restart, no old master: the workers must reach the promoted one.
    let status = wait_for(
        &format!("request {rid} to complete through the new master"),
        Duration::from_secs(45),
        || async {
            let s = p.store.request_status(rid).await.ok()?;
            let parts = s.meta.as_ref().map(|m| m.parts_total).unwrap_or(u32::MAX);
            (s.parts_done >= parts && s.pending == 0).then_some(s)
        },
    )
    .await;
    let per = p.sink().per_recipient();
    let valid: BTreeSet<String> = (0..n).map(|i| format!("user{i}@example.com")).collect();
    // A failover may drop the master's last writes (replication is
    // asynchronous): a message whose sent record was among them and whose
    // job comes back is sent again. At most the transactions in flight at
    // the kill.
    let in_flight =
        p.settings.sender.bulk_concurrency + p.settings.sender.transactional_concurrency;
    eprintln!(
        "[sentinel failover] master {old} killed after {at_kill} of {n} messages; replica {new} \
         promoted after {failover:.1?} ({at_failover} sent by then)"
    );
    check_delivered(
        "sentinel failover",
        &per,
        &valid,
        &status,
        started,
        in_flight,
    );
    for key in ["send.bulk", "failed", "requests"] {
        assert_eq!(p.queue_depth(key).await, 0, "{key} is not empty");
    }
    // Readiness back, no reconnect loop, failure queue drained.
    p.shutdown().await;
    drop(set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_leaves_a_master_demoted_by_a_failover_for_the_new_one() {
    let started = Instant::now();
    let mut set = blocking(SentinelSet::start);
    let settings = RedisSettings {
        url: None,
        sentinel: Some(SentinelSettings {
            addresses: set.addresses(),
            master_name: MASTER_NAME.into(),
            ..Default::default()
        }),
        prefix: "sentinel-demoted".into(),
        allow_volatile: false,
        ..Default::default()
    };
    let store = Store::connect(&settings)
        .await
        .expect("master through the Sentinels");
    let key = "sentinel-demoted:probe";
    // A plain write and a script's write, as mailpipe's calls do both.
    let write = |value: u32| {
        let mut c = store.connection();
        async move {
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async(&mut c)
                .await?;
            redis::Script::new("return redis.call('INCR', KEYS[1])")
                .key(key)
                .invoke_async::<u32>(&mut c)
                .await
        }
    };
    assert_eq!(write(1).await.expect("write to the first master"), 2);

    let old = blocking(|| set.manual_failover());
    let new = blocking(|| set.wait_failover(old, Duration::from_secs(30)));
    let promoted = Instant::now();

    // The old master still runs and, until the Sentinels demote it, still
    // takes writes that its demotion will discard. The store must move to
    // the new master on the Sentinels' announcement, within seconds,
    // without a new Store.
    let lost = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    wait_for(
        "a write through the store to land on the new master",
        Duration::from_secs(5),
        || async {
            match write(10).await {
                Ok(v) => {
                    let on_new = command(new, &["GET", key]);
                    let landed = on_new
                        .as_deref()
                        .and_then(|r| r.first())
                        .map(String::as_str)
                        == Some(v.to_string().as_str());
                    if !landed {
                        lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    landed.then_some(())
                }
                Err(_) => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            }
        },
    )
    .await;
    eprintln!(
        "[sentinel manual failover] master {old} handed over to {new}; the store wrote to the new \
         master {:.1?} after the Sentinels named it ({} write(s) failed, {} landed on the old \
         master meanwhile); old master's role now {:?}; took {:.1?}",
        promoted.elapsed(),
        failed.into_inner(),
        lost.into_inner(),
        set.role(old),
        started.elapsed()
    );
    drop(set);
}

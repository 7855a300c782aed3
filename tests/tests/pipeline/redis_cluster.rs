//! mailpipe against a Redis Cluster of the test's own (three masters with a
//! replica each, [`RedisCluster`]), named by its seed nodes
//! (`redis.cluster.nodes`), with the expander, a sender and the retrier as
//! processes, as in production:
//!
//! * a campaign ends with every recipient received exactly once, and
//!   `mailpipe status` reads it from the cluster; the keys are where the
//!   prefix's hash tag puts them, and a cluster node named as a single
//!   Redis (`redis.url`) is refused with a pointer to `redis.cluster`;
//! * the master that holds mailpipe's keys is killed with SIGKILL
//!   mid-campaign, the cluster promotes its replica, and the workers follow
//!   it without a restart. Replication is asynchronous: the writes the dead
//!   master had not passed on are lost, and a message whose sent record was
//!   among them is sent again, so duplicates are allowed up to the
//!   transactions in flight at the kill, and printed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mailpipe_common::config::ClusterSettings;
use mailpipe_state::store::Store;
use mailpipe_tests::faults::{blocking, check_delivered};
use mailpipe_tests::redis_cluster::RedisCluster;
use mailpipe_tests::{sample_request, wait_for, SmtpSink, TestPipeline, Workers};
use secrecy::SecretString;

/// A pipeline whose workers are processes (not started yet) and whose
/// Redis is `cluster`.
async fn pipeline_on(cluster: &RedisCluster) -> TestPipeline {
    TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: false,
            sender: false,
            retrier: false,
        },
        |s| {
            s.redis.url = None;
            s.redis.cluster = Some(ClusterSettings {
                nodes: cluster.seed_nodes(),
                ..Default::default()
            });
            // Every node keeps an append-only file: the start-up check
            // must find it on the master that holds the keys.
            s.redis.allow_volatile = false;
        },
    )
    .await
}

fn start_workers(p: &mut TestPipeline) {
    for worker in ["mailpipe-expander", "mailpipe-sender", "mailpipe-retrier"] {
        p.spawn_process(worker);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_runs_end_to_end_on_a_redis_cluster() {
    let started = Instant::now();
    let cluster = blocking(RedisCluster::start);
    eprintln!("Redis Cluster up in {:.1?}", started.elapsed());
    let mut p = pipeline_on(&cluster).await;
    start_workers(&mut p);
    let rid = "cluster-campaign";
    let n = 1_000;
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let status = p.wait_complete(rid, Duration::from_secs(120)).await;
    let per = p.sink().per_recipient();
    let valid: BTreeSet<String> = (0..n).map(|i| format!("user{i}@example.com")).collect();
    check_delivered("redis cluster", &per, &valid, &status, started, 0);

    let (code, out) = p.cli(&["status", rid]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("sent       {n}")), "{out}");
    assert!(out.contains("pending    0"), "{out}");

    // Every key in the slot of the prefix's hash tag, on its master.
    let prefix = p.store.prefix().to_string();
    assert_eq!(prefix, format!("{{{}}}", p.settings.redis.prefix));
    let slot = cluster.slot_of(&prefix);
    let master = cluster.master_of(slot).expect("a master serves the slot");
    let sizes: Vec<(String, Option<i64>)> = cluster
        .seed_nodes()
        .into_iter()
        .zip(cluster.dbsizes())
        .collect();
    let holding: Vec<&String> = sizes
        .iter()
        .filter(|(_, n)| n.is_some_and(|n| n > 0))
        .map(|(node, _)| node)
        .collect();
    // The master, and its replica once it has caught up.
    assert!(
        holding.contains(&&format!("127.0.0.1:{master}")) && holding.len() <= 2,
        "keys outside the master of the tag's slot ({master}): {sizes:?}"
    );

    // A key walk (SCAN, as operators' listings use) finds the keys.
    let requests = p
        .store
        .names_after(&format!("{prefix}:req:"))
        .await
        .expect("SCAN on the cluster");
    assert!(
        requests.iter().any(|r| r == rid),
        "{rid} not found by SCAN: {requests:?}"
    );

    // A node named as a single Redis is refused, pointing to redis.cluster.
    let mut settings = p.settings.redis.clone();
    settings.cluster = None;
    settings.url = Some(SecretString::from(cluster.first_url()));
    let refused = Store::connect(&settings)
        .await
        .err()
        .expect("a cluster node named as a single Redis is refused");
    assert!(refused.to_string().contains("redis.cluster"), "{refused}");
    p.shutdown().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_holding_the_keys_killed_mid_campaign_is_replaced_without_a_restart() {
    let started = Instant::now();
    let mut cluster = blocking(RedisCluster::start);
    let mut p = pipeline_on(&cluster).await;
    start_workers(&mut p);
    let rid = "cluster-failover";
    let n = 3_000;
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

    let slot = cluster.slot_of(p.store.prefix());
    let killed_at = Instant::now();
    let (old, new) = blocking(|| {
        let old = cluster.master_of(slot).expect("a master serves the slot");
        cluster.kill(old);
        let new = cluster.wait_promoted(slot, old, Duration::from_secs(30));
        (old, new)
    });
    let failover = killed_at.elapsed();
    let at_failover = p.sink().count();

    let status = p.wait_complete(rid, Duration::from_secs(120)).await;
    let per = p.sink().per_recipient();
    let valid: BTreeSet<String> = (0..n).map(|i| format!("user{i}@example.com")).collect();
    let in_flight =
        p.settings.sender.bulk_concurrency + p.settings.sender.transactional_concurrency;
    eprintln!(
        "[redis cluster failover] master {old} killed after {at_kill} of {n} messages; replica \
         {new} promoted after {failover:.1?} ({at_failover} sent by then)"
    );
    check_delivered(
        "redis cluster failover",
        &per,
        &valid,
        &status,
        started,
        in_flight,
    );
    let (code, out) = p.cli(&["status", rid]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("sent       {n}")), "{out}");
    p.shutdown().await;
    drop(cluster);
}

//! mailpipe against a Redis Cluster of the test's own (three masters with a
//! replica each, [`RedisCluster`]), which it does not support yet: one call
//! of a worker touches keys of many hash slots. A worker refuses a cluster
//! node at start-up and says why (instead of starting and failing its calls
//! with `MOVED` and `CROSSSLOT`), and so does the CLI's connection; nothing
//! is written to the cluster.

use std::time::Duration;

use mailpipe_state::store::Store;
use mailpipe_tests::faults::{blocking, WorkerProcess};
use mailpipe_tests::redis_cluster::RedisCluster;
use mailpipe_tests::{SmtpSink, TestPipeline, Workers};
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_and_the_cli_refuse_a_redis_cluster_node_and_say_why() {
    let cluster = blocking(RedisCluster::start);
    let p = TestPipeline::spawn_with(
        SmtpSink::start(),
        Workers {
            expander: false,
            sender: false,
            retrier: false,
        },
        |_| {},
    )
    .await;
    let url = cluster.first_url();

    let mut sender = WorkerProcess::spawn(
        &p,
        "mailpipe-sender",
        &[
            ("MAILPIPE__REDIS__URL", url.as_str()),
            ("MAILPIPE__REDIS__ALLOW_VOLATILE", "false"),
        ],
    );
    let status = blocking(|| sender.wait_exit(Duration::from_secs(30)));
    let log = sender.log();
    let status = status.unwrap_or_else(|| panic!("the sender started: {log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    for why in [
        "refusing to start against Redis at redis://127.0.0.1:",
        "Redis Cluster",
        "cluster_enabled:1",
        "redis.sentinel",
    ] {
        assert!(log.contains(why), "{why:?} missing from: {log}");
    }

    let mut settings = p.settings.redis.clone();
    settings.url = Some(SecretString::from(url.clone()));
    let refused = Store::connect(&settings)
        .await
        .err()
        .expect("the CLI's connection refuses a cluster node");
    assert!(refused.to_string().contains("Redis Cluster"), "{refused}");

    assert_eq!(
        cluster.dbsizes(),
        vec![Some(0); 6],
        "something was written to the cluster"
    );
}

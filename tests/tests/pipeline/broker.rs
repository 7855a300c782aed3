//! The broker as an installation meets it: several node URLs, and queues
//! declared by an older mailpipe.

use std::time::Duration;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use mailpipe_common::amqp;
use mailpipe_common::message::Lane;
use mailpipe_common::topology::Topology;
use mailpipe_tests::{sample_request, SmtpSink, TestPipeline, Workers};
use secrecy::{ExposeSecret, SecretString};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_skipped_for_the_next_one() {
    // The first "node" refuses connections; every worker and the CLI move
    // on to the live one, whatever node they start at.
    let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        let live = s.amqp.url.expose_secret().to_string();
        s.amqp.url = SecretString::from(format!("amqp://guest:guest@127.0.0.1:1/%2f, {live}"));
    })
    .await;
    p.publish_json(&sample_request("two-nodes", 50, "example.com"))
        .await;
    let s = p.wait_complete("two-nodes", Duration::from_secs(60)).await;
    assert_eq!(s.sent, 50);
    let (code, out) = p.cli(&["status", "two-nodes"]);
    assert_eq!(code, 0, "{out}");

    // With no live node at all, the CLI names the nodes (without their
    // password) and says why once.
    let out = std::process::Command::new(mailpipe_tests::binary("mailpipe"))
        .args(["queue", "list"])
        .envs(p.env())
        .env(
            "MAILPIPE__AMQP__URL",
            "amqp://guest:s3cret@127.0.0.1:1/%2f,amqp://guest:s3cret@127.0.0.1:2/%2f",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the password was printed: {err}");
    assert_eq!(err.matches("os error 111").count(), 1, "said twice: {err}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_declared_by_an_older_mailpipe_are_kept_as_they_are() {
    let settings = mailpipe_tests::test_settings(1);
    let topology = Topology::from_settings(&settings);
    let conn = amqp::connect_once(&settings.amqp, "test-old-queue")
        .await
        .unwrap();
    // An older mailpipe declared the dead-letter queue without a leader
    // locator; the broker refuses to redeclare it with one.
    let dead = topology.queue(Topology::DEAD);
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(
        dead.clone().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    // And a bulk delay tier that dead-letters back to send.bulk (before
    // bulk jobs due again had a queue of their own), with a message in it.
    let tier_key = Topology::tier_key(settings.retrier.tiers[0], Lane::Bulk);
    let tier = topology.queue(&tier_key);
    let mut args = FieldTable::default();
    for (k, v) in [
        ("x-queue-type", "quorum".to_string()),
        ("x-dead-letter-exchange", topology.exchange()),
        ("x-dead-letter-routing-key", "send.bulk".to_string()),
    ] {
        args.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(3_600_000));
    ch.queue_declare(
        tier.clone().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.basic_publish(
        "".into(),
        tier.clone().into(),
        Default::default(),
        b"kept",
        Default::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // Declared twice, as every process does at every start.
    topology
        .declare(&conn)
        .await
        .expect("declare over an older queue");
    topology.declare(&conn).await.expect("declare again");
    // New queues got the balanced leader locator, the older one kept its
    // arguments (as the broker lists them).
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "name", "arguments"])
        .output()
        .expect("rabbitmqctl");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let args_of = |queue: &str| {
        listed
            .lines()
            .find(|l| l.split('\t').next() == Some(queue))
            .unwrap_or_else(|| panic!("{queue} is not listed:\n{listed}"))
            .to_string()
    };
    let failed = args_of(&topology.queue(Topology::FAILED));
    assert!(
        failed.contains(r#"{"x-queue-leader-locator","balanced"}"#),
        "{failed}"
    );
    let dead = args_of(&dead);
    assert!(!dead.contains("x-queue-leader-locator"), "{dead}");
    // The older tier is used as it is, with its message; the new ones
    // fall due into send.retry.
    let old_tier = args_of(&tier);
    assert!(
        old_tier.contains(r#"{"x-dead-letter-routing-key","send.bulk"}"#),
        "{old_tier}"
    );
    let ch = conn.create_channel().await.unwrap();
    let kept = ch
        .queue_declare(
            tier.clone().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(kept.message_count(), 1, "the older tier's message");
    let newer = Topology::tier_key(settings.retrier.tiers[1], Lane::Bulk);
    let newer = args_of(&topology.queue(&newer));
    assert!(
        newer.contains(r#"{"x-dead-letter-routing-key","send.retry"}"#),
        "{newer}"
    );
    let ch = conn.create_channel().await.unwrap();
    for key in topology.all_keys() {
        let _ = ch
            .queue_delete(topology.queue(&key).into(), QueueDeleteOptions::default())
            .await;
    }
    for ex in [topology.exchange(), topology.events_exchange()] {
        let _ = ch.exchange_delete(ex.into(), Default::default()).await;
    }
    let _ = conn.close(200, "ok".into()).await;
}

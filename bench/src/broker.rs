//! `mailpipe-bench broker`: the broker ceiling. Publishes N messages with a
//! window of outstanding confirms into a fresh durable quorum queue, then
//! consumes them with acks (one by one, or `multiple` every K), then
//! deletes the queue.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{json, Value};

use crate::amqp::{confirm_channel, connect, persistent, Window};

fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    t
}

pub async fn broker(
    url: &str,
    queue: &str,
    count: u64,
    size: usize,
    window: usize,
    prefetch: u16,
    ack_every: u64,
) -> anyhow::Result<Value> {
    let conn = connect(url, "mailpipe-bench-broker").await?;
    let ch = confirm_channel(&conn).await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum_args(),
    )
    .await?;
    // A JSON-looking payload of the requested size.
    let mut payload = br#"{"v":1,"pad":""#.to_vec();
    payload.resize(size.saturating_sub(2).max(payload.len()), b'x');
    payload.extend_from_slice(br#""}"#);

    let started = Instant::now();
    let mut w = Window::new(window);
    for _ in 0..count {
        let pc = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &payload,
                persistent(),
            )
            .await?;
        w.push(pc).await?;
    }
    w.drain().await?;
    let publish_s = started.elapsed().as_secs_f64();

    let cch = conn.create_channel().await?;
    cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut got = 0u64;
    while got < count {
        let d = match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
            Ok(Some(d)) => d?,
            Ok(None) => bail!("consumer ended after {got}"),
            Err(_) => bail!("no delivery for 60 s after {got}"),
        };
        got += 1;
        if ack_every <= 1 {
            d.ack(BasicAckOptions::default()).await?;
        } else if got.is_multiple_of(ack_every) || got == count {
            d.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let consume_s = started.elapsed().as_secs_f64();
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({
        "count": count, "size": payload.len(), "window": window, "prefetch": prefetch,
        "ack_every": ack_every,
        "publish_s": publish_s, "publish_per_s": count as f64 / publish_s,
        "consume_s": consume_s, "consume_per_s": count as f64 / consume_s,
    }))
}

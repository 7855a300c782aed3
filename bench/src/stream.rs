//! `mailpipe-bench stream`: reads a stream queue (the archive) from its
//! first message as an AMQP 0.9.1 consumer would (prefetch, manual acks
//! with `multiple`, `x-stream-offset: first`), and reports how many
//! messages and bytes it holds and how fast it reads back. Stops at
//! `--expect` messages or after `--idle` seconds without one.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{json, Value};

pub async fn stream(url: &str, queue: &str, expect: u64, idle: f64) -> anyhow::Result<Value> {
    let conn = crate::amqp::connect(url, "mailpipe-bench-stream").await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString(LongString::from("first")),
    );
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await?;
    let started = Instant::now();
    let mut last = started;
    let (mut messages, mut bytes) = (0u64, 0u64);
    while messages < expect {
        let d = match tokio::time::timeout(Duration::from_secs_f64(idle), consumer.next()).await {
            Ok(Some(d)) => d?,
            Ok(None) => bail!("consumer of {queue} ended after {messages}"),
            Err(_) => break,
        };
        messages += 1;
        bytes += d.data.len() as u64;
        last = Instant::now();
        if messages.is_multiple_of(500) || messages == expect {
            d.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let read_s = (last - started).as_secs_f64().max(0.001);
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({
        "queue": queue, "messages": messages, "bytes": bytes,
        "read_s": read_s, "read_per_s": messages as f64 / read_s,
    }))
}

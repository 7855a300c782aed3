//! `mailpipe-bench ready`: waits until queues exist and have consumers.

use std::time::{Duration, Instant};

use anyhow::bail;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{json, Value};

use crate::amqp::connect;
use crate::now_ms;

pub async fn ready(url: &str, queues: &[String], timeout: u64) -> anyhow::Result<Value> {
    let conn = connect(url, "mailpipe-bench-ready").await?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    for q in queues {
        loop {
            let ch = conn.create_channel().await?;
            let r = ch
                .queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if let Ok(info) = r {
                let _ = ch.close(200, "ok".into()).await;
                if info.consumer_count() > 0 {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("queue {q} has no consumer after {timeout} s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({"ready_ms": now_ms()}))
}

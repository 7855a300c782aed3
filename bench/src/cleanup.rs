//! `mailpipe-bench cleanup`: deletes the queues named on stdin, a
//! prefix's exchanges and every Redis key under the prefix (bench-*
//! prefixes only).

use anyhow::bail;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::{json, Value};

use crate::amqp::connect;

pub async fn cleanup(url: &str, redis_url: &str, prefix: &str) -> anyhow::Result<Value> {
    if prefix.len() < 6 || !prefix.starts_with("bench-") {
        bail!("refusing to clean up prefix {prefix:?}: only bench-* prefixes");
    }
    let mut names = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut names)?;
    let conn = connect(url, "mailpipe-bench-cleanup").await?;
    let mut queues = 0;
    for q in names.lines().map(str::trim).filter(|q| !q.is_empty()) {
        if !q.starts_with(&format!("{prefix}.")) {
            continue;
        }
        let ch = conn.create_channel().await?;
        if ch
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await
            .is_ok()
        {
            queues += 1;
        }
    }
    for ex in [prefix.to_string(), format!("{prefix}.events")] {
        let ch = conn.create_channel().await?;
        let _ = ch
            .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;

    let client = redis::Client::open(redis_url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut keys_deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut c)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await?;
            keys_deleted += n;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(json!({"queues_deleted": queues, "redis_keys_deleted": keys_deleted}))
}

//! `mailpipe-bench wait`: polls a Redis hash field (or the hash's length)
//! until it reaches a target.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use crate::now_ms;

pub async fn wait(
    url: &str,
    key: &str,
    field: Option<&str>,
    target: u64,
    timeout: u64,
    interval_ms: u64,
) -> anyhow::Result<Value> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let v: u64 = match field {
            Some(f) => {
                let v: Option<u64> = redis::cmd("HGET")
                    .arg(key)
                    .arg(f)
                    .query_async(&mut c)
                    .await?;
                v.unwrap_or(0)
            }
            None => redis::cmd("HLEN").arg(key).query_async(&mut c).await?,
        };
        if v >= target {
            return Ok(json!({"done_ms": now_ms(), "value": v}));
        }
        if started.elapsed() > Duration::from_secs(timeout) {
            bail!("{key} {field:?} is {v} after {timeout} s, expected {target}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  ... {v}/{target} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
}

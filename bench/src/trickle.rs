//! `mailpipe-bench trickle`: T transactional requests (one recipient each)
//! spread evenly over D seconds, each carrying its publish time in
//! `X-Bench-Published-Ms`.

use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use serde_json::{json, Value};

use crate::amqp::{check, confirm_channel, connect, persistent};
use crate::now_ms;
use crate::publish::templates;

#[allow(clippy::too_many_arguments)]
pub async fn trickle(
    url: &str,
    prefix: &str,
    request_prefix: &str,
    count: u64,
    over: f64,
    size: usize,
    domain: &str,
) -> anyhow::Result<Value> {
    let conn = connect(url, "mailpipe-bench-trickle").await?;
    let ch = confirm_channel(&conn).await?;
    let base = templates(size);
    let started = Instant::now();
    let step = over / count.max(1) as f64;
    let mut worst_confirm_ms = 0u64;
    for i in 0..count {
        let due = started + Duration::from_secs_f64(step * i as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut req = base.clone();
        let obj = req.as_object_mut().expect("object");
        let published = now_ms();
        obj.insert("request_id".into(), json!(format!("{request_prefix}-{i}")));
        obj.insert("lane".into(), json!("transactional"));
        obj.insert("campaign".into(), json!("bench-transactional"));
        let mut headers = obj["headers"].clone();
        headers["X-Bench-Published-Ms"] = json!(published.to_string());
        obj.insert("headers".into(), headers);
        obj.insert(
            "recipients".into(),
            json!([{"email": format!("txn{i}@{domain}"), "name": format!("Txn {i}"),
                    "vars": {"plan": "pro", "code": format!("T{i:07}")}}]),
        );
        let body = serde_json::to_vec(&req)?;
        let pc = ch
            .basic_publish(
                prefix.into(),
                "requests".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                persistent(),
            )
            .await?;
        check(pc.await?)?;
        worst_confirm_ms = worst_confirm_ms.max(now_ms() - published);
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({"count": count, "over_s": over, "worst_publish_confirm_ms": worst_confirm_ms}))
}

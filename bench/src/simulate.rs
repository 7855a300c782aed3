//! `mailpipe-bench providers`: runs the provider simulator of the test
//! harness (`providers.rs`) until `--expect` recipients were delivered,
//! then writes its counts.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{now_ms, providers};

pub async fn run_providers(
    specs: &[String],
    port: u16,
    port_file: &str,
    out: &str,
    expect: u64,
    settle: f64,
    timeout: u64,
) -> anyhow::Result<Value> {
    let specs = specs
        .iter()
        .map(|s| {
            providers::ProviderSpec::parse(s).map_err(|e| anyhow::anyhow!("--provider {s}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sim = if port == 0 {
        providers::Simulator::start(&specs).await?
    } else {
        providers::Simulator::start_on(port, &specs).await?
    };
    std::fs::write(port_file, format!("{}\n", sim.port))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reached: Option<Instant> = None;
    let why = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = term.recv() => break "terminated",
            _ = tokio::signal::ctrl_c() => break "interrupted",
        }
        if reached.is_none() && sim.delivered() >= expect {
            reached = Some(Instant::now());
        }
        if reached.is_some_and(|t| t.elapsed().as_secs_f64() >= settle) {
            break "delivered";
        }
        if Instant::now() > deadline {
            break "timed out";
        }
    };
    let stats: Vec<Value> = sim.stats().iter().map(|s| s.to_json()).collect();
    let delivered = sim.delivered();
    let done_ms = sim.stats().iter().filter_map(|s| s.last_delivery_ms).max();
    let all = json!({"end": why, "end_ms": now_ms(), "epoch_ms": sim.epoch_ms, "done_ms": done_ms,
                     "delivered": delivered, "expect": expect, "providers": stats});
    std::fs::write(out, serde_json::to_vec(&all)?)?;
    Ok(json!({"end": why, "delivered": delivered, "done_ms": done_ms}))
}

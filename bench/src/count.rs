//! `mailpipe-bench count`: follows smtp-sink's `-c` counters on stdin and
//! writes the time the message count reached its target.

use serde_json::{json, Value};

use crate::now_ms;

pub fn count(target: u64, out: &str) -> anyhow::Result<Value> {
    use std::io::BufRead as _;
    let stdin = std::io::stdin();
    let mut r = stdin.lock();
    let mut buf = Vec::new();
    let mut first_ms = 0u64;
    let mut reached: Option<u64> = None;
    let mut last = 0u64;
    loop {
        buf.clear();
        if r.read_until(b'\r', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let Some(n) = line
            .split_whitespace()
            .find_map(|w| w.trim_end_matches('\r').strip_prefix("mesg="))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if n > last {
            last = n;
            if first_ms == 0 {
                first_ms = now_ms();
            }
        }
        if reached.is_none() && n >= target {
            let t = now_ms();
            reached = Some(t);
            std::fs::write(
                out,
                format!(
                    "{}\n",
                    json!({"done_ms": t, "first_ms": first_ms, "messages": n})
                ),
            )?;
        }
    }
    Ok(json!({"done_ms": reached, "first_ms": first_ms, "messages": last}))
}

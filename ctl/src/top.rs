//! `mailpipe top`: a live view of the whole installation (like `kcli top`):
//! per lane, recipients delivered, failed and deferred per second and how
//! many wait, with the oldest; per recipient domain and per site, attempts
//! (and failures) per second; the depth of every queue.
//!
//! Where the numbers come from, all shared by every replica: the lanes'
//! rates are differences between two frames of the requests' counters in
//! Redis (`sent`, `dead:*`, `deferrals`; [`rates`]); the domains' and
//! sites' attempt rates are the decaying attempt counts the senders keep
//! for the sending policy, their failures the breaker's buckets; queue
//! depths are the broker's.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use mailpipe_common::topology::Topology;
use mailpipe_state::policy::Policy;
use mailpipe_state::store::RequestStatus;
use serde_json::json;

use crate::ops::Ops;
use crate::waiting::thousands;

/// Live view: rates per lane, domain and site; backlog per queue; the
/// oldest waiting recipient. Redraws on a terminal; with --once, or when
/// stdout is not a terminal, prints one frame (--json: one JSON object per
/// frame).
#[derive(Args)]
pub struct TopCommand {
    /// Seconds between frames (the rates are measured over it).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Print one frame and exit.
    #[arg(long)]
    pub once: bool,
    /// Domains and sites to show at most (the busiest first).
    #[arg(long, default_value_t = 15)]
    pub rows: usize,
}

/// Per-second rates between two frames of cumulative counters: for each
/// key of `cur`, its increase since `prev` (0 when absent there) over
/// `secs`. A counter that went down (recipients requeued from the dead
/// letters, a request forgotten) reads as 0, never negative.
pub fn rates(
    prev: &BTreeMap<String, u64>,
    cur: &BTreeMap<String, u64>,
    secs: f64,
) -> BTreeMap<String, f64> {
    cur.iter()
        .map(|(k, v)| {
            let before = prev.get(k).copied().unwrap_or(0);
            let r = if secs > 0.0 {
                v.saturating_sub(before) as f64 / secs
            } else {
                0.0
            };
            (k.clone(), r)
        })
        .collect()
}

/// The cumulative counters of one lane's requests, keyed
/// `{lane}:{delivered|failed|deferred}`, plus what is pending: the
/// recipients and the oldest acceptance time (Unix s) per lane.
#[derive(Debug, Default)]
struct Counters {
    totals: BTreeMap<String, u64>,
    pending: BTreeMap<String, u64>,
    oldest: BTreeMap<String, i64>,
}

fn add(c: &mut Counters, s: &RequestStatus) {
    let Some(meta) = &s.meta else { return };
    let lane = meta.lane.map_or("-", |l| l.as_str());
    for (what, n) in [
        ("delivered", s.sent),
        ("failed", s.dead.values().sum()),
        ("deferred", s.deferrals),
    ] {
        *c.totals.entry(format!("{lane}:{what}")).or_default() += n;
    }
    if s.pending > 0 {
        *c.pending.entry(lane.to_string()).or_default() += s.pending;
        let o = c.oldest.entry(lane.to_string()).or_insert(meta.created);
        *o = (*o).min(meta.created);
    }
}

/// Reads the requests' counters; complete requests are read once and
/// remembered (`done`), so a frame costs the requests still moving.
async fn counters(
    store: &mailpipe_state::store::Store,
    done: &mut BTreeMap<String, RequestStatus>,
) -> anyhow::Result<Counters> {
    let mut c = Counters::default();
    for id in store.recent_requests(crate::waiting::REQUESTS_READ).await? {
        if let Some(s) = done.get(&id) {
            add(&mut c, s);
            continue;
        }
        let s = store.request_status(&id).await?;
        add(&mut c, &s);
        if s.is_complete() || s.is_incomplete() {
            done.insert(id, s);
        }
    }
    Ok(c)
}

impl TopCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        let policy = Policy::new(ops.store.clone());
        let tty = std::io::stdout().is_terminal() && !ctx.json;
        let once = self.once || !(tty || ctx.json);
        let interval = Duration::from_secs_f64(self.interval.clamp(0.2, 3600.0));
        let mut done = BTreeMap::new();
        let mut prev = counters(&ops.store, &mut done).await?;
        let mut at = Instant::now();
        loop {
            tokio::time::sleep(interval.saturating_sub(at.elapsed())).await;
            let cur = counters(&ops.store, &mut done).await?;
            let secs = at.elapsed().as_secs_f64();
            at = Instant::now();
            let frame = self.frame(&ops, &policy, &prev, &cur, secs).await?;
            if ctx.json {
                println!("{}", serde_json::to_string(&frame)?);
            } else {
                if tty && !once {
                    // Clear the screen and go home: one frame at a time.
                    print!("\x1b[2J\x1b[H");
                }
                print_frame(&frame);
            }
            if once {
                break;
            }
            prev = cur;
        }
        ops.close().await;
        Ok(ExitCode::SUCCESS)
    }

    async fn frame(
        &self,
        ops: &Ops,
        policy: &Policy,
        prev: &Counters,
        cur: &Counters,
        secs: f64,
    ) -> anyhow::Result<serde_json::Value> {
        let now = mailpipe_common::unix_now();
        let r = rates(&prev.totals, &cur.totals, secs);
        let mut lanes = Vec::new();
        for lane in mailpipe_common::message::Lane::ALL {
            let l = lane.as_str();
            let rate = |what: &str| r.get(&format!("{l}:{what}")).copied().unwrap_or(0.0);
            lanes.push(json!({
                "lane": l,
                "delivered_per_second": rate("delivered"),
                "failed_per_second": rate("failed"),
                "deferred_per_second": rate("deferred"),
                "pending": cur.pending.get(l).copied().unwrap_or(0),
                "oldest_age_seconds": cur.oldest.get(l).map(|c| (now - c).max(0)),
            }));
        }
        let mut sites = policy.sites_seen().await?;
        sites.sort_by(|a, b| b.rate_per_second.total_cmp(&a.rate_per_second));
        let mut domains = std::collections::BTreeSet::new();
        for s in &sites {
            domains.extend(policy.site_domains(&s.site).await?);
        }
        let mut domain_rows = Vec::new();
        for d in domains {
            let (attempts, failures) = policy.domain_rates(&d).await?;
            domain_rows.push((d, attempts, failures));
        }
        domain_rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)));
        domain_rows.truncate(self.rows);
        sites.truncate(self.rows);
        let mut queues = Vec::new();
        for key in ops.topology.all_keys() {
            if let Some((depth, consumers)) = ops.depth(&key).await? {
                queues.push(json!({"queue": key, "messages": depth, "consumers": consumers}));
            }
        }
        let mut held = 0;
        for request in ops.store.parked().await? {
            if let Some((n, _)) = ops.depth(&Topology::held_key(&request)).await? {
                held += n;
            }
        }
        let (deferred, next_due) = ops.store.deferred_summary().await?;
        Ok(json!({
            "at": now,
            "seconds": secs,
            "lanes": lanes,
            "domains": domain_rows.iter().map(|(d, a, f)| json!({
                "domain": d, "attempts_per_second": a, "failures_per_second": f,
            })).collect::<Vec<_>>(),
            "sites": sites.iter().map(|s| json!({
                "site": s.site, "attempts_per_second": s.rate_per_second, "domains": s.domains,
            })).collect::<Vec<_>>(),
            "queues": queues,
            "held_messages": held,
            "deferred": deferred,
            "overdue_seconds": mailpipe_common::backlog::overdue_seconds(next_due, now),
        }))
    }
}

fn age(secs: Option<i64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn print_frame(f: &serde_json::Value) {
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!(
        "mailpipe top  {}  (rates over the last {:.1}s)",
        crate::out::utc(f["at"].as_i64().unwrap_or(0)),
        num(&f["seconds"])
    );
    println!();
    println!(
        "{:<16} {:>12} {:>10} {:>11} {:>11} {:>10}",
        "lane", "delivered/s", "failed/s", "deferred/s", "pending", "oldest"
    );
    for l in f["lanes"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>12.1} {:>10.1} {:>11.1} {:>11} {:>10}",
            l["lane"].as_str().unwrap_or("-"),
            num(&l["delivered_per_second"]),
            num(&l["failed_per_second"]),
            num(&l["deferred_per_second"]),
            thousands(l["pending"].as_u64().unwrap_or(0)),
            age(l["oldest_age_seconds"].as_i64()),
        );
    }
    println!();
    println!("{:<32} {:>11} {:>10}", "domain", "attempts/s", "failures/s");
    for d in f["domains"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>11.1} {:>10.2}",
            d["domain"].as_str().unwrap_or("-"),
            num(&d["attempts_per_second"]),
            num(&d["failures_per_second"]),
        );
    }
    println!();
    println!("{:<32} {:>11} {:>8}", "site", "attempts/s", "domains");
    for s in f["sites"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>11.1} {:>8}",
            s["site"].as_str().unwrap_or("-"),
            num(&s["attempts_per_second"]),
            s["domains"].as_u64().unwrap_or(0),
        );
    }
    println!();
    println!("{:<32} {:>10} {:>10}", "queue", "messages", "consumers");
    for q in f["queues"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:>10} {:>10}",
            q["queue"].as_str().unwrap_or("-"),
            q["messages"].as_u64().unwrap_or(0),
            q["consumers"].as_u64().unwrap_or(0),
        );
    }
    println!(
        "held (parked lane messages) {}   deferred recipients {}   the earliest retry is {}s late",
        f["held_messages"].as_u64().unwrap_or(0),
        thousands(f["deferred"].as_u64().unwrap_or(0)),
        f["overdue_seconds"].as_i64().unwrap_or(0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_increase_between_frames_over_their_distance_never_negative() {
        let m = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        // (prev, cur, seconds, expected rates)
        type Map = BTreeMap<String, u64>;
        type Case<'a> = (Map, Map, f64, Vec<(&'a str, f64)>);
        let table: Vec<Case> = vec![
            (m(&[("a", 10)]), m(&[("a", 30)]), 2.0, vec![("a", 10.0)]),
            // A counter new since the last frame counts from 0.
            (m(&[]), m(&[("b", 5)]), 0.5, vec![("b", 10.0)]),
            // Gone down (dead letters requeued): 0.
            (m(&[("a", 30)]), m(&[("a", 20)]), 1.0, vec![("a", 0.0)]),
            // Unchanged: 0; a key only in the last frame is not reported.
            (
                m(&[("a", 7), ("gone", 3)]),
                m(&[("a", 7)]),
                1.0,
                vec![("a", 0.0)],
            ),
            // No time between frames: 0, not infinity.
            (m(&[("a", 1)]), m(&[("a", 9)]), 0.0, vec![("a", 0.0)]),
        ];
        for (prev, cur, secs, expected) in table {
            let got: Vec<(String, f64)> = rates(&prev, &cur, secs).into_iter().collect();
            let expected: Vec<(String, f64)> = expected
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(got, expected, "{prev:?} -> {cur:?} in {secs}s");
        }
    }
}

//! `mailpipe queue list`: the queues' depths and the recipients waiting;
//! with --deferred the deferred messages, with --ambiguous the held ones.

use std::process::ExitCode;

use clap::Args;
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use serde_json::json;

use super::ago;
use crate::ops::Ops;
use crate::waiting::{thousands, Active, Whereabouts};

/// Depth and consumers of every lane, delay tier, failure, dead-letter and
/// ambiguous queue (like `postqueue -p` summarised); with --deferred, the
/// deferred messages themselves; with --ambiguous, the recipients held
/// because their attempt's outcome is unknown.
#[derive(Args)]
pub struct ListCommand {
    /// List deferred messages: id, recipient, campaign, attempt, last reason, next attempt.
    #[arg(long, conflicts_with = "ambiguous")]
    pub deferred: bool,
    /// List the recipients held because an attempt sent the data and no
    /// reply was read (`sender.on_ambiguous: hold`): id, recipient, request, why.
    #[arg(long)]
    pub ambiguous: bool,
    /// Deferred messages to show at most.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

impl ListCommand {
    pub(super) async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        let now = unix_now();
        if self.ambiguous {
            let r = crate::ambiguous::list(&ops, ctx.json).await;
            ops.close().await;
            r?;
            return Ok(ExitCode::SUCCESS);
        }
        if self.deferred {
            let rows = ops.store.deferred(self.limit).await?;
            if ctx.json {
                let out: Vec<_> = rows
                    .iter()
                    .map(|(id, due, info)| json!({"id": id, "due": due, "info": info}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "{:<32} {:<30} {:<24} {:<20} {:>7} {:<14} next attempt",
                    "id", "recipient", "request", "campaign", "attempt", "last reason"
                );
                for (id, due, info) in &rows {
                    let s = |k: &str| info[k].as_str().unwrap_or("-").to_string();
                    println!(
                        "{:<32} {:<30} {:<24} {:<20} {:>7} {:<14} {}",
                        id,
                        s("recipient"),
                        s("request"),
                        s("campaign"),
                        info["attempt"].as_u64().unwrap_or(0),
                        s("reason"),
                        ago(now - due)
                    );
                }
                println!("-- {} deferred message(s) shown", rows.len());
            }
            ops.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = Vec::new();
        for key in ops.topology.all_keys() {
            if let Some((depth, consumers)) = ops.depth(&key).await? {
                rows.push((key, depth, consumers));
            }
        }
        // Held campaigns' parking queues: their mail is waiting too.
        for request in ops.store.parked().await? {
            let key = Topology::held_key(&request);
            if let Some((depth, consumers)) = ops.depth(&key).await? {
                rows.push((key, depth, consumers));
            }
        }
        let (deferred, next_due) = ops.store.deferred_summary().await?;
        let waiting = Waiting::read(&ops.store, ctx, next_due).await?;
        if ctx.json {
            let queues: Vec<_> = rows
                .iter()
                .map(|(k, d, c)| json!({"queue": ops.topology.queue(k), "messages": d, "consumers": c}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "queues": queues,
                    "deferred": deferred,
                    "next_due": next_due,
                    "recipients": waiting.json(),
                }))?
            );
        } else {
            println!("{:<40} {:>10} {:>10}", "queue", "messages", "consumers");
            for (k, d, c) in &rows {
                println!("{:<40} {:>10} {:>10}", ops.topology.queue(k), d, c);
            }
            println!(
                "(a send-lane message carries the jobs of up to {} recipients of one request; \
                 `mailpipe status ID` counts recipients)",
                ctx.settings.expander.jobs_per_message.max(1)
            );
            match next_due {
                Some(due) => println!(
                    "{deferred} deferred message(s); the next one is due {}",
                    ago(now - due)
                ),
                None => println!("no deferred messages"),
            }
            waiting.print(now);
        }
        ops.close().await;
        Ok(ExitCode::SUCCESS)
    }
}

/// The recipients waiting, as `queue list` shows them: deferred and
/// paused (summed over the requests with recipients pending), the held
/// campaigns, and the paused domains.
struct Waiting {
    pending: u64,
    whereabouts: Whereabouts,
    held: Vec<Active>,
    paused: Vec<mailpipe_state::policy::PausedDomain>,
}

impl Waiting {
    async fn read(
        store: &mailpipe_state::store::Store,
        ctx: &crate::Context,
        next_due: Option<i64>,
    ) -> anyhow::Result<Self> {
        let active = crate::waiting::active(store).await?;
        let all = mailpipe_state::store::RequestStatus {
            pending: active.iter().map(|a| a.status.pending).sum(),
            waiting: crate::waiting::waiting_totals(&active),
            ..Default::default()
        };
        let policy = mailpipe_state::policy::Policy::new(store.clone());
        let (_, paused) = policy.paused(crate::waiting::PAUSES_LOOKED_UP).await?;
        let mut pauses = std::collections::BTreeMap::new();
        crate::waiting::look_up_pauses(
            &policy,
            ctx,
            crate::waiting::paused_domains(&all),
            &mut pauses,
        )
        .await?;
        let deferred = mailpipe_state::store::RequestDeferred {
            first_due: next_due,
            ..Default::default()
        };
        let whereabouts = crate::waiting::whereabouts(&all, &deferred, &pauses);
        Ok(Self {
            pending: all.pending,
            whereabouts,
            held: active.into_iter().filter(|a| a.held).collect(),
            paused,
        })
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "pending": self.pending,
            "in_lanes": self.whereabouts.in_lanes,
            "deferred": self.whereabouts.deferred,
            "next_attempt": self.whereabouts.next_attempt,
            "paused": self.whereabouts.paused,
            "held": self.held.iter().map(|a| json!({
                "request": a.status.request,
                "campaign": a.campaign(),
                "pending": a.status.pending,
                "reason": a.status.hold.as_ref().map(|h| h.reason.clone()),
            })).collect::<Vec<_>>(),
            "paused_domains": self.paused,
        })
    }

    fn print(&self, now: i64) {
        let w = &self.whereabouts;
        println!();
        println!(
            "recipients pending: {} (of the requests not complete)",
            thousands(self.pending)
        );
        println!(
            "  {:<10} {:>9}  in a send lane, being sent, or parked while held",
            "sending",
            thousands(w.in_lanes)
        );
        let whys: Vec<String> = w
            .deferred
            .iter()
            .map(|(why, n)| format!("{why} {}", thousands(*n)))
            .collect();
        let next = w
            .next_attempt
            .map(|d| format!("; the next attempt is due {}", ago(now - d)))
            .unwrap_or_default();
        println!(
            "  {:<10} {:>9}  {}{next}",
            "deferred",
            thousands(w.deferred_total()),
            if whys.is_empty() {
                "-".to_string()
            } else {
                whys.join(", ")
            }
        );
        w.print_paused();
        let held: u64 = self.held.iter().map(|a| a.status.pending).sum();
        println!(
            "  {:<10} {:>9}  pending recipients of {} held campaign(s)",
            "held",
            thousands(held),
            self.held.len()
        );
        for a in &self.held {
            let reason = a
                .status
                .hold
                .as_ref()
                .map(|h| h.reason.as_str())
                .filter(|r| !r.is_empty())
                .unwrap_or("no reason given");
            println!(
                "    {:<30} {:>9}  {reason}",
                a.status.request,
                thousands(a.status.pending)
            );
        }
        if !self.paused.is_empty() {
            println!("paused domains:");
            for p in &self.paused {
                let reason = crate::out::optional(": ", &p.reason);
                println!(
                    "  {:<32} until {} (by {}){reason}",
                    p.domain,
                    crate::out::utc(p.until_ms / 1000),
                    p.by
                );
            }
        }
    }
}

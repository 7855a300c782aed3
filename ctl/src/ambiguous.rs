//! The `ambiguous` queue as operators see and steer it: recipients whose
//! attempt's outcome is unknown (the data was sent and no reply was read),
//! parked by `sender.on_ambiguous: hold` so that nobody gets the message
//! twice without someone deciding. `queue list --ambiguous` lists them,
//! `queue release` sends them (accepting a possible duplicate) and `queue
//! remove` stops them.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::Args;
use mailpipe_common::message::Job;
use mailpipe_common::topology::Topology;
use mailpipe_state::store::DECISION_AMBIGUOUS;
use serde_json::json;

use crate::ops::{require_yes, Fate, Ops};

/// Send held ambiguous recipients after all: their messages go back to
/// their lanes and are sent (the recipient may get the message twice).
/// Exit code 3 when an id is not in the ambiguous queue (nothing is
/// written for it).
#[derive(Args)]
#[command(group = clap::ArgGroup::new("which").required(true))]
pub struct ReleaseCommand {
    /// Message ids, as `mailpipe queue list --ambiguous` prints them.
    #[arg(group = "which")]
    pub ids: Vec<String>,
    /// Every held ambiguous recipient.
    #[arg(long, group = "which")]
    pub all: bool,
    /// Confirm (a released recipient may receive the message twice).
    #[arg(long)]
    pub yes: bool,
}

/// The held ambiguous recipients, in queue order. Listing takes each
/// message and puts it back (confirmed), as every queue command does.
pub async fn held(ops: &Ops) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    ops.drain(Topology::AMBIGUOUS, |_, js| {
        jobs.extend(js.iter().cloned());
        Fate::Keep
    })
    .await?;
    Ok(jobs)
}

/// `queue list --ambiguous`.
pub async fn list(ops: &Ops, json_out: bool) -> anyhow::Result<()> {
    let jobs = held(ops).await?;
    let mut rows = Vec::new();
    for j in &jobs {
        let why = ops
            .store
            .history(&j.id)
            .await?
            .into_iter()
            .rev()
            .find(|h| h["decision"] == DECISION_AMBIGUOUS);
        rows.push((j, why));
    }
    if json_out {
        let out: Vec<_> = rows
            .iter()
            .map(|(j, why)| {
                json!({
                    "id": j.id, "recipient": j.to, "request": j.request,
                    "campaign": j.campaign, "lane": j.lane,
                    "at": why.as_ref().and_then(|w| w["at"].as_i64()),
                    "reason": why.as_ref().and_then(|w| w["reason"].as_str()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<32} {:<30} {:<24} why", "id", "recipient", "request");
    for (j, why) in &rows {
        println!(
            "{:<32} {:<30} {:<24} {}",
            j.id,
            j.to,
            j.request,
            why.as_ref()
                .and_then(|w| w["reason"].as_str())
                .unwrap_or("-")
        );
    }
    println!(
        "-- {} ambiguous recipient(s) held: `mailpipe queue release ID --yes` sends one (it may arrive twice), `mailpipe queue remove ID --yes` stops it",
        rows.len()
    );
    Ok(())
}

/// Removes the held ambiguous recipients among `ids` (state `removed`):
/// the ids found.
pub async fn remove(ops: &Ops, ids: &BTreeSet<String>) -> anyhow::Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    ops.drain(Topology::AMBIGUOUS, |_, jobs| {
        if jobs.iter().any(|j| ids.contains(&j.id)) {
            found.extend(jobs.iter().map(|j| j.id.clone()));
            Fate::Remove("removed".into())
        } else {
            Fate::Keep
        }
    })
    .await?;
    Ok(found)
}

impl ReleaseCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if let Some(code) = require_yes(self.yes, "queue release") {
            return Ok(code);
        }
        let ops = Ops::connect(ctx).await?;
        let wanted: BTreeSet<String> = self.ids.iter().cloned().collect();
        let mut released = BTreeSet::new();
        ops.drain(Topology::AMBIGUOUS, |_, jobs| match jobs.first() {
            Some(j) if self.all || jobs.iter().any(|j| wanted.contains(&j.id)) => {
                released.extend(jobs.iter().map(|j| j.id.clone()));
                Fate::MoveTo(Topology::lane_key(j.lane))
            }
            _ => Fate::Keep,
        })
        .await?;
        ops.close().await;
        let unknown: Vec<&String> = wanted.difference(&released).collect();
        for u in &unknown {
            crate::out::error(&format!(
                "{u}: not among the held ambiguous recipients (`mailpipe queue list --ambiguous`)"
            ));
        }
        if ctx.json {
            println!("{}", json!({"released": released, "unknown": unknown}));
        } else {
            println!(
                "{} ambiguous recipient(s) released: they are sent again",
                released.len()
            );
        }
        Ok(if unknown.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}

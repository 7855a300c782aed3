//! `mailpipe campaign list|hold|release|cancel|recount`: see recent
//! campaigns and their state; stop a campaign's sending within seconds and
//! resume it where it stopped (like `postsuper -h/-H`), or end it; rebuild
//! its counts from its recipients' records (`campaign_recount.rs`).
//!
//! Holding sets a flag the senders check before every message; a held
//! campaign's messages are parked in their own queue (`<prefix>.held.<id>`),
//! in order, as they reach a sender. Releasing clears the flag first, then
//! moves the parked messages back into their lane with confirmed publishes:
//! a message is in exactly one queue at any time, so none is missed, and the
//! sent records keep any from being sent twice.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use mailpipe_state::store::{CampaignFlag, RequestStatus, Store};

use crate::ops::{require_yes, Ops};

/// How long an operator flag lives if nobody clears it.
const FLAG_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// List campaigns; hold, release or cancel one.
#[derive(Args)]
pub struct CampaignCommand {
    #[command(subcommand)]
    pub command: CampaignSubCommand,
}

#[derive(Subcommand)]
pub enum CampaignSubCommand {
    /// Recent campaigns (requests), newest first, with their progress and state.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// A campaign's recipients with their state and why (excluded, sent,
    /// dead, removed, pending).
    Recipients(crate::campaign_recipients::RecipientsCommand),
    /// Stop sending a campaign; its messages wait until released.
    Hold {
        id: String,
        /// Why (shown by `mailpipe status` and `campaign list` while it is held).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a held campaign where it stopped.
    Release { id: String },
    /// End a campaign: nothing more of it is sent; unsent messages end as `removed`.
    Cancel {
        id: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Recount a campaign's sent, dead and removed recipients from their
    /// messages' records, and show where the stored counts differ (after a
    /// Redis failover or restart that lost the last writes).
    Recount(crate::campaign_recount::RecountCommand),
}

impl CampaignCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if let CampaignSubCommand::List { limit } = &self.command {
            return list(ctx, *limit).await;
        }
        if let CampaignSubCommand::Recipients(c) = &self.command {
            return c.run(ctx).await;
        }
        if let CampaignSubCommand::Recount(c) = &self.command {
            return c.run(ctx).await;
        }
        let ops = Ops::connect(ctx).await?;
        let id = match &self.command {
            CampaignSubCommand::Hold { id, .. }
            | CampaignSubCommand::Release { id }
            | CampaignSubCommand::Cancel { id, .. } => id.clone(),
            CampaignSubCommand::List { .. }
            | CampaignSubCommand::Recipients(_)
            | CampaignSubCommand::Recount(_) => {
                unreachable!("answered above")
            }
        };
        if ops.store.request_status(&id).await?.meta.is_none() {
            ops.close().await;
            return Ok(crate::queue::unknown_request(&id));
        }
        let out = match &self.command {
            CampaignSubCommand::Hold { reason, .. } => {
                ops.store
                    .set_campaign_flag(&id, CampaignFlag::Held, true, FLAG_TTL)
                    .await?;
                let note = mailpipe_state::store::HoldNote {
                    at: mailpipe_common::unix_now(),
                    reason: reason.clone(),
                    by: std::env::var("USER").unwrap_or_default(),
                };
                ops.store.set_hold_note(&id, Some(&note)).await?;
                json!({"request": id, "held": true, "reason": reason})
            }
            CampaignSubCommand::Release { .. } => {
                let moved = lift_hold(&ops, &id).await?;
                json!({"request": id, "held": false, "resumed": moved.moved})
            }
            CampaignSubCommand::List { .. }
            | CampaignSubCommand::Recipients(_)
            | CampaignSubCommand::Recount(_) => {
                unreachable!("answered above")
            }
            CampaignSubCommand::Cancel { yes, .. } => {
                if let Some(code) = require_yes(*yes, "campaign cancel") {
                    ops.close().await;
                    return Ok(code);
                }
                ops.store
                    .set_campaign_flag(&id, CampaignFlag::Cancelled, true, FLAG_TTL)
                    .await?;
                let removed = lift_hold(&ops, &id).await?;
                json!({"request": id, "cancelled": true, "removed_now": removed.removed})
            }
        };
        ops.close().await;
        if ctx.json {
            println!("{out}");
        } else {
            match &self.command {
                CampaignSubCommand::Hold { .. } => {
                    println!("{id} is held; senders park its messages until `mailpipe campaign release {id}`")
                }
                CampaignSubCommand::Release { .. } => println!(
                    "{id} released; {} parked message(s) back in their lane",
                    out["resumed"]
                ),
                CampaignSubCommand::Cancel { .. } => println!(
                    "{id} cancelled; {} parked message(s) removed, the rest is removed as it reaches a sender",
                    out["removed_now"]
                ),
                CampaignSubCommand::List { .. }
            | CampaignSubCommand::Recipients(_)
            | CampaignSubCommand::Recount(_) => {}
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Lifts a campaign's hold (its flag and its note), then sweeps what
/// senders parked: back to the lanes, or removed when the campaign is
/// cancelled. The retrier sweeps again for messages parked by senders that
/// saw the flag just before it was cleared.
async fn lift_hold(ops: &Ops, id: &str) -> anyhow::Result<crate::ops::DrainCounts> {
    ops.store
        .set_campaign_flag(id, CampaignFlag::Held, false, FLAG_TTL)
        .await?;
    ops.store.set_hold_note(id, None).await?;
    ops.sweep_parked(id).await
}

/// The state of a campaign, as `campaign list` and `status` show it (the
/// names are those of their JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// The request was refused: nothing of it was stored.
    Refused,
    Complete,
    /// A part was refused; nothing more will be sent.
    Incomplete,
    Cancelled,
    Held,
    Sending,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Refused => "refused",
            CampaignState::Complete => "complete",
            CampaignState::Incomplete => "incomplete",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Held => "held",
            CampaignState::Sending => "sending",
        }
    }
}

impl std::fmt::Display for CampaignState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a campaign from its status and its operator's flags.
pub fn state_of(s: &RequestStatus, held: bool, cancelled: bool) -> CampaignState {
    if s.meta.is_none() {
        CampaignState::Refused
    } else if s.is_complete() {
        CampaignState::Complete
    } else if s.is_incomplete() {
        CampaignState::Incomplete
    } else if cancelled {
        CampaignState::Cancelled
    } else if held {
        CampaignState::Held
    } else {
        CampaignState::Sending
    }
}

/// `campaign list`: Redis only (no broker needed).
async fn list(ctx: &crate::Context, limit: usize) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let store = Store::connect(&ctx.settings.redis)
        .await
        .context("connecting to Redis")?;
    let mut rows = Vec::new();
    for id in store.recent_requests(limit).await? {
        let s = store.request_status(&id).await?;
        let held = store.campaign_flag(&id, CampaignFlag::Held).await?;
        let cancelled = store.campaign_flag(&id, CampaignFlag::Cancelled).await?;
        rows.push((state_of(&s, held, cancelled), s));
    }
    if ctx.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(state, s)| json!({"state": state, "status": s}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<20} {:<13} {:<21} {:>5} {:>9} {:>9} {:>7} {:>9}  state",
        "request", "campaign", "lane", "created", "parts", "accepted", "sent", "dead", "pending"
    );
    for (state, s) in &rows {
        let meta = s.meta.clone().unwrap_or_default();
        println!(
            "{:<28} {:<20} {:<13} {:<21} {:>5} {:>9} {:>9} {:>7} {:>9}  {state}",
            s.request,
            meta.campaign.as_deref().unwrap_or("-"),
            meta.lane.map_or("-", |l| l.as_str()),
            crate::out::utc(meta.created),
            format!("{}/{}", s.parts_done, meta.parts_total),
            s.accepted,
            s.sent,
            s.dead.values().sum::<u64>(),
            s.pending,
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::CampaignState;

    #[test]
    fn a_campaign_state_is_written_in_json_under_its_name() {
        use CampaignState::*;
        for s in [Refused, Complete, Incomplete, Cancelled, Held, Sending] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "{s:?}");
            assert_eq!(s.to_string(), s.as_str());
        }
    }
}

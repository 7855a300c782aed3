//! `mailpipe queue purge`: many messages removed at once.

use std::process::ExitCode;

use clap::Args;
use mailpipe_common::message::Lane;
use mailpipe_common::topology::Topology;
use mailpipe_state::store::CampaignFlag;

use super::unknown_request;
use crate::ops::{require_yes, DrainCounts, Fate, Ops};

/// Remove many messages at once (like `postsuper -d ALL`). Every removed
/// message ends in the state `removed`, counted per campaign.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct PurgeCommand {
    /// Everything in this send lane and its delay tiers.
    #[arg(long, group = "what")]
    pub lane: Option<Lane>,
    /// Everything of this request (campaign) id, wherever it is queued; the
    /// campaign is also cancelled so nothing more of it is sent.
    #[arg(long, group = "what")]
    pub campaign: Option<String>,
    /// Everything in every send lane and delay tier (and the recipients
    /// held as ambiguous).
    #[arg(long, group = "what")]
    pub all: bool,
    /// Confirm.
    #[arg(long)]
    pub yes: bool,
}

impl PurgeCommand {
    pub(super) async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if let Some(code) = require_yes(self.yes, "queue purge") {
            return Ok(code);
        }
        let ops = Ops::connect(ctx).await?;
        if let Some(c) = &self.campaign {
            if !ops.known_request(c).await? {
                ops.close().await;
                return Ok(unknown_request(c));
            }
        }
        if let Some(c) = &self.campaign {
            // Cancel first, so what is in flight or not yet expanded is removed too.
            ops.store
                .set_campaign_flag(
                    c,
                    CampaignFlag::Cancelled,
                    true,
                    std::time::Duration::from_secs(30 * 86_400),
                )
                .await?;
        }
        let mut keys = ops.work_keys();
        if let Some(lane) = self.lane {
            keys.retain(|k| k.ends_with(&format!(".{}", lane.as_str())));
        }
        if let Some(c) = &self.campaign {
            keys.push(Topology::held_key(c));
        }
        if self.lane.is_none() {
            // Recipients held in doubt after a crash are queued mail too.
            keys.push(Topology::AMBIGUOUS.to_string());
        }
        let mut total = DrainCounts::default();
        for key in keys {
            total += ops
                .drain(&key, |_, jobs| match (jobs.first(), &self.campaign) {
                    (Some(j), Some(c)) if &j.request != c => Fate::Keep,
                    _ => Fate::Remove("purged".into()),
                })
                .await?;
        }
        ops.close().await;
        if ctx.json {
            println!("{}", serde_json::to_string(&total)?);
        } else {
            println!("{} message(s) purged (state removed)", total.removed);
        }
        Ok(ExitCode::SUCCESS)
    }
}

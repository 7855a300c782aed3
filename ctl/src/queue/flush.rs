//! `mailpipe queue flush`: deferred mail due now.

use std::process::ExitCode;

use clap::Args;
use mailpipe_common::topology::Topology;

use super::unknown_request;
use crate::ops::{DrainCounts, Fate, Ops};

/// Make deferred mail due now: drain the delay tiers into the send lanes
/// (like `postqueue -f`), optionally only one domain's or campaign's.
#[derive(Args)]
pub struct FlushCommand {
    /// Only messages to this recipient domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Only messages of this request: its id (as `mailpipe submit` printed
    /// it) or its campaign label.
    #[arg(long)]
    pub campaign: Option<String>,
}

impl FlushCommand {
    pub(super) async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        let domain = self.domain.as_ref().map(|d| d.to_ascii_lowercase());
        let mut total = DrainCounts::default();
        for key in ops
            .work_keys()
            .into_iter()
            .filter(|k| k.starts_with("retry."))
        {
            total += ops
                .drain(&key, |_, jobs| {
                    // A deferred message holds one request and one domain
                    // (the sender groups them so); it moves if any of its
                    // recipients matches.
                    let matches = |j: &mailpipe_common::message::Job| {
                        let domain_ok = domain.as_ref().is_none_or(|d| j.to.domain() == d);
                        let campaign_ok = self
                            .campaign
                            .as_ref()
                            .is_none_or(|c| &j.request == c || j.campaign.as_ref() == Some(c));
                        domain_ok && campaign_ok
                    };
                    // Due now: where the tiers would have sent it.
                    match jobs.iter().find(|j| matches(j)) {
                        Some(j) => Fate::MoveTo(Topology::due_key(j.lane)),
                        None => Fate::Keep,
                    }
                })
                .await?;
        }
        if let Some(d) = &domain {
            let policy = mailpipe_state::policy::Policy::new(ops.store.clone());
            let st = policy.state(d, &ctx.settings.policy.breaker).await?;
            if let Some(left) = st.paused_for {
                crate::out::warn(&format!(
                    "{d} is paused for another {left}s (by {}): senders defer what was flushed back to the delay tiers; `mailpipe domain resume {d}` first",
                    st.paused_by.as_deref().unwrap_or("?")
                ));
            }
        }
        if let Some(c) = &self.campaign {
            if total.moved == 0 && !ops.known_request(c).await? {
                ops.close().await;
                return Ok(unknown_request(c));
            }
        }
        ops.close().await;
        if ctx.json {
            println!("{}", serde_json::to_string(&total)?);
        } else {
            println!("{} deferred message(s) are due now", total.moved);
        }
        Ok(ExitCode::SUCCESS)
    }
}

//! `mailpipe campaign recount ID [--apply]`: a campaign's sent, dead and
//! removed counts rebuilt from its recipients' records.
//!
//! Each count is raised in the same Redis script that creates a message's
//! terminal record, so they agree, until Redis loses its last writes: a
//! failover to a replica that had not received them, or a restart from a
//! snapshot older than the last writes. Then a record may survive without
//! its count (or the other way round), and `mailpipe status` shows the
//! campaign as pending for ever, or complete too early. The records are
//! what the senders check before sending, so they are the truth here: the
//! recount reads every recipient's record and shows where the counts
//! differ. `--apply` replaces them, but only when nothing of the campaign
//! can be recorded meanwhile (it is held, or every recipient has a record):
//! a record written between the reading and the writing would be lost
//! from the counts again.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use mailpipe_common::message::message_id;
use mailpipe_state::store::{CampaignFlag, ScreenVerdict, Store, TerminalCounts};
use serde_json::json;

/// Recount a campaign's terminal counts from its messages' records.
#[derive(Args)]
pub struct RecountCommand {
    /// The request id (as `mailpipe submit` printed it).
    pub id: String,
    /// Replace the stored counts with the recounted ones (the campaign must
    /// be held, or have every recipient recorded).
    #[arg(long)]
    pub apply: bool,
}

impl RecountCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let status = store.request_status(&self.id).await?;
        if status.meta.is_none() {
            return Ok(crate::queue::unknown_request(&self.id));
        }
        let accepted: Vec<(String, String)> = store
            .request_recipients(&self.id)
            .await?
            .into_iter()
            .filter(|(_, v)| ScreenVerdict::parse(v) == Some(ScreenVerdict::Accepted))
            .collect();
        let ids: Vec<String> = accepted
            .iter()
            .map(|(a, _)| message_id(&self.id, a))
            .collect();
        let done = store.done_many(&ids).await?;
        let recounted = TerminalCounts::tally(&accepted, &done);
        let stored = TerminalCounts::stored(&status);
        let pending = (accepted.len() as u64).saturating_sub(recounted.terminal());
        let differs = recounted != stored;
        let held = store.campaign_flag(&self.id, CampaignFlag::Held).await?;
        let mut applied = false;
        if self.apply && differs {
            if !held && pending > 0 {
                crate::out::error(&format!(
                    "{id} is still sending ({pending} recipient(s) without a record): a message \
                     recorded while the counts are replaced would be lost from them. Hold it \
                     first (`mailpipe campaign hold {id}`), recount, then release it",
                    id = self.id
                ));
                return Ok(ExitCode::from(2));
            }
            store.set_terminal_counts(&self.id, &recounted).await?;
            applied = true;
        }
        if ctx.json {
            let out = json!({
                "request": self.id,
                "recipients_accepted": accepted.len(),
                "stored": stored,
                "recounted": recounted,
                "pending": pending,
                "differs": differs,
                "applied": applied,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!("{:<28} {:>10} {:>10}", "count", "stored", "recounted");
        for (name, a, b) in rows(&stored, &recounted) {
            let mark = if a == b { "" } else { "  differs" };
            println!("{name:<28} {a:>10} {b:>10}{mark}");
        }
        println!(
            "-- {} accepted recipient(s), {pending} without a record (pending)",
            accepted.len()
        );
        if !differs {
            println!("the stored counts agree with the records");
        } else if applied {
            println!("the stored counts were replaced by the recounted ones");
        } else {
            println!(
                "the stored counts differ: `mailpipe campaign recount {} --apply` replaces them",
                self.id
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Every count of either side, with its stored and recounted value.
fn rows(stored: &TerminalCounts, recounted: &TerminalCounts) -> Vec<(String, u64, u64)> {
    let mut out = vec![
        ("sent".to_string(), stored.sent, recounted.sent),
        ("removed".to_string(), stored.removed, recounted.removed),
    ];
    let reasons: std::collections::BTreeSet<&String> =
        stored.dead.keys().chain(recounted.dead.keys()).collect();
    for r in reasons {
        let get = |c: &TerminalCounts| c.dead.get(r).copied().unwrap_or(0);
        out.push((format!("dead:{r}"), get(stored), get(recounted)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_count_of_either_side_is_a_row() {
        let stored = TerminalCounts {
            sent: 5,
            dead: [("expired".to_string(), 1)].into_iter().collect(),
            removed: 0,
        };
        let recounted = TerminalCounts {
            sent: 7,
            dead: [("user_unknown".to_string(), 2)].into_iter().collect(),
            removed: 0,
        };
        assert_eq!(
            rows(&stored, &recounted),
            vec![
                ("sent".to_string(), 5, 7),
                ("removed".to_string(), 0, 0),
                ("dead:expired".to_string(), 1, 0),
                ("dead:user_unknown".to_string(), 0, 2),
            ]
        );
    }
}

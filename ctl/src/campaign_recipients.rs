//! `mailpipe campaign recipients ID`: a campaign's recipients one by one,
//! with the state each is in and why (the exclusion reason, the dead
//! reason and reply, the server's answer).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use mailpipe_common::message::message_id;
use serde_json::json;

use crate::ops::Ops;

/// The states `--state` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecipientState {
    Sent,
    Dead,
    Removed,
    Excluded,
    Pending,
}

impl RecipientState {
    fn as_str(self) -> &'static str {
        match self {
            RecipientState::Sent => "sent",
            RecipientState::Dead => "dead",
            RecipientState::Removed => "removed",
            RecipientState::Excluded => "excluded",
            RecipientState::Pending => "pending",
        }
    }
}

/// A campaign's recipients with their state and reason (one line each,
/// sorted by address). Exit code 3 for an unknown request.
#[derive(Args)]
pub struct RecipientsCommand {
    /// The request id (as `mailpipe submit` printed it).
    pub id: String,
    /// Only recipients in this state.
    #[arg(long, value_enum)]
    pub state: Option<RecipientState>,
    /// Recipients to show at most.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// One recipient's state and why.
fn state_of(
    verdict: &str,
    done: Option<&mailpipe_state::store::DoneRecord>,
) -> (RecipientState, String) {
    use mailpipe_state::store::{DoneState, ScreenVerdict};
    if ScreenVerdict::parse(verdict) != Some(ScreenVerdict::Accepted) {
        return (RecipientState::Excluded, verdict.to_string());
    }
    match done {
        None => (RecipientState::Pending, String::new()),
        Some(d) => (
            match d.state {
                DoneState::Sent => RecipientState::Sent,
                DoneState::Dead => RecipientState::Dead,
                DoneState::Removed => RecipientState::Removed,
            },
            d.detail.clone(),
        ),
    }
}

impl RecipientsCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        if !ops.known_request(&self.id).await? {
            ops.close().await;
            return Ok(crate::queue::unknown_request(&self.id));
        }
        let all = ops.store.request_recipients(&self.id).await?;
        let ids: Vec<String> = all.iter().map(|(a, _)| message_id(&self.id, a)).collect();
        let done = ops.store.done_many(&ids).await?;
        ops.close().await;
        let rows: Vec<_> = all
            .iter()
            .zip(ids.iter().zip(done.iter()))
            .map(|((address, verdict), (id, d))| {
                let (state, why) = state_of(verdict, d.as_ref());
                (address, id, state, why)
            })
            .filter(|(_, _, s, _)| self.state.is_none_or(|w| w == *s))
            .take(self.limit)
            .collect();
        if ctx.json {
            let v: Vec<_> = rows
                .iter()
                .map(|(a, id, s, why)| {
                    json!({"recipient": a, "message": id, "state": s.as_str(), "reason": why})
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!("{:<40} {:<9} reason", "recipient", "state");
            for (a, _, s, why) in &rows {
                println!("{:<40} {:<9} {why}", a, s.as_str());
            }
            println!("-- {} recipient(s) shown", rows.len());
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_state::store::{DoneRecord, DoneState};

    #[test]
    fn a_recipient_is_excluded_by_its_verdict_else_in_its_terminal_state_or_pending() {
        let rec = |state| DoneRecord {
            state,
            detail: "d".into(),
            ..Default::default()
        };
        let table = [
            ("duplicate", None, RecipientState::Excluded, "duplicate"),
            (
                "excluded_by_rule:roles",
                None,
                RecipientState::Excluded,
                "excluded_by_rule:roles",
            ),
            ("accepted", None, RecipientState::Pending, ""),
            (
                "accepted",
                Some(rec(DoneState::Sent)),
                RecipientState::Sent,
                "d",
            ),
            (
                "accepted",
                Some(rec(DoneState::Dead)),
                RecipientState::Dead,
                "d",
            ),
            (
                "accepted",
                Some(rec(DoneState::Removed)),
                RecipientState::Removed,
                "d",
            ),
        ];
        for (verdict, done, state, why) in table {
            assert_eq!(
                state_of(verdict, done.as_ref()),
                (state, why.to_string()),
                "{verdict}"
            );
        }
    }
}

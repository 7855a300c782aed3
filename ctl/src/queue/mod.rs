//! `mailpipe queue`: see and steer what is queued, like Postfix's
//! `postqueue -p` / `postqueue -f` / `postsuper -d`.//!
//! One file per subcommand: `list.rs`, `show.rs`, `flush.rs`, `remove.rs`,
//! `purge.rs` (`summary` and `release` are `crate::summary` and
//! `crate::ambiguous`).

mod flush;
mod list;
mod purge;
mod remove;
mod show;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use flush::FlushCommand;
pub use list::ListCommand;
pub use purge::PurgeCommand;
pub use remove::RemoveCommand;
pub use show::ShowCommand;

/// Inspect and manage queued mail (postqueue/postsuper parity).
#[derive(Args)]
pub struct QueueCommand {
    #[command(subcommand)]
    pub command: QueueSubCommand,
}

#[derive(Subcommand)]
pub enum QueueSubCommand {
    List(ListCommand),
    Summary(crate::summary::SummaryCommand),
    Show(ShowCommand),
    Flush(FlushCommand),
    Remove(RemoveCommand),
    Purge(PurgeCommand),
    Release(crate::ambiguous::ReleaseCommand),
}

impl QueueCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        match &self.command {
            QueueSubCommand::List(c) => c.run(ctx).await,
            QueueSubCommand::Summary(c) => c.run(ctx).await,
            QueueSubCommand::Show(c) => c.run(ctx).await,
            QueueSubCommand::Flush(c) => c.run(ctx).await,
            QueueSubCommand::Remove(c) => c.run(ctx).await,
            QueueSubCommand::Purge(c) => c.run(ctx).await,
            QueueSubCommand::Release(c) => c.run(ctx).await,
        }
    }
}

/// Says that no request `id` is known, and how to find the right one; exit
/// code 3 (nothing was written).
pub fn unknown_request(id: &str) -> ExitCode {
    crate::out::error(&format!(
        "no request {id:?} is known (use the request id that `mailpipe submit` printed; `mailpipe queue list --deferred` shows it in the request column)"
    ));
    ExitCode::from(3)
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 0 => format!("in {}", human(-s)),
        s => format!("{} ago", human(s)),
    }
}

fn human(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

//! `mailpipe bounces`: the qualification table (seeds/003) — every failure
//! text seen, normalized so identical failures aggregate, by count.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use mailpipe_common::store::Store;

/// List failure texts by how often they occurred, with their classification
/// and qualification (`to_qualify` when no rule matched them: candidates for
/// a new rule in your rules file).
#[derive(Args)]
pub struct BouncesCommand {
    /// Rows to show.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only texts no rule matched.
    #[arg(long)]
    pub to_qualify: bool,
}

impl BouncesCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let mut rows = store
            .bounces(if self.to_qualify { 10_000 } else { self.limit })
            .await?;
        if self.to_qualify {
            rows.retain(|r| r.qualification == "to_qualify");
            rows.truncate(self.limit);
        }
        if ctx.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:>8}  {:<6} {:<18} {:<11} text",
            "count", "type", "reason", "qualified"
        );
        for r in rows {
            println!(
                "{:>8}  {:<6} {:<18} {:<11} {}",
                r.count, r.kind, r.reason, r.qualification, r.text
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

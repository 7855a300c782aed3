//! `mailpipe site`: the sites (mail systems behind recipient domains, named
//! from their MX hosts) the senders attempted lately, their attempt rates
//! and their domains.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mailpipe_common::policy::Policy;
use mailpipe_common::store::Store;

/// See the sites recipient domains belong to (by their MX hosts).
#[derive(Args)]
pub struct SiteCommand {
    #[command(subcommand)]
    pub command: SiteSubCommand,
}

#[derive(Subcommand)]
pub enum SiteSubCommand {
    /// Sites attempted in the last day, the latest first: domains, attempts per second.
    List,
    /// One site and the domains attempted there in the last day.
    Show { site: String },
}

impl SiteCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let policy = Policy::new(store);
        match &self.command {
            SiteSubCommand::List => {
                let rows = policy.sites_seen().await?;
                if ctx.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!("{:<32} {:>8} {:>10}", "site", "domains", "attempts/s");
                    for r in rows {
                        println!(
                            "{:<32} {:>8} {:>10.1}",
                            r.site, r.domains, r.rate_per_second
                        );
                    }
                }
            }
            SiteSubCommand::Show { site } => {
                let site = site.trim().to_ascii_lowercase();
                let Some(seen) = policy.site_seen_now(&site).await? else {
                    crate::out::error(&format!("no site {site} was attempted in the last day"));
                    return Ok(ExitCode::from(3));
                };
                let mut v = serde_json::to_value(&seen)?;
                v["domain_list"] = serde_json::json!(policy.site_domains(&site).await?);
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

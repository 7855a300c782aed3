//! `mailpipe site`: the sites (mail systems behind recipient domains, named
//! from their MX hosts): what the senders attempted lately, and each site's
//! controls at run time, shared by every sender replica through Redis: a
//! pause with its reason, an MX rule over the configured one, and the
//! adaptive controller's state and last changes.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mailpipe_common::ratelimit::Rate;
use mailpipe_state::policy::{PauseBy, Policy};
use mailpipe_state::sitecontrol::{SiteControls, SiteRule};
use mailpipe_state::store::Store;

/// See and steer sending per site (the mail system behind a domain's MX hosts).
#[derive(Args)]
pub struct SiteCommand {
    #[command(subcommand)]
    pub command: SiteSubCommand,
}

#[derive(Subcommand)]
pub enum SiteSubCommand {
    /// Sites attempted in the last day or with controls: domains, attempts per second, state, allowed rate, pause.
    List,
    /// One site: its domains, pause, MX rule, adaptive state and its last changes.
    Show { site: String },
    /// Stop sending to every domain of a site for a while; its messages wait in the delay tiers.
    Pause {
        site: String,
        /// Why (shown by `site show` and `site list`).
        #[arg(long)]
        reason: String,
        /// How long, e.g. 30m or 3h.
        #[arg(long, default_value = "1h")]
        r#for: String,
    },
    /// Resume a paused or suspended site.
    Resume { site: String },
    /// Set the site's MX rule at run time, over the configured one, shared by all senders.
    Limit {
        site: String,
        /// Messages per period to the site, e.g. 300/s or 20000/h.
        #[arg(long)]
        rate: Option<Rate>,
        /// Messages allowed at once above the rate.
        #[arg(long)]
        burst: Option<u32>,
        /// Transactions in flight to the site across all senders.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Close a connection after this many messages.
        #[arg(long)]
        messages_per_connection: Option<u32>,
        /// Drop the run-time rule (back to the configuration).
        #[arg(long, conflicts_with_all = ["rate", "burst", "concurrency", "messages_per_connection"])]
        clear: bool,
    },
}

/// A site as operators write it; `None` when it cannot be a site name.
fn site_name(raw: &str) -> Option<String> {
    let s = raw.trim().to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    ok.then_some(s)
}

/// The state a site is in, as one word: an operator's pause wins, then the
/// controller's phase; `-` without either.
fn state_of(controls: &SiteControls) -> String {
    match (&controls.pause, &controls.control) {
        (Some(p), _) if p.by == PauseBy::Operator.as_str() => "paused".into(),
        (Some(_), _) => "suspended".into(),
        (None, Some(c)) => c.phase.as_str().into(),
        (None, None) => "-".into(),
    }
}

impl SiteCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let policy = Policy::new(store);
        let site_arg = |raw: &str| -> Result<String, ExitCode> {
            site_name(raw).ok_or_else(|| {
                crate::out::error(&format!(
                    "{raw:?} is not a site name (letters, digits, '.', '-', '_')"
                ));
                ExitCode::from(2)
            })
        };
        match &self.command {
            SiteSubCommand::List => {
                let seen = policy.sites_seen().await?;
                let mut names: BTreeSet<String> = seen.iter().map(|s| s.site.clone()).collect();
                names.extend(policy.controlled_sites().await?);
                let mut rows = Vec::new();
                for site in names {
                    let controls = policy.site_controls(&site).await?;
                    let s = seen.iter().find(|s| s.site == site);
                    rows.push(serde_json::json!({
                        "site": site,
                        "domains": s.map_or(0, |s| s.domains),
                        "rate_per_second": s.map_or(0.0, |s| s.rate_per_second),
                        "last_ms": s.map(|s| s.last_ms),
                        "state": state_of(&controls),
                        "allowed_rate_per_second": controls.control.as_ref().map(|c| c.rate),
                        "paused_for": controls.pause.as_ref().map(|p| p.for_s),
                        "paused_by": controls.pause.as_ref().map(|p| p.by.clone()),
                        "reason": controls.pause.as_ref().map(|p| p.reason.clone()),
                    }));
                }
                // The latest attempted first, then the others by name.
                rows.sort_by_key(|r| std::cmp::Reverse(r["last_ms"].as_i64().unwrap_or(0)));
                if ctx.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!(
                        "{:<32} {:>8} {:>10} {:<10} {:>9}  pause",
                        "site", "domains", "attempts/s", "state", "allowed/s"
                    );
                    for r in rows {
                        println!(
                            "{:<32} {:>8} {:>10.1} {:<10} {:>9}  {}",
                            r["site"].as_str().unwrap_or_default(),
                            r["domains"],
                            r["rate_per_second"].as_f64().unwrap_or(0.0),
                            r["state"].as_str().unwrap_or_default(),
                            r["allowed_rate_per_second"]
                                .as_f64()
                                .map(|v| format!("{v:.1}"))
                                .unwrap_or_else(|| "-".into()),
                            match r["paused_for"].as_u64() {
                                Some(s) => format!(
                                    "{s}s by {}: {}",
                                    r["paused_by"].as_str().unwrap_or_default(),
                                    r["reason"].as_str().unwrap_or_default()
                                ),
                                None => "-".into(),
                            }
                        );
                    }
                }
            }
            SiteSubCommand::Show { site } => {
                let site = match site_arg(site) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                let seen = policy.site_seen_now(&site).await?;
                let controls = policy.site_controls(&site).await?;
                let configured = ctx.settings.sites.limits.get(&site);
                if seen.is_none()
                    && controls.pause.is_none()
                    && controls.rule.is_empty()
                    && controls.control.is_none()
                    && configured.is_none()
                {
                    crate::out::error(&format!(
                        "no site {site} was attempted in the last day or has controls"
                    ));
                    return Ok(ExitCode::from(3));
                }
                let v = serde_json::json!({
                    "site": site,
                    "domains": seen.as_ref().map_or(0, |s| s.domains),
                    "rate_per_second": seen.as_ref().map_or(0.0, |s| s.rate_per_second),
                    "last_ms": seen.as_ref().map(|s| s.last_ms),
                    "domain_list": policy.site_domains(&site).await?,
                    "state": state_of(&controls),
                    "pause": controls.pause,
                    "rule": controls.rule,
                    "configured": configured.map(|c| serde_json::json!({
                        "rate": c.rate.map(|r| r.to_string()),
                        "burst": c.burst,
                        "concurrency": c.concurrency,
                        "messages_per_connection": c.messages_per_connection,
                    })),
                    "adaptive": controls.control,
                    "changes": controls.log,
                    "in_flight": controls.in_flight,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            SiteSubCommand::Pause {
                site,
                reason,
                r#for,
            } => {
                let site = match site_arg(site) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                let d =
                    mailpipe_common::config::parse_duration(r#for).map_err(anyhow::Error::msg)?;
                if reason.trim().is_empty() {
                    crate::out::error("give the pause a --reason");
                    return Ok(ExitCode::from(2));
                }
                if !self.known(ctx, &policy, &site).await? {
                    return Ok(unknown(&site));
                }
                policy
                    .pause_site(&site, d, PauseBy::Operator.as_str(), reason.trim())
                    .await?;
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::json!({"site": site, "paused_for": d.as_secs(), "reason": reason.trim()})
                    );
                } else {
                    println!("{site} paused for {}: {}", r#for, reason.trim());
                }
            }
            SiteSubCommand::Resume { site } => {
                let site = match site_arg(site) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                if !self.known(ctx, &policy, &site).await? {
                    return Ok(unknown(&site));
                }
                let was = policy.resume_site(&site).await?;
                if ctx.json {
                    println!("{}", serde_json::json!({"site": site, "was_paused": was}));
                } else if was {
                    println!("{site} resumed");
                } else {
                    println!("{site} was not paused");
                }
            }
            SiteSubCommand::Limit {
                site,
                rate,
                burst,
                concurrency,
                messages_per_connection,
                clear,
            } => {
                let site = match site_arg(site) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                let rule = SiteRule {
                    rate_per_second: rate.map(|r| r.per_second()),
                    burst: *burst,
                    concurrency: *concurrency,
                    messages_per_connection: *messages_per_connection,
                };
                if !*clear && rule.is_empty() {
                    crate::out::error(
                        "give --rate, --burst, --concurrency, --messages-per-connection or --clear",
                    );
                    return Ok(ExitCode::from(2));
                }
                if [rule.burst, rule.concurrency, rule.messages_per_connection].contains(&Some(0)) {
                    crate::out::error(
                        "--burst, --concurrency and --messages-per-connection are at least 1",
                    );
                    return Ok(ExitCode::from(2));
                }
                if !self.known(ctx, &policy, &site).await? {
                    return Ok(unknown(&site));
                }
                if *clear {
                    policy.clear_site_limit(&site).await?;
                    if ctx.json {
                        println!("{}", serde_json::json!({"site": site, "cleared": true}));
                    } else {
                        println!("{site}: run-time MX rule cleared");
                    }
                } else {
                    policy.set_site_limit(&site, &rule).await?;
                    if ctx.json {
                        let mut v = serde_json::to_value(&rule)?;
                        v["site"] = serde_json::json!(site);
                        println!("{v}");
                    } else {
                        println!("{site}: MX rule set");
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Whether mailpipe knows the site: attempted in the last day, named
    /// by a rule or in `sites.limits`, or with controls in Redis. Steering
    /// an unknown site is most likely a typo.
    async fn known(
        &self,
        ctx: &crate::Context,
        policy: &Policy,
        site: &str,
    ) -> anyhow::Result<bool> {
        let s = &ctx.settings.sites;
        if s.limits.contains_key(site)
            || s.rules.iter().any(|r| r.site.eq_ignore_ascii_case(site))
            || mailpipe_common::sites::shipped_rules()
                .iter()
                .any(|r| r.site == site)
        {
            return Ok(true);
        }
        if policy.site_seen_now(site).await?.is_some() {
            return Ok(true);
        }
        Ok(policy.controlled_sites().await?.iter().any(|c| c == site))
    }
}

fn unknown(site: &str) -> ExitCode {
    crate::out::error(&format!(
        "unknown site {site}: not attempted in the last day, not named by a rule or in sites.limits"
    ));
    ExitCode::from(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_are_lowercased_and_checked() {
        let table = [
            ("Google", Some("google")),
            (" alpha-mail.test ", Some("alpha-mail.test")),
            ("a_b", Some("a_b")),
            ("", None),
            ("a b", None),
            ("a:b", None),
            ("*.google.com", None),
        ];
        for (raw, want) in table {
            assert_eq!(site_name(raw).as_deref(), want, "{raw:?}");
        }
    }
}

//! `mailpipe domain`: the sending policy per destination domain, at run
//! time: pauses, limits, slow-downs and the breaker's window, shared by
//! every sender replica through Redis.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mailpipe_common::ratelimit::Rate;
use mailpipe_state::policy::{DomainState, PauseBy, PauseNote, Policy};
use mailpipe_state::store::Store;

/// See and steer per-domain sending: pause, resume, limit.
#[derive(Args)]
pub struct DomainCommand {
    #[command(subcommand)]
    pub command: DomainSubCommand,
}

#[derive(Subcommand)]
pub enum DomainSubCommand {
    /// Domains with a pause, a run-time limit, a slow-down or recent traffic.
    List,
    /// One domain: pause, limits, slow-down, breaker window, transactions in flight.
    Show { domain: String },
    /// Stop sending to a domain for a while; its messages wait in the delay tiers.
    Pause {
        domain: String,
        /// How long, e.g. 30m or 3h.
        #[arg(long, default_value = "1h")]
        r#for: String,
        /// Why (shown by `domain show`, `domain list`, and by `mailpipe
        /// status` and `queue list` for the mail it holds back).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused domain (also clears its slow-down and breaker window).
    Resume { domain: String },
    /// Set run-time limits over the configured ones, shared by all senders.
    Limit {
        domain: String,
        /// Messages per period, e.g. 50/s or 3000/h.
        #[arg(long)]
        rate: Option<Rate>,
        /// Messages allowed at once above the rate.
        #[arg(long)]
        burst: Option<u32>,
        /// Transactions in flight across all senders.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Drop the run-time limits (back to the configuration).
        #[arg(long, conflicts_with_all = ["rate", "burst", "concurrency"])]
        clear: bool,
    },
}

impl DomainCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let policy = Policy::new(store);
        let breaker = &ctx.settings.policy.breaker;
        let norm = |d: &str| d.trim().trim_start_matches('@').to_ascii_lowercase();
        match &self.command {
            DomainSubCommand::List => {
                let mut rows = Vec::new();
                for d in policy.known_domains().await? {
                    rows.push(policy.state(&d, breaker).await?);
                }
                if ctx.json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!(
                        "{:<32} {:<30} {:>10} {:>6} {:>9} {:>8} {:>8}  reason",
                        "domain",
                        "paused until",
                        "rate/s",
                        "burst",
                        "slowdown",
                        "attempts",
                        "failures"
                    );
                    for r in rows {
                        println!(
                            "{:<32} {:<30} {:>10} {:>6} {:>9} {:>8} {:>8}  {}",
                            r.domain,
                            paused_until(&r),
                            r.rate_per_second
                                .map(|v| format!("{v:.1}"))
                                .unwrap_or_else(|| "config".into()),
                            r.burst.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                            r.slowdown
                                .map(|v| format!("{:.0}%", v * 100.0))
                                .unwrap_or_else(|| "-".into()),
                            r.attempts,
                            r.failures,
                            pause_reason(&r)
                        );
                    }
                }
            }
            DomainSubCommand::Show { domain } => {
                let st = policy.state(&norm(domain), breaker).await?;
                let mut v = serde_json::to_value(&st)?;
                let cfg = ctx.settings.policy.for_domain(&norm(domain));
                v["configured"] = serde_json::json!({
                    "rate": cfg.rate.map(|r| r.to_string()),
                    "burst": cfg.burst,
                    "concurrency": cfg.concurrency,
                    "route": cfg.route,
                });
                if ctx.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    show(&st, &v["configured"]);
                }
            }
            DomainSubCommand::Pause {
                domain,
                r#for,
                reason,
            } => {
                let d =
                    mailpipe_common::config::parse_duration(r#for).map_err(anyhow::Error::msg)?;
                let note = PauseNote {
                    at: mailpipe_common::unix_now(),
                    reason: reason.clone(),
                    by: std::env::var("USER").unwrap_or_default(),
                };
                policy
                    .pause(&norm(domain), d, PauseBy::Operator.as_str(), Some(&note))
                    .await?;
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::json!({"domain": norm(domain), "paused_for": d.as_secs(), "reason": reason})
                    );
                } else {
                    println!("{} paused for {}", norm(domain), r#for);
                }
            }
            DomainSubCommand::Resume { domain } => {
                let was = policy.resume(&norm(domain)).await?;
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::json!({"domain": norm(domain), "was_paused": was})
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "{} {}",
                    norm(domain),
                    if was {
                        "resumed"
                    } else {
                        "was not paused (slow-down and breaker window cleared)"
                    }
                );
            }
            DomainSubCommand::Limit {
                domain,
                rate,
                burst,
                concurrency,
                clear,
            } => {
                if *clear {
                    policy.clear_limit(&norm(domain)).await?;
                    if ctx.json {
                        println!(
                            "{}",
                            serde_json::json!({"domain": norm(domain), "cleared": true})
                        );
                    } else {
                        println!("{}: run-time limits cleared", norm(domain));
                    }
                } else if rate.is_none() && burst.is_none() && concurrency.is_none() {
                    crate::out::error("give --rate, --burst, --concurrency or --clear");
                    return Ok(ExitCode::from(2));
                } else {
                    policy
                        .set_limit(&norm(domain), *rate, *burst, *concurrency)
                        .await?;
                    if ctx.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "domain": norm(domain),
                                "rate_per_second": rate.map(|r| 1.0 / r.interval().as_secs_f64()),
                                "burst": burst, "concurrency": concurrency,
                            })
                        );
                    } else {
                        println!("{}: limits set", norm(domain));
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A domain's pause in a table: until when (UTC) and by what, or `-`.
fn paused_until(s: &DomainState) -> String {
    match (s.paused_until, &s.paused_by) {
        (Some(until), by) => format!(
            "{} ({})",
            crate::out::utc(until),
            by.as_deref().unwrap_or("?")
        ),
        _ => "-".into(),
    }
}

/// Why an operator paused a domain, in a table (`-`: not paused, or no
/// reason given).
fn pause_reason(s: &DomainState) -> &str {
    match &s.pause_note {
        Some(n) if s.paused_until.is_some() && !n.reason.is_empty() => &n.reason,
        _ => "-",
    }
}

/// `domain show` for people: one line per setting.
fn show(s: &DomainState, configured: &serde_json::Value) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("domain      {}", s.domain);
    println!("paused      {}", paused_until(s));
    if let Some(n) = s.pause_note.as_ref().filter(|_| s.paused_until.is_some()) {
        let by = if n.by.is_empty() {
            String::new()
        } else {
            format!(" by {}", n.by)
        };
        println!(
            "  since     {}{by}: {}",
            crate::out::utc(n.at),
            if n.reason.is_empty() {
                "no reason given"
            } else {
                &n.reason
            }
        );
    }
    println!(
        "limits      rate {}/s, burst {}, concurrency {} (run-time; configured: rate {}, burst {}, concurrency {}, route {})",
        or_dash(s.rate_per_second.map(|v| format!("{v:.1}"))),
        or_dash(s.burst.map(|v| v.to_string())),
        or_dash(s.concurrency.map(|v| v.to_string())),
        configured["rate"].as_str().unwrap_or("-"),
        or_dash(configured["burst"].as_u64().map(|v| v.to_string())),
        or_dash(configured["concurrency"].as_u64().map(|v| v.to_string())),
        configured["route"].as_str().unwrap_or("-"),
    );
    println!(
        "slowdown    {}",
        match (s.slowdown, s.slowed_rate_per_second) {
            (Some(f), Some(r)) => format!("{:.0}% ({r:.1}/s)", f * 100.0),
            (Some(f), None) => format!("{:.0}%", f * 100.0),
            _ => "-".into(),
        }
    );
    println!(
        "breaker     {} attempt(s), {} failure(s) in its window",
        s.attempts, s.failures
    );
    println!("in flight   {}", s.in_flight);
}

//! `mailpipe status ID`: where every recipient of a campaign is.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use mailpipe_common::store::{RequestStatus, Store};

/// Show a campaign's counts: recipients, accepted, excluded by reason (and
/// by rule), flagged, sent, dead by reason, removed and pending. Exit code 3 when the request is unknown.
#[derive(Args)]
pub struct StatusCommand {
    /// The request id printed by `mailpipe submit`.
    pub id: String,
    /// Refresh every second until nothing is pending (progress bars on a terminal).
    #[arg(long)]
    pub watch: bool,
}

impl StatusCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        if !self.watch {
            let s = store.request_status(&self.id).await?;
            if s.meta.is_none() && s.refused.is_empty() {
                return Ok(crate::queue::unknown_request(&self.id));
            }
            let state = state(&store, &s).await?;
            print(&s, state, ctx.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        self.watch(&store, ctx).await
    }

    async fn watch(&self, store: &Store, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let tty = std::io::stderr().is_terminal() && !ctx.json;
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} done  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let started = Instant::now();
        let mut first_done: Option<u64> = None;
        loop {
            let s = store.request_status(&self.id).await?;
            let done = s.accepted - s.pending;
            let first = *first_done.get_or_insert(done);
            let rate = (done - first) as f64 / started.elapsed().as_secs_f64().max(0.001);
            let eta = if rate > 0.0 {
                format!("{:.0}s", s.pending as f64 / rate)
            } else {
                "-".into()
            };
            if let Some(b) = &bar {
                b.set_length(s.accepted);
                b.set_position(done);
                b.set_message(format!(
                    "sent {} dead {} pending {}  {:.0}/s  eta {eta}",
                    s.sent,
                    s.dead.values().sum::<u64>(),
                    s.pending,
                    rate
                ));
            }
            if s.is_complete() || s.is_incomplete() {
                if let Some(b) = &bar {
                    b.finish();
                }
                print(&s, state(store, &s).await?, ctx.json)?;
                // Nothing more will happen to an incomplete request: say so
                // in the exit code too, so a script does not take it as done.
                return Ok(if s.is_complete() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(4)
                });
            }
            if bar.is_none() && !ctx.json {
                println!(
                    "{}: sent {} pending {} ({rate:.0}/s, eta {eta})",
                    self.id, s.sent, s.pending
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The request's state (see [`crate::campaign::state_of`]).
async fn state(store: &Store, s: &RequestStatus) -> anyhow::Result<&'static str> {
    let held = store.campaign_flag(&s.request, "held").await?;
    let cancelled = store.campaign_flag(&s.request, "cancelled").await?;
    Ok(crate::campaign::state_of(s, held, cancelled))
}

fn print(s: &RequestStatus, state: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(s)?;
        v["state"] = state.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("request    {}", s.request);
    let why = match state {
        "incomplete" => " (a part was refused; nothing more will be sent)",
        "held" => " (senders park its messages until `mailpipe campaign release`)",
        "cancelled" => " (what is left ends as removed as it reaches a sender)",
        _ => "",
    };
    println!("state      {state}{why}");
    if let (Some(h), "held") = (&s.hold, state) {
        let reason = if h.reason.is_empty() {
            "no reason given"
        } else {
            &h.reason
        };
        let by = if h.by.is_empty() {
            String::new()
        } else {
            format!(" by {}", h.by)
        };
        println!("held       since {}{by}: {reason}", crate::out::utc(h.at));
    }
    for (part, r) in &s.refused {
        let which = if part == "request" {
            "request".to_string()
        } else {
            format!("part {part}")
        };
        println!("refused    {which}: {} ({})", r.reason, r.detail);
    }
    let Some(meta) = s.meta.clone() else {
        return Ok(());
    };
    if let Some(c) = &meta.campaign {
        println!("campaign   {c}");
    }
    if let Some(t) = &meta.tenant {
        println!("tenant     {t}");
    }
    println!("lane       {}", meta.lane.map_or("-", |l| l.as_str()));
    println!("parts      {}/{} expanded", s.parts_done, meta.parts_total);
    println!("recipients {}", s.recipients);
    println!("expanded   {}", s.accepted);
    println!("excluded   {}", s.excluded.values().sum::<u64>());
    for (reason, n) in &s.excluded {
        println!("  {reason:<22} {n}");
        if reason == mailpipe_common::rules::EXCLUDED_BY_RULE {
            for (rule, n) in &s.rules {
                println!("    rule {rule:<17} {n}");
            }
        }
    }
    if !s.flagged.is_empty() {
        println!("flagged    {} (accepted)", s.flagged.values().sum::<u64>());
        for (check, n) in &s.flagged {
            println!("  {check:<22} {n}");
        }
    }
    println!("sent       {}", s.sent);
    println!("dead       {}", s.dead.values().sum::<u64>());
    for (reason, n) in &s.dead {
        println!("  {reason:<22} {n}");
    }
    println!("removed    {}", s.removed);
    println!("pending    {}", s.pending);
    println!("failed attempts so far: {}", s.failed_attempts);
    // Reports that came back after delivery (the intake): part of `sent`.
    println!("bounced later {}", s.bounced.values().sum::<u64>());
    for (reason, n) in &s.bounced {
        println!("  {reason:<22} {n}");
    }
    println!("complaints {}", s.complained);
    println!("unsubscribed {}", s.unsubscribed);
    // Recipients whose attempt's outcome was unknown (data sent, no reply
    // read): with `sender.on_ambiguous: resend` they may have it twice.
    println!("ambiguous  {}", s.ambiguous);
    Ok(())
}

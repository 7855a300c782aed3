//! `mailpipe status ID`: where every recipient of a campaign is.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use mailpipe_state::store::{CampaignFlag, RequestStatus, Store};

use crate::campaign::CampaignState;
use crate::waiting::{thousands, when, Whereabouts};

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
            let w = crate::waiting::of_request(&store, ctx, &s).await?;
            print(&s, state, &w, ctx.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        let s = store.request_status(&self.id).await?;
        if s.meta.is_none() && s.refused.is_empty() {
            return Ok(crate::queue::unknown_request(&self.id));
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
        let mut samples = std::collections::VecDeque::new();
        loop {
            let s = store.request_status(&self.id).await?;
            let done = s.accepted - s.pending;
            samples.push_back((Instant::now(), done));
            while samples.len() > RATE_SAMPLES {
                samples.pop_front();
            }
            let rate = recent_rate(&samples);
            let w = crate::waiting::of_request(store, ctx, &s).await?;
            let now = mailpipe_common::unix_now();
            let eta = eta(w.in_lanes, rate);
            let waiting = crate::waiting::waiting_line(&w, now)
                .map(|l| format!("  waiting: {l}"))
                .unwrap_or_default();
            if let Some(b) = &bar {
                b.set_length(s.accepted);
                b.set_position(done);
                b.set_message(format!(
                    "sent {} dead {} pending {}  {:.0}/s  eta {eta}{waiting}",
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
                print(&s, state(store, &s).await?, &w, ctx.json)?;
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
                    "{}: sent {} pending {} ({rate:.0}/s, eta {eta}){waiting}",
                    self.id, s.sent, s.pending
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Samples of the watch's progress the rate is measured over (one a
/// second): the rate of the last few seconds, not of the whole watch, so a
/// stop shows as 0/s within seconds instead of a slowly falling average.
const RATE_SAMPLES: usize = 10;

/// Recipients finished per second between the first and last samples
/// (time, recipients finished); 0 with fewer than two.
fn recent_rate(samples: &std::collections::VecDeque<(Instant, u64)>) -> f64 {
    match (samples.front(), samples.back()) {
        (Some((t0, d0)), Some((t1, d1))) if t1 > t0 => {
            d1.saturating_sub(*d0) as f64 / t1.duration_since(*t0).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// The time left to send what is in the lanes at `rate`; `-` when nothing
/// is in the lanes (what is left waits for a due time or a pause, which
/// the waiting line says) or nothing moves.
fn eta(in_lanes: u64, rate: f64) -> String {
    if in_lanes == 0 || rate <= 0.0 {
        return "-".into();
    }
    let secs = (in_lanes as f64 / rate).ceil() as u64;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The request's state (see [`crate::campaign::state_of`]).
async fn state(store: &Store, s: &RequestStatus) -> anyhow::Result<CampaignState> {
    let held = store.campaign_flag(&s.request, CampaignFlag::Held).await?;
    let cancelled = store
        .campaign_flag(&s.request, CampaignFlag::Cancelled)
        .await?;
    Ok(crate::campaign::state_of(s, held, cancelled))
}

fn print(
    s: &RequestStatus,
    state: CampaignState,
    w: &Whereabouts,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(s)?;
        v["state"] = state.as_str().into();
        v["whereabouts"] = serde_json::to_value(w)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("request    {}", s.request);
    let why = match state {
        CampaignState::Incomplete => " (a part was refused; nothing more will be sent)",
        CampaignState::Held => " (senders park its messages until `mailpipe campaign release`)",
        CampaignState::Cancelled => " (what is left ends as removed as it reaches a sender)",
        _ => "",
    };
    println!("state      {state}{why}");
    if let (Some(h), CampaignState::Held) = (&s.hold, state) {
        let reason = if h.reason.is_empty() {
            "no reason given"
        } else {
            &h.reason
        };
        let by = crate::out::optional(" by ", &h.by);
        println!("held       since {}{by}: {reason}", crate::out::utc(h.at));
    }
    for (part, r) in &s.refused {
        let which = if part == mailpipe_state::store::REFUSED_REQUEST {
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
    print_whereabouts(w, state == CampaignState::Held);
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

/// Where the pending recipients are, under `pending`.
fn print_whereabouts(w: &Whereabouts, held: bool) {
    let now = mailpipe_common::unix_now();
    if w.in_lanes > 0 {
        let where_ = if held {
            "parked while held, or in a send lane"
        } else {
            "in a send lane or being sent"
        };
        println!("  {:<10} {:>9}  {where_}", "sending", thousands(w.in_lanes));
    }
    let deferred = w.deferred_total();
    if deferred > 0 {
        let whys: Vec<String> = w
            .deferred
            .iter()
            .map(|(why, n)| format!("{why} {}", thousands(*n)))
            .collect();
        let next = match (w.next_attempt, w.last_attempt) {
            (Some(a), Some(b)) if b > a => {
                format!("; next attempt {}, last {}", when(a, now), when(b, now))
            }
            (Some(a), _) => format!("; next attempt {}", when(a, now)),
            _ => String::new(),
        };
        let tier = w
            .tier
            .as_ref()
            .map(|t| format!(" (tier {t})"))
            .unwrap_or_default();
        println!(
            "  {:<10} {:>9}  {}{next}{tier}",
            "deferred",
            thousands(deferred),
            whys.join(", ")
        );
    }
    if !w.paused.is_empty() {
        w.print_paused();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_of_the_last_samples_and_the_eta_only_for_what_is_in_the_lanes() {
        let t0 = Instant::now();
        let at = |s: u64, done: u64| (t0 + Duration::from_secs(s), done);
        // (samples, rate)
        let table: Vec<(Vec<(Instant, u64)>, f64)> = vec![
            (vec![], 0.0),
            (vec![at(0, 10)], 0.0),
            (vec![at(0, 10), at(2, 30)], 10.0),
            // Nothing moved in the window: 0, whatever came before it.
            (vec![at(0, 500), at(9, 500)], 0.0),
        ];
        for (samples, rate) in table {
            let q: std::collections::VecDeque<_> = samples.into_iter().collect();
            assert_eq!(recent_rate(&q), rate);
        }
        // (in lanes, rate, eta)
        let table = [
            (0, 100.0, "-"),
            (1200, 0.0, "-"),
            (100, 10.0, "10s"),
            (6000, 10.0, "10m"),
            (72_000, 10.0, "2h00m"),
        ];
        for (in_lanes, rate, expected) in table {
            assert_eq!(eta(in_lanes, rate), expected, "{in_lanes} at {rate}/s");
        }
    }
}

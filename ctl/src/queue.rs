//! `mailpipe queue`: see and steer what is queued, like Postfix's
//! `postqueue -p` / `postqueue -f` / `postsuper -d`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use mailpipe_common::address::EmailAddress;
use mailpipe_common::message::{message_id, Lane};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use serde_json::json;

use crate::ops::{require_yes, DrainCounts, Fate, Ops};
use crate::waiting::{thousands, Active, Whereabouts};

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

/// Depth and consumers of every lane, delay tier, failure, dead-letter and
/// ambiguous queue (like `postqueue -p` summarised); with --deferred, the
/// deferred messages themselves; with --ambiguous, the recipients held
/// because their attempt's outcome is unknown.
#[derive(Args)]
pub struct ListCommand {
    /// List deferred messages: id, recipient, campaign, attempt, last reason, next attempt.
    #[arg(long, conflicts_with = "ambiguous")]
    pub deferred: bool,
    /// List the recipients held because an attempt sent the data and no
    /// reply was read (`sender.on_ambiguous: hold`): id, recipient, request, why.
    #[arg(long)]
    pub ambiguous: bool,
    /// Deferred messages to show at most.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// One message's history: attempts, replies, classification, state.
/// Exit code 3 when nothing is known about it.
#[derive(Args)]
pub struct ShowCommand {
    /// Message id (as in `queue list --deferred`, events and the X-Mailpipe-Id header).
    pub id: String,
}

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

/// Remove messages so they are never sent (like `postsuper -d ID`). They end
/// in the state `removed`, counted in `mailpipe status`.
#[derive(Args)]
pub struct RemoveCommand {
    /// Message ids; with --request, recipient addresses work too.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// The request the messages belong to (needed for messages that are not
    /// deferred, whose request mailpipe cannot look up by id).
    #[arg(long)]
    pub request: Option<String>,
    /// Confirm.
    #[arg(long)]
    pub yes: bool,
}

/// Remove many messages at once (like `postsuper -d ALL`). Every removed
/// message ends in the state `removed`, counted per campaign.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct PurgeCommand {
    /// Everything in this send lane and its delay tiers.
    #[arg(long, group = "what")]
    pub lane: Option<Lane>,
    /// Everything of this request (campaign) id, wherever it is queued; the
    /// campaign is also cancelled so nothing more of it is sent.
    #[arg(long, group = "what")]
    pub campaign: Option<String>,
    /// Everything in every send lane and delay tier (and the recipients
    /// held as ambiguous).
    #[arg(long, group = "what")]
    pub all: bool,
    /// Confirm.
    #[arg(long)]
    pub yes: bool,
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

impl ListCommand {
    async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        let now = unix_now();
        if self.ambiguous {
            let r = crate::ambiguous::list(&ops, ctx.json).await;
            ops.close().await;
            r?;
            return Ok(ExitCode::SUCCESS);
        }
        if self.deferred {
            let rows = ops.store.deferred(self.limit).await?;
            if ctx.json {
                let out: Vec<_> = rows
                    .iter()
                    .map(|(id, due, info)| json!({"id": id, "due": due, "info": info}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "{:<32} {:<30} {:<24} {:<20} {:>7} {:<14} next attempt",
                    "id", "recipient", "request", "campaign", "attempt", "last reason"
                );
                for (id, due, info) in &rows {
                    let s = |k: &str| info[k].as_str().unwrap_or("-").to_string();
                    println!(
                        "{:<32} {:<30} {:<24} {:<20} {:>7} {:<14} {}",
                        id,
                        s("recipient"),
                        s("request"),
                        s("campaign"),
                        info["attempt"].as_u64().unwrap_or(0),
                        s("reason"),
                        ago(now - due)
                    );
                }
                println!("-- {} deferred message(s) shown", rows.len());
            }
            ops.close().await;
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = Vec::new();
        for key in ops.topology.all_keys() {
            if let Some((depth, consumers)) = ops.depth(&key).await? {
                rows.push((key, depth, consumers));
            }
        }
        // Held campaigns' parking queues: their mail is waiting too.
        for request in ops.store.parked().await? {
            let key = Topology::held_key(&request);
            if let Some((depth, consumers)) = ops.depth(&key).await? {
                rows.push((key, depth, consumers));
            }
        }
        let (deferred, next_due) = ops.store.deferred_summary().await?;
        let waiting = Waiting::read(&ops.store, ctx, next_due).await?;
        if ctx.json {
            let queues: Vec<_> = rows
                .iter()
                .map(|(k, d, c)| json!({"queue": ops.topology.queue(k), "messages": d, "consumers": c}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "queues": queues,
                    "deferred": deferred,
                    "next_due": next_due,
                    "recipients": waiting.json(),
                }))?
            );
        } else {
            println!("{:<40} {:>10} {:>10}", "queue", "messages", "consumers");
            for (k, d, c) in &rows {
                println!("{:<40} {:>10} {:>10}", ops.topology.queue(k), d, c);
            }
            println!(
                "(a send-lane message carries the jobs of up to {} recipients of one request; \
                 `mailpipe status ID` counts recipients)",
                ctx.settings.expander.jobs_per_message.max(1)
            );
            match next_due {
                Some(due) => println!(
                    "{deferred} deferred message(s); the next one is due {}",
                    ago(now - due)
                ),
                None => println!("no deferred messages"),
            }
            waiting.print(now);
        }
        ops.close().await;
        Ok(ExitCode::SUCCESS)
    }
}

/// The recipients waiting, as `queue list` shows them: deferred and
/// paused (summed over the requests with recipients pending), the held
/// campaigns, and the paused domains.
struct Waiting {
    pending: u64,
    whereabouts: Whereabouts,
    held: Vec<Active>,
    paused: Vec<mailpipe_state::policy::PausedDomain>,
}

impl Waiting {
    async fn read(
        store: &mailpipe_state::store::Store,
        ctx: &crate::Context,
        next_due: Option<i64>,
    ) -> anyhow::Result<Self> {
        let active = crate::waiting::active(store).await?;
        let all = mailpipe_state::store::RequestStatus {
            pending: active.iter().map(|a| a.status.pending).sum(),
            waiting: crate::waiting::waiting_totals(&active),
            ..Default::default()
        };
        let policy = mailpipe_state::policy::Policy::new(store.clone());
        let (_, paused) = policy.paused(crate::waiting::PAUSES_LOOKED_UP).await?;
        let mut pauses = std::collections::BTreeMap::new();
        crate::waiting::look_up_pauses(
            &policy,
            ctx,
            crate::waiting::paused_domains(&all),
            &mut pauses,
        )
        .await?;
        let deferred = mailpipe_state::store::RequestDeferred {
            first_due: next_due,
            ..Default::default()
        };
        let whereabouts = crate::waiting::whereabouts(&all, &deferred, &pauses);
        Ok(Self {
            pending: all.pending,
            whereabouts,
            held: active.into_iter().filter(|a| a.held).collect(),
            paused,
        })
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "pending": self.pending,
            "in_lanes": self.whereabouts.in_lanes,
            "deferred": self.whereabouts.deferred,
            "next_attempt": self.whereabouts.next_attempt,
            "paused": self.whereabouts.paused,
            "held": self.held.iter().map(|a| json!({
                "request": a.status.request,
                "campaign": a.campaign(),
                "pending": a.status.pending,
                "reason": a.status.hold.as_ref().map(|h| h.reason.clone()),
            })).collect::<Vec<_>>(),
            "paused_domains": self.paused,
        })
    }

    fn print(&self, now: i64) {
        let w = &self.whereabouts;
        println!();
        println!(
            "recipients pending: {} (of the requests not complete)",
            thousands(self.pending)
        );
        println!(
            "  {:<10} {:>9}  in a send lane, being sent, or parked while held",
            "sending",
            thousands(w.in_lanes)
        );
        let whys: Vec<String> = w
            .deferred
            .iter()
            .map(|(why, n)| format!("{why} {}", thousands(*n)))
            .collect();
        let next = w
            .next_attempt
            .map(|d| format!("; the next attempt is due {}", ago(now - d)))
            .unwrap_or_default();
        println!(
            "  {:<10} {:>9}  {}{next}",
            "deferred",
            thousands(w.deferred_total()),
            if whys.is_empty() {
                "-".to_string()
            } else {
                whys.join(", ")
            }
        );
        w.print_paused();
        let held: u64 = self.held.iter().map(|a| a.status.pending).sum();
        println!(
            "  {:<10} {:>9}  pending recipients of {} held campaign(s)",
            "held",
            thousands(held),
            self.held.len()
        );
        for a in &self.held {
            let reason = a
                .status
                .hold
                .as_ref()
                .map(|h| h.reason.as_str())
                .filter(|r| !r.is_empty())
                .unwrap_or("no reason given");
            println!(
                "    {:<30} {:>9}  {reason}",
                a.status.request,
                thousands(a.status.pending)
            );
        }
        if !self.paused.is_empty() {
            println!("paused domains:");
            for p in &self.paused {
                let reason = if p.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", p.reason)
                };
                println!(
                    "  {:<32} until {} (by {}){reason}",
                    p.domain,
                    crate::out::utc(p.until_ms / 1000),
                    p.by
                );
            }
        }
    }
}

impl ShowCommand {
    async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        let done = ops.store.done(&self.id).await?;
        let history = ops.store.history(&self.id).await?;
        let deferred = ops
            .store
            .deferred(100_000)
            .await?
            .into_iter()
            .find(|(id, ..)| id == &self.id);
        ops.close().await;
        if done.is_none() && history.is_empty() && deferred.is_none() {
            crate::out::error(&format!(
                "nothing is known about message {:?} (pending messages that never failed have no history yet)",
                self.id
            ));
            return Ok(ExitCode::from(3));
        }
        let state = match (&done, &deferred) {
            (Some(d), _) => d.state.to_string(),
            (None, Some(_)) => "deferred".into(),
            (None, None) => "pending".into(),
        };
        if ctx.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "id": self.id,
                    "state": state,
                    "done": done,
                    "deferred": deferred.as_ref().map(|(_, due, info)| json!({"due": due, "info": info})),
                    "history": history,
                }))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!("message  {}", self.id);
        println!("state    {state}");
        if let Some(d) = &done {
            println!("request  {}", d.request);
            if !d.route.is_empty() {
                println!("route    {}", d.route);
            }
            println!("detail   {}", d.detail);
        }
        if let Some((_, due, info)) = &deferred {
            println!("request  {}", info["request"].as_str().unwrap_or("-"));
            println!("to       {}", info["recipient"].as_str().unwrap_or("-"));
            println!("next     {}", ago(unix_now() - due));
        }
        for h in &history {
            println!(
                "attempt {:>2}  {:<8} {:<14} {:<6} {}",
                h["attempt"]
                    .as_u64()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                h["decision"].as_str().unwrap_or("-"),
                h["reason"].as_str().unwrap_or("-"),
                h["type"].as_str().unwrap_or("-"),
                h["reply"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl FlushCommand {
    async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
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
                        let domain_ok = domain
                            .as_ref()
                            .is_none_or(|d| j.to.to_ascii_lowercase().ends_with(&format!("@{d}")));
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

impl RemoveCommand {
    async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if let Some(code) = require_yes(self.yes, "queue remove") {
            return Ok(code);
        }
        let ops = Ops::connect(ctx).await?;
        if let Some(r) = &self.request {
            if !ops.known_request(r).await? {
                ops.close().await;
                return Ok(unknown_request(r));
            }
        }
        // Held ambiguous recipients are removed from their queue.
        let ids: std::collections::BTreeSet<String> = self
            .ids
            .iter()
            .map(|raw| target_id(self.request.as_deref(), raw))
            .collect();
        let held = crate::ambiguous::remove(&ops, &ids).await?;
        let deferred = ops.store.deferred(1_000_000).await?;
        let mut removed = held.len();
        let mut unknown = Vec::new();
        for raw in &self.ids {
            let id = target_id(self.request.as_deref(), raw);
            if held.contains(&id) {
                continue;
            }
            let info = deferred.iter().find(|(d, ..)| *d == id).map(|(_, _, i)| i);
            let request = self
                .request
                .clone()
                .or_else(|| info.and_then(|i| i["request"].as_str().map(str::to_string)));
            let Some(request) = request else {
                unknown.push(raw.clone());
                continue;
            };
            let job = mailpipe_common::message::Job {
                v: 1,
                id: id.clone(),
                request,
                tenant: None,
                campaign: info.and_then(|i| i["campaign"].as_str().map(str::to_string)),
                lane: info
                    .and_then(|i| i["lane"].as_str()?.parse().ok())
                    .unwrap_or_default(),
                content: String::new(),
                to: info
                    .and_then(|i| i["recipient"].as_str().map(str::to_string))
                    .unwrap_or_else(|| {
                        if raw.contains('@') {
                            raw.clone()
                        } else {
                            String::new()
                        }
                    }),
                name: None,
                vars: Default::default(),
                created: 0,
                deadline: unix_now() + 5 * 24 * 3600,
                attempt: 0,
                last_reason: None,
                retries: None,
            };
            if ops.record_removed(&job, "removed").await? {
                removed += 1;
            } else {
                crate::out::warn(&format!("{raw}: already has a terminal state; unchanged"));
            }
        }
        ops.close().await;
        for u in &unknown {
            crate::out::error(&format!(
                "{u}: not among deferred messages; pass --request to remove a pending one"
            ));
        }
        if ctx.json {
            println!("{}", json!({"removed": removed, "unknown": unknown}));
        } else {
            println!("{removed} message(s) removed; they will not be sent");
        }
        Ok(if unknown.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}

impl PurgeCommand {
    async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if let Some(code) = require_yes(self.yes, "queue purge") {
            return Ok(code);
        }
        let ops = Ops::connect(ctx).await?;
        if let Some(c) = &self.campaign {
            if !ops.known_request(c).await? {
                ops.close().await;
                return Ok(unknown_request(c));
            }
        }
        if let Some(c) = &self.campaign {
            // Cancel first, so what is in flight or not yet expanded is removed too.
            ops.store
                .set_campaign_flag(
                    c,
                    "cancelled",
                    true,
                    std::time::Duration::from_secs(30 * 86_400),
                )
                .await?;
        }
        let mut keys = ops.work_keys();
        if let Some(lane) = self.lane {
            keys.retain(|k| k.ends_with(&format!(".{}", lane.as_str())));
        }
        if let Some(c) = &self.campaign {
            keys.push(Topology::held_key(c));
        }
        if self.lane.is_none() {
            // Recipients held in doubt after a crash are queued mail too.
            keys.push(Topology::AMBIGUOUS.to_string());
        }
        let mut total = DrainCounts::default();
        for key in keys {
            total += ops
                .drain(&key, |_, jobs| match (jobs.first(), &self.campaign) {
                    (Some(j), Some(c)) if &j.request != c => Fate::Keep,
                    _ => Fate::Remove("purged".into()),
                })
                .await?;
        }
        ops.close().await;
        if ctx.json {
            println!("{}", serde_json::to_string(&total)?);
        } else {
            println!("{} message(s) purged (state removed)", total.removed);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The message id `queue remove` acts on for `raw`: with `--request`, an
/// address is the message of that request to it, found by the address's
/// key as the expander computed it (trimmed, IDNA domain, lowercased);
/// anything else is an id.
fn target_id(request: Option<&str>, raw: &str) -> String {
    match (request, raw.contains('@')) {
        (Some(r), true) => match EmailAddress::parse(raw) {
            Ok(address) => message_id(r, &address.key()),
            // Not an address the expander would have accepted: no message
            // has this id, and the caller reports it unknown.
            Err(_) => raw.to_string(),
        },
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id the expander gave the message of `request` to `raw`.
    fn expanded(request: &str, raw: &str) -> String {
        message_id(request, &EmailAddress::parse(raw).unwrap().key())
    }

    #[test]
    fn an_address_names_the_message_the_expander_made_for_it() {
        let table = [
            "bob@example.com",
            "Bob@Example.COM",
            " bob@example.com ",
            "bob@bücher.example",
            "Bob@BÜCHER.example",
            "bob@xn--bcher-kva.example",
        ];
        for raw in table {
            assert_eq!(target_id(Some("r1"), raw), expanded("r1", raw), "{raw:?}");
        }
        // The internationalized spellings are one recipient.
        assert_eq!(
            target_id(Some("r1"), "bob@bücher.example"),
            target_id(Some("r1"), "bob@xn--bcher-kva.example")
        );
    }

    #[test]
    fn without_a_request_or_an_at_sign_the_argument_is_the_id() {
        assert_eq!(target_id(None, "bob@example.com"), "bob@example.com");
        assert_eq!(target_id(Some("r1"), "0123abcd"), "0123abcd");
    }
}

//! `mailpipe dead`: the dead-letter queue as operators read and act on it.
//! It holds a record for each message mailpipe stopped for good (the
//! reason, the detail, the job) and for each input it refused (a request,
//! a lane message or a mail it could not use, with the start of the
//! payload). `requeue` gives stopped messages another chance.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use mailpipe_common::message::{DeadRecord, Job};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use serde_json::json;

use crate::ops::{require_yes, Fate, Ops};

/// Dead letters: list, show, requeue.
#[derive(Args)]
pub struct DeadCommand {
    #[command(subcommand)]
    pub command: DeadSubCommand,
}

#[derive(Subcommand)]
pub enum DeadSubCommand {
    /// The dead letters, oldest first: message id (or the request, for a
    /// refused input), reason, recipient, when.
    List {
        /// Only records with this reason (e.g. user_unknown, expired, invalid_request).
        #[arg(long)]
        reason: Option<String>,
        /// Only records of this request.
        #[arg(long)]
        request: Option<String>,
        /// Records to show at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Every record of a message id or a request id, whole. Exit code 3
    /// when there is none.
    Show { id: String },
    /// Send stopped messages again: each one's `dead` state is lifted (the
    /// request's dead count goes down), its attempts start again from 0
    /// with at least a day of validity left, and it goes back to its lane;
    /// its record leaves the dead-letter queue. Exit code 3 for an id with
    /// no dead record (nothing is written for it).
    Requeue {
        /// Message ids, as `mailpipe dead list` prints them.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

/// One message of the dead-letter queue, read.
struct Entry {
    record: Option<DeadRecord>,
    /// Set when the message is not a record: a message the broker
    /// dead-lettered itself (its delivery limit), with its queue.
    raw: Option<String>,
}

impl Entry {
    fn id(&self) -> String {
        match &self.record {
            Some(r) => r
                .message
                .clone()
                .or_else(|| r.request.clone())
                .unwrap_or_else(|| "-".into()),
            None => "-".into(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match (&self.record, &self.raw) {
            (Some(r), _) => serde_json::to_value(r).unwrap_or_default(),
            (None, raw) => json!({"reason": "dead_lettered_by_broker", "queue": raw}),
        }
    }
}

/// Every dead letter, in queue order (each is taken and put back).
async fn entries(ops: &Ops) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    ops.drain(Topology::DEAD, |msg, _| {
        let record = serde_json::from_slice::<DeadRecord>(&msg.delivery.data).ok();
        let raw = record.is_none().then(|| {
            mailpipe_common::amqp::header_str(&msg.delivery.properties, "x-first-death-queue")
                .unwrap_or_else(|| "-".into())
        });
        out.push(Entry { record, raw });
        Fate::Keep
    })
    .await?;
    Ok(out)
}

impl DeadCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        let code = match &self.command {
            DeadSubCommand::List {
                reason,
                request,
                limit,
            } => {
                let all = entries(&ops).await?;
                let total = all.len();
                let shown: Vec<&Entry> = all
                    .iter()
                    .filter(|e| {
                        let r = e.record.as_ref();
                        reason
                            .as_ref()
                            .is_none_or(|x| r.is_some_and(|r| &r.reason == x))
                            && request
                                .as_ref()
                                .is_none_or(|x| r.is_some_and(|r| r.request.as_ref() == Some(x)))
                    })
                    .take(*limit)
                    .collect();
                if ctx.json {
                    let v: Vec<_> = shown.iter().map(|e| e.to_json()).collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "{:<32} {:<22} {:<30} {:<20} detail",
                        "id", "reason", "recipient", "at"
                    );
                    for e in &shown {
                        let (reason, to, at, detail) = match &e.record {
                            Some(r) => (
                                r.reason.clone(),
                                r.job.as_ref().map(|j| j.to.to_string()).unwrap_or_default(),
                                crate::out::utc(r.at),
                                r.detail.clone(),
                            ),
                            None => (
                                "dead_lettered_by_broker".into(),
                                String::new(),
                                "-".into(),
                                format!("from {}", e.raw.as_deref().unwrap_or("-")),
                            ),
                        };
                        let detail: String = detail.chars().take(60).collect();
                        println!(
                            "{:<32} {:<22} {:<30} {:<20} {detail}",
                            e.id(),
                            reason,
                            to,
                            at
                        );
                    }
                    println!("-- {} of {total} dead letter(s) shown", shown.len());
                }
                ExitCode::SUCCESS
            }
            DeadSubCommand::Show { id } => {
                let all = entries(&ops).await?;
                let found: Vec<_> = all
                    .iter()
                    .filter_map(|e| e.record.as_ref())
                    .filter(|r| {
                        r.message.as_deref() == Some(id) || r.request.as_deref() == Some(id)
                    })
                    .collect();
                if found.is_empty() {
                    crate::out::error(&format!("no dead letter for {id:?}"));
                    ExitCode::from(3)
                } else {
                    println!("{}", serde_json::to_string_pretty(&found)?);
                    ExitCode::SUCCESS
                }
            }
            DeadSubCommand::Requeue { ids, yes } => {
                if let Some(code) = require_yes(*yes, "dead requeue") {
                    ops.close().await;
                    return Ok(code);
                }
                requeue(&ops, ids, ctx.json).await?
            }
        };
        ops.close().await;
        Ok(code)
    }
}

/// `dead requeue`: publish first, then take the records out, so a crash in
/// between leaves a record whose message is already back (requeueing it
/// again finds it not dead and skips it).
async fn requeue(ops: &Ops, ids: &[String], json_out: bool) -> anyhow::Result<ExitCode> {
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut jobs: Vec<(Job, String)> = Vec::new();
    for e in entries(ops).await? {
        if let Some(r) = e.record {
            if let (Some(m), Some(job)) = (&r.message, r.job) {
                if wanted.contains(m.as_str()) && !jobs.iter().any(|(j, _)| &j.id == m) {
                    jobs.push((job, r.reason));
                }
            }
        }
    }
    let mut requeued = BTreeSet::new();
    for (mut job, reason) in jobs {
        if !ops.store.undo_dead(&job.id, &job.request, &reason).await? {
            crate::out::warn(&format!(
                "{}: not dead any more (sent, removed or requeued before); skipped",
                job.id
            ));
            requeued.insert(job.id.clone());
            continue;
        }
        job.attempt = 0;
        job.last_reason = None;
        job.deadline = job.deadline.max(unix_now() + 86_400);
        mailpipe_common::amqp::publish_confirmed(
            &ops.channel,
            &ops.topology.exchange(),
            &Topology::lane_key(job.lane),
            &serde_json::to_vec(&job)?,
            mailpipe_common::amqp::properties(),
        )
        .await?;
        requeued.insert(job.id.clone());
    }
    ops.drain(Topology::DEAD, |msg, _| {
        let id = serde_json::from_slice::<DeadRecord>(&msg.delivery.data)
            .ok()
            .and_then(|r| r.message);
        match id {
            Some(id) if requeued.contains(&id) => Fate::Discard,
            _ => Fate::Keep,
        }
    })
    .await?;
    let unknown: Vec<&&str> = wanted.iter().filter(|w| !requeued.contains(**w)).collect();
    for u in &unknown {
        crate::out::error(&format!("{u}: no dead letter for this message id"));
    }
    if json_out {
        println!("{}", json!({"requeued": requeued, "unknown": unknown}));
    } else {
        println!(
            "{} message(s) requeued: they are sent again",
            requeued.len()
        );
    }
    Ok(if unknown.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

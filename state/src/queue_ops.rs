//! Moving queued messages between queues, shared by the operator CLI
//! (flush, purge, release) and the retrier's sweeper of parked campaigns.
//! A message is acked in its old queue only once its new copy is confirmed
//! or its removal is recorded, so it is in exactly one place at any time.

use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::amqp;
use crate::message::{EventKind, Job, JobBatch, LaneMessage};
use crate::store::{DoneRecord, Store};
use crate::topology::Topology;
use crate::unix_now;

/// What moving messages needs: a connection (for throwaway channels), a
/// confirm-mode channel, the store and the names.
pub struct QueueOps<'a> {
    pub conn: &'a Connection,
    pub channel: &'a Channel,
    pub store: &'a Store,
    pub topology: &'a Topology,
}

impl QueueOps<'_> {
    /// Moves the parked messages of a campaign that is no longer held back
    /// into their lanes (or removes them if the campaign was cancelled), and
    /// deletes its parking queue once empty.
    ///
    /// Quorum queues refuse `queue.delete` with `if-empty` (RabbitMQ answers
    /// NOT_IMPLEMENTED, which closes the whole connection), so emptiness is
    /// guaranteed by a fence instead: senders announce each parking in Redis
    /// ([`Store::begin_parking`]) and are turned away while the queue is
    /// closed ([`Store::close_parking`]); the queue is deleted only when it
    /// is closed, no parking is in progress and the broker reports it empty.
    /// Otherwise the campaign stays marked as parked and is swept again.
    pub async fn sweep_parked(&self, request: &str) -> anyhow::Result<DrainCounts> {
        if self
            .store
            .campaign_flag(request, crate::store::CampaignFlag::Held)
            .await?
        {
            return Ok(DrainCounts::default());
        }
        let cancelled = self
            .store
            .campaign_flag(request, crate::store::CampaignFlag::Cancelled)
            .await?;
        let key = Topology::held_key(request);
        let counts = self
            .drain(&key, |_, jobs| match (jobs.first(), cancelled) {
                (Some(_), true) => Fate::Remove("cancelled".into()),
                (Some(j), false) => Fate::MoveTo(Topology::lane_key(j.lane)),
                (None, _) => Fate::Remove("malformed".into()),
            })
            .await?;
        self.store.unmark_parked(request).await?;
        if !self.store.close_parking(request).await? {
            // A sender is parking right now: it marks the campaign when done.
            return Ok(counts);
        }
        let deleted = self.delete_if_empty(&key).await;
        self.store.reopen_parking(request).await?;
        if !deleted? {
            self.store.mark_parked(request).await?;
        }
        Ok(counts)
    }

    /// Deletes a queue that the broker reports empty and unconsumed (or
    /// that does not exist): `false` when it is not. The caller makes sure
    /// nothing publishes to it meanwhile.
    async fn delete_if_empty(&self, key: &str) -> anyhow::Result<bool> {
        match self.depth(key).await? {
            None => return Ok(true),
            Some((0, 0)) => {}
            Some(_) => return Ok(false),
        }
        let ch = self.conn.create_channel().await?;
        ch.queue_delete(
            self.topology.queue(key).into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await?;
        let _ = ch.close(200, "ok".into()).await;
        Ok(true)
    }

    /// Messages ready in a queue (by routing key) and its consumers, or
    /// `None` when the queue does not exist.
    pub async fn depth(&self, key: &str) -> anyhow::Result<Option<(u32, u32)>> {
        // A failed passive declare closes the channel: use a throwaway one.
        let ch = self.conn.create_channel().await?;
        let r = ch
            .queue_declare(
                self.topology.queue(key).into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        Ok(match r {
            Ok(q) => {
                let _ = ch.close(200, "ok".into()).await;
                Some((q.message_count(), q.consumer_count()))
            }
            Err(_) => None,
        })
    }

    /// Takes up to the current number of messages of a queue one by one and
    /// hands each, with its jobs (none when it is not a job message), to
    /// `decide`, which says where it goes. At most the depth seen at the
    /// start is processed, so messages arriving meanwhile do not make this
    /// loop forever. The counts are of recipients (a message carries the
    /// jobs of one or more), and of unreadable messages.
    pub async fn drain<F>(&self, key: &str, mut decide: F) -> anyhow::Result<DrainCounts>
    where
        F: FnMut(&BasicGetMessage, &[Job]) -> Fate,
    {
        let mut counts = DrainCounts::default();
        let Some((depth, _)) = self.depth(key).await? else {
            return Ok(counts);
        };
        let queue = self.topology.queue(key);
        // Messages are taken on a channel of their own: another process (an
        // operator's release, the retrier's sweep) may delete the queue
        // meanwhile, and the broker answers that by closing the channel
        // that asked, which must not be the one this process publishes on.
        let get = self.conn.create_channel().await?;
        for _ in 0..depth {
            let msg = match get
                .basic_get(queue.clone().into(), BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                // The queue is gone: nothing left to take.
                Err(_) if self.depth(key).await?.is_none() => break,
                Err(e) => return Err(e.into()),
            };
            let jobs: Vec<Job> = LaneMessage::decode(&msg.delivery.data)
                .map(JobBatch::into_jobs)
                .unwrap_or_default();
            let n = jobs.len().max(1) as u64;
            match decide(&msg, &jobs) {
                Fate::MoveTo(target) => {
                    amqp::publish_confirmed(
                        self.channel,
                        &self.topology.exchange(),
                        &target,
                        &msg.delivery.data,
                        fresh_properties(&msg.delivery.properties),
                    )
                    .await?;
                    counts.moved += n;
                }
                Fate::Keep => {
                    // Back into the same queue; in a delay tier it keeps its
                    // due time through a per-message expiration.
                    let mut props = msg.delivery.properties.clone();
                    if let Some(due) = amqp::header_str(&props, Topology::DUE_HEADER)
                        .and_then(|d| d.parse::<i64>().ok())
                    {
                        let ms = (due - crate::unix_now_ms()).max(0).to_string();
                        props = props.with_expiration(ms.into());
                    }
                    amqp::publish_confirmed(
                        self.channel,
                        &self.topology.exchange(),
                        key,
                        &msg.delivery.data,
                        props,
                    )
                    .await?;
                    counts.kept += n;
                }
                Fate::Discard => counts.removed += n,
                Fate::Remove(reason) => {
                    for j in &jobs {
                        self.record_removed(&Removed::of(j), &reason).await?;
                    }
                    if jobs.is_empty() {
                        // Not a job: keep it for operators in the dead-letter queue.
                        amqp::publish_confirmed(
                            self.channel,
                            &self.topology.exchange(),
                            Topology::DEAD,
                            &msg.delivery.data,
                            msg.delivery.properties.clone(),
                        )
                        .await?;
                    }
                    counts.removed += n;
                }
            }
            msg.delivery.ack(BasicAckOptions::default()).await?;
        }
        let _ = get.close(200, "ok".into()).await;
        Ok(counts)
    }

    /// Gives a message the terminal state `removed` (counted once) and
    /// publishes a `removed` event. `false` if it already had a terminal state.
    pub async fn record_removed(&self, job: &Removed, reason: &str) -> anyhow::Result<bool> {
        let record = DoneRecord {
            state: crate::store::DoneState::Removed,
            request: job.request.clone(),
            at: unix_now(),
            route: String::new(),
            detail: format!("{reason}: removed by an operator"),
            ..Default::default()
        };
        let ttl = Duration::from_secs((job.deadline - unix_now()).max(0) as u64 + 7 * 24 * 3600);
        let new = self
            .store
            .record_done(&job.id, &record, &["removed"], ttl)
            .await?;
        self.store
            .push_history(
                &job.id,
                &job.request,
                &serde_json::json!({"at": unix_now(), "decision": "removed", "reason": reason}),
                ttl,
            )
            .await?;
        if new {
            let ev = crate::message::Event {
                v: 1,
                event: EventKind::Removed,
                request: job.request.clone(),
                message: Some(job.id.clone()),
                recipient: job.to.as_ref().map(|a| a.to_string()).unwrap_or_default(),
                campaign: job.campaign.clone(),
                reason: Some(reason.to_string()),
                rule: None,
                detail: None,
                at: unix_now(),
            };
            amqp::confirm(
                amqp::publish_event(
                    self.channel,
                    &self.topology.events_exchange(),
                    &ev,
                    job.lane,
                )
                .await?,
            )
            .await?;
        }
        Ok(new)
    }
}

/// The properties of a moved message: its id and headers, without any
/// per-message expiration or due time it had in a delay tier (a moved
/// message is due now: that is what flush and release mean).
fn fresh_properties(old: &lapin::BasicProperties) -> lapin::BasicProperties {
    let mut p = amqp::properties();
    if let Some(id) = old.message_id() {
        p = p.with_message_id(id.clone());
    }
    if let Some(h) = old.headers() {
        let mut h = h.clone();
        let inner: std::collections::BTreeMap<_, _> = h
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != Topology::DUE_HEADER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        h = inner.into();
        p = p.with_headers(h);
    }
    p
}

/// Where a drained message goes.
pub enum Fate {
    /// Publish to this routing key.
    MoveTo(String),
    /// Put it back where it was.
    Keep,
    /// End it as `removed` with this reason.
    Remove(String),
    /// Take it out of the queue, nothing else (its content was handed on
    /// by the caller).
    Discard,
}

/// What a drain did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DrainCounts {
    pub moved: u64,
    pub kept: u64,
    pub removed: u64,
}

impl std::ops::AddAssign for DrainCounts {
    fn add_assign(&mut self, o: Self) {
        self.moved += o.moved;
        self.kept += o.kept;
        self.removed += o.removed;
    }
}

/// A message an operator removes: what its terminal record and `removed`
/// event name. The recipient is unknown when the operator named only the
/// message's id and it waits nowhere mailpipe can read it.
#[derive(Debug, Clone)]
pub struct Removed {
    pub id: String,
    pub request: String,
    pub campaign: Option<String>,
    pub lane: crate::message::Lane,
    /// The message's deadline (Unix seconds): its record outlives it by a week.
    pub deadline: i64,
    pub to: Option<mailpipe_common::address::EmailAddress>,
}

impl Removed {
    /// The removal of a queued job.
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id.clone(),
            request: job.request.clone(),
            campaign: job.campaign.clone(),
            lane: job.lane,
            deadline: job.deadline,
            to: Some(job.to.clone()),
        }
    }
}

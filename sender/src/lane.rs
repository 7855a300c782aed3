//! The consumers of the send lanes: one per lane, and one for bulk mail due
//! again (`send.retry`), each with its own channel, acker and capacity
//! (recipients in hand, turns per site and transaction slots:
//! `capacity.rs`), so transactional mail is never queued behind a bulk
//! campaign, nor a retry behind the campaign's backlog.
//!
//! A delivery is opened ([`open`], a pure function: its jobs, or why it is
//! settled without sending), each recipient is delivered in a task of its
//! own, and the last one to finish settles the delivery.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_lite::{FutureExt, StreamExt};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use mailpipe_common::amqp;
use mailpipe_common::config::AmqpSettings;
use mailpipe_common::message::{Job, Lane, LaneMessage};
use mailpipe_common::topology::Topology;
use mailpipe_common::worker::{SessionEnd, SessionWorker};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acker::Acker;
use crate::batch::{Batch, Completed};
use crate::capacity::LaneCapacity;
use crate::deliver::DeliveryOutcome;
use crate::events::LaneMessageTaken;
use crate::settle::Settled;
use crate::Sender;

/// Recipients a lane holds per SMTP transaction it may have in flight:
/// those waiting for their site's rate or connections besides those
/// sending. A bulk lane of 32 holds up to 2,048 (its prefetched messages
/// bound it first: 32 messages of 50 recipients by default); a waiting
/// recipient holds its job, not its rendered message.
const IN_HAND_PER_SLOT: usize = 64;

/// What a lane's tasks share.
#[derive(Clone)]
struct LaneContext {
    sender: Arc<Sender>,
    lane: Lane,
    /// The routing key of the queue consumed: the lane's, or for bulk jobs
    /// due again, [`Topology::RETRY`].
    queue: String,
    /// The session's publishing channel (with confirms).
    publish: Arc<Channel>,
    acks: Acker,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl LaneContext {
    /// Records the outcome of recipient `i` of a delivery (`None`: its
    /// handler panicked); the last recipient to finish settles the delivery.
    fn done(&self, batch: &Arc<Batch>, i: usize, outcome: Option<DeliveryOutcome>) {
        let Some(completed) = batch.record(i, outcome) else {
            return;
        };
        let ctx = self.clone();
        let batch = batch.clone();
        self.tracker.spawn(async move {
            let result = match completed {
                Completed::Outcomes(outcomes) => {
                    ctx.sender
                        .settle(ctx.lane, &ctx.queue, &ctx.publish, &batch.jobs, outcomes)
                        .await
                }
                // The whole delivery goes back (the recipients already sent
                // are skipped by their records); the delivery limit stops a
                // message that keeps crashing its handler.
                Completed::Panicked => Ok(Settled::Requeue),
            };
            ctx.finish(batch.tag, result);
        });
    }

    /// Acks a settled delivery, or returns it to the queue.
    fn finish(&self, tag: u64, result: anyhow::Result<Settled>) {
        match result {
            Ok(Settled::Ack) => self.acks.settle(tag, true),
            Ok(Settled::Requeue) => self.acks.settle(tag, false),
            Err(e) => {
                tracing::warn!(error.cause_chain = %format!("{e:#}"), error.message = %e, "delivery not settled; it will be redelivered");
                self.acks.settle(tag, false);
            }
        }
    }
}

/// What [`open`] made of a delivery.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Send these.
    Jobs(Vec<Job>),
    /// Settle it without sending.
    Settle(Unopened),
}

/// A delivery settled without sending.
#[derive(Debug)]
pub(crate) enum Unopened {
    /// Not a job: dead-lettered with the reason.
    Malformed(String),
    /// A retry not due yet: on through the delay tier of this routing key.
    NotDue(String),
    /// Returned too often: its recipients end as `poison_message`.
    Poison(Vec<Job>, String),
}

/// Reads a delivery (its body and properties) at `now_ms`: its jobs, or
/// what to do with it without sending.
pub(crate) fn open(
    data: &[u8],
    properties: &BasicProperties,
    now_ms: i64,
    topology: &Topology,
    delivery_limit: u32,
) -> Opened {
    let batch = match LaneMessage::decode(data) {
        Ok(b) => b,
        Err(detail) => return Opened::Settle(Unopened::Malformed(detail)),
    };
    // A retry not yet due (jittered, or longer than one tier) goes on
    // through the next tier.
    if let Some(due) =
        amqp::header_str(properties, Topology::DUE_HEADER).and_then(|d| d.parse::<i64>().ok())
    {
        let remaining = due - now_ms;
        if remaining > 0 {
            if let Some(tier) = topology.hop_tier(Duration::from_millis(remaining as u64)) {
                return Opened::Settle(Unopened::NotDue(Topology::tier_key(tier, batch.lane)));
            }
        }
    }
    let jobs = batch.into_jobs();
    // On its last allowed delivery a message ends here, not in the broker.
    if let Some(returned) = amqp::poisoned(properties, delivery_limit) {
        let detail = format!("returned to the queue {returned} times without an outcome");
        tracing::error!(message = %jobs[0].id, recipients = jobs.len(), %detail, "poison message stopped");
        return Opened::Settle(Unopened::Poison(jobs, detail));
    }
    Opened::Jobs(jobs)
}

impl SessionWorker for Sender {
    const NAME: &'static str = "sender";

    fn amqp(&self) -> &AmqpSettings {
        &self.settings.amqp
    }

    /// One broker connection's work: both lanes' consumers until shutdown
    /// or a broker error, then the in-flight deliveries and the last acks.
    async fn session(
        self: Arc<Self>,
        conn: Arc<Connection>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<SessionEnd> {
        let publish = Arc::new(amqp::channel(&conn, None).await?);
        self.topology
            .declare(&conn)
            .await
            .context("declaring topology")?;
        let tracker = TaskTracker::new();
        let failed = CancellationToken::new();
        let mut lanes = Vec::new();
        let mut ack_tasks = Vec::new();
        // Bulk jobs due again (retries, deferrals) have a consumer and a
        // capacity of their own, so they do not wait behind the campaign's
        // backlog in the bulk lane.
        let sender = &self.settings.sender;
        let consumers = [
            (
                Lane::Transactional,
                Topology::lane_key(Lane::Transactional),
                sender.transactional_concurrency,
            ),
            (
                Lane::Bulk,
                Topology::lane_key(Lane::Bulk),
                sender.bulk_concurrency,
            ),
            (
                Lane::Bulk,
                Topology::RETRY.to_string(),
                sender.retry_concurrency,
            ),
        ];
        for (lane, queue, concurrency) in consumers {
            let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
            let channel = Arc::new(amqp::channel(&conn, Some(prefetch)).await?);
            let (acks, ack_task) = Acker::start(channel.clone());
            ack_tasks.push(ack_task);
            let ctx = LaneContext {
                sender: self.clone(),
                lane,
                queue,
                publish: publish.clone(),
                acks,
                tracker: tracker.clone(),
                shutdown: shutdown.clone(),
            };
            let failed = failed.clone();
            lanes.push(tokio::spawn(async move {
                let r = consume_lane(ctx, concurrency, channel, &failed).await;
                if r.is_err() {
                    failed.cancel();
                }
                r
            }));
        }
        self.health.set_ready(true);
        let site_events = tokio::spawn(self.clone().publish_site_events(publish.clone()));
        let mut result = Ok(SessionEnd::Stopped);
        for l in lanes {
            match l.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(anyhow::anyhow!("lane task failed: {e}")),
            }
        }
        self.health.set_ready(false);
        site_events.abort();
        tracker.close();
        if shutdown.is_cancelled() {
            mailpipe_common::shutdown::stage("waiting for in-flight deliveries");
        }
        let deadline = self.settings.sender.shutdown_timeout;
        let waited = tokio::time::timeout(deadline, async {
            while !tracker.is_empty() {
                tracing::info!(
                    in_flight = tracker.len(),
                    "still waiting for in-flight deliveries"
                );
                tokio::select! {
                    _ = tracker.wait() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                ?deadline,
                "shutdown deadline reached; unfinished deliveries go back to the queue"
            );
        }
        // The last acks are written before the connection closes.
        if shutdown.is_cancelled() {
            mailpipe_common::shutdown::stage("writing the last acks");
        }
        for task in ack_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        result
    }
}

impl Sender {
    /// Publishes the sites' changes of state on this session's channel,
    /// twice a second, until the session ends. They are kept in Redis too
    /// (`mailpipe site show`), so one lost with a broken channel is only
    /// logged.
    async fn publish_site_events(self: Arc<Self>, publish: Arc<Channel>) {
        let exchange = self.topology.events_exchange();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for event in self.site_control.take_events() {
                let sent = match amqp::publish_site_event(&publish, &exchange, &event).await {
                    Ok(pending) => amqp::confirm(pending).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = sent {
                    tracing::warn!(site = %event.site, %error, "a site event was not published");
                }
            }
        }
    }
}

/// Consumes one lane's queue until shutdown, or until another consumer
/// failed.
async fn consume_lane(
    ctx: LaneContext,
    concurrency: usize,
    channel: Arc<Channel>,
    failed: &CancellationToken,
) -> anyhow::Result<()> {
    let (lane, shutdown, tracker) = (ctx.lane, ctx.shutdown.clone(), ctx.tracker.clone());
    let sender = ctx.sender.clone();
    let mut consumer = channel
        .basic_consume(
            sender.topology.queue(&ctx.queue).into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // The lane's recipients in hand: taken in queue order, so a message's
    // recipients start together and its ack is not held back by the
    // messages after it. How they then wait for their sites and for the
    // lane's transaction slots is `capacity.rs`.
    let permits = Arc::new(Semaphore::new(concurrency * IN_HAND_PER_SLOT));
    let capacity = Arc::new(LaneCapacity::new(concurrency));
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = failed.cancelled() => return Ok(()),
            d = consumer.next() => d,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("consumer of queue {} was cancelled", ctx.queue),
        };
        ctx.acks.received(delivery.delivery_tag);
        let opened = open(
            &delivery.data,
            &delivery.properties,
            mailpipe_common::unix_now_ms(),
            &sender.topology,
            sender.settings.amqp.delivery_limit,
        );
        let jobs = match opened {
            Opened::Jobs(jobs) => {
                let due = amqp::header_str(&delivery.properties, Topology::DUE_HEADER)
                    .and_then(|d| d.parse().ok());
                LaneMessageTaken {
                    jobs: &jobs,
                    due_ms: due,
                }
                .emit(&sender.metrics);
                jobs
            }
            Opened::Settle(settle) => {
                let ctx = ctx.clone();
                tracker.spawn(async move {
                    let tag = delivery.delivery_tag;
                    let result = ctx
                        .sender
                        .settle_unopened(ctx.lane, &ctx.publish, &delivery, settle)
                        .await;
                    ctx.finish(tag, result);
                });
                continue;
            }
        };
        let batch = Arc::new(Batch::new(delivery.delivery_tag, jobs));
        for i in 0..batch.jobs.len() {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => None,
                _ = failed.cancelled() => None,
                p = permits.clone().acquire_owned() => p.ok(),
            };
            let Some(permit) = permit else {
                // Not started: these recipients go back to their lane.
                for rest in i..batch.jobs.len() {
                    ctx.done(&batch, rest, Some(DeliveryOutcome::Unsent));
                }
                return Ok(());
            };
            let ctx = ctx.clone();
            let batch = batch.clone();
            let capacity = capacity.clone();
            tracker.spawn(async move {
                let _permit = permit;
                let gauge = ctx.sender.metrics.in_flight(lane);
                gauge.inc();
                let job = &batch.jobs[i];
                let result = AssertUnwindSafe(ctx.sender.deliver_with_retry(job, &capacity, &ctx.shutdown))
                    .catch_unwind()
                    .await;
                gauge.dec();
                let outcome = match result {
                    // Shutdown while Redis was unavailable: hand it back.
                    Ok(None) => Some(DeliveryOutcome::Unsent),
                    Ok(Some(o)) => Some(o),
                    Err(_) => {
                        tracing::error!(message = %job.id, "delivery handler panicked; returning the message (the delivery limit stops a poison message)");
                        None
                    }
                };
                ctx.done(&batch, i, outcome);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::job;
    use mailpipe_common::message::JobBatch;

    const NOW: i64 = 1_700_000_000_000;

    fn topology() -> Topology {
        let s = |v: u64| Duration::from_secs(v);
        Topology::new("t", &[s(1), s(60), s(3600)], 10)
    }

    fn body() -> Vec<u8> {
        let batch = JobBatch::from_jobs([&job("m1", "a@example.com"), &job("m2", "b@example.com")])
            .unwrap();
        serde_json::to_vec(&batch).unwrap()
    }

    fn props(headers: &[(&str, String)]) -> BasicProperties {
        amqp::with_headers(amqp::properties(), headers)
    }

    /// A delivery's body, its headers, and what `open` should make of it.
    type Case<'a> = (Vec<u8>, Vec<(&'a str, String)>, &'a str);

    /// What `open` made of a delivery, in a word.
    fn opened(data: &[u8], headers: &[(&str, String)]) -> String {
        match open(data, &props(headers), NOW, &topology(), 10) {
            Opened::Jobs(jobs) => format!("send {}", jobs.len()),
            Opened::Settle(Unopened::Malformed(_)) => "malformed".into(),
            Opened::Settle(Unopened::NotDue(key)) => format!("on to {key}"),
            Opened::Settle(Unopened::Poison(jobs, _)) => format!("poison {}", jobs.len()),
        }
    }

    #[test]
    fn a_delivery_is_sent_passed_on_or_stopped() {
        let due = |in_ms: i64| (Topology::DUE_HEADER, (NOW + in_ms).to_string());
        let returned = |n: u32| ("x-delivery-count", n.to_string());
        let table: Vec<Case> = vec![
            (body(), vec![], "send 2"),
            (b"not json".to_vec(), vec![], "malformed"),
            // Due: sent, whether just now or long ago.
            (body(), vec![due(0)], "send 2"),
            (body(), vec![due(-5_000)], "send 2"),
            // Not due: on through the longest tier that fits.
            (body(), vec![due(90_000)], "on to retry.1m.bulk"),
            (body(), vec![due(2 * 3_600_000)], "on to retry.1h.bulk"),
            // Less than the shortest tier left: sent now.
            (body(), vec![due(500)], "send 2"),
            // Returned delivery_limit - 1 times: this is its last delivery.
            (body(), vec![returned(8)], "send 2"),
            (body(), vec![returned(9)], "poison 2"),
            (body(), vec![returned(30)], "poison 2"),
            // A header that is not a number counts as none.
            (body(), vec![("x-delivery-count", "x".into())], "send 2"),
        ];
        for (data, headers, want) in table {
            assert_eq!(opened(&data, &headers), want, "{headers:?}");
        }
    }
}

//! Makes the outcomes of a delivery durable before it is acked: sent
//! events, archived copies of the messages sent (with the archive on),
//! failure records for the retrier, terminal records, and the recipients
//! that go back through a queue. Every publish is confirmed before
//! [`Sender::settle`] returns [`Settled::Ack`].

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use lapin::message::Delivery;
use lapin::{BasicProperties, Channel};
use mailpipe_common::amqp;
use mailpipe_common::archive::Archived;
use mailpipe_common::classify::{Classification, Failure};
use mailpipe_common::message::{DeadRecord, Event, EventKind, FailedJob, Job, JobBatch, Lane};
use mailpipe_common::metrics::publish_dead;
use mailpipe_common::telemetry::scrub;
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_state::store::{DoneRecord, DoneState};

use crate::deliver::DeliveryOutcome;
use crate::events::RecipientSettled;
use crate::lane::Unopened;
use crate::Sender;

/// What to do with a delivery once it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Its outcome is durable: ack it.
    Ack,
    /// Give it back to the queue (a recipient's handler panicked).
    Requeue,
}

/// The publishes of one settlement, gathered so that the recipients going
/// the same way go as one message (or one batch of events).
#[derive(Default)]
struct Settlement<'a> {
    /// Publishes started; all confirmed before the ack.
    confirms: Vec<amqp::PendingConfirm>,
    /// Parked until the campaign is released.
    held: Vec<&'a Job>,
    /// Ambiguous, parked for an operator (`sender.on_ambiguous: hold`).
    ambiguous_held: Vec<&'a Job>,
    /// Back into their lane.
    unsent: Vec<&'a Job>,
    /// Deferred recipients by first tier, wait until due (ms)
    /// and domain: a deferred message holds one domain, so `mailpipe queue
    /// flush --domain` moves it whole.
    deferred: BTreeMap<(Duration, u64, String), Vec<&'a Job>>,
    /// Failure records published for the retrier.
    failed: u64,
    /// Events by kind, published together.
    sent: Vec<Event>,
    removed: Vec<Event>,
    dead: Vec<Event>,
    ambiguous: Vec<Event>,
}

impl Sender {
    /// Makes the outcomes of one delivery's recipients durable; the
    /// delivery may then be acked. Each recipient's outcome is its own
    /// (a sent event, a failure record, a terminal record); the recipients
    /// that go back through a queue (deferred, held, not started) go as
    /// one message per destination queue, and every publish is confirmed
    /// before this returns. Recipients not started go back to `from`, the
    /// queue the delivery came from (a retry keeps its place ahead of the
    /// bulk backlog).
    pub(crate) async fn settle(
        &self,
        lane: Lane,
        from: &str,
        publish: &Channel,
        jobs: &[Job],
        outcomes: Vec<DeliveryOutcome>,
    ) -> anyhow::Result<Settled> {
        let mut s = Settlement::default();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            RecipientSettled {
                lane,
                outcome: outcome.label(),
            }
            .emit(&self.metrics);
            // An ambiguous recipient's event, then what it became.
            let mut outcome = outcome;
            while let DeliveryOutcome::Ambiguous {
                action,
                detail,
                then,
            } = outcome
            {
                s.ambiguous.push(self.event(
                    job,
                    EventKind::Ambiguous,
                    Some(action.as_str().to_string()),
                    Some(detail),
                ));
                outcome = *then;
            }
            match outcome {
                DeliveryOutcome::Ambiguous { .. } => {}
                DeliveryOutcome::AmbiguousHeld => s.ambiguous_held.push(job),
                DeliveryOutcome::Delivered(archived) => {
                    s.sent.push(self.event(job, EventKind::Sent, None, None));
                    if let Some(a) = archived {
                        s.confirms.push(self.publish_archived(publish, &a).await?);
                    }
                }
                DeliveryOutcome::AlreadyDone => {}
                DeliveryOutcome::Deferred { delay, .. } => {
                    let (tier, wait) = self.topology.deferral(delay);
                    // In 100 ms steps, so recipients deferred together go together.
                    let wait = (wait.as_millis().div_ceil(100) * 100) as u64;
                    s.deferred
                        .entry((tier, wait, job.to.domain().to_string()))
                        .or_default()
                        .push(job);
                }
                DeliveryOutcome::Held => s.held.push(job),
                DeliveryOutcome::Unsent => s.unsent.push(job),
                DeliveryOutcome::Cancelled => {
                    if let Some(ev) = self.settle_cancelled(job).await? {
                        s.removed.push(ev);
                    }
                }
                DeliveryOutcome::Failed(failure, route, class) => {
                    s.confirms.push(
                        self.publish_failure(publish, job, failure, route, class)
                            .await?,
                    );
                    s.failed += 1;
                }
                DeliveryOutcome::Dead { reason, detail } => {
                    s.dead
                        .push(self.settle_dead(publish, job, reason, detail).await?);
                }
            }
        }
        self.publish_settlement(lane, from, publish, jobs, s).await
    }

    /// Publishes what a settlement gathered, waits for every confirm, then
    /// records what must follow the publishes.
    async fn publish_settlement(
        &self,
        lane: Lane,
        from: &str,
        publish: &Channel,
        jobs: &[Job],
        mut s: Settlement<'_>,
    ) -> anyhow::Result<Settled> {
        let events = self.topology.events_exchange();
        for group in [s.sent, s.removed, s.dead, s.ambiguous] {
            if !group.is_empty() {
                s.confirms
                    .push(amqp::publish_events(publish, &events, &group, lane).await?);
            }
        }
        for ((tier, wait_ms, _), group) in s.deferred {
            let due = mailpipe_common::unix_now_ms() + wait_ms as i64;
            s.confirms.push(
                self.publish_jobs(
                    publish,
                    &Topology::tier_key(tier, lane),
                    &group,
                    &[(Topology::DUE_HEADER, due.to_string())],
                )
                .await?,
            );
        }
        // Parking is announced first, so the retrier never deletes a parking
        // queue under a publish; turned away (the queue is being deleted
        // because the campaign was released), the jobs go back to the lane.
        let parking = match s.held.first() {
            Some(first) => self.store.begin_parking(&first.request).await?,
            None => false,
        };
        if parking {
            let request = &s.held[0].request;
            self.topology.declare_held(publish, request).await?;
            s.confirms.push(
                self.publish_jobs(publish, &Topology::held_key(request), &s.held, &[])
                    .await?,
            );
        } else {
            s.unsent.extend(s.held.iter().cloned());
        }
        // One message each: an operator releases or removes them one by one.
        for job in &s.ambiguous_held {
            s.confirms.push(
                self.publish_jobs(publish, Topology::AMBIGUOUS, &[*job], &[])
                    .await?,
            );
        }
        if !s.unsent.is_empty() {
            s.confirms
                .push(self.publish_jobs(publish, from, &s.unsent, &[]).await?);
        }
        for pending in s.confirms {
            amqp::confirm(pending).await?;
        }
        if parking {
            // After the publish, so the sweeper never forgets a parked message.
            self.store.end_parking(&s.held[0].request).await?;
        }
        if s.failed > 0 {
            self.store
                .incr_request_by(&jobs[0].request, "failed_attempts", s.failed)
                .await
                .ok();
        }
        Ok(Settled::Ack)
    }

    /// A cancelled campaign's message ends as `removed`: its event, if
    /// this was the first to record it.
    async fn settle_cancelled(&self, job: &Job) -> anyhow::Result<Option<Event>> {
        let record = DoneRecord {
            state: DoneState::Removed,
            request: job.request.clone(),
            at: unix_now(),
            route: String::new(),
            detail: "cancelled: the campaign was cancelled by an operator".into(),
            ..Default::default()
        };
        let new = self
            .store
            .record_done(&job.id, &record, &["removed"], self.record_ttl(job))
            .await?;
        Ok(new.then(|| self.event(job, EventKind::Removed, Some("cancelled".into()), None)))
    }

    /// Starts publishing a delivered message's bytes to the archive stream.
    /// Mandatory: with the archive on and the stream missing, the delivery
    /// is not acked (its redelivery finds the sent record and is not sent
    /// again).
    async fn publish_archived(
        &self,
        publish: &Channel,
        archived: &Archived,
    ) -> anyhow::Result<amqp::PendingConfirm> {
        let props = amqp::with_headers(
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("message/rfc822".into())
                .with_message_id(archived.message.clone().into())
                .with_timestamp(archived.at.max(0) as u64),
            &archived.headers(),
        );
        Ok(amqp::publish(
            publish,
            &self.topology.exchange(),
            Topology::ARCHIVE,
            &archived.bytes,
            props,
        )
        .await?)
    }

    /// Starts publishing a failed attempt to the retrier.
    async fn publish_failure(
        &self,
        publish: &Channel,
        job: &Job,
        failure: Failure,
        route: String,
        class: Classification,
    ) -> anyhow::Result<amqp::PendingConfirm> {
        match &failure {
            Failure::Reply { code: 421, .. } => {
                tracing::warn!(message = %job.id, failure = %scrub(&failure.to_string()), "relay answered 421; deferring")
            }
            _ => {
                tracing::info!(message = %job.id, failure = %scrub(&failure.to_string()), "delivery attempt failed")
            }
        }
        let record = FailedJob {
            v: 1,
            job: job.clone(),
            failure,
            route,
            at: unix_now(),
            classification: Some(class),
        };
        Ok(amqp::publish(
            publish,
            &self.topology.exchange(),
            Topology::FAILED,
            &serde_json::to_vec(&record)?,
            amqp::properties().with_message_id(job.id.clone().into()),
        )
        .await?)
    }

    /// A message that cannot be sent: its terminal record and dead-letter
    /// record; returns its `dead` event.
    async fn settle_dead(
        &self,
        publish: &Channel,
        job: &Job,
        reason: &'static str,
        detail: String,
    ) -> anyhow::Result<Event> {
        let record = DoneRecord {
            state: DoneState::Dead,
            request: job.request.clone(),
            at: unix_now(),
            route: String::new(),
            detail: format!("{reason}: {detail}"),
            ..Default::default()
        };
        let field = format!("dead:{reason}");
        self.store
            .record_done(&job.id, &record, &["dead", &field], self.record_ttl(job))
            .await?;
        let dead = DeadRecord {
            v: 1,
            reason: reason.to_string(),
            detail: detail.clone(),
            request: Some(job.request.clone()),
            message: Some(job.id.clone()),
            job: Some(job.clone()),
            failure: None,
            payload: None,
            at: unix_now(),
        };
        publish_dead(publish, &self.topology.exchange(), &dead, &self.metrics).await?;
        Ok(self.event(job, EventKind::Dead, Some(reason.to_string()), Some(detail)))
    }

    /// Settles a delivery that was not sent: malformed, not due, or poison.
    pub(crate) async fn settle_unopened(
        &self,
        lane: Lane,
        publish: &Channel,
        delivery: &Delivery,
        what: Unopened,
    ) -> anyhow::Result<Settled> {
        match what {
            Unopened::Malformed(detail) => self.settle_malformed(publish, delivery, detail).await,
            Unopened::NotDue(key) => {
                amqp::publish_confirmed(
                    publish,
                    &self.topology.exchange(),
                    &key,
                    &delivery.data,
                    delivery.properties.clone(),
                )
                .await?;
                RecipientSettled {
                    lane,
                    outcome: "not_due",
                }
                .emit(&self.metrics);
                Ok(Settled::Ack)
            }
            Unopened::Poison(jobs, detail) => {
                let outcomes = jobs
                    .iter()
                    .map(|_| DeliveryOutcome::Dead {
                        reason: "poison_message",
                        detail: detail.clone(),
                    })
                    .collect();
                // All dead: nothing goes back to a queue.
                self.settle(lane, &Topology::lane_key(lane), publish, &jobs, outcomes)
                    .await
            }
        }
    }

    async fn settle_malformed(
        &self,
        publish: &Channel,
        delivery: &Delivery,
        detail: String,
    ) -> anyhow::Result<Settled> {
        tracing::warn!(detail = %scrub(&detail), "malformed job dead-lettered");
        let record = DeadRecord::for_input("malformed_job", detail, &delivery.data, unix_now());
        publish_dead(publish, &self.topology.exchange(), &record, &self.metrics).await?;
        Ok(Settled::Ack)
    }

    fn event(
        &self,
        job: &Job,
        kind: EventKind,
        reason: Option<String>,
        detail: Option<String>,
    ) -> Event {
        Event::for_job(job, kind, reason, detail, unix_now())
    }

    /// Publishes some jobs of one request as one message (confirm pending).
    async fn publish_jobs(
        &self,
        publish: &Channel,
        key: &str,
        jobs: &[&Job],
        headers: &[(&str, String)],
    ) -> anyhow::Result<amqp::PendingConfirm> {
        let batch = JobBatch::from_jobs(jobs.iter().copied())
            .context("publishing a message without recipients")?;
        let props = amqp::with_headers(
            amqp::properties().with_message_id(batch.recipients[0].id.clone().into()),
            headers,
        );
        Ok(amqp::publish(
            publish,
            &self.topology.exchange(),
            key,
            &serde_json::to_vec(&batch)?,
            props,
        )
        .await?)
    }
}

//! What the retrier does with one failed attempt: read the failure record,
//! log it, count it (qualification table, the recipient's address), decide
//! ([`mailpipe_common::retry::outcome`]) and carry the decision out: a retry
//! through the delay tiers, or a stop with its terminal record, dead letter
//! and events. The failure is acked only after every publish is confirmed.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::Channel;
use mailpipe_common::amqp;
use mailpipe_common::classify::{Classification, Failure, Reason};
use mailpipe_common::message::{DeadRecord, Event, EventKind, FailedJob, Job};
use mailpipe_common::metrics::publish_dead;
use mailpipe_common::retry::{outcome, RetryOutcome};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_state::store::{
    AddressState, Deferral, DoneRecord, DoneState, RecipientFailure, WHY_RETRY,
};

use crate::events::{MessageStopped, RetryScheduled};
use crate::Retrier;

impl Retrier {
    /// Handles one delivery of the failure queue: a failure record, or a
    /// malformed one (dead-lettered). An error leaves it unacked.
    pub(crate) async fn handle(
        &self,
        publish: &Channel,
        delivery: &Delivery,
    ) -> anyhow::Result<()> {
        let failed: FailedJob = match serde_json::from_slice(&delivery.data) {
            Ok(f) => f,
            Err(e) => {
                let record = DeadRecord::for_input(
                    "malformed_failure",
                    format!("unreadable failure record: {e}"),
                    &delivery.data,
                    unix_now(),
                );
                publish_dead(publish, &self.topology.exchange(), &record, &self.metrics).await?;
                delivery.ack(BasicAckOptions::default()).await?;
                return Ok(());
            }
        };
        let job = &failed.job;
        // The sender's verdict, carried in the record; a record from a
        // sender that did not carry one yet is classified here.
        let class = match &failed.classification {
            Some(class) => class.clone(),
            None => self
                .classifier
                .classify_for(&failed.failure, Some(&failed.job.to.to_string())),
        };
        self.log_failure(job, &failed.failure, &class);
        self.qualify(&failed.failure, &class).await?;
        let quarantined = self
            .count_against_recipient(publish, job, job.attempt + 1, &failed.failure, &class)
            .await?;
        // A failure record the broker returned `delivery_limit` times (a
        // crash loop) stops the message here with a terminal record.
        let poisoned = amqp::poisoned(&delivery.properties, self.settings.amqp.delivery_limit);
        let decided = outcome(
            job,
            &class,
            quarantined,
            poisoned.is_some(),
            unix_now(),
            &self.settings.retrier,
        );
        match decided {
            RetryOutcome::Retry { attempt, delay } => {
                self.retry(publish, &failed, &class, attempt, delay).await?
            }
            RetryOutcome::Dead {
                attempt,
                reason,
                bounced,
            } => {
                self.stop(publish, &failed, &class, attempt, &reason, bounced)
                    .await?
            }
        }
        delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Publishes attempt `attempts` of a failed message through the delay
    /// tiers, after indexing it for operators, and its `deferred` event.
    async fn retry(
        &self,
        publish: &Channel,
        failed: &FailedJob,
        class: &Classification,
        attempts: u32,
        delay: Duration,
    ) -> anyhow::Result<()> {
        let job = &failed.job;
        let reason = class.reason.as_str().to_string();
        // The first hop: the longest tier within the delay; the
        // sender sends the message on through shorter tiers until due.
        let tier = self
            .topology
            .hop_tier(delay)
            .or_else(|| self.topology.tiers().first().copied())
            .unwrap_or(delay);
        let due_ms = mailpipe_common::unix_now_ms() + delay.as_millis() as i64;
        let due = due_ms / 1000;
        // Indexed before the publish: the message may be back in its
        // lane (and leave the index) before this returns.
        let info = serde_json::json!({
            "request": job.request, "campaign": job.campaign, "recipient": job.to,
            "lane": job.lane, "attempt": attempts, "reason": reason,
            "reply": failure_text(&failed.failure), "tier": mailpipe_common::config::format_duration(tier),
        });
        let deferral = Deferral {
            message: job.id.clone(),
            request: job.request.clone(),
            why: WHY_RETRY.into(),
            domain: job.to.domain().to_string(),
            due,
            info,
        };
        self.store
            .index_deferred(
                &deferral,
                Some(&history_entry(failed, class, attempts, "retry", Some(due))),
                history_ttl(job),
            )
            .await?;
        let next = Job {
            attempt: attempts,
            last_reason: Some(reason.clone()),
            ..job.clone()
        };
        amqp::publish_confirmed(
            publish,
            &self.topology.exchange(),
            &Topology::tier_key(tier, job.lane),
            &serde_json::to_vec(&next)?,
            amqp::with_headers(
                amqp::properties().with_message_id(job.id.clone().into()),
                &[
                    ("x-mailpipe-attempt", attempts.to_string()),
                    ("x-mailpipe-last-reason", reason.clone()),
                    (Topology::DUE_HEADER, due_ms.to_string()),
                ],
            ),
        )
        .await?;
        let ev = self.event(job, EventKind::Deferred, &reason, &failed.failure);
        amqp::confirm(
            amqp::publish_event(publish, &self.topology.events_exchange(), &ev, job.lane).await?,
        )
        .await?;
        RetryScheduled {
            message: &job.id,
            attempt: attempts,
            tier,
            reason: &reason,
        }
        .emit(&self.metrics);
        Ok(())
    }

    /// Stops a message after `attempts` attempts: its history, terminal
    /// record, dead letter, and its events (`bounced` first when `bounced`).
    async fn stop(
        &self,
        publish: &Channel,
        failed: &FailedJob,
        class: &Classification,
        attempts: u32,
        dead_reason: &str,
        bounced: bool,
    ) -> anyhow::Result<()> {
        let job = &failed.job;
        let reason = class.reason.as_str();
        self.store
            .push_history(
                &job.id,
                &job.request,
                &history_entry(failed, class, attempts, dead_reason, None),
                history_ttl(job),
            )
            .await?;
        let record = DoneRecord {
            state: DoneState::Dead,
            request: job.request.clone(),
            at: unix_now(),
            route: failed.route.clone(),
            detail: format!("{dead_reason}: {}", failure_text(&failed.failure)),
            ..Default::default()
        };
        let field = format!("dead:{dead_reason}");
        let ttl = Duration::from_secs((job.deadline - unix_now()).max(0) as u64)
            + self.settings.sender.sent_record_ttl;
        self.store
            .record_done(&job.id, &record, &["dead", &field], ttl)
            .await?;
        let dead = DeadRecord {
            v: 1,
            reason: dead_reason.to_string(),
            detail: failure_text(&failed.failure),
            request: Some(job.request.clone()),
            message: Some(job.id.clone()),
            job: Some(Job {
                attempt: attempts,
                ..job.clone()
            }),
            failure: Some(failed.failure.clone()),
            payload: None,
            at: unix_now(),
        };
        publish_dead(publish, &self.topology.exchange(), &dead, &self.metrics).await?;
        if bounced {
            let ev = self.event(job, EventKind::Bounced, reason, &failed.failure);
            amqp::confirm(
                amqp::publish_event(publish, &self.topology.events_exchange(), &ev, job.lane)
                    .await?,
            )
            .await?;
        }
        let ev = self.event(job, EventKind::Dead, dead_reason, &failed.failure);
        amqp::confirm(
            amqp::publish_event(publish, &self.topology.events_exchange(), &ev, job.lane).await?,
        )
        .await?;
        MessageStopped {
            message: &job.id,
            attempt: attempts,
            reason: dead_reason,
        }
        .emit(&self.metrics);
        Ok(())
    }

    /// Logs one failed attempt at the level [`failure_log_level`] decides.
    fn log_failure(&self, job: &Job, failure: &Failure, class: &Classification) {
        let full = failure_text(failure);
        let text = mailpipe_common::telemetry::scrub(&full);
        match failure_log_level(failure, class) {
            FailureLog::Throttled => {
                tracing::warn!(message = %job.id, reply = %text, reason = class.reason.as_str(), "throttled by the receiving server")
            }
            FailureLog::Refused => {
                tracing::warn!(message = %job.id, reply = %text, "refused by the receiving server (aimed at the sender)")
            }
            FailureLog::Failed => {
                tracing::info!(message = %job.id, reply = %text, reason = class.reason.as_str(), kind = class.kind.as_str(), "delivery failed")
            }
        }
    }

    /// Counts the failure's text in the qualification table.
    async fn qualify(&self, failure: &Failure, class: &Classification) -> anyhow::Result<()> {
        self.store
            .count_failure_text(failure, class, unix_now())
            .await?;
        Ok(())
    }

    /// Raises the address's error counter or quarantines it, for failures
    /// that are about the recipient (never for blocks aimed at the sender).
    /// Returns whether the address is quarantined now.
    async fn count_against_recipient(
        &self,
        publish: &Channel,
        job: &Job,
        attempt: u32,
        failure: &Failure,
        class: &Classification,
    ) -> anyhow::Result<bool> {
        let address = job.to.key();
        let detail = failure_text(failure);
        let counted = RecipientFailure::of(
            &address,
            &job.id,
            attempt,
            class,
            &self.settings.quarantine,
            &detail,
            unix_now(),
        );
        match self.store.count_against_recipient(counted.as_ref()).await? {
            AddressState::QuarantinedNow { count } => {
                tracing::info!(message = %job.id, count, reason = class.reason.as_str(), "address quarantined");
                let ev = self.event(job, EventKind::Quarantined, class.reason.as_str(), failure);
                amqp::confirm(
                    amqp::publish_event(publish, &self.topology.events_exchange(), &ev, job.lane)
                        .await?,
                )
                .await?;
                Ok(true)
            }
            // A redelivered failure: the first delivery counted it.
            AddressState::QuarantinedBefore => Ok(true),
            AddressState::Open => Ok(false),
        }
    }

    fn event(&self, job: &Job, kind: EventKind, reason: &str, failure: &Failure) -> Event {
        Event::for_job(
            job,
            kind,
            Some(reason.to_string()),
            Some(failure_text(failure)),
            unix_now(),
        )
    }
}

/// How a failed attempt is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLog {
    /// Warning: the receiving side is busy or throttles us (421, rate limiting).
    Throttled,
    /// Warning: a block aimed at the sender (content, reputation, authentication).
    Refused,
    /// Info: a failure about the recipient, or an expected step such as
    /// greylisting, which every first attempt to a greylisting server meets.
    Failed,
}

/// The log level of a failed attempt: 421s and throttling are warnings (the
/// remote side is busy, not broken), and so are blocks aimed at the sender;
/// greylisting is info even under a 421, as are the recipient's own failures.
pub fn failure_log_level(failure: &Failure, class: &Classification) -> FailureLog {
    match (failure, class.reason) {
        (_, Reason::Greylisted) => FailureLog::Failed,
        (Failure::Reply { code: 421, .. }, _) | (_, Reason::RateLimited) => FailureLog::Throttled,
        (_, Reason::Refused) => FailureLog::Refused,
        _ => FailureLog::Failed,
    }
}

/// How long a message's history is kept: its validity plus a week.
fn history_ttl(job: &Job) -> Duration {
    Duration::from_secs((job.deadline - unix_now()).max(0) as u64 + 7 * 24 * 3600)
}

/// One failed attempt, as `mailpipe queue show` prints it.
fn history_entry(
    failed: &FailedJob,
    class: &Classification,
    attempt: u32,
    decision: &str,
    due: Option<i64>,
) -> serde_json::Value {
    serde_json::json!({
        "attempt": attempt,
        "at": failed.at,
        "route": failed.route,
        "reply": failure_text(&failed.failure),
        "type": class.kind,
        "reason": class.reason,
        "rule": class.rule,
        "decision": decision,
        "due": due,
    })
}

/// One line describing a failure, for records and events.
pub fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Reply {
            code,
            enhanced,
            text,
        } => match enhanced {
            Some(e) if !text.starts_with(e.as_str()) => format!("{code} {e} {text}"),
            _ => format!("{code} {text}"),
        },
        Failure::Connection { error, detail } => format!("connection {error:?}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greylisting_is_logged_as_info_and_throttling_as_a_warning() {
        let classifier = mailpipe_common::classify::Classifier::default();
        let table: &[(&str, FailureLog)] = &[
            (
                "451 4.7.1 Greylisted, please try again later",
                FailureLog::Failed,
            ),
            (
                "450 4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html",
                FailureLog::Failed,
            ),
            ("451 4.7.1 Try again later", FailureLog::Failed),
            (
                "421 4.7.0 Service not available, closing transmission channel",
                FailureLog::Throttled,
            ),
            (
                "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
                FailureLog::Throttled,
            ),
            (
                "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
                FailureLog::Refused,
            ),
            (
                "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
                FailureLog::Failed,
            ),
        ];
        for (reply, want) in table {
            let failure = Failure::from_reply_text(reply);
            let class = classifier.classify(&failure);
            assert_eq!(failure_log_level(&failure, &class), *want, "{reply}");
        }
    }
}

//! What the intake does with one mail: parse it, find the mailpipe message
//! it is about, and feed it into the same quarantine, counters and events as
//! a synchronous failure.
//!
//! A message is found by its VERP token (the bounce's envelope recipient or
//! the addresses its headers name, or the returned original's Return-Path),
//! else by the returned original's `X-Mailpipe-Id` or `Message-ID`. The
//! address acted on is always the recipient of mailpipe's own sent record,
//! never an address the report names: a forged report cannot quarantine or
//! denylist an address mailpipe did not send to.
//!
//! A complaint that names several recipients (several `Original-Rcpt-To`)
//! acts on each of them that mailpipe sent the same request to: their sent
//! records are found by the message id that request and address give. An
//! unsubscribe request that names no message (mailed to the plain
//! List-Unsubscribe address) is matched the same way by its sender's
//! address, over the most recent requests.
//!
//! Every mail ends in one of these, and only then is it acknowledged (SMTP
//! 250, or deleted from the IMAP mailbox):
//! - a bounce, complaint or unsubscribe request applied (counted once per
//!   message, however often the report arrives);
//! - ignored on purpose (auto-replies, delay warnings, success notices), counted
//!   in `mailpipe_intake_mails_total`;
//! - unusable (unrecognized, unmatched, forged): kept in
//!   `{p}:intake:unprocessed` and published to the dead-letter queue with
//!   the reason, for operators.
//!
//! Redis or broker trouble returns [`Temporary`]: the mail is refused for
//! now (SMTP 451) or left in the mailbox, and comes back.
//!
//! Where each step lives: [`Intake::process`] here dispatches on the kind of
//! report; `matching.rs` finds the sent message; `delivery.rs` acts on a
//! bounce, `complaint.rs` on a complaint, `unsubscribe.rs` on an unsubscribe
//! request; `unprocessed.rs` sets an unusable mail aside; `handler.rs` is
//! what the SMTP listener and the IMAP poller call.

mod complaint;
mod delivery;
mod handler;
mod matching;
mod unprocessed;
mod unsubscribe;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Channel;
use mailpipe_common::amqp;
use mailpipe_common::bounce::{self, Report};
use mailpipe_common::config::Settings;
use mailpipe_common::message::{Event, EventKind, Lane};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_common::verp::Verp;
use mailpipe_state::live_rules::LiveClassifier;
use mailpipe_state::store::{DoneRecord, DoneState, Store};

use crate::events::MailTaken;
use crate::{Inbound, IntakeMetrics, Temporary};

/// How long the once-per-message markers of bounces and complaints live.
const MARKER_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The intake's processing, shared by the SMTP listener and the IMAP poller.
pub struct Intake {
    settings: Settings,
    store: Store,
    verp: Option<Verp>,
    classifier: LiveClassifier,
    topology: Topology,
    metrics: IntakeMetrics,
    /// Names this replica when it takes its turn at the IMAP mailbox.
    instance: String,
    /// The confirm-mode channel of the current broker session; `None`
    /// while the broker is away (mails are then refused for now).
    channel: Mutex<Option<Arc<Channel>>>,
}

/// The sent message a report is about.
#[derive(Debug)]
struct Matched {
    message: String,
    record: DoneRecord,
    /// The recipient mailpipe sent to (lowercased).
    address: String,
    /// `verp`, `header` or (unsubscribe requests only) `address`.
    by: &'static str,
}

/// What became of a mail the intake took: the `outcome` label of
/// `mailpipe_intake_mails_total`; an unusable mail's is also its reason
/// among the unprocessed (`intake_{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome {
    /// A bounce, recorded against its message.
    Bounced,
    /// A delay notice: nothing to record.
    Delayed,
    Complained,
    Unsubscribed,
    /// A report about a message already marked so.
    Duplicate,
    /// A report that asks nothing of mailpipe.
    Ignored,
    AutoReply,
    /// Not a delivery or feedback report.
    Unrecognized,
    /// About no message mailpipe sent.
    Unmatched,
    /// Its VERP address does not verify.
    Forged,
}

impl MailOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MailOutcome::Bounced => "bounced",
            MailOutcome::Delayed => "delayed",
            MailOutcome::Complained => "complained",
            MailOutcome::Unsubscribed => "unsubscribed",
            MailOutcome::Duplicate => "duplicate",
            MailOutcome::Ignored => "ignored",
            MailOutcome::AutoReply => "auto_reply",
            MailOutcome::Unrecognized => "unrecognized",
            MailOutcome::Unmatched => "unmatched",
            MailOutcome::Forged => "forged",
        }
    }
}

/// Why a mail could not be used.
#[derive(Debug)]
struct Unusable {
    /// [`MailOutcome::Unrecognized`], [`MailOutcome::Unmatched`] or
    /// [`MailOutcome::Forged`].
    outcome: MailOutcome,
    why: String,
}

impl Intake {
    pub fn new(
        settings: Settings,
        store: Store,
        classifier: LiveClassifier,
        metrics: IntakeMetrics,
    ) -> Self {
        Self {
            verp: Verp::from_settings(&settings.bounces),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            topology: Topology::from_settings(&settings),
            settings,
            store,
            classifier,
            metrics,
            channel: Mutex::new(None),
        }
    }

    /// Sets (or clears, when the session ends) the broker channel.
    pub fn set_channel(&self, channel: Option<Arc<Channel>>) {
        if let Ok(mut c) = self.channel.lock() {
            *c = channel;
        }
    }

    fn channel(&self) -> Result<Arc<Channel>, Temporary> {
        self.channel
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| Temporary("the message broker is unavailable".into()))
    }

    /// Processes one mail; `Ok` once its outcome is durable.
    pub async fn process(&self, mail: &Inbound) -> Result<MailOutcome, Temporary> {
        let parsed = bounce::parse(&mail.data);
        let outcome = match &parsed.report {
            Report::AutoReply => Ok(MailOutcome::AutoReply),
            Report::Unrecognized(why) => Err(Unusable {
                outcome: MailOutcome::Unrecognized,
                why: format!("not a delivery or feedback report: {why}"),
            }),
            Report::Delivery(report) => match self.identify(mail, &parsed, &report.original).await?
            {
                Ok(m) => self.apply_bounce(&m, report).await?,
                Err(u) => Err(u),
            },
            Report::Complaint(report) => {
                match self.identify(mail, &parsed, &report.original).await? {
                    Ok(m) => self.apply_complaints(&m, report).await?,
                    Err(u) => Err(u),
                }
            }
            Report::Unsubscribe(request) => {
                let mut matched = self.identify(mail, &parsed, &request.original).await?;
                if let (Err(u), Some(address)) = (&matched, &request.address) {
                    if u.outcome == MailOutcome::Unmatched {
                        if let Some(m) = self.sent_to(address).await? {
                            matched = Ok(m);
                        }
                    }
                }
                match matched {
                    Ok(m) => self.apply_unsubscribe(&m, request).await?,
                    Err(mut u) => {
                        u.why = format!(
                            "unsubscribe request from {}: {}",
                            request.address.as_deref().unwrap_or("an unknown sender"),
                            u.why
                        );
                        Err(u)
                    }
                }
            }
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(unusable) => {
                self.set_aside(mail, &parsed, &unusable).await?;
                unusable.outcome
            }
        };
        MailTaken {
            source: mail.source,
            outcome: outcome.as_str(),
        }
        .emit(&self.metrics);
        Ok(outcome)
    }

    /// The terminal record of a message, when the message was sent (the
    /// only record a report can be about).
    async fn sent_record(&self, id: &str) -> Result<Option<DoneRecord>, Temporary> {
        let record = self
            .store
            .done(id)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        Ok(record.filter(|r| r.state == DoneState::Sent))
    }

    async fn marked(&self, key: &[&str]) -> Result<bool, Temporary> {
        self.store
            .exists(key)
            .await
            .map_err(|e| Temporary(e.to_string()))
    }

    fn event(&self, m: &Matched, kind: EventKind, reason: &str, detail: &str) -> Event {
        Event {
            v: 1,
            event: kind,
            request: m.record.request.clone(),
            message: Some(m.message.clone()),
            recipient: m.address.clone(),
            campaign: m.record.campaign.clone(),
            reason: Some(reason.to_string()),
            rule: None,
            detail: Some(detail.to_string()),
            at: unix_now(),
        }
    }

    async fn publish_event(
        &self,
        channel: &Channel,
        ev: &Event,
        lane: Lane,
    ) -> Result<(), Temporary> {
        let pending = amqp::publish_event(channel, &self.topology.events_exchange(), ev, lane)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        amqp::confirm(pending)
            .await
            .map_err(|e| Temporary(e.to_string()))
    }
}

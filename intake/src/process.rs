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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Channel;
use mailpipe_common::address::EmailAddress;
use mailpipe_common::amqp;
use mailpipe_common::bounce::{
    self, Action, ComplaintReport, DeliveryReport, Original, Parsed, Report, UnsubscribeRequest,
};
use mailpipe_common::classify::{Failure, FailureType};
use mailpipe_common::config::Settings;
use mailpipe_common::live_rules::LiveClassifier;
use mailpipe_common::message::{DeadRecord, Event, EventKind, Lane};
use mailpipe_common::metrics::IntakeMetrics;
use mailpipe_common::store::{AddressState, DoneRecord, DoneState, RecipientFailure, Store};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_common::verp::{Verp, VerpError};
use serde::Serialize;

use crate::{Handler, Inbound, Temporary};

/// Unusable mails kept in Redis for operators.
const UNPROCESSED_KEPT: usize = 1000;

/// How long the once-per-message markers of bounces and complaints live.
const MARKER_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Further complainants of one report that are looked up (each costs a
/// Redis read).
const MAX_OTHER_COMPLAINANTS: usize = 100;

/// Recent requests searched for a message to the sender of an unsubscribe
/// request that names no message (each costs a Redis read).
const UNSUBSCRIBE_LOOKBACK: usize = 500;

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

/// Why a mail could not be used.
#[derive(Debug)]
struct Unusable {
    /// `unrecognized`, `unmatched` or `forged` (metric label and dead reason).
    outcome: &'static str,
    why: String,
}

/// What operators find in `{p}:intake:unprocessed` for one mail.
#[derive(Serialize)]
struct UnprocessedEntry<'a> {
    at: i64,
    source: &'static str,
    outcome: &'static str,
    why: &'a str,
    mail_from: &'a str,
    rcpt_to: &'a [String],
    from: Option<&'a str>,
    subject: Option<&'a str>,
    message_id: Option<&'a str>,
    size: usize,
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

    fn count(&self, mail: &Inbound, outcome: &str) {
        self.metrics
            .intake
            .with_label_values(&[mail.source.as_str(), outcome])
            .inc();
    }

    /// Processes one mail; `Ok` once its outcome is durable.
    pub async fn process(&self, mail: &Inbound) -> Result<&'static str, Temporary> {
        let parsed = bounce::parse(&mail.data);
        let outcome = match &parsed.report {
            Report::AutoReply => Ok("auto_reply"),
            Report::Unrecognized(why) => Err(Unusable {
                outcome: "unrecognized",
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
                    if u.outcome == "unmatched" {
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
        self.count(mail, outcome);
        Ok(outcome)
    }

    /// Finds the sent message a report is about.
    async fn identify(
        &self,
        mail: &Inbound,
        parsed: &Parsed,
        original: &Original,
    ) -> Result<Result<Matched, Unusable>, Temporary> {
        let mut forged = None;
        let mut candidates: Vec<(String, &'static str)> = Vec::new();
        if let Some(verp) = &self.verp {
            let addresses = mail
                .rcpt_to
                .iter()
                .chain(parsed.addressed_to.iter())
                .chain(original.return_path.iter());
            for address in addresses {
                match verp.decode(address) {
                    Ok(id) => candidates.push((id, "verp")),
                    Err(VerpError::Forged) => forged = Some(address.clone()),
                    Err(_) => {}
                }
            }
        }
        if let Some(id) = original.mailpipe_id.as_deref().filter(|i| is_message_id(i)) {
            candidates.push((id.to_string(), "header"));
        }
        if let Some(id) = original
            .message_id
            .as_deref()
            .and_then(|m| m.split_once('@'))
            .map(|(local, _)| local)
            .filter(|i| is_message_id(i))
        {
            candidates.push((id.to_string(), "header"));
        }
        if candidates.is_empty() {
            return Ok(Err(match forged {
                Some(address) => Unusable {
                    outcome: "forged",
                    why: format!("the VERP token of {address} does not verify"),
                },
                None => Unusable {
                    outcome: "unmatched",
                    why: "no VERP token and no mailpipe message id in the returned headers".into(),
                },
            }));
        }
        let mut tried = Vec::new();
        for (id, by) in candidates {
            if tried.contains(&id) {
                continue;
            }
            let record = self
                .store
                .done(&id)
                .await
                .map_err(|e| Temporary(e.to_string()))?;
            match record {
                Some(record) if record.state == DoneState::Sent => {
                    let Some(address) = record.to.clone() else {
                        tried.push(id);
                        continue;
                    };
                    return Ok(Ok(Matched {
                        message: id,
                        address: address.to_ascii_lowercase(),
                        record,
                        by,
                    }));
                }
                _ => tried.push(id),
            }
        }
        Ok(Err(Unusable {
            outcome: "unmatched",
            why: format!(
                "no sent record for message {} (never sent by mailpipe, or its record expired)",
                tried.join(", ")
            ),
        }))
    }

    /// The latest message mailpipe sent to `address`, among the recent
    /// requests: how an unsubscribe request mailed to the plain
    /// List-Unsubscribe or bounce address (no VERP token, no message id) is
    /// matched. Only an address mailpipe sent to can be found.
    async fn sent_to(&self, address: &str) -> Result<Option<Matched>, Temporary> {
        let Ok(parsed) = EmailAddress::parse(address) else {
            return Ok(None);
        };
        let key = parsed.key();
        let requests = self
            .store
            .recent_requests(UNSUBSCRIBE_LOOKBACK)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        for request in requests {
            let id = mailpipe_common::message::message_id(&request, &key);
            let record = self
                .store
                .done(&id)
                .await
                .map_err(|e| Temporary(e.to_string()))?;
            let Some(record) = record.filter(|r| r.state == DoneState::Sent) else {
                continue;
            };
            let sent_to = record.to.clone().unwrap_or_default().to_ascii_lowercase();
            if sent_to == address.to_ascii_lowercase() {
                return Ok(Some(Matched {
                    message: id,
                    record,
                    address: sent_to,
                    by: "address",
                }));
            }
        }
        Ok(None)
    }

    /// A delivery report: a failure counts against the recipient as a
    /// synchronous one would; delays and successes are only counted.
    async fn apply_bounce(
        &self,
        m: &Matched,
        report: &DeliveryReport,
    ) -> Result<Result<&'static str, Unusable>, Temporary> {
        let mine = |r: &&bounce::RecipientStatus| {
            r.final_recipient.as_deref() == Some(m.address.as_str())
                || r.original_recipient.as_deref() == Some(m.address.as_str())
        };
        let status = report
            .recipients
            .iter()
            .find(mine)
            .or_else(|| (report.recipients.len() == 1).then(|| &report.recipients[0]))
            .or_else(|| {
                report
                    .recipients
                    .iter()
                    .find(|r| r.action == Action::Failed)
            });
        let Some(status) = status else {
            return Ok(Err(Unusable {
                outcome: "unrecognized",
                why: "the report names no recipient".into(),
            }));
        };
        match status.action {
            Action::Failed => {}
            Action::Delayed => {
                tracing::info!(message = %m.message, "delay notice: the receiving side is still trying");
                return Ok(Ok("delayed"));
            }
            _ => return Ok(Ok("ignored")),
        }
        let failure = status.failure();
        let class = self.classifier.classify_for(&failure, Some(&m.address));
        let text = failure.to_string();
        self.store
            .count_failure_text(&failure, &class, unix_now())
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        if class.kind == FailureType::Ignored {
            return Ok(Ok("ignored"));
        }
        let already = self.marked(&["bounced", &m.message]).await?;
        if already {
            return Ok(Ok("duplicate"));
        }
        let quarantined = self.count_against_recipient(m, &failure, &class).await?;
        let lane = m.record.lane.unwrap_or(Lane::Bulk);
        let channel = self.channel()?;
        let ev = self.event(m, EventKind::Bounced, class.reason.as_str(), &text);
        self.publish_event(&channel, &ev, lane).await?;
        if quarantined {
            let ev = self.event(m, EventKind::Quarantined, class.reason.as_str(), &text);
            self.publish_event(&channel, &ev, lane).await?;
        }
        // The message's history (`mailpipe queue show`) tells of it too.
        let entry = serde_json::json!({
            "at": unix_now(),
            "route": report.reporting_mta.as_deref().unwrap_or_default(),
            "reply": text,
            "type": class.kind,
            "reason": class.reason,
            "rule": class.rule,
            "decision": "bounced_after_delivery",
            "due": null,
        });
        self.store
            .push_history(&m.message, &entry, MARKER_TTL)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        // After the events: a crash in between sends them again (at least
        // once), never not at all.
        self.store
            .record_bounce(
                &m.message,
                &m.record.request,
                class.reason.as_str(),
                MARKER_TTL,
            )
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        tracing::info!(message = %m.message, by = m.by, reason = class.reason.as_str(), kind = class.kind.as_str(), quarantined, "bounce received after delivery");
        Ok(Ok("bounced"))
    }

    /// Counts the bounce against the address the way the retrier counts a
    /// failed attempt ([`RecipientFailure::of`], [`Store::count_against_recipient`]).
    async fn count_against_recipient(
        &self,
        m: &Matched,
        failure: &Failure,
        class: &mailpipe_common::classify::Classification,
    ) -> Result<bool, Temporary> {
        let detail = failure.to_string();
        // Counted once per message, apart from the synchronous attempts.
        let counted_as = format!("{}:bounce", m.message);
        let counted = RecipientFailure::of(
            &m.address,
            &counted_as,
            0,
            class,
            &self.settings.quarantine,
            &detail,
            unix_now(),
        );
        let state = self
            .store
            .count_against_recipient(counted.as_ref())
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        Ok(state != AddressState::Open)
    }

    /// A feedback-loop report about the matched message and, when it names
    /// further complainants, about the messages of the same request to them:
    /// each goes through [`Self::apply_complaint`]. "complained" when any
    /// was new.
    async fn apply_complaints(
        &self,
        m: &Matched,
        report: &ComplaintReport,
    ) -> Result<Result<&'static str, Unusable>, Temporary> {
        if report.feedback_type == "not-spam" {
            return Ok(Ok("ignored"));
        }
        let mut outcome = self.apply_complaint(m, report).await?;
        for other in self.other_complainants(m, report).await? {
            if self.apply_complaint(&other, report).await? == "complained" {
                outcome = "complained";
            }
        }
        Ok(Ok(outcome))
    }

    /// The report's other complainants that mailpipe sent the same request
    /// to: the sent record of each is the one its address and the request
    /// give, and must name that address. Others are ignored (a report cannot
    /// make mailpipe act on an address it did not send to).
    async fn other_complainants(
        &self,
        m: &Matched,
        report: &ComplaintReport,
    ) -> Result<Vec<Matched>, Temporary> {
        let mut out = Vec::new();
        let others = report
            .recipients
            .iter()
            .filter(|a| **a != m.address)
            .take(MAX_OTHER_COMPLAINANTS);
        for address in others {
            let Ok(parsed) = EmailAddress::parse(address) else {
                continue;
            };
            let id = mailpipe_common::message::message_id(&m.record.request, &parsed.key());
            let record = self
                .store
                .done(&id)
                .await
                .map_err(|e| Temporary(e.to_string()))?;
            let Some(record) = record.filter(|r| r.state == DoneState::Sent) else {
                tracing::info!(message = %m.message, complainant = %address, "complainant without a sent message of this request: ignored");
                continue;
            };
            let sent_to = record.to.clone().unwrap_or_default().to_ascii_lowercase();
            if sent_to != *address {
                continue;
            }
            out.push(Matched {
                message: id,
                record,
                address: sent_to,
                by: m.by,
            });
        }
        Ok(out)
    }

    /// One complainant: the recipient goes on the denylist and applications
    /// get a `complained` event (once per message).
    async fn apply_complaint(
        &self,
        m: &Matched,
        report: &ComplaintReport,
    ) -> Result<&'static str, Temporary> {
        self.store
            .list_add("denylist", std::slice::from_ref(&m.address))
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        if self.marked(&["complained", &m.message]).await? {
            return Ok("duplicate");
        }
        let lane = m.record.lane.unwrap_or(Lane::Bulk);
        let channel = self.channel()?;
        let detail = match &report.user_agent {
            Some(agent) => format!("{} report from {agent}", report.feedback_type),
            None => format!("{} report", report.feedback_type),
        };
        let ev = self.event(m, EventKind::Complained, &report.feedback_type, &detail);
        self.publish_event(&channel, &ev, lane).await?;
        self.store
            .record_complaint(
                &m.message,
                &m.record.request,
                &report.feedback_type,
                MARKER_TTL,
            )
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        tracing::info!(message = %m.message, by = m.by, feedback = %report.feedback_type, "complaint: address denylisted");
        Ok("complained")
    }

    /// An unsubscribe request about a sent message: its recipient goes on
    /// the denylist (reason `unsubscribed`) and applications get an
    /// `unsubscribed` event, once per message. The address acted on is the
    /// message's recipient; the request's sender is only logged (a mail
    /// client may write from another address of the same person).
    async fn apply_unsubscribe(
        &self,
        m: &Matched,
        request: &UnsubscribeRequest,
    ) -> Result<Result<&'static str, Unusable>, Temporary> {
        self.store
            .list_add("denylist", std::slice::from_ref(&m.address))
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        if self.marked(&["unsubscribed", &m.message]).await? {
            return Ok(Ok("duplicate"));
        }
        let lane = m.record.lane.unwrap_or(Lane::Bulk);
        let channel = self.channel()?;
        let requester = request.address.as_deref().unwrap_or("an unknown sender");
        let detail = format!("unsubscribe request mailed by {requester}");
        let ev = self.event(m, EventKind::Unsubscribed, "unsubscribed", &detail);
        self.publish_event(&channel, &ev, lane).await?;
        self.store
            .record_unsubscribe(&m.message, &m.record.request, MARKER_TTL)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        tracing::info!(message = %m.message, by = m.by, requester, "unsubscribe request: address denylisted");
        Ok(Ok("unsubscribed"))
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

    /// Keeps an unusable mail for operators: in Redis (latest first) and as a
    /// dead-letter record with the start of the mail.
    async fn set_aside(
        &self,
        mail: &Inbound,
        parsed: &Parsed,
        u: &Unusable,
    ) -> Result<(), Temporary> {
        tracing::warn!(source = mail.source.as_str(), outcome = u.outcome, why = %u.why, "mail set aside");
        let entry = UnprocessedEntry {
            at: unix_now(),
            source: mail.source.as_str(),
            outcome: u.outcome,
            why: &u.why,
            mail_from: &mail.mail_from,
            rcpt_to: &mail.rcpt_to,
            from: parsed.from.as_deref(),
            subject: parsed.subject.as_deref(),
            message_id: parsed.message_id.as_deref(),
            size: mail.data.len(),
        };
        let json = serde_json::to_string(&entry).unwrap_or_default();
        let channel = self.channel()?;
        let record = DeadRecord::for_input(
            format!("intake_{}", u.outcome),
            u.why.clone(),
            &mail.data,
            unix_now(),
        );
        amqp::publish_dead(&channel, &self.topology.exchange(), &record)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        self.metrics
            .dead
            .with_label_values(&[record.reason.as_str()])
            .inc();
        self.store
            .record_unprocessed(&json, UNPROCESSED_KEPT)
            .await
            .map_err(|e| Temporary(e.to_string()))
    }
}

/// mailpipe's message ids: 32 lowercase hex digits.
fn is_message_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Handler for Intake {
    fn accepts_recipient(&self, address: &str) -> Result<(), String> {
        let Some(verp) = &self.verp else {
            return Ok(());
        };
        match verp.decode(address) {
            Ok(_) => Ok(()),
            Err(VerpError::Forged) => {
                // Forged, or signed with a key this intake does not have
                // (the sender's and the intake's bounces.keys differ).
                tracing::warn!(%address, "bounce address with a token that does not verify refused");
                self.metrics
                    .intake
                    .with_label_values(&["smtp", "refused_forged"])
                    .inc();
                Err("invalid bounce address".into())
            }
            Err(_) => {
                // The plain bounce address (e.g. registered with a feedback
                // loop) is taken too; matching then relies on the report.
                let plain = format!(
                    "{}@{}",
                    self.settings.bounces.local_part,
                    self.settings.bounces.domain.as_deref().unwrap_or_default()
                );
                if address.eq_ignore_ascii_case(&plain) {
                    Ok(())
                } else {
                    Err("no such user here".into())
                }
            }
        }
    }

    async fn accept(&self, mail: Inbound) -> Result<(), Temporary> {
        self.process(&mail).await.map(|_| ())
    }

    async fn may_poll(&self, mailbox: &str) -> bool {
        // Longer than any round (each IMAP step has its own deadline); a
        // replica that dies mid-round holds the mailbox this long at most.
        let ttl = Duration::from_secs(600);
        match self
            .store
            .try_lock(&format!("imap:{mailbox}"), &self.instance, ttl)
            .await
        {
            Ok(mine) => mine,
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable; not polling the mailbox this round");
                false
            }
        }
    }

    async fn polled(&self, mailbox: &str) {
        self.store
            .unlock(&format!("imap:{mailbox}"), &self.instance)
            .await
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::is_message_id;

    #[test]
    fn message_ids_are_recognized() {
        assert!(is_message_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_message_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_message_id("0123456789abcdef"));
        assert!(!is_message_id("0123456789abcdef0123456789abcdeg"));
    }
}

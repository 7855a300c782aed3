//! Wire types: what applications publish and what mailpipe's processes pass
//! to each other through RabbitMQ.
//!
//! * [`BulkRequest`] — published by an application to the requests queue
//!   (documented in the README, JSON Schema in `schema/request.schema.json`).
//! * [`Job`] — one message for one recipient. It carries a reference to the
//!   stored templates, never a rendered body.
//! * [`JobBatch`] — what the expander publishes into a send lane: the jobs of
//!   up to `expander.jobs_per_message` recipients of one request in one
//!   broker message (the broker's work is per message, not per byte, so this
//!   divides its cost per recipient). A send lane carries both: retries and
//!   moved messages may be single [`Job`]s; [`LaneMessage::decode`] reads
//!   either.
//! * [`FailedJob`] — a job whose attempt failed, published by the sender to
//!   the failure queue.
//! * [`DeadRecord`] — why something stopped for good, in the dead-letter queue.
//! * [`Event`] — delivery events on the events exchange, for applications.
//!
//! Every type carries a schema version `v`; consumers refuse versions they do
//! not know instead of guessing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::classify::Failure;

/// The request schema version this build understands.
pub const REQUEST_SCHEMA_VERSION: u32 = 1;
/// The job schema version this build writes and reads.
pub const JOB_SCHEMA_VERSION: u32 = 1;
/// The schema version of [`JobBatch`], the several-recipient lane message.
pub const BATCH_SCHEMA_VERSION: u32 = 2;
/// Default validity period of a request: five days, like an MTA's bounce time.
pub const DEFAULT_VALIDITY_SECONDS: u64 = 5 * 24 * 3600;
/// The longest validity a request may ask for (`validity_seconds`).
pub const MAX_VALIDITY_SECONDS: u64 = 30 * 24 * 3600;
/// The most retries a request may ask for (`retries`): enough for any
/// schedule that fits in the longest validity period, few enough that a typo
/// cannot keep a message cycling through the delay tiers for its whole life.
pub const MAX_REQUEST_RETRIES: u32 = 20;

/// Which send lane a message travels in. Transactional mail has its own lane
/// and its own sender capacity, so a campaign never delays a password reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Transactional,
    #[default]
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Transactional, Lane::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Transactional => "transactional",
            Lane::Bulk => "bulk",
        }
    }
}

impl std::str::FromStr for Lane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "transactional" => Ok(Lane::Transactional),
            "bulk" => Ok(Lane::Bulk),
            other => Err(format!("unknown lane {other:?} (transactional|bulk)")),
        }
    }
}

/// One part of a request that was split because it was too large to publish
/// as one message. All parts share a `request_id`; the expander treats them
/// as one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// 1-based index of this part.
    pub index: u32,
    /// How many parts the request has in all.
    pub total: u32,
}

/// Send at most one message per recipient and key within a window
/// (one "usage at 70/80/90 %" notice instead of three).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coalesce {
    /// The coalescing key, e.g. `usage-warning`. Scoped by tenant.
    pub key: String,
    /// Window in seconds during which later requests with the same key are
    /// excluded as `coalesced` for a recipient already sent to.
    pub window_seconds: u64,
}

/// A bulk-send request as published by an application.
///
/// Recipients are kept as raw JSON slices so that the expander can stream
/// over them, parsing one recipient at a time, without materializing a
/// second copy of a large campaign.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest<'a> {
    /// Must equal [`REQUEST_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The client's idempotency key. Publishing the same request id again
    /// sends nothing twice. Generated when absent (from the AMQP message id,
    /// or the content hash of the request).
    #[serde(default)]
    pub request_id: Option<String>,
    /// Free-form label of the tenant (application, customer) for reporting and
    /// scoping coalescing keys.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Free-form campaign label for reporting.
    #[serde(default)]
    pub campaign: Option<String>,
    #[serde(default)]
    pub lane: Lane,
    /// Sender, `addr@example.com` or `Name <addr@example.com>`.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// MiniJinja template of the subject.
    pub subject: String,
    /// MiniJinja template of the text/plain body.
    #[serde(default)]
    pub text: Option<String>,
    /// MiniJinja template of the text/html body (auto-escaped).
    #[serde(default)]
    pub html: Option<String>,
    /// Extra headers; values are MiniJinja templates too.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// MiniJinja template of the one-click unsubscribe URL (RFC 8058).
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    /// How long the request stays deliverable, in seconds (default 5 days).
    #[serde(default)]
    pub validity_seconds: Option<u64>,
    #[serde(default)]
    pub part: Option<Part>,
    #[serde(default)]
    pub coalesce: Option<Coalesce>,
    /// Maximum number of recipients to send to; the excess is excluded as
    /// `target_size_limited`.
    #[serde(default)]
    pub max_audience: Option<u64>,
    /// Share (0.0–1.0) of recipients held back as a control group, chosen
    /// deterministically from the request id and the address.
    #[serde(default)]
    pub control_group: Option<f64>,
    /// Retries after a failed first attempt, for every message of this
    /// request, in place of the retry policy's `max_attempts - 1`
    /// (0..=[`MAX_REQUEST_RETRIES`]; the validity period still ends them).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Address checks for this request (`no_mail_host`, `likely_typo`), in
    /// place of the configured ones (`expander.quality.checks`); `[]`
    /// turns them off.
    #[serde(default)]
    pub quality: Option<Vec<crate::quality::QualityCheck>>,
    #[serde(borrow)]
    pub recipients: Vec<&'a RawValue>,
}

impl BulkRequest<'_> {
    /// The recipient-independent part of the request, to be stored once.
    pub fn content(&self) -> Content {
        Content {
            from: self.from.clone(),
            reply_to: self.reply_to.clone(),
            subject: self.subject.clone(),
            text: self.text.clone(),
            html: self.html.clone(),
            headers: self.headers.clone(),
            unsubscribe_url: self.unsubscribe_url.clone(),
        }
    }
}

/// The part of a request that is the same for every recipient. Stored once
/// per request in Redis under its content hash ([`Content::id`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Sender, `addr@example.com` or `Name <addr@example.com>`.
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// MiniJinja template of the subject.
    pub subject: String,
    /// MiniJinja template of the text/plain body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// MiniJinja template of the text/html body (auto-escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Extra headers; values are MiniJinja templates too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// MiniJinja template of the one-click unsubscribe URL (RFC 8058).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe_url: Option<String>,
}

impl Content {
    /// Content-addressed id: the SHA-256 of the canonical JSON.
    pub fn id(&self) -> String {
        sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// One recipient entry of a request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub vars: serde_json::Map<String, serde_json::Value>,
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic message id of one recipient of one request: the same request
/// and address always give the same id, which is what makes redelivery and
/// republishing safe.
pub fn message_id(request_id: &str, address_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(request_id.as_bytes());
    h.update([0]);
    h.update(address_key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether an address belongs to the control group of a request: a stable
/// hash of request id and address mapped onto [0, 1).
pub fn in_control_group(request_id: &str, address_key: &str, share: f64) -> bool {
    if share <= 0.0 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(b"control-group\0");
    h.update(request_id.as_bytes());
    h.update([0]);
    h.update(address_key.as_bytes());
    let d = h.finalize();
    let x = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (x as f64 / u64::MAX as f64) < share
}

/// One message for one recipient, as it travels through the send lanes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Schema version, [`JOB_SCHEMA_VERSION`].
    pub v: u32,
    /// Deterministic message id ([`message_id`]).
    pub id: String,
    /// The request (campaign) this message belongs to.
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    pub lane: Lane,
    /// Content id of the stored templates.
    pub content: String,
    /// Canonical recipient address.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// When the request was accepted (Unix seconds).
    pub created: i64,
    /// After this (Unix seconds) the message is not attempted any more.
    pub deadline: i64,
    /// Delivery attempts made so far (0 for a fresh job). Raised by the retrier.
    #[serde(default)]
    pub attempt: u32,
    /// Last failure reason, set by the retrier, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    /// The request's own number of retries (its `retries` field), which
    /// replaces the retry policy's for this message; `None`: the policy's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// One recipient of a [`JobBatch`]: what differs between the jobs of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecipient {
    /// Deterministic message id ([`message_id`]).
    pub id: String,
    /// Canonical recipient address.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub vars: serde_json::Map<String, serde_json::Value>,
}

/// The jobs of several recipients of one request, as one lane message.
/// Every field but `recipients` means what it means in [`Job`], for all of
/// them; each recipient is still its own message, with its own id, lease,
/// terminal record and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobBatch {
    /// Schema version, [`BATCH_SCHEMA_VERSION`].
    pub v: u32,
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    pub lane: Lane,
    pub content: String,
    pub created: i64,
    pub deadline: i64,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    pub recipients: Vec<BatchRecipient>,
}

impl JobBatch {
    /// The batch of one job.
    pub fn of_job(job: Job) -> JobBatch {
        JobBatch {
            v: BATCH_SCHEMA_VERSION,
            request: job.request,
            tenant: job.tenant,
            campaign: job.campaign,
            lane: job.lane,
            content: job.content,
            created: job.created,
            deadline: job.deadline,
            attempt: job.attempt,
            last_reason: job.last_reason,
            retries: job.retries,
            recipients: vec![BatchRecipient {
                id: job.id,
                to: job.to,
                name: job.name,
                vars: job.vars,
            }],
        }
    }

    /// The jobs, moved out of the batch.
    pub fn into_jobs(self) -> Vec<Job> {
        let JobBatch {
            request,
            tenant,
            campaign,
            lane,
            content,
            created,
            deadline,
            attempt,
            last_reason,
            retries,
            recipients,
            ..
        } = self;
        recipients
            .into_iter()
            .map(|r| Job {
                v: JOB_SCHEMA_VERSION,
                id: r.id,
                request: request.clone(),
                tenant: tenant.clone(),
                campaign: campaign.clone(),
                lane,
                content: content.clone(),
                to: r.to,
                name: r.name,
                vars: r.vars,
                created,
                deadline,
                attempt,
                last_reason: last_reason.clone(),
                retries,
            })
            .collect()
    }

    /// The batch of some jobs of one request (taken from the first job:
    /// everything but the recipient). `None` for no jobs.
    pub fn from_jobs<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> Option<JobBatch> {
        let mut jobs = jobs.into_iter();
        let mut batch = JobBatch::of_job(jobs.next()?.clone());
        batch.recipients.extend(jobs.map(|j| BatchRecipient {
            id: j.id.clone(),
            to: j.to.clone(),
            name: j.name.clone(),
            vars: j.vars.clone(),
        }));
        Some(batch)
    }
}

/// A message of a send lane, a held campaign's queue or a delay tier.
pub struct LaneMessage;

impl LaneMessage {
    /// Reads a lane message: a [`JobBatch`] (schema 2) or a single [`Job`]
    /// (schema 1, as the retrier publishes them), as a batch. The error says
    /// why the message is not a job.
    pub fn decode(bytes: &[u8]) -> Result<JobBatch, String> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let v = serde_json::from_slice::<Version>(bytes)
            .map_err(|e| format!("unreadable job: {e}"))?
            .v;
        match v {
            JOB_SCHEMA_VERSION => serde_json::from_slice::<Job>(bytes)
                .map(JobBatch::of_job)
                .map_err(|e| format!("unreadable job: {e}")),
            BATCH_SCHEMA_VERSION => {
                let batch = serde_json::from_slice::<JobBatch>(bytes)
                    .map_err(|e| format!("unreadable job batch: {e}"))?;
                if batch.recipients.is_empty() {
                    return Err("job batch without recipients".into());
                }
                Ok(batch)
            }
            other => Err(format!("unsupported job version {other}")),
        }
    }
}

/// A job whose delivery attempt failed, on its way to the retrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedJob {
    pub v: u32,
    pub job: Job,
    /// What went wrong, with the full SMTP reply or the connection error.
    pub failure: Failure,
    /// Which route (relay) the attempt went through.
    pub route: String,
    /// When the attempt failed (Unix seconds).
    pub at: i64,
    /// The sender's classification of the failure, made once with its
    /// rules for the domain's breaker and carried here so the retrier
    /// decides on the same verdict. Absent in records written before it was
    /// carried: the retrier then classifies the failure itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<crate::classify::Classification>,
}

/// Why a message or request stopped for good. Published to the dead-letter
/// queue; operators read it with `mailpipe queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadRecord {
    pub v: u32,
    /// Machine-readable reason, e.g. `invalid_request`, `user_unknown`, `expired`.
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// The request id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The message id, when the record is about one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The job, when the record is about one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// The failure that ended the message, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The original payload (possibly truncated) when the input could not be parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    pub at: i64,
}

/// How much of an input that could not be used a dead letter keeps.
pub const DEAD_PAYLOAD_BYTES: usize = 4096;

impl DeadRecord {
    /// The dead letter of an input mailpipe refuses (a request, lane
    /// message, failure record or mail it cannot use): its reason and
    /// detail, and the start of the input (up to [`DEAD_PAYLOAD_BYTES`]) for
    /// the operator.
    pub fn for_input(reason: impl Into<String>, detail: String, payload: &[u8], at: i64) -> Self {
        Self {
            v: 1,
            reason: reason.into(),
            detail,
            request: None,
            message: None,
            job: None,
            failure: None,
            payload: Some(
                String::from_utf8_lossy(&payload[..payload.len().min(DEAD_PAYLOAD_BYTES)])
                    .into_owned(),
            ),
            at,
        }
    }
}

/// The kinds of delivery events published to the events exchange (routing key
/// `<kind>.<lane>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Sent,
    Deferred,
    Bounced,
    Dead,
    Excluded,
    Quarantined,
    Removed,
    /// The recipient reported the message as spam (a feedback-loop report);
    /// the address is on the denylist now.
    Complained,
    /// The recipient asked to unsubscribe by mail (a `mailto:` unsubscribe
    /// or an "unsubscribe" reply); the address is on the denylist now.
    Unsubscribed,
    /// A previous attempt sent the data and got no reply (its sender died
    /// or the connection broke before the server answered): the recipient
    /// may have the message already. The reason says what mailpipe did
    /// (`resend`, `hold` or `drop`, per `sender.on_ambiguous`).
    Ambiguous,
    /// Accepted, but an address check that only flags found something
    /// (`likely_typo`, with the domain it resembles in `detail`).
    Flagged,
    /// A site's sending state changed (its allowed rate was raised or cut,
    /// it was suspended or resumed): a [`SiteEvent`], routing key
    /// `site.<action>`.
    Site,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sent => "sent",
            EventKind::Deferred => "deferred",
            EventKind::Bounced => "bounced",
            EventKind::Dead => "dead",
            EventKind::Excluded => "excluded",
            EventKind::Quarantined => "quarantined",
            EventKind::Removed => "removed",
            EventKind::Complained => "complained",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::Ambiguous => "ambiguous",
            EventKind::Flagged => "flagged",
            EventKind::Site => "site",
        }
    }
}

/// A change of a site's sending state, for operators and dashboards
/// (published on the events exchange with routing key `site.<action>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEvent {
    pub v: u32,
    /// Always [`EventKind::Site`].
    pub event: EventKind,
    pub site: String,
    /// What changed: `started`, `raised`, `cut`, `suspended`, `resumed`,
    /// `steadied`, `capped`.
    pub action: String,
    /// The state after it: `probing`, `steady`, `throttled`, `suspended`.
    pub state: String,
    /// The allowed rate before and after, messages per second.
    pub previous_rate: Option<f64>,
    pub rate: f64,
    /// The reply behind a cut or a suspension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix ms.
    pub at: i64,
}

/// A delivery event for applications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub event: EventKind,
    pub request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub recipient: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exclusion rule that excluded the recipient (`excluded_by_rule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Server reply or other detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: i64,
}

impl Event {
    /// An event about the message of `job`, at `at`.
    pub fn for_job(
        job: &Job,
        kind: EventKind,
        reason: Option<String>,
        detail: Option<String>,
        at: i64,
    ) -> Self {
        Self {
            v: 1,
            event: kind,
            request: job.request.clone(),
            message: Some(job.id.clone()),
            recipient: job.to.clone(),
            campaign: job.campaign.clone(),
            reason,
            rule: None,
            detail,
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_deterministic_and_distinguishes_recipients() {
        let a = message_id("req-1", "a@example.com");
        assert_eq!(a, message_id("req-1", "a@example.com"));
        assert_ne!(a, message_id("req-1", "b@example.com"));
        assert_ne!(a, message_id("req-2", "a@example.com"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn control_group_share_is_respected_and_stable() {
        let n = 20_000;
        let picked = (0..n)
            .filter(|i| in_control_group("req", &format!("u{i}@example.com"), 0.1))
            .count();
        assert!((1_700..2_300).contains(&picked), "picked {picked}");
        assert!(!in_control_group("req", "u@example.com", 0.0));
        assert!(in_control_group("req", "u@example.com", 1.0));
        let first = in_control_group("req", "u7@example.com", 0.5);
        assert_eq!(first, in_control_group("req", "u7@example.com", 0.5));
    }

    #[test]
    fn request_parses_with_borrowed_recipients() {
        let body = r#"{"schema_version":1,"from":"a@example.com","subject":"Hi {{ name }}",
            "text":"x","recipients":[{"email":"b@example.com","vars":{"k":1}},{"email":"c@example.com"}]}"#;
        let r: BulkRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.recipients.len(), 2);
        assert_eq!(r.lane, Lane::Bulk);
        let rc: Recipient = serde_json::from_str(r.recipients[0].get()).unwrap();
        assert_eq!(rc.vars["k"], 1);
    }

    #[test]
    fn unknown_request_fields_are_refused() {
        let body = r#"{"schema_version":1,"from":"a@example.com","subject":"s","recipients":[],"bogus":1}"#;
        assert!(serde_json::from_str::<BulkRequest>(body).is_err());
    }

    #[test]
    fn content_id_changes_with_content() {
        let c = Content {
            from: "a@example.com".into(),
            reply_to: None,
            subject: "s".into(),
            text: Some("t".into()),
            html: None,
            headers: BTreeMap::new(),
            unsubscribe_url: None,
        };
        let mut d = c.clone();
        d.subject = "s2".into();
        assert_eq!(c.id(), c.clone().id());
        assert_ne!(c.id(), d.id());
    }

    fn job(to: &str) -> Job {
        Job {
            v: JOB_SCHEMA_VERSION,
            id: message_id("req-1", to),
            request: "req-1".into(),
            tenant: Some("acme".into()),
            campaign: None,
            lane: Lane::Bulk,
            content: "c1".into(),
            to: to.into(),
            name: Some("Ann".into()),
            vars: serde_json::Map::from_iter([("k".to_string(), serde_json::json!(1))]),
            created: 10,
            deadline: 20,
            attempt: 2,
            last_reason: Some("mailbox_full".into()),
            retries: Some(1),
        }
    }

    #[test]
    fn a_lane_message_is_a_single_job_or_a_batch_and_reads_back_as_the_same_jobs() {
        let one = job("a@example.com");
        let read = LaneMessage::decode(&serde_json::to_vec(&one).unwrap()).unwrap();
        assert_eq!(read.into_jobs(), vec![one.clone()]);

        let mut batch = JobBatch::of_job(one.clone());
        batch
            .recipients
            .extend(JobBatch::of_job(job("b@example.com")).recipients);
        let bytes = serde_json::to_vec(&batch).unwrap();
        let read = LaneMessage::decode(&bytes).unwrap();
        assert_eq!(read.v, BATCH_SCHEMA_VERSION);
        let jobs = read.into_jobs();
        assert_eq!(jobs, vec![one.clone(), job("b@example.com")]);
        assert_eq!(
            JobBatch::from_jobs(&jobs[1..]).unwrap().into_jobs(),
            vec![job("b@example.com")]
        );
        assert_eq!(JobBatch::from_jobs(&jobs).unwrap(), batch);
        assert!(JobBatch::from_jobs(&[]).is_none());
    }

    #[test]
    fn lane_messages_that_are_not_jobs_are_refused_with_the_reason() {
        let no_recipients = r#"{"v":2,"request":"r","lane":"bulk","content":"c","created":0,"deadline":1,"recipients":[]}"#;
        for (bytes, reason) in [
            (&b"not json"[..], "unreadable job"),
            (b"{\"hello\":1}", "unreadable job"),
            (b"{\"v\":7}", "unsupported job version 7"),
            (b"{\"v\":2,\"request\":\"r\"}", "unreadable job batch"),
            (no_recipients.as_bytes(), "without recipients"),
        ] {
            let e = LaneMessage::decode(bytes).unwrap_err();
            assert!(e.contains(reason), "{e}");
        }
    }

    #[test]
    fn a_failure_record_carries_its_classification_and_old_records_still_read() {
        use crate::classify::{Classification, Failure, FailureType, Quarantine, Reason, Scope};
        let job = JobBatch {
            v: BATCH_SCHEMA_VERSION,
            request: "r1".into(),
            tenant: None,
            campaign: None,
            lane: Lane::Bulk,
            content: "c1".into(),
            created: 0,
            deadline: 10,
            attempt: 0,
            last_reason: None,
            retries: None,
            recipients: vec![BatchRecipient {
                id: "m1".into(),
                to: "bob@example.com".into(),
                name: None,
                vars: Default::default(),
            }],
        }
        .into_jobs()
        .remove(0);
        let class = Classification {
            kind: FailureType::Hard,
            reason: Reason::UserUnknown,
            retry: false,
            quarantine: Quarantine::Immediate,
            scope: Scope::Recipient,
            rule: Some("user_unknown".into()),
        };
        let record = FailedJob {
            v: 1,
            job,
            failure: Failure::from_reply_text("550 5.1.1 no such user"),
            route: "default".into(),
            at: 5,
            classification: Some(class.clone()),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["classification"]["reason"], "user_unknown");
        let back: FailedJob = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, record);
        // A record from a sender that did not carry it yet.
        let mut old = json;
        old.as_object_mut().unwrap().remove("classification");
        let back: FailedJob = serde_json::from_value(old).unwrap();
        assert_eq!(back.classification, None);
        assert_eq!(back.failure, record.failure);
    }

    #[test]
    fn an_unreadable_input_keeps_only_its_start_in_the_dead_letter() {
        let long = vec![b'x'; DEAD_PAYLOAD_BYTES + 10];
        let d = DeadRecord::for_input("malformed_job", "why".into(), &long, 7);
        assert_eq!(d.payload.as_deref().map(str::len), Some(DEAD_PAYLOAD_BYTES));
        assert_eq!(
            (d.reason.as_str(), d.detail.as_str(), d.at),
            ("malformed_job", "why", 7)
        );
        let short = DeadRecord::for_input("r", String::new(), b"{\xff", 0);
        assert_eq!(short.payload.as_deref(), Some("{\u{fffd}"));
        assert!(short.job.is_none() && short.request.is_none() && short.message.is_none());
    }

    #[test]
    fn an_event_about_a_job_names_its_message_recipient_and_campaign() {
        let job = JobBatch::of_job(Job {
            v: JOB_SCHEMA_VERSION,
            id: "m1".into(),
            request: "r1".into(),
            tenant: None,
            campaign: Some("spring".into()),
            lane: Lane::Bulk,
            content: "c1".into(),
            to: "bob@example.com".into(),
            name: None,
            vars: Default::default(),
            created: 0,
            deadline: 10,
            attempt: 2,
            last_reason: None,
            retries: None,
        })
        .into_jobs()
        .remove(0);
        let ev = Event::for_job(&job, EventKind::Dead, Some("expired".into()), None, 9);
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "event": "dead", "request": "r1", "message": "m1",
                "recipient": "bob@example.com", "campaign": "spring", "reason": "expired", "at": 9})
        );
    }
}

//! The jobs in the send lanes: one recipient's [`Job`], a request's
//! [`JobBatch`] of several, how a lane message is read ([`LaneMessage`]),
//! and the [`FailedJob`] on its way to the retrier.

use serde::{Deserialize, Serialize};

use super::{Lane, BATCH_SCHEMA_VERSION, JOB_SCHEMA_VERSION};
use crate::address::EmailAddress;
use crate::classify::Failure;

/// One message for one recipient, as it travels through the send lanes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Schema version, [`JOB_SCHEMA_VERSION`].
    pub v: u32,
    /// Deterministic message id ([`message_id`](super::message_id)).
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
    /// Canonical recipient address (a string on the wire).
    pub to: EmailAddress,
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
    /// Deterministic message id ([`message_id`](super::message_id)).
    pub id: String,
    /// Canonical recipient address (a string on the wire).
    pub to: EmailAddress,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::message_id;

    fn job(to: &str) -> Job {
        Job {
            v: JOB_SCHEMA_VERSION,
            id: message_id("req-1", to),
            request: "req-1".into(),
            tenant: Some("acme".into()),
            campaign: None,
            lane: Lane::Bulk,
            content: "c1".into(),
            to: EmailAddress::parse(to).unwrap(),
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
                to: EmailAddress::parse("bob@example.com").unwrap(),
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
}

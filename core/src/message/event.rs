//! The delivery events published to the events exchange for applications.

use serde::{Deserialize, Serialize};

use super::Job;

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
            recipient: job.to.to_string(),
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
    use crate::message::{JobBatch, Lane, JOB_SCHEMA_VERSION};

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
            to: crate::address::EmailAddress::parse("bob@example.com").unwrap(),
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

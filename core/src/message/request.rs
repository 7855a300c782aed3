//! The bulk request an application publishes, and the content stored once
//! per request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{sha256_hex, Lane};

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
    /// Must equal [`REQUEST_SCHEMA_VERSION`](super::REQUEST_SCHEMA_VERSION).
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
    /// (0..=[`MAX_REQUEST_RETRIES`](super::MAX_REQUEST_RETRIES); the validity period still ends them).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

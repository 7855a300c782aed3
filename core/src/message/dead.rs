//! The dead letter: why a message or request stopped for good.

use serde::{Deserialize, Serialize};

use super::Job;
use crate::classify::Failure;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

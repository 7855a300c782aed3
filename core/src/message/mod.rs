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
//!
//! The request is in `request.rs`, the jobs in `job.rs`, the dead letter in
//! `dead.rs`, the events in `event.rs`; the schema versions, the lane and the
//! ids derived from a request are here.

mod dead;
mod event;
mod job;
mod request;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use dead::{DeadRecord, DEAD_PAYLOAD_BYTES};
pub use event::{Event, EventKind, SiteEvent};
pub use job::{BatchRecipient, FailedJob, Job, JobBatch, LaneMessage};
pub use request::{BulkRequest, Coalesce, Content, Part, Recipient};

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
}

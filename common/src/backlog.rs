//! What the backlog and age metrics are computed from: which queues are
//! sampled (and under which labels), how late the earliest retry is, when a
//! lane message entered its lane, and whether a message is close to its
//! deadline. Pure functions of plain values; the retrier's sampler and the
//! sender call them.
//!
//! What can be measured, and from where. RabbitMQ reports a queue's depth
//! (`queue.declare` with `passive`) but not the age of its head message: that
//! needs the management plugin, which mailpipe does not require. So:
//!
//! * **Lanes** (`send.*`): a sender knows, for each lane message it takes,
//!   when the message entered the lane, or an earlier time
//!   ([`entered_lane_ms`]). Lanes are FIFO, so the message now at the head
//!   entered after every message taken before it: *now minus the newest
//!   entry time taken* bounds the head's wait from above while the lane is
//!   not empty, and grows second by second when nothing is taken.
//! * **Delay tiers**: the retrier indexes every retry by due time in Redis
//!   (`{p}:deferred`); a retry leaves the index when a sender takes it. The
//!   earliest due time still indexed says how late the tiers and lanes are
//!   ([`overdue_seconds`]).
//! * **Deadlines**: a sender counts the recipients it takes for their first
//!   attempt with less than a fifth of their validity period left
//!   ([`deadline_close`]).

use crate::message::Lane;
use crate::topology::Topology;

/// One queue the sampler reads: its routing key and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledQueue {
    /// Routing key (`send.bulk`, `retry.1m.bulk`, `requests`, ...): the
    /// `queue` label.
    pub key: String,
    /// The lane whose mail it holds (`lane` label), empty for the others.
    pub lane: &'static str,
}

/// Every queue of the topology whose depth is exported, with its lane:
/// requests, the send lanes, every delay tier of each lane, failed and dead.
/// Parking queues of held campaigns are per request and summed apart.
pub fn sampled_queues(topology: &Topology) -> Vec<SampledQueue> {
    let q = |key: String, lane: &'static str| SampledQueue { key, lane };
    let mut out = vec![q(Topology::REQUESTS.into(), "")];
    for lane in Lane::ALL {
        out.push(q(Topology::lane_key(lane), lane.as_str()));
        if lane == Lane::Bulk {
            out.push(q(Topology::RETRY.into(), lane.as_str()));
        }
        for tier in topology.tiers() {
            out.push(q(Topology::tier_key(*tier, lane), lane.as_str()));
        }
    }
    out.push(q(Topology::FAILED.into(), ""));
    out.push(q(Topology::DEAD.into(), ""));
    // Recipients in doubt after a crash, waiting for an operator.
    out.push(q(Topology::AMBIGUOUS.into(), ""));
    out
}

/// One sample of the backlog, as the retrier's sampler read it; what the
/// retrier's `BacklogSampled` event exports (`retrier/src/events.rs`). A
/// part that could not be read is `None` (its gauges keep their last
/// values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Each sampled queue with its messages ready and its consumers, or
    /// `None` when it does not exist.
    pub queues: Vec<(SampledQueue, Option<(u32, u32)>)>,
    /// Lane messages in the parking queues of held campaigns.
    pub held: Option<u64>,
    pub deferred: Option<Deferred>,
    pub paused: Option<Paused>,
}

/// The retries waiting in the delay tiers (the deferred index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deferred {
    pub count: u64,
    /// How late the earliest of them is ([`overdue_seconds`]).
    pub overdue_seconds: i64,
}

/// The paused domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    /// How many in all.
    pub total: u64,
    /// The first ones by end of pause: domain, who paused it (`breaker`,
    /// `operator`), end of the pause (Unix seconds).
    pub domains: Vec<(String, String, i64)>,
}

/// How late the earliest retry in the deferred index is, in seconds: 0 when
/// none is past its due time (or none is indexed).
pub fn overdue_seconds(earliest_due: Option<i64>, now: i64) -> i64 {
    earliest_due.map_or(0, |due| (now - due).max(0))
}

/// When a lane message entered its lane, or an earlier time (milliseconds):
/// a retry that came back from a delay tier entered when it was due (the
/// tier dead-letters it then or just after; one taken before its due time
/// entered before now), a first attempt when its request was accepted
/// (`created`, seconds; it is published a little later). Never after `now`.
pub fn entered_lane_ms(created: i64, due_ms: Option<i64>, now_ms: i64) -> i64 {
    due_ms.unwrap_or(created.saturating_mul(1000)).min(now_ms)
}

/// Whether a message accepted at `created` and valid until `deadline`
/// (seconds) has less than a fifth of its validity period left at `now`
/// (and is not yet expired).
pub fn deadline_close(created: i64, deadline: i64, now: i64) -> bool {
    let validity = deadline - created;
    let left = deadline - now;
    validity > 0 && left > 0 && left * 5 < validity
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_sampled_queues_are_requests_lanes_tiers_failed_dead_and_ambiguous() {
        let t = Topology::new(
            "p",
            &[Duration::from_secs(60), Duration::from_secs(3600)],
            5,
        );
        let got: Vec<(String, &str)> = sampled_queues(&t)
            .into_iter()
            .map(|q| (q.key, q.lane))
            .collect();
        let expected = [
            ("requests", ""),
            ("send.transactional", "transactional"),
            ("retry.1m.transactional", "transactional"),
            ("retry.1h.transactional", "transactional"),
            ("send.bulk", "bulk"),
            ("send.retry", "bulk"),
            ("retry.1m.bulk", "bulk"),
            ("retry.1h.bulk", "bulk"),
            ("failed", ""),
            ("dead", ""),
            ("ambiguous", ""),
        ];
        let expected: Vec<(String, &str)> =
            expected.iter().map(|(k, l)| (k.to_string(), *l)).collect();
        assert_eq!(got, expected);
        // Every sampled queue is one the topology declares.
        let declared = t.all_keys();
        for (key, _) in &got {
            assert!(declared.contains(key), "{key} is not declared");
        }
    }

    #[test]
    fn overdue_is_how_late_the_earliest_retry_is() {
        let now = 10_000;
        // (earliest due, seconds overdue)
        let table = [
            (None, 0),
            (Some(now + 60), 0),
            (Some(now), 0),
            (Some(now - 1), 1),
            (Some(now - 3600), 3600),
        ];
        for (due, expected) in table {
            assert_eq!(overdue_seconds(due, now), expected, "due {due:?}");
        }
    }

    #[test]
    fn a_retry_entered_its_lane_when_due_and_a_first_attempt_when_accepted() {
        let now = 1_000_000_000;
        // (created s, due header ms, entered ms)
        let table = [
            // First attempt: accepted 10 s ago.
            (now / 1000 - 10, None, now - 10_000),
            // Retry due 5 s ago, of a request accepted a day ago.
            (now / 1000 - 86_400, Some(now - 5_000), now - 5_000),
            // Taken just before its due time: entered before now.
            (now / 1000 - 86_400, Some(now + 300), now),
            // A clock ahead of this one: not after now.
            (now / 1000 + 2, None, now),
        ];
        for (created, due, expected) in table {
            assert_eq!(
                entered_lane_ms(created, due, now),
                expected,
                "created {created}, due {due:?}"
            );
        }
    }

    #[test]
    fn a_deadline_is_close_in_the_last_fifth_of_the_validity_period() {
        let day = 86_400;
        // Accepted at 0, valid 5 days; (now, close)
        let table = [
            (0, false),
            (3 * day, false),
            (4 * day, false),
            (4 * day + 1, true),
            (5 * day - 1, true),
            // Expired: not close any more (it ends as `expired`).
            (5 * day, false),
            (6 * day, false),
        ];
        for (now, expected) in table {
            assert_eq!(deadline_close(0, 5 * day, now), expected, "at {now}");
        }
        // A validity of 15 minutes: close in its last 3.
        assert!(!deadline_close(0, 900, 700));
        assert!(deadline_close(0, 900, 721));
        // No validity at all: never close.
        assert!(!deadline_close(100, 100, 50));
        assert!(!deadline_close(100, 50, 60));
    }
}

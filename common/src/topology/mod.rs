//! Every exchange, queue, binding and queue argument of mailpipe, and one
//! idempotent [`Topology::declare`]. No other module spells a queue name.
//!
//! ```text
//! exchange {p}           direct  — all work queues, bound by their short name
//!   {p}.requests                     bulk requests from applications
//!   {p}.send.transactional           jobs (up to jobs_per_message recipients each), transactional lane
//!   {p}.send.bulk                    jobs (up to jobs_per_message recipients each), bulk lane
//!   {p}.send.retry                   bulk jobs due again (retries, deferrals), beside send.bulk
//!   {p}.failed                       failed attempts, for the retrier
//!   {p}.retry.<tier>.<lane>          delay tiers: fixed TTL, dead-letter to the lane's due queue
//!   {p}.dead                         what stopped for good, with its reason
//!   {p}.ambiguous                    ambiguous recipients held for an operator
//!   {p}.archive                      stream: every delivered message (only when the archive is on)
//! exchange {p}.events    topic   — delivery events, routing key <kind>.<lane>
//! ```
//!
//! Every queue is a durable quorum queue. Work queues carry a delivery limit
//! whose overflow is dead-lettered to `{p}.dead`, so a message that crashes a
//! consumer is stopped instead of redelivered forever. Delay tiers dead-letter
//! *at least once* (RabbitMQ ≥ 3.10), so an expiring retry cannot be lost
//! between the tier and its send lane.
//!
//! A bulk job that falls due again (a retry, or a deferral for a paused or
//! throttled domain) goes to `send.retry`, not back to `send.bulk`: the
//! senders consume it beside the bulk lane, so a retry runs close to its
//! due time instead of behind the whole backlog of a draining campaign.
//! Transactional jobs go back to `send.transactional`, which has no
//! backlog to wait behind. The archive is a stream (durable,
//! kept by age and size for every reader), declared only when
//! `sender.archive.enabled`.
//!
//! The names and the delay tiers are here; the queue arguments and
//! [`Topology::declare`] in `declare.rs`.

mod declare;

use std::time::Duration;

use crate::archive::Retention;
use crate::config::format_duration;
use crate::message::Lane;

/// The names of one mailpipe installation, derived from its prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    tiers: Vec<Duration>,
    delivery_limit: u32,
    /// The archive stream's retention; `None`: the archive is off and no
    /// stream is declared.
    archive: Option<Retention>,
}

impl Topology {
    pub fn new(prefix: &str, tiers: &[Duration], delivery_limit: u32) -> Self {
        let mut tiers = tiers.to_vec();
        tiers.sort();
        tiers.dedup();
        Self {
            prefix: prefix.to_string(),
            tiers,
            delivery_limit,
            archive: None,
        }
    }

    /// With the archive stream, kept by this retention.
    pub fn with_archive(mut self, retention: Option<Retention>) -> Self {
        self.archive = retention;
        self
    }

    /// From the shared settings.
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        Self::new(&s.amqp.prefix, &s.retrier.tiers, s.amqp.delivery_limit)
            .with_archive(s.sender.archive.retention())
    }

    /// The archive stream's retention, when the archive is on.
    pub fn archive(&self) -> Option<Retention> {
        self.archive
    }

    /// The work exchange every queue is bound to.
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }

    /// The topic exchange of delivery events.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Full queue name of a routing key.
    pub fn queue(&self, key: &str) -> String {
        format!("{}.{}", self.prefix, key)
    }

    pub const REQUESTS: &'static str = "requests";
    pub const FAILED: &'static str = "failed";
    pub const DEAD: &'static str = "dead";
    /// Recipients whose previous attempt's outcome is unknown (the data was
    /// sent, no reply came), held for an operator by `sender.on_ambiguous:
    /// hold` until `mailpipe queue release` or `queue remove`.
    pub const AMBIGUOUS: &'static str = "ambiguous";
    /// The archive of delivered mail: a stream, not a work queue (nobody
    /// takes from it; it is not among [`Self::all_keys`]).
    pub const ARCHIVE: &'static str = "archive";

    /// Routing key of a send lane.
    pub fn lane_key(lane: Lane) -> String {
        format!("send.{}", lane.as_str())
    }

    /// Routing key of the queue of bulk jobs due again (see the module
    /// documentation).
    pub const RETRY: &'static str = "send.retry";

    /// Where a lane's jobs go when they fall due again: the delay tiers
    /// dead-letter there. Bulk jobs skip the bulk lane's backlog.
    pub fn due_key(lane: Lane) -> String {
        match lane {
            Lane::Transactional => Self::lane_key(lane),
            Lane::Bulk => Self::RETRY.to_string(),
        }
    }

    /// Whether a routing key is a delay tier's.
    pub fn is_tier_key(key: &str) -> bool {
        key.starts_with("retry.")
    }

    /// Routing key of the queue holding a held campaign's messages.
    pub fn held_key(request: &str) -> String {
        format!("held.{request}")
    }
    /// The delay tiers, shortest first.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// Routing key of a delay tier for one lane.
    pub fn tier_key(tier: Duration, lane: Lane) -> String {
        format!("retry.{}.{}", format_duration(tier), lane.as_str())
    }

    /// The tier a delay is served by: the smallest tier at least as long as
    /// the delay, or the longest tier when the delay exceeds them all (the
    /// retrier then chains hops).
    pub fn tier_for(&self, delay: Duration) -> Duration {
        self.tiers
            .iter()
            .copied()
            .find(|t| *t >= delay)
            .or_else(|| self.tiers.last().copied())
            .unwrap_or(delay)
    }

    /// Where a message the sender defers by `delay` (a paused domain, a
    /// rate limit) goes, and when it is due: the tier of the first hop
    /// toward it ([`Self::hop_tier`], so a 30-minute pause never parks mail
    /// for an hour) and the wait until due, which the due-time header
    /// carries so the message hops on until then. A delay shorter than
    /// every tier waits the shortest one.
    pub fn deferral(&self, delay: Duration) -> (Duration, Duration) {
        match self.hop_tier(delay) {
            Some(tier) => (tier, delay),
            None => {
                let tier = self.tier_for(delay);
                (tier, tier)
            }
        }
    }

    /// The tier of the next hop toward a due time `remaining` away: the
    /// longest tier not longer than it, or `None` when even the shortest
    /// tier is longer (the message is then as good as due). Delays that no
    /// single tier matches — jittered ones, or longer than the longest tier
    /// — are reached in several hops, never by overshooting.
    pub fn hop_tier(&self, remaining: Duration) -> Option<Duration> {
        let down = self.tiers.iter().copied().rev().find(|t| *t <= remaining)?;
        // With sparse tiers (say 1 s and 1 h) the longest fitting tier can be
        // tiny next to the remaining time; rather than hop thousands of
        // times, take the next longer tier and arrive a little late.
        if remaining.as_secs_f64() / down.as_secs_f64() > 8.0 {
            if let Some(up) = self.tiers.iter().copied().find(|t| *t > remaining) {
                return Some(up);
            }
        }
        Some(down)
    }

    /// Header carrying the time (Unix milliseconds) a deferred message is due.
    pub const DUE_HEADER: &'static str = "x-mailpipe-due-ms";

    /// Every routing key with a queue, for operators' listings.
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys = vec![Self::REQUESTS.to_string()];
        keys.extend(Lane::ALL.iter().map(|l| Self::lane_key(*l)));
        keys.push(Self::RETRY.to_string());
        keys.push(Self::FAILED.to_string());
        for tier in &self.tiers {
            for lane in Lane::ALL {
                keys.push(Self::tier_key(*tier, lane));
            }
        }
        keys.push(Self::DEAD.to_string());
        keys.push(Self::AMBIGUOUS.to_string());
        keys
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable, LongString};

    use super::*;

    fn topo() -> Topology {
        Topology::new(
            "mp",
            &[
                Duration::from_secs(3600),
                Duration::from_secs(60),
                Duration::from_secs(120),
            ],
            5,
        )
    }

    #[test]
    fn tier_for_picks_smallest_tier_not_shorter_than_delay() {
        let t = topo();
        assert_eq!(t.tier_for(Duration::from_secs(1)), Duration::from_secs(60));
        assert_eq!(t.tier_for(Duration::from_secs(60)), Duration::from_secs(60));
        assert_eq!(
            t.tier_for(Duration::from_secs(61)),
            Duration::from_secs(120)
        );
        assert_eq!(
            t.tier_for(Duration::from_secs(99_999)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn hops_never_overshoot_the_due_time() {
        let t = topo();
        // 64 minutes: 1 h, then 2 min, then the remainder is below the
        // shortest tier and the message is due.
        let mut remaining = Duration::from_secs(64 * 60);
        let mut hops = Vec::new();
        while let Some(tier) = t.hop_tier(remaining) {
            hops.push(tier.as_secs());
            remaining -= tier;
        }
        assert_eq!(hops, vec![3600, 120, 120]);
        assert!(remaining < Duration::from_secs(60));
        assert_eq!(t.hop_tier(Duration::from_secs(59)), None);
        // Longer than the longest tier: chained.
        assert_eq!(
            t.hop_tier(Duration::from_secs(3 * 3600)),
            Some(Duration::from_secs(3600))
        );
        // Sparse tiers: no thousands of short hops.
        let sparse = Topology::new(
            "mp",
            &[Duration::from_secs(1), Duration::from_secs(3600)],
            5,
        );
        assert_eq!(
            sparse.hop_tier(Duration::from_secs(3300)),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn a_deferral_hops_toward_its_due_time_and_never_parks_past_it() {
        let m = |n: u64| Duration::from_secs(60 * n);
        let t = Topology::new("mp", &[m(1), m(2), m(4), m(8), m(16), m(60)], 5);
        let table = [
            // (delay, first tier, wait until due)
            (Duration::from_secs(5), m(1), m(1)),
            (m(1), m(1), m(1)),
            (m(3), m(2), m(3)),
            (m(30), m(16), m(30)),
            (m(60), m(60), m(60)),
            (m(180), m(60), m(180)),
        ];
        for (delay, tier, wait) in table {
            assert_eq!(t.deferral(delay), (tier, wait), "{delay:?}");
        }
    }

    #[test]
    fn names_are_prefixed_and_tiers_are_per_lane() {
        let t = topo();
        assert_eq!(t.queue(Topology::REQUESTS), "mp.requests");
        assert_eq!(
            Topology::tier_key(Duration::from_secs(60), Lane::Bulk),
            "retry.1m.bulk"
        );
        let keys = t.all_keys();
        assert_eq!(keys.len(), 1 + 2 + 1 + 1 + 3 * 2 + 1 + 1);
        assert!(keys.contains(&"send.retry".to_string()));
        assert_eq!(keys.first().unwrap(), "requests");
        assert_eq!(keys[keys.len() - 2], "dead");
        assert_eq!(keys.last().unwrap(), "ambiguous");
    }

    #[test]
    fn bulk_tiers_fall_due_into_the_retry_queue_and_transactional_ones_into_their_lane() {
        let t = topo();
        let dead_letter_key = |key: &str| -> String {
            let (_, args) = t
                .queues()
                .into_iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("{key} is not declared"));
            match args.inner().get("x-dead-letter-routing-key") {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => panic!("{key}: {other:?}"),
            }
        };
        for tier in t.tiers().to_vec() {
            assert_eq!(
                dead_letter_key(&Topology::tier_key(tier, Lane::Bulk)),
                "send.retry"
            );
            assert_eq!(
                dead_letter_key(&Topology::tier_key(tier, Lane::Transactional)),
                "send.transactional"
            );
        }
        // The retry queue is a work queue like the lanes: its poison
        // messages are dead-lettered.
        assert_eq!(dead_letter_key(Topology::RETRY), "dead");
        assert!(Topology::is_tier_key("retry.1m.bulk"));
        assert!(!Topology::is_tier_key(Topology::RETRY));
    }

    fn stream_queues(t: &Topology) -> Vec<(String, FieldTable)> {
        t.queues()
            .into_iter()
            .filter(|(_, args)| {
                args.inner().get("x-queue-type")
                    == Some(&AMQPValue::LongString(LongString::from("stream")))
            })
            .collect()
    }

    #[test]
    fn the_archive_stream_is_declared_only_when_the_archive_is_on() {
        let off = topo();
        assert!(stream_queues(&off).is_empty());
        assert!(off.queues().iter().all(|(k, _)| k != Topology::ARCHIVE));

        let on = topo().with_archive(Some(Retention {
            max_age_secs: 604_800,
            max_bytes: 50_000_000_000,
            segment_bytes: 500_000_000,
        }));
        let streams = stream_queues(&on);
        assert_eq!(streams.len(), 1);
        let (key, args) = &streams[0];
        assert_eq!(key, Topology::ARCHIVE);
        let arg = |name: &str| args.inner().get(name).cloned();
        assert_eq!(
            arg("x-max-age"),
            Some(AMQPValue::LongString(LongString::from("604800s")))
        );
        assert_eq!(
            arg("x-max-length-bytes"),
            Some(AMQPValue::LongLongInt(50_000_000_000))
        );
        assert_eq!(
            arg("x-stream-max-segment-size-bytes"),
            Some(AMQPValue::LongLongInt(500_000_000))
        );
        // Not a work queue: operators' listings and purges leave it alone.
        assert!(!on.all_keys().contains(&Topology::ARCHIVE.to_string()));
        assert_eq!(on.queues().len(), off.queues().len() + 1);
    }
}

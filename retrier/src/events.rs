//! The retrier's metrics and the events that update them: one struct per
//! event, whose `emit()` counts it and writes the log line the event has
//! (if any). The families are built in [`RetrierMetrics`] with the
//! retrier's own registry; the shared plumbing (process registry, dead
//! letters, the kept rules' version) is `mailpipe_common::metrics`.

use std::time::Duration;

use mailpipe_common::backlog::Backlog;
use mailpipe_common::metrics::{
    counter, dead_letters, kept_rules_version, process_registry, register, WorkerMetrics,
};
use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The retrier's families: its decisions, and the backlog its sampler
/// reads (one retrier's view is the whole installation's: with several
/// replicas, aggregate with `max`).
#[derive(Clone)]
pub struct RetrierMetrics {
    registry: Registry,
    /// Failed attempts handled, by decision (`retry`, `dead`) and reason.
    retries: IntCounterVec,
    /// Records published to the dead-letter queue, by reason.
    dead: IntCounterVec,
    /// Messages ready per queue (`queue`: routing key; `lane` for the send
    /// lanes and their delay tiers), and `queue="held"`: the parking queues
    /// of held campaigns together. A send-lane message carries up to
    /// `expander.jobs_per_message` recipients.
    queue_messages: IntGaugeVec,
    /// Consumers per queue.
    queue_consumers: IntGaugeVec,
    /// Retries waiting in the delay tiers (the deferred index).
    deferred: IntGauge,
    /// How late the earliest of them is: 0 while every retry is on time.
    deferred_overdue: IntGauge,
    /// Paused domains in all.
    paused_domains: IntGauge,
    /// End of each paused domain's pause (Unix seconds), by domain and by
    /// whom (`breaker`, `operator`): a series exists while the pause lasts.
    paused_until: IntGaugeVec,
    /// The kept rows' version the retrier classifies with.
    kept_rules_version: IntGauge,
}

/// At most this many paused domains are exported one by one (the count is
/// always whole).
pub const PAUSED_DOMAINS_EXPORTED: usize = 100;

impl RetrierMetrics {
    /// The gauge of the kept rows' version, for the live classifier.
    pub fn kept_rules_version(&self) -> &IntGauge {
        &self.kept_rules_version
    }
}

impl WorkerMetrics for RetrierMetrics {
    fn new() -> Self {
        let registry = process_registry();
        let retries = counter(
            &registry,
            "mailpipe_retrier_decisions_total",
            "Failed attempts handled by the retrier, by decision and reason",
            &["decision", "reason"],
        );
        let dead = dead_letters(&registry);
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let queue_messages = gauges(
            "mailpipe_queue_messages",
            "Messages ready per queue (held: the parking queues of held campaigns together), as the retrier last read them",
            &["queue", "lane"],
        );
        let queue_consumers = gauges(
            "mailpipe_queue_consumers",
            "Consumers per queue, as the retrier last read them",
            &["queue", "lane"],
        );
        let deferred = gauge(
            "mailpipe_deferred_recipients",
            "Retries waiting in the delay tiers (the deferred index in Redis)",
        );
        let deferred_overdue = gauge(
            "mailpipe_deferred_overdue_seconds",
            "How late the earliest retry of the deferred index is (0: every retry is on time)",
        );
        let paused_domains = gauge("mailpipe_paused_domains", "Domains paused now");
        let paused_until = gauges(
            "mailpipe_domain_paused_until_seconds",
            "End of a paused domain's pause (Unix seconds), by domain and by whom (breaker, operator); present while the pause lasts",
            &["domain", "by"],
        );
        for d in ["retry", "dead"] {
            retries.with_label_values(&[d, "undefined"]);
        }
        dead.with_label_values(&["exhausted"]);
        let kept_rules_version = kept_rules_version(&registry);
        Self {
            kept_rules_version,
            registry,
            retries,
            dead,
            queue_messages,
            queue_consumers,
            deferred,
            deferred_overdue,
            paused_domains,
            paused_until,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn dead_letters(&self) -> &IntCounterVec {
        &self.dead
    }
}

/// The sampler read the backlog: its gauges are set (a part that could
/// not be read keeps its last values).
pub(crate) struct BacklogSampled<'a> {
    pub backlog: &'a Backlog,
}

impl BacklogSampled<'_> {
    pub(crate) fn emit(self, m: &RetrierMetrics) {
        let b = self.backlog;
        for (q, depth) in &b.queues {
            let labels = [q.key.as_str(), q.lane];
            match depth {
                Some((messages, consumers)) => {
                    m.queue_messages
                        .with_label_values(&labels)
                        .set(*messages as i64);
                    m.queue_consumers
                        .with_label_values(&labels)
                        .set(*consumers as i64);
                }
                None => {
                    let _ = m.queue_messages.remove_label_values(&labels);
                    let _ = m.queue_consumers.remove_label_values(&labels);
                }
            }
        }
        if let Some(held) = b.held {
            m.queue_messages
                .with_label_values(&["held", ""])
                .set(held as i64);
        }
        if let Some(d) = &b.deferred {
            m.deferred.set(d.count as i64);
            m.deferred_overdue.set(d.overdue_seconds);
        }
        let Some(paused) = &b.paused else {
            return;
        };
        m.paused_domains.set(paused.total as i64);
        // Series of pauses that ended go; the others are set (never
        // removed and recreated, so an alert on them does not flap).
        let shown = &paused.domains[..paused.domains.len().min(PAUSED_DOMAINS_EXPORTED)];
        let now: std::collections::BTreeSet<(&str, &str)> = shown
            .iter()
            .map(|(d, by, _)| (d.as_str(), by.as_str()))
            .collect();
        for family in m.paused_until.collect() {
            for series in family.get_metric() {
                let label = |name: &str| {
                    series
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let (domain, by) = (label("domain"), label("by"));
                if !now.contains(&(domain.as_str(), by.as_str())) {
                    let _ = m.paused_until.remove_label_values(&[&domain, &by]);
                }
            }
        }
        for (domain, by, until) in shown {
            m.paused_until.with_label_values(&[domain, by]).set(*until);
        }
    }
}

/// A failed attempt will be tried again: published to the delay tier
/// `tier` (the first hop toward its due time).
pub(crate) struct RetryScheduled<'a> {
    pub message: &'a str,
    /// The attempts made so far.
    pub attempt: u32,
    pub tier: Duration,
    /// The failure's classified reason.
    pub reason: &'a str,
}

impl RetryScheduled<'_> {
    pub(crate) fn emit(self, m: &RetrierMetrics) {
        let (reason, tier) = (self.reason, self.tier);
        m.retries.with_label_values(&["retry", reason]).inc();
        tracing::debug!(message = %self.message, attempt = self.attempt, ?tier, %reason, "deferred");
    }
}

/// A message was stopped after `attempt` attempts: dead-lettered with
/// `reason`, its terminal record and events published.
pub(crate) struct MessageStopped<'a> {
    pub message: &'a str,
    pub attempt: u32,
    pub reason: &'a str,
}

impl MessageStopped<'_> {
    pub(crate) fn emit(self, m: &RetrierMetrics) {
        let reason = self.reason;
        m.retries.with_label_values(&["dead", reason]).inc();
        tracing::info!(message = %self.message, attempt = self.attempt, reason = %reason, "dead-lettered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_common::metrics::{labels, series, value};

    #[test]
    fn retries_and_stops_are_counted_by_decision_and_reason() {
        let m = RetrierMetrics::new();
        let retry = |reason: &'static str| RetryScheduled {
            message: "m",
            attempt: 1,
            tier: Duration::from_secs(60),
            reason,
        };
        retry("greylisted").emit(&m);
        retry("greylisted").emit(&m);
        retry("mailbox_full").emit(&m);
        MessageStopped {
            message: "m",
            attempt: 5,
            reason: "exhausted",
        }
        .emit(&m);
        mailpipe_common::metrics::DeadLettered {
            reason: "exhausted",
        }
        .emit(&m);
        let r = m.registry();
        let decisions = |d, reason| {
            value(
                r,
                "mailpipe_retrier_decisions_total",
                &[("decision", d), ("reason", reason)],
            )
        };
        assert_eq!(decisions("retry", "greylisted"), Some(2.0));
        assert_eq!(decisions("retry", "mailbox_full"), Some(1.0));
        assert_eq!(decisions("dead", "exhausted"), Some(1.0));
        assert_eq!(decisions("dead", "greylisted"), None);
        assert_eq!(decisions("retry", "undefined"), Some(0.0));
        assert_eq!(
            value(r, "mailpipe_dead_letters_total", &[("reason", "exhausted")]),
            Some(1.0)
        );
    }

    #[test]
    fn a_backlog_sample_sets_the_gauges_and_a_paused_domain_lasts_as_long_as_its_pause() {
        use mailpipe_common::backlog::{Deferred, Paused, SampledQueue};
        let m = RetrierMetrics::new();
        let lane = |key: &str, lane: &'static str| SampledQueue {
            key: key.into(),
            lane,
        };
        let paused = |d: &str, by: &str, until: i64| (d.to_string(), by.to_string(), until);
        let first = Backlog {
            queues: vec![
                (lane("send.bulk", "bulk"), Some((120, 2))),
                (lane("retry.1m.bulk", "bulk"), Some((7, 0))),
            ],
            held: Some(3),
            deferred: Some(Deferred {
                count: 40,
                overdue_seconds: 90,
            }),
            paused: Some(Paused {
                total: 2,
                domains: vec![
                    paused("a.example", "breaker", 1_000),
                    paused("b.example", "operator", 2_000),
                ],
            }),
        };
        BacklogSampled { backlog: &first }.emit(&m);
        let r = m.registry();
        assert_eq!(
            series(r, "mailpipe_queue_messages"),
            vec![
                (labels(&[("lane", ""), ("queue", "held")]), 3.0),
                (labels(&[("lane", "bulk"), ("queue", "retry.1m.bulk")]), 7.0),
                (labels(&[("lane", "bulk"), ("queue", "send.bulk")]), 120.0),
            ]
        );
        assert_eq!(
            series(r, "mailpipe_queue_consumers")[1],
            (labels(&[("lane", "bulk"), ("queue", "send.bulk")]), 2.0)
        );
        assert_eq!(series(r, "mailpipe_deferred_recipients")[0].1, 40.0);
        assert_eq!(series(r, "mailpipe_deferred_overdue_seconds")[0].1, 90.0);
        assert_eq!(series(r, "mailpipe_paused_domains")[0].1, 2.0);
        assert_eq!(
            series(r, "mailpipe_domain_paused_until_seconds"),
            vec![
                (
                    labels(&[("by", "breaker"), ("domain", "a.example")]),
                    1_000.0
                ),
                (
                    labels(&[("by", "operator"), ("domain", "b.example")]),
                    2_000.0
                ),
            ]
        );
        // a.example's pause ended, b.example's was extended, the retry tier
        // is gone, the held campaigns and the deferred index could not be
        // read (their gauges keep their values).
        let second = Backlog {
            queues: vec![
                (lane("send.bulk", "bulk"), Some((0, 2))),
                (lane("retry.1m.bulk", "bulk"), None),
            ],
            paused: Some(Paused {
                total: 1,
                domains: vec![paused("b.example", "operator", 5_000)],
            }),
            ..Backlog::default()
        };
        BacklogSampled { backlog: &second }.emit(&m);
        assert_eq!(
            series(r, "mailpipe_queue_messages"),
            vec![
                (labels(&[("lane", ""), ("queue", "held")]), 3.0),
                (labels(&[("lane", "bulk"), ("queue", "send.bulk")]), 0.0),
            ]
        );
        assert_eq!(series(r, "mailpipe_deferred_overdue_seconds")[0].1, 90.0);
        assert_eq!(
            series(r, "mailpipe_domain_paused_until_seconds"),
            vec![(
                labels(&[("by", "operator"), ("domain", "b.example")]),
                5_000.0
            )]
        );
        // Many paused domains: the count is whole, the series are capped.
        let many = Backlog {
            paused: Some(Paused {
                total: 500,
                domains: (0..500)
                    .map(|i| paused(&format!("d{i}.example"), "breaker", i))
                    .collect(),
            }),
            ..Backlog::default()
        };
        BacklogSampled { backlog: &many }.emit(&m);
        assert_eq!(series(r, "mailpipe_paused_domains")[0].1, 500.0);
        assert_eq!(
            series(r, "mailpipe_domain_paused_until_seconds").len(),
            PAUSED_DOMAINS_EXPORTED
        );
    }
}

//! Prometheus metrics of mailpipe. Each binary builds the struct of its own
//! families (the expander's `ExpanderMetrics` and the sender's
//! `SenderMetrics`, in their `events.rs`, [`RetrierMetrics`],
//! [`IntakeMetrics`]) with its own registry (so tests running several
//! pipelines in one process do not mix their counts) and serves it on
//! `/metrics`: a binary exports only the families it updates, and the type
//! of its metrics lets it update no other.
//!
//! Every registry also has what every process exports: the process
//! metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! ..., from `/proc`, on Linux), `mailpipe_build_info{version,commit}` and,
//! once `mailpipe_state::worker::start` registered them, the connection
//! metrics of [`crate::http::Health`]. The plumbing every binary shares is public, so
//! a binary can build its families itself: [`process_registry`],
//! [`register`], [`counter`], the families more than one binary exports
//! ([`dead_letters`], [`kept_rules_version`]) with the event of the first
//! ([`DeadLettered`]), and helpers that read a registry back ([`series`],
//! [`value`]).
//!
//! Labels are bounded: lanes, outcomes and reasons are closed sets; no label
//! carries an address or id.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The commit the binary was built from (see `common/build.rs`), or `unknown`.
pub const COMMIT: &str = env!("MAILPIPE_COMMIT");
/// mailpipe's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `--version` prints after the program's name: the version, and the
/// commit when the build knew it (`0.1.0 (commit 1a2b3c4)`); a build
/// outside a git checkout, without `MAILPIPE_COMMIT`, prints the version
/// alone.
pub fn version_text(version: &str, commit: &str) -> String {
    let commit = commit.trim();
    let known = !commit.is_empty()
        && commit != "unknown"
        && commit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if known {
        format!("{version} (commit {commit})")
    } else {
        version.to_string()
    }
}

/// [`version_text`] of this build.
pub fn this_version() -> String {
    version_text(VERSION, COMMIT)
}

/// The metrics of one binary: built with a registry that holds them and
/// what every process exports.
pub trait WorkerMetrics: Sized + Send + Sync + 'static {
    fn new() -> Self;
    /// The registry `/metrics` serves.
    fn registry(&self) -> &Registry;
    /// `mailpipe_dead_letters_total{reason}`: every binary dead-letters
    /// what it cannot process ([`dead_letters`]).
    fn dead_letters(&self) -> &IntCounterVec;
}

/// A registry with what every process exports: process metrics and
/// `mailpipe_build_info`.
pub fn process_registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
    let build_info = IntGaugeVec::new(
        Opts::new(
            "mailpipe_build_info",
            "Always 1: the version and commit this binary was built from",
        ),
        &["version", "commit"],
    )
    .expect("valid metric");
    build_info.with_label_values(&[VERSION, COMMIT]).set(1);
    register(&registry, build_info);
    registry
}

/// Registers a collector (a family) with `registry` and returns it.
pub fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// Registers a counter family with `labels`.
pub fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// Records published to the dead-letter queue, by reason (every binary
/// dead-letters what it cannot process).
pub fn dead_letters(registry: &Registry) -> IntCounterVec {
    counter(
        registry,
        "mailpipe_dead_letters_total",
        "Records published to the dead-letter queue, by reason",
        &["reason"],
    )
}

/// The version of the kept rows of the qualification table the process
/// classifies with (every binary that classifies failures: the sender, the
/// retrier, the intake), so operators see that all of them applied a
/// qualification.
pub fn kept_rules_version(registry: &Registry) -> IntGauge {
    register(
        registry,
        IntGauge::new(
            "mailpipe_kept_rules_version",
            "Version of the qualification table's kept rows this process classifies with (mailpipe bounces qualify raises it)",
        )
        .expect("valid metric"),
    )
}

/// The retrier's families: its decisions, and the backlog its sampler
/// reads (one retrier's view is the whole installation's: with several
/// replicas, aggregate with `max`).
#[derive(Clone)]
pub struct RetrierMetrics {
    pub registry: Registry,
    /// Failed attempts handled, by decision (`retry`, `dead`) and reason.
    pub retries: IntCounterVec,
    /// Records published to the dead-letter queue, by reason.
    pub dead: IntCounterVec,
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
    pub kept_rules_version: IntGauge,
}

/// At most this many paused domains are exported one by one (the count is
/// always whole).
pub const PAUSED_DOMAINS_EXPORTED: usize = 100;

impl RetrierMetrics {
    /// Exports one sample of the backlog.
    pub fn show_backlog(&self, b: &crate::backlog::Backlog) {
        for (q, depth) in &b.queues {
            let labels = [q.key.as_str(), q.lane];
            match depth {
                Some((messages, consumers)) => {
                    self.queue_messages
                        .with_label_values(&labels)
                        .set(*messages as i64);
                    self.queue_consumers
                        .with_label_values(&labels)
                        .set(*consumers as i64);
                }
                None => {
                    let _ = self.queue_messages.remove_label_values(&labels);
                    let _ = self.queue_consumers.remove_label_values(&labels);
                }
            }
        }
        if let Some(held) = b.held {
            self.queue_messages
                .with_label_values(&["held", ""])
                .set(held as i64);
        }
        if let Some(d) = &b.deferred {
            self.deferred.set(d.count as i64);
            self.deferred_overdue.set(d.overdue_seconds);
        }
        let Some(paused) = &b.paused else {
            return;
        };
        self.paused_domains.set(paused.total as i64);
        // Series of pauses that ended go; the others are set (never
        // removed and recreated, so an alert on them does not flap).
        let shown = &paused.domains[..paused.domains.len().min(PAUSED_DOMAINS_EXPORTED)];
        let now: std::collections::BTreeSet<(&str, &str)> = shown
            .iter()
            .map(|(d, by, _)| (d.as_str(), by.as_str()))
            .collect();
        for family in self.paused_until.collect() {
            for m in family.get_metric() {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let (domain, by) = (label("domain"), label("by"));
                if !now.contains(&(domain.as_str(), by.as_str())) {
                    let _ = self.paused_until.remove_label_values(&[&domain, &by]);
                }
            }
        }
        for (domain, by, until) in shown {
            self.paused_until
                .with_label_values(&[domain, by])
                .set(*until);
        }
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

/// The bounce intake's families.
#[derive(Clone)]
pub struct IntakeMetrics {
    pub registry: Registry,
    /// Mails taken, by source (`smtp`, `imap`) and outcome (`bounced`,
    /// `delayed`, `complained`, `auto_reply`, `duplicate`, `unmatched`,
    /// `unrecognized`, `forged`, `ignored`, and `refused_forged`: a
    /// recipient refused in the SMTP session because its VERP token does
    /// not verify).
    pub intake: IntCounterVec,
    /// Mails set aside in the dead-letter queue, by reason (`intake_*`).
    pub dead: IntCounterVec,
    /// The kept rows' version the intake classifies with.
    pub kept_rules_version: IntGauge,
}

impl WorkerMetrics for IntakeMetrics {
    fn new() -> Self {
        let registry = process_registry();
        let intake = counter(
            &registry,
            "mailpipe_intake_mails_total",
            "Mails taken by the bounce intake, by source and outcome",
            &["source", "outcome"],
        );
        let dead = dead_letters(&registry);
        for source in ["smtp", "imap"] {
            for o in ["bounced", "complained", "unmatched", "forged"] {
                intake.with_label_values(&[source, o]);
            }
        }
        intake.with_label_values(&["smtp", "refused_forged"]);
        dead.with_label_values(&["intake_unmatched"]);
        let kept_rules_version = kept_rules_version(&registry);
        Self {
            registry,
            intake,
            dead,
            kept_rules_version,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn dead_letters(&self) -> &IntCounterVec {
        &self.dead
    }
}

/// A record was published to the dead-letter queue (every binary): counted
/// under its reason. The binaries log what they dead-letter where they
/// decide it, so this event writes no line of its own.
pub struct DeadLettered<'a> {
    pub reason: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(self, metrics: &impl WorkerMetrics) {
        metrics
            .dead_letters()
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// The names of the families a registry exports.
pub fn families(registry: &Registry) -> std::collections::BTreeSet<String> {
    registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

/// The series of a family in a scrape of `registry`: each one's labels (in
/// name order) and value (a counter's or a gauge's; a histogram's count of
/// samples). For tests of the binaries' events.
pub fn series(registry: &Registry, family: &str) -> Vec<(Vec<(String, String)>, f64)> {
    use prometheus::proto::MetricType;
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().iter().map(move |m| (f.get_field_type(), m)))
        .map(|(kind, m)| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let value = match kind {
                MetricType::COUNTER => m.get_counter().get_value(),
                MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                _ => m.get_gauge().get_value(),
            };
            (labels, value)
        })
        .collect()
}

/// Labels as [`series`] gives them, from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of the series of `family` with exactly these labels, if any.
pub fn value(registry: &Registry, family: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    let mut wanted = labels(pairs);
    wanted.sort();
    series(registry, family)
        .into_iter()
        .find(|(l, _)| *l == wanted)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary's metrics for the tests: the process registry and the dead
    /// letters.
    struct Bare {
        registry: Registry,
        dead: IntCounterVec,
    }

    impl WorkerMetrics for Bare {
        fn new() -> Self {
            let registry = process_registry();
            let dead = dead_letters(&registry);
            Self { registry, dead }
        }
        fn registry(&self) -> &Registry {
            &self.registry
        }
        fn dead_letters(&self) -> &IntCounterVec {
            &self.dead
        }
    }

    #[test]
    fn a_backlog_sample_sets_the_gauges_and_a_paused_domain_lasts_as_long_as_its_pause() {
        use crate::backlog::{Backlog, Deferred, Paused, SampledQueue};
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
        m.show_backlog(&first);
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
        m.show_backlog(&second);
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
        m.show_backlog(&many);
        assert_eq!(series(r, "mailpipe_paused_domains")[0].1, 500.0);
        assert_eq!(
            series(r, "mailpipe_domain_paused_until_seconds").len(),
            PAUSED_DOMAINS_EXPORTED
        );
    }

    #[test]
    fn a_dead_letter_is_counted_under_its_reason() {
        let m = Bare::new();
        DeadLettered { reason: "expired" }.emit(&m);
        DeadLettered { reason: "expired" }.emit(&m);
        DeadLettered {
            reason: "poison_message",
        }
        .emit(&m);
        let r = m.registry();
        let dead = "mailpipe_dead_letters_total";
        assert_eq!(value(r, dead, &[("reason", "expired")]), Some(2.0));
        assert_eq!(value(r, dead, &[("reason", "poison_message")]), Some(1.0));
        assert_eq!(value(r, dead, &[("reason", "malformed_job")]), None);
    }

    #[test]
    fn the_version_names_the_commit_only_when_the_build_knew_it() {
        let table = [
            ("0.1.0", "1a2b3c4", "0.1.0 (commit 1a2b3c4)"),
            ("0.1.0", " 1a2b3c4\n", "0.1.0 (commit 1a2b3c4)"),
            (
                "0.1.0",
                "v0.1.0-3-g1a2b3c4",
                "0.1.0 (commit v0.1.0-3-g1a2b3c4)",
            ),
            // Built outside git, without MAILPIPE_COMMIT.
            ("0.1.0", "unknown", "0.1.0"),
            ("0.1.0", "", "0.1.0"),
            // Something that is no commit name is not printed.
            ("0.1.0", "fatal: not a git repository", "0.1.0"),
        ];
        for (version, commit, expected) in table {
            assert_eq!(version_text(version, commit), expected, "{commit:?}");
        }
        assert!(this_version().starts_with(VERSION));
    }

    #[test]
    fn build_info_is_one_series_with_version_and_commit() {
        let registry = process_registry();
        let gathered = registry.gather();
        let info = gathered
            .iter()
            .find(|f| f.name() == "mailpipe_build_info")
            .expect("build info");
        let [m] = info.get_metric() else {
            panic!("one series, got {}", info.get_metric().len());
        };
        let labels: Vec<(&str, &str)> = m
            .get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect();
        assert_eq!(labels, vec![("commit", COMMIT), ("version", VERSION)]);
        assert_eq!(m.get_gauge().get_value(), 1.0);
        assert!(!COMMIT.is_empty());
    }
}

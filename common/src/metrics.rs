//! The shared plumbing of mailpipe's Prometheus metrics. Each binary keeps
//! its own families and the events that update them in its `events.rs`
//! (the expander's `ExpanderMetrics`, the sender's `SenderMetrics`, the
//! retrier's `RetrierMetrics`, the intake's `IntakeMetrics`): one small
//! struct per event the binary reports, whose `emit()` writes the log line
//! of the event and counts it, as vector's `internal_events` do. Each
//! binary builds its families with its own registry (so tests running
//! several pipelines in one process do not mix their counts) and serves it
//! on `/metrics`: a binary exports only the families it updates, and the
//! type of its metrics lets it update no other.
//!
//! What is here is what every binary shares: the registry every process
//! starts from ([`process_registry`]: the process metrics
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...,
//! from `/proc`, on Linux), `mailpipe_build_info{version,commit}` and, once
//! `mailpipe_state::worker::start` registered them, the connection metrics
//! of [`crate::http::Health`]), the families more than one binary exports
//! ([`dead_letters`], [`kept_rules_version`]) with the event of the first
//! ([`DeadLettered`]), the version text, and helpers to build and read
//! families.
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

/// Publishes a dead-letter record (confirmed: [`crate::amqp::publish_dead`])
/// and counts it ([`DeadLettered`]) once the broker took it.
pub async fn publish_dead(
    channel: &lapin::Channel,
    exchange: &str,
    record: &crate::message::DeadRecord,
    metrics: &impl WorkerMetrics,
) -> Result<(), crate::amqp::PublishError> {
    crate::amqp::publish_dead(channel, exchange, record).await?;
    DeadLettered {
        reason: &record.reason,
    }
    .emit(metrics);
    Ok(())
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

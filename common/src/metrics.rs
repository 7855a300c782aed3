//! Prometheus metrics of mailpipe. Each binary builds the struct of its own
//! families ([`ExpanderMetrics`], [`SenderMetrics`], [`RetrierMetrics`],
//! [`IntakeMetrics`]) with its own registry (so tests running several
//! pipelines in one process do not mix their counts) and serves it on
//! `/metrics`: a binary exports only the families it updates, and the type
//! of its metrics lets it update no other.
//!
//! Every registry also has what every process exports: the process
//! metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! ..., from `/proc`, on Linux), `mailpipe_build_info{version,commit}` and,
//! once [`crate::worker::start`] registered them, the connection metrics of
//! [`crate::http::Health`].
//!
//! Labels are bounded: lanes, outcomes and reasons are closed sets; no label
//! carries an address or id.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The commit the binary was built from (see `common/build.rs`), or `unknown`.
pub const COMMIT: &str = env!("MAILPIPE_COMMIT");
/// mailpipe's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The metrics of one binary: built with a registry that holds them and
/// what every process exports.
pub trait WorkerMetrics: Sized + Send + Sync + 'static {
    fn new() -> Self;
    /// The registry `/metrics` serves.
    fn registry(&self) -> &Registry;
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

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// Records published to the dead-letter queue, by reason (every binary
/// dead-letters what it cannot process).
fn dead_letters(registry: &Registry) -> IntCounterVec {
    counter(
        registry,
        "mailpipe_dead_letters_total",
        "Records published to the dead-letter queue, by reason",
        &["reason"],
    )
}

/// The expander's families.
#[derive(Clone)]
pub struct ExpanderMetrics {
    pub registry: Registry,
    /// Requests consumed, by outcome (`expanded`, `invalid`, `replayed`).
    pub requests: IntCounterVec,
    /// Recipients of expanded requests, by outcome (`accepted` or an exclusion reason).
    pub recipients: IntCounterVec,
    /// Time to expand one request (part).
    pub expand_seconds: Histogram,
    /// Requests refused whole, by reason.
    pub dead: IntCounterVec,
}

impl WorkerMetrics for ExpanderMetrics {
    fn new() -> Self {
        let registry = process_registry();
        let requests = counter(
            &registry,
            "mailpipe_requests_total",
            "Bulk requests consumed, by outcome",
            &["outcome"],
        );
        let recipients = counter(
            &registry,
            "mailpipe_recipients_total",
            "Recipients of expanded requests, by outcome",
            &["outcome"],
        );
        let expand_seconds = register(
            &registry,
            Histogram::with_opts(HistogramOpts::new(
                "mailpipe_expand_seconds",
                "Time to expand one request (part)",
            ))
            .expect("valid metric"),
        );
        let dead = dead_letters(&registry);
        // The common series start at zero, so every family is exported from
        // the start (dashboards and alerts see 0, not "no data").
        for o in ["expanded", "invalid", "replayed"] {
            requests.with_label_values(&[o]);
        }
        recipients.with_label_values(&["accepted"]);
        dead.with_label_values(&["invalid_request"]);
        Self {
            registry,
            requests,
            recipients,
            expand_seconds,
            dead,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The sender's families.
#[derive(Clone)]
pub struct SenderMetrics {
    pub registry: Registry,
    /// Recipients taken from a lane, by lane and outcome: `sent` and
    /// `failed` are SMTP attempts; `duplicate`, `held`, `removed`,
    /// `returned`, `not_due`, `throttled`, `paused` and the dead-letter
    /// reasons (`expired`, `render_failed`, ...) are not.
    pub deliveries: IntCounterVec,
    /// SMTP transaction time, from taking the connection to the final reply.
    pub smtp_seconds: HistogramVec,
    /// Transactions per route (relay) and outcome (`sent`, `failed`,
    /// `unavailable`): which relay route each message took.
    pub routes: IntCounterVec,
    /// Domains paused by the breaker (counter of openings).
    pub breaker_openings: IntCounterVec,
    /// Messages currently being processed, by lane.
    pub in_flight: IntGaugeVec,
    /// Records published to the dead-letter queue, by reason.
    pub dead: IntCounterVec,
}

impl WorkerMetrics for SenderMetrics {
    fn new() -> Self {
        let registry = process_registry();
        let deliveries = counter(
            &registry,
            "mailpipe_deliveries_total",
            "Recipients taken from a send lane, by lane and outcome (sent and failed are SMTP attempts)",
            &["lane", "outcome"],
        );
        let smtp_seconds = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "mailpipe_smtp_transaction_seconds",
                    "Duration of SMTP transactions, by lane",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                &["lane"],
            )
            .expect("valid metric"),
        );
        let routes = counter(
            &registry,
            "mailpipe_route_transactions_total",
            "SMTP transactions per route and outcome",
            &["route", "outcome"],
        );
        let breaker_openings = counter(
            &registry,
            "mailpipe_domain_pauses_total",
            "Domains paused by the circuit breaker, by reason",
            &["reason"],
        );
        let in_flight = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "mailpipe_in_flight_messages",
                    "Messages being processed, by lane",
                ),
                &["lane"],
            )
            .expect("valid metric"),
        );
        let dead = dead_letters(&registry);
        for lane in ["transactional", "bulk"] {
            for o in ["sent", "failed", "duplicate"] {
                deliveries.with_label_values(&[lane, o]);
            }
            smtp_seconds.with_label_values(&[lane]);
            in_flight.with_label_values(&[lane]);
        }
        breaker_openings.with_label_values(&["breaker"]);
        dead.with_label_values(&["expired"]);
        Self {
            registry,
            deliveries,
            smtp_seconds,
            routes,
            breaker_openings,
            in_flight,
            dead,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The retrier's families.
#[derive(Clone)]
pub struct RetrierMetrics {
    pub registry: Registry,
    /// Failed attempts handled, by decision (`retry`, `dead`) and reason.
    pub retries: IntCounterVec,
    /// Records published to the dead-letter queue, by reason.
    pub dead: IntCounterVec,
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
        for d in ["retry", "dead"] {
            retries.with_label_values(&[d, "undefined"]);
        }
        dead.with_label_values(&["exhausted"]);
        Self {
            registry,
            retries,
            dead,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
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
        Self {
            registry,
            intake,
            dead,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The names of the families a registry exports.
#[cfg(test)]
fn families(registry: &Registry) -> std::collections::BTreeSet<String> {
    registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mailpipe family, and the binary that exports it.
    const OWNERS: &[(&str, &str)] = &[
        ("mailpipe_requests_total", "expander"),
        ("mailpipe_recipients_total", "expander"),
        ("mailpipe_expand_seconds", "expander"),
        ("mailpipe_deliveries_total", "sender"),
        ("mailpipe_smtp_transaction_seconds", "sender"),
        ("mailpipe_route_transactions_total", "sender"),
        ("mailpipe_domain_pauses_total", "sender"),
        ("mailpipe_in_flight_messages", "sender"),
        ("mailpipe_retrier_decisions_total", "retrier"),
        ("mailpipe_intake_mails_total", "intake"),
    ];

    fn exported() -> Vec<(&'static str, std::collections::BTreeSet<String>)> {
        vec![
            ("expander", families(ExpanderMetrics::new().registry())),
            ("sender", {
                let m = SenderMetrics::new();
                // The sender creates a series per route at start.
                m.routes.with_label_values(&["mx", "sent"]);
                families(m.registry())
            }),
            ("retrier", families(RetrierMetrics::new().registry())),
            ("intake", families(IntakeMetrics::new().registry())),
        ]
    }

    #[test]
    fn each_binary_exports_its_own_families_and_no_other() {
        for (binary, families) in exported() {
            for (family, owner) in OWNERS {
                assert_eq!(
                    families.contains(*family),
                    binary == *owner,
                    "{binary} and {family} (exported by the {owner})"
                );
            }
        }
    }

    #[test]
    fn every_binary_exports_dead_letters_build_info_and_process_metrics() {
        for (binary, families) in exported() {
            for family in ["mailpipe_dead_letters_total", "mailpipe_build_info"] {
                assert!(families.contains(family), "{binary} lacks {family}");
            }
            #[cfg(target_os = "linux")]
            for family in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                assert!(families.contains(family), "{binary} lacks {family}");
            }
        }
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

//! The families each binary's metrics register (no pipeline needed): each
//! binary exports its own families and no other's, and what every process
//! shares. The families and their events live in each binary's
//! `events.rs`; the shared plumbing in `mailpipe_common::metrics`.

use std::collections::BTreeSet;

use mailpipe_common::metrics::{families, WorkerMetrics};
use mailpipe_expander::ExpanderMetrics;
use mailpipe_intake::IntakeMetrics;
use mailpipe_retrier::RetrierMetrics;
use mailpipe_sender::SenderMetrics;

/// Every mailpipe family, and the binary that exports it.
const OWNERS: &[(&str, &str)] = &[
    ("mailpipe_requests_total", "expander"),
    ("mailpipe_recipients_total", "expander"),
    ("mailpipe_expand_seconds", "expander"),
    ("mailpipe_mail_host_lookups_total", "expander"),
    ("mailpipe_deliveries_total", "sender"),
    ("mailpipe_smtp_transaction_seconds", "sender"),
    ("mailpipe_route_transactions_total", "sender"),
    ("mailpipe_domain_pauses_total", "sender"),
    ("mailpipe_in_flight_messages", "sender"),
    ("mailpipe_lane_entered_timestamp_seconds", "sender"),
    ("mailpipe_recipients_near_deadline_total", "sender"),
    ("mailpipe_retrier_decisions_total", "retrier"),
    ("mailpipe_deferred_recipients", "retrier"),
    ("mailpipe_deferred_overdue_seconds", "retrier"),
    ("mailpipe_paused_domains", "retrier"),
    ("mailpipe_intake_mails_total", "intake"),
];

fn exported() -> Vec<(&'static str, BTreeSet<String>)> {
    vec![
        ("expander", families(ExpanderMetrics::new().registry())),
        ("sender", {
            let m = SenderMetrics::new();
            // The sender creates a series per route at start.
            m.start_routes(["mx"]);
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
fn every_binary_that_classifies_exports_the_kept_rules_version() {
    for (binary, families) in exported() {
        assert_eq!(
            families.contains("mailpipe_kept_rules_version"),
            binary != "expander",
            "{binary}"
        );
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

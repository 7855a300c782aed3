//! Tests of the report parser over real-world samples (`samples/`, origins
//! in `samples/ATTRIBUTION.md`), plus robustness tests: every sample with
//! other line ends, and thousands of truncated, mutated and spliced variants
//! that must never panic.
//!
//! Expected values were read off the samples by hand; the classification is
//! the shipped classifier's (`Classifier::default()`, `rules/default.yaml`).
//!
//! The samples and the helpers that read them are here; the tests, by
//! theme: `table.rs` (every sample against its expected reading),
//! `delivery_reports.rs`, `text_bounces.rs`, `complaints.rs` (feedback
//! reports and unsubscribe requests), `robustness.rs` (no input panics).

mod complaints;
mod delivery_reports;
mod robustness;
mod table;
mod text_bounces;

use super::text::TextOutcome;
use super::*;
use crate::classify::{Classifier, Failure, Reason};

/// Every sample, by file name.
const SAMPLES: &[(&str, &[u8])] = &[
    (
        "flanker-aol-mailbox-full.eml",
        include_bytes!("../samples/flanker-aol-mailbox-full.eml"),
    ),
    (
        "flanker-broken-mime.eml",
        include_bytes!("../samples/flanker-broken-mime.eml"),
    ),
    (
        "flanker-delayed-no-mx.eml",
        include_bytes!("../samples/flanker-delayed-no-mx.eml"),
    ),
    (
        "flanker-delivery-status-only.eml",
        include_bytes!("../samples/flanker-delivery-status-only.eml"),
    ),
    (
        "flanker-gmail-invalid-address.eml",
        include_bytes!("../samples/flanker-gmail-invalid-address.eml"),
    ),
    (
        "flanker-gmail-no-dns.eml",
        include_bytes!("../samples/flanker-gmail-no-dns.eml"),
    ),
    (
        "flanker-rfc3464-simple.eml",
        include_bytes!("../samples/flanker-rfc3464-simple.eml"),
    ),
    (
        "mailpipe-arf-no-rcpt-headers.eml",
        include_bytes!("../samples/mailpipe-arf-no-rcpt-headers.eml"),
    ),
    (
        "mailpipe-arf-no-rcpt-rfc822.eml",
        include_bytes!("../samples/mailpipe-arf-no-rcpt-rfc822.eml"),
    ),
    (
        "mailpipe-arf-three-recipients-headers.eml",
        include_bytes!("../samples/mailpipe-arf-three-recipients-headers.eml"),
    ),
    (
        "mailpipe-arf-two-recipients.eml",
        include_bytes!("../samples/mailpipe-arf-two-recipients.eml"),
    ),
    (
        "mailpipe-daemon-notice-disabled.eml",
        include_bytes!("../samples/mailpipe-daemon-notice-disabled.eml"),
    ),
    (
        "mailpipe-daemon-one-line-full.eml",
        include_bytes!("../samples/mailpipe-daemon-one-line-full.eml"),
    ),
    (
        "mailpipe-daemon-one-line-unknown.eml",
        include_bytes!("../samples/mailpipe-daemon-one-line-unknown.eml"),
    ),
    (
        "mailpipe-dsn-dns-error-no-code.eml",
        include_bytes!("../samples/mailpipe-dsn-dns-error-no-code.eml"),
    ),
    (
        "mailpipe-dsn-generic-4.0.0-comment.eml",
        include_bytes!("../samples/mailpipe-dsn-generic-4.0.0-comment.eml"),
    ),
    (
        "mailpipe-dsn-generic-5.0.0-comment.eml",
        include_bytes!("../samples/mailpipe-dsn-generic-5.0.0-comment.eml"),
    ),
    (
        "mailpipe-dsn-generic-5.0.0-text.eml",
        include_bytes!("../samples/mailpipe-dsn-generic-5.0.0-text.eml"),
    ),
    (
        "mailpipe-dsn-no-boundary-lines.eml",
        include_bytes!("../samples/mailpipe-dsn-no-boundary-lines.eml"),
    ),
    (
        "mailpipe-dsn-no-boundary-parameter.eml",
        include_bytes!("../samples/mailpipe-dsn-no-boundary-parameter.eml"),
    ),
    (
        "mailpipe-dsn-other-boundary.eml",
        include_bytes!("../samples/mailpipe-dsn-other-boundary.eml"),
    ),
    (
        "mailpipe-exchange55-address-in-body.eml",
        include_bytes!("../samples/mailpipe-exchange55-address-in-body.eml"),
    ),
    (
        "mailpipe-exchange55-address-in-subject.eml",
        include_bytes!("../samples/mailpipe-exchange55-address-in-subject.eml"),
    ),
    (
        "mailpipe-gmail-dns-no-data.eml",
        include_bytes!("../samples/mailpipe-gmail-dns-no-data.eml"),
    ),
    (
        "mailpipe-smail-one-address.eml",
        include_bytes!("../samples/mailpipe-smail-one-address.eml"),
    ),
    (
        "mailpipe-smail-two-addresses.eml",
        include_bytes!("../samples/mailpipe-smail-two-addresses.eml"),
    ),
    (
        "mailpipe-two-reports.eml",
        include_bytes!("../samples/mailpipe-two-reports.eml"),
    ),
    (
        "mailpipe-two-text-bounces.eml",
        include_bytes!("../samples/mailpipe-two-text-bounces.eml"),
    ),
    (
        "mailpipe-unsubscribe-auto-replied.eml",
        include_bytes!("../samples/mailpipe-unsubscribe-auto-replied.eml"),
    ),
    (
        "mailpipe-unsubscribe-list-address.eml",
        include_bytes!("../samples/mailpipe-unsubscribe-list-address.eml"),
    ),
    (
        "mailpipe-unsubscribe-one-click.eml",
        include_bytes!("../samples/mailpipe-unsubscribe-one-click.eml"),
    ),
    (
        "mailpipe-unsubscribe-reply.eml",
        include_bytes!("../samples/mailpipe-unsubscribe-reply.eml"),
    ),
    (
        "mbd-exchange-delay.eml",
        include_bytes!("../samples/mbd-exchange-delay.eml"),
    ),
    (
        "mbd-non-bounce-hello-world.eml",
        include_bytes!("../samples/mbd-non-bounce-hello-world.eml"),
    ),
    (
        "mbd-qmail-no-host.eml",
        include_bytes!("../samples/mbd-qmail-no-host.eml"),
    ),
    (
        "mbd-unknown-status.eml",
        include_bytes!("../samples/mbd-unknown-status.eml"),
    ),
    (
        "sisimai-arf-01.eml",
        include_bytes!("../samples/sisimai-arf-01.eml"),
    ),
    (
        "sisimai-arf-05.eml",
        include_bytes!("../samples/sisimai-arf-05.eml"),
    ),
    (
        "sisimai-arf-07.eml",
        include_bytes!("../samples/sisimai-arf-07.eml"),
    ),
    (
        "sisimai-arf-09.eml",
        include_bytes!("../samples/sisimai-arf-09.eml"),
    ),
    (
        "sisimai-arf-11.eml",
        include_bytes!("../samples/sisimai-arf-11.eml"),
    ),
    (
        "sisimai-arf-13.eml",
        include_bytes!("../samples/sisimai-arf-13.eml"),
    ),
    (
        "sisimai-exchange2003-03.eml",
        include_bytes!("../samples/sisimai-exchange2003-03.eml"),
    ),
    (
        "sisimai-exchange2007-04.eml",
        include_bytes!("../samples/sisimai-exchange2007-04.eml"),
    ),
    (
        "sisimai-exim-02.eml",
        include_bytes!("../samples/sisimai-exim-02.eml"),
    ),
    (
        "sisimai-exim-30.eml",
        include_bytes!("../samples/sisimai-exim-30.eml"),
    ),
    (
        "sisimai-google-02.eml",
        include_bytes!("../samples/sisimai-google-02.eml"),
    ),
    (
        "sisimai-postfix-02.eml",
        include_bytes!("../samples/sisimai-postfix-02.eml"),
    ),
    (
        "sisimai-postfix-03.eml",
        include_bytes!("../samples/sisimai-postfix-03.eml"),
    ),
    (
        "sisimai-qmail-01.eml",
        include_bytes!("../samples/sisimai-qmail-01.eml"),
    ),
    (
        "sisimai-rfc3834-01.eml",
        include_bytes!("../samples/sisimai-rfc3834-01.eml"),
    ),
    (
        "sisimai-rfc3834-04.eml",
        include_bytes!("../samples/sisimai-rfc3834-04.eml"),
    ),
    (
        "sisimai-sendmail-01.eml",
        include_bytes!("../samples/sisimai-sendmail-01.eml"),
    ),
    (
        "sisimai-yahoo-01.eml",
        include_bytes!("../samples/sisimai-yahoo-01.eml"),
    ),
];

fn sample(name: &str) -> &'static [u8] {
    SAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
        .1
}

fn delivery_of(name: &str) -> (Parsed, DeliveryReport) {
    let parsed = parse(sample(name));
    match &parsed.report {
        Report::Delivery(report) => {
            let report = report.clone();
            (parsed, report)
        }
        other => panic!("{name}: {other:?}"),
    }
}

fn complaint_of(name: &str) -> (Parsed, ComplaintReport) {
    let parsed = parse(sample(name));
    match &parsed.report {
        Report::Complaint(report) => {
            let report = report.clone();
            (parsed, report)
        }
        other => panic!("{name}: {other:?}"),
    }
}

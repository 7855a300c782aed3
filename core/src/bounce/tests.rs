//! Tests of the report parser over real-world samples (`samples/`, origins
//! in `samples/ATTRIBUTION.md`), plus robustness tests: every sample with
//! other line ends, and thousands of truncated, mutated and spliced variants
//! that must never panic.
//!
//! Expected values were read off the samples by hand; the classification is
//! the shipped classifier's (`Classifier::default()`, `rules/default.yaml`).

use super::text::TextOutcome;
use super::*;
use crate::classify::{Classifier, Failure, Reason};

/// Every sample, by file name.
const SAMPLES: &[(&str, &[u8])] = &[
    (
        "flanker-aol-mailbox-full.eml",
        include_bytes!("samples/flanker-aol-mailbox-full.eml"),
    ),
    (
        "flanker-broken-mime.eml",
        include_bytes!("samples/flanker-broken-mime.eml"),
    ),
    (
        "flanker-delayed-no-mx.eml",
        include_bytes!("samples/flanker-delayed-no-mx.eml"),
    ),
    (
        "flanker-delivery-status-only.eml",
        include_bytes!("samples/flanker-delivery-status-only.eml"),
    ),
    (
        "flanker-gmail-invalid-address.eml",
        include_bytes!("samples/flanker-gmail-invalid-address.eml"),
    ),
    (
        "flanker-gmail-no-dns.eml",
        include_bytes!("samples/flanker-gmail-no-dns.eml"),
    ),
    (
        "flanker-rfc3464-simple.eml",
        include_bytes!("samples/flanker-rfc3464-simple.eml"),
    ),
    (
        "mailpipe-arf-no-rcpt-headers.eml",
        include_bytes!("samples/mailpipe-arf-no-rcpt-headers.eml"),
    ),
    (
        "mailpipe-arf-no-rcpt-rfc822.eml",
        include_bytes!("samples/mailpipe-arf-no-rcpt-rfc822.eml"),
    ),
    (
        "mailpipe-arf-three-recipients-headers.eml",
        include_bytes!("samples/mailpipe-arf-three-recipients-headers.eml"),
    ),
    (
        "mailpipe-arf-two-recipients.eml",
        include_bytes!("samples/mailpipe-arf-two-recipients.eml"),
    ),
    (
        "mailpipe-daemon-notice-disabled.eml",
        include_bytes!("samples/mailpipe-daemon-notice-disabled.eml"),
    ),
    (
        "mailpipe-daemon-one-line-full.eml",
        include_bytes!("samples/mailpipe-daemon-one-line-full.eml"),
    ),
    (
        "mailpipe-daemon-one-line-unknown.eml",
        include_bytes!("samples/mailpipe-daemon-one-line-unknown.eml"),
    ),
    (
        "mailpipe-dsn-dns-error-no-code.eml",
        include_bytes!("samples/mailpipe-dsn-dns-error-no-code.eml"),
    ),
    (
        "mailpipe-dsn-generic-4.0.0-comment.eml",
        include_bytes!("samples/mailpipe-dsn-generic-4.0.0-comment.eml"),
    ),
    (
        "mailpipe-dsn-generic-5.0.0-comment.eml",
        include_bytes!("samples/mailpipe-dsn-generic-5.0.0-comment.eml"),
    ),
    (
        "mailpipe-dsn-generic-5.0.0-text.eml",
        include_bytes!("samples/mailpipe-dsn-generic-5.0.0-text.eml"),
    ),
    (
        "mailpipe-dsn-no-boundary-lines.eml",
        include_bytes!("samples/mailpipe-dsn-no-boundary-lines.eml"),
    ),
    (
        "mailpipe-dsn-no-boundary-parameter.eml",
        include_bytes!("samples/mailpipe-dsn-no-boundary-parameter.eml"),
    ),
    (
        "mailpipe-dsn-other-boundary.eml",
        include_bytes!("samples/mailpipe-dsn-other-boundary.eml"),
    ),
    (
        "mailpipe-exchange55-address-in-body.eml",
        include_bytes!("samples/mailpipe-exchange55-address-in-body.eml"),
    ),
    (
        "mailpipe-exchange55-address-in-subject.eml",
        include_bytes!("samples/mailpipe-exchange55-address-in-subject.eml"),
    ),
    (
        "mailpipe-gmail-dns-no-data.eml",
        include_bytes!("samples/mailpipe-gmail-dns-no-data.eml"),
    ),
    (
        "mailpipe-smail-one-address.eml",
        include_bytes!("samples/mailpipe-smail-one-address.eml"),
    ),
    (
        "mailpipe-smail-two-addresses.eml",
        include_bytes!("samples/mailpipe-smail-two-addresses.eml"),
    ),
    (
        "mailpipe-two-reports.eml",
        include_bytes!("samples/mailpipe-two-reports.eml"),
    ),
    (
        "mailpipe-two-text-bounces.eml",
        include_bytes!("samples/mailpipe-two-text-bounces.eml"),
    ),
    (
        "mailpipe-unsubscribe-auto-replied.eml",
        include_bytes!("samples/mailpipe-unsubscribe-auto-replied.eml"),
    ),
    (
        "mailpipe-unsubscribe-list-address.eml",
        include_bytes!("samples/mailpipe-unsubscribe-list-address.eml"),
    ),
    (
        "mailpipe-unsubscribe-one-click.eml",
        include_bytes!("samples/mailpipe-unsubscribe-one-click.eml"),
    ),
    (
        "mailpipe-unsubscribe-reply.eml",
        include_bytes!("samples/mailpipe-unsubscribe-reply.eml"),
    ),
    (
        "mbd-exchange-delay.eml",
        include_bytes!("samples/mbd-exchange-delay.eml"),
    ),
    (
        "mbd-non-bounce-hello-world.eml",
        include_bytes!("samples/mbd-non-bounce-hello-world.eml"),
    ),
    (
        "mbd-qmail-no-host.eml",
        include_bytes!("samples/mbd-qmail-no-host.eml"),
    ),
    (
        "mbd-unknown-status.eml",
        include_bytes!("samples/mbd-unknown-status.eml"),
    ),
    (
        "sisimai-arf-01.eml",
        include_bytes!("samples/sisimai-arf-01.eml"),
    ),
    (
        "sisimai-arf-05.eml",
        include_bytes!("samples/sisimai-arf-05.eml"),
    ),
    (
        "sisimai-arf-07.eml",
        include_bytes!("samples/sisimai-arf-07.eml"),
    ),
    (
        "sisimai-arf-09.eml",
        include_bytes!("samples/sisimai-arf-09.eml"),
    ),
    (
        "sisimai-arf-11.eml",
        include_bytes!("samples/sisimai-arf-11.eml"),
    ),
    (
        "sisimai-arf-13.eml",
        include_bytes!("samples/sisimai-arf-13.eml"),
    ),
    (
        "sisimai-exchange2003-03.eml",
        include_bytes!("samples/sisimai-exchange2003-03.eml"),
    ),
    (
        "sisimai-exchange2007-04.eml",
        include_bytes!("samples/sisimai-exchange2007-04.eml"),
    ),
    (
        "sisimai-exim-02.eml",
        include_bytes!("samples/sisimai-exim-02.eml"),
    ),
    (
        "sisimai-exim-30.eml",
        include_bytes!("samples/sisimai-exim-30.eml"),
    ),
    (
        "sisimai-google-02.eml",
        include_bytes!("samples/sisimai-google-02.eml"),
    ),
    (
        "sisimai-postfix-02.eml",
        include_bytes!("samples/sisimai-postfix-02.eml"),
    ),
    (
        "sisimai-postfix-03.eml",
        include_bytes!("samples/sisimai-postfix-03.eml"),
    ),
    (
        "sisimai-qmail-01.eml",
        include_bytes!("samples/sisimai-qmail-01.eml"),
    ),
    (
        "sisimai-rfc3834-01.eml",
        include_bytes!("samples/sisimai-rfc3834-01.eml"),
    ),
    (
        "sisimai-rfc3834-04.eml",
        include_bytes!("samples/sisimai-rfc3834-04.eml"),
    ),
    (
        "sisimai-sendmail-01.eml",
        include_bytes!("samples/sisimai-sendmail-01.eml"),
    ),
    (
        "sisimai-yahoo-01.eml",
        include_bytes!("samples/sisimai-yahoo-01.eml"),
    ),
];

fn sample(name: &str) -> &'static [u8] {
    SAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
        .1
}

/// What a sample must come out as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Delivery report; the flag is `standard`.
    Delivery(bool),
    /// Complaint with this feedback type, its recipients read from there.
    Complaint(&'static str, RecipientsFrom),
    /// Unsubscribe request.
    Unsubscribe,
    AutoReply,
    /// Unrecognized, with a reason containing this text.
    Unrecognized(&'static str),
}

/// One recipient a report names, with what it says about it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rcpt {
    address: &'static str,
    /// Delivery: the recipient's action.
    action: Option<Action>,
    /// Delivery: the recipient's status.
    status: Option<&'static str>,
    /// Delivery: the shipped classifier's reason for the recipient's failure.
    reason: Option<Reason>,
}

struct Row {
    file: &'static str,
    kind: Kind,
    /// Every recipient, in order: delivery reports with their action, status
    /// and reason; complaints (who complained) and unsubscribe requests (who
    /// asks) by address only.
    recipients: &'static [Rcpt],
}

/// A recipient of a delivery report.
const fn rcpt(
    address: &'static str,
    action: Action,
    status: Option<&'static str>,
    reason: Reason,
) -> Rcpt {
    Rcpt {
        address,
        action: Some(action),
        status,
        reason: Some(reason),
    }
}

/// A complainant or an unsubscribing address.
const fn who(address: &'static str) -> Rcpt {
    Rcpt {
        address,
        action: None,
        status: None,
        reason: None,
    }
}

use Action::{Delayed, Failed};
use Reason::{AccountDisabled, InvalidDomain, MailboxFull, Refused, Unreachable, UserUnknown};
use RecipientsFrom::{JmrpHeader, Nowhere, OriginalRcptTo, ReturnedTo};

#[rustfmt::skip]
const TABLE: &[Row] = &[
    // RFC 3464 delivery-status notifications.
    Row { file: "flanker-rfc3464-simple.eml", kind: Kind::Delivery(true), recipients: &[rcpt("louisl@larry.slip.umd.edu", Failed, Some("4.0.0"), Unreachable)] },
    Row { file: "flanker-aol-mailbox-full.eml", kind: Kind::Delivery(true), recipients: &[rcpt("user@aol.com", Failed, Some("5.2.2"), MailboxFull)] },
    Row { file: "flanker-delayed-no-mx.eml", kind: Kind::Delivery(true), recipients: &[rcpt("user@example.com", Delayed, Some("4.4.4"), Unreachable)] },
    Row { file: "flanker-delivery-status-only.eml", kind: Kind::Delivery(true), recipients: &[rcpt("demo@example.com", Failed, Some("4.2.2"), MailboxFull)] },
    Row { file: "sisimai-postfix-02.eml", kind: Kind::Delivery(true), recipients: &[rcpt("filtered@example.co.jp", Failed, Some("5.2.1"), UserUnknown), rcpt("userunknown@example.co.jp", Failed, Some("5.1.1"), UserUnknown)] },
    Row { file: "sisimai-postfix-03.eml", kind: Kind::Delivery(true), recipients: &[rcpt("kijitora@example.net", Failed, Some("5.0.0"), UserUnknown)] },
    Row { file: "sisimai-sendmail-01.eml", kind: Kind::Delivery(true), recipients: &[rcpt("userunknown@bouncehammer.jp", Failed, Some("5.1.1"), UserUnknown)] },
    Row { file: "sisimai-exchange2007-04.eml", kind: Kind::Delivery(true), recipients: &[rcpt("neko-nyaan@example.jp", Failed, Some("5.7.1"), Refused)] },
    Row { file: "mbd-exchange-delay.eml", kind: Kind::Delivery(true), recipients: &[rcpt("rui.lopes@example.com", Delayed, Some("4.4.7"), Unreachable)] },
    // Bounces recognized by their text.
    Row { file: "sisimai-qmail-01.eml", kind: Kind::Delivery(false), recipients: &[rcpt("kijitora@example.ne.jp", Failed, Some("5.5.0"), UserUnknown)] },
    Row { file: "sisimai-yahoo-01.eml", kind: Kind::Delivery(false), recipients: &[rcpt("kijitora@example.org", Failed, Some("5.1.1"), UserUnknown)] },
    Row { file: "sisimai-exim-02.eml", kind: Kind::Delivery(false), recipients: &[rcpt("kijitora@example.jp", Failed, Some("5.1.1"), UserUnknown), rcpt("sabatora@example.jp", Failed, Some("5.2.1"), UserUnknown)] },
    Row { file: "sisimai-exim-30.eml", kind: Kind::Delivery(false), recipients: &[rcpt("kijitora@exmaple.ch", Failed, Some("5.7.1"), Refused)] },
    Row { file: "sisimai-google-02.eml", kind: Kind::Delivery(false), recipients: &[rcpt("aougoueioaldljgoiuiorghladkgke@example.fr", Failed, Some("5.1.1"), UserUnknown)] },
    Row { file: "flanker-gmail-invalid-address.eml", kind: Kind::Delivery(false), recipients: &[rcpt("awfawfawfawfawfaw@someserverhere.com", Failed, Some("5.1.0"), UserUnknown)] },
    Row { file: "flanker-gmail-no-dns.eml", kind: Kind::Delivery(false), recipients: &[rcpt("user@example.comm", Failed, None, InvalidDomain)] },
    Row { file: "sisimai-exchange2003-03.eml", kind: Kind::Delivery(false), recipients: &[rcpt("kijitora@example.jp", Failed, None, UserUnknown)] },
    // Feedback reports.
    Row { file: "sisimai-arf-01.eml", kind: Kind::Complaint("abuse", ReturnedTo), recipients: &[who("redacted@example.net")] },
    Row { file: "sisimai-arf-05.eml", kind: Kind::Complaint("abuse", OriginalRcptTo), recipients: &[who("fake.rcpt@example.com"), who("fake.rcpt2@example.net")] },
    Row { file: "sisimai-arf-07.eml", kind: Kind::Complaint("auth-failure", OriginalRcptTo), recipients: &[who("fake.rcpt@example.com")] },
    Row { file: "sisimai-arf-09.eml", kind: Kind::Complaint("auth-failure", ReturnedTo), recipients: &[who("fake.recipient@example.org")] },
    Row { file: "sisimai-arf-11.eml", kind: Kind::Complaint("abuse", Nowhere), recipients: &[] },
    Row { file: "sisimai-arf-13.eml", kind: Kind::Complaint("abuse", JmrpHeader), recipients: &[who("recipient@hotmail.com")] },
    // Auto-replies.
    Row { file: "sisimai-rfc3834-01.eml", kind: Kind::AutoReply, recipients: &[] },
    Row { file: "sisimai-rfc3834-04.eml", kind: Kind::AutoReply, recipients: &[] },
    // Neither.
    Row { file: "flanker-broken-mime.eml", kind: Kind::Unrecognized("looks like a bounce"), recipients: &[] },
    Row { file: "mbd-non-bounce-hello-world.eml", kind: Kind::Unrecognized("no delivery-status or feedback-report part"), recipients: &[] },

    // ----- The hard cases -----
    // ARF reports naming several Original-Rcpt-To: every one complained.
    Row { file: "mailpipe-arf-two-recipients.eml", kind: Kind::Complaint("abuse", OriginalRcptTo), recipients: &[who("ann@isp.example"), who("ben@isp.example")] },
    Row { file: "mailpipe-arf-three-recipients-headers.eml", kind: Kind::Complaint("abuse", OriginalRcptTo), recipients: &[who("carol.jones@mail.example.net"), who("dave@mail.example.net"), who("erin@mail.example.net")] },
    // ARF reports without Original-Rcpt-To: the returned message's To.
    Row { file: "mailpipe-arf-no-rcpt-rfc822.eml", kind: Kind::Complaint("abuse", ReturnedTo), recipients: &[who("frank.smith@aol.example")] },
    Row { file: "mailpipe-arf-no-rcpt-headers.eml", kind: Kind::Complaint("abuse", ReturnedTo), recipients: &[who("grace@hotmail.example"), who("heidi@hotmail.example")] },
    // DSNs whose MIME structure is broken: fields read inline.
    Row { file: "mailpipe-dsn-no-boundary-lines.eml", kind: Kind::Delivery(false), recipients: &[rcpt("ivan@example.org", Failed, Some("5.1.1"), UserUnknown)] },
    Row { file: "mailpipe-dsn-other-boundary.eml", kind: Kind::Delivery(false), recipients: &[rcpt("judy@example.net", Failed, Some("5.2.2"), MailboxFull)] },
    Row { file: "mailpipe-dsn-no-boundary-parameter.eml", kind: Kind::Delivery(false), recipients: &[rcpt("kevin@example.com", Failed, Some("5.1.2"), InvalidDomain)] },
    // Plain-text bounces: Smail, one-line daemon notices, old Exchange.
    Row { file: "mailpipe-smail-one-address.eml", kind: Kind::Delivery(false), recipients: &[rcpt("lisa@example.edu", Failed, None, UserUnknown)] },
    Row { file: "mailpipe-smail-two-addresses.eml", kind: Kind::Delivery(false), recipients: &[rcpt("mike@example.org", Failed, None, MailboxFull), rcpt("nina@example.invalid", Failed, None, InvalidDomain)] },
    Row { file: "mailpipe-daemon-one-line-full.eml", kind: Kind::Delivery(false), recipients: &[rcpt("oscar@example.biz", Failed, None, MailboxFull)] },
    Row { file: "mailpipe-daemon-one-line-unknown.eml", kind: Kind::Delivery(false), recipients: &[rcpt("pat@example.info", Failed, None, UserUnknown)] },
    Row { file: "mailpipe-daemon-notice-disabled.eml", kind: Kind::Delivery(false), recipients: &[rcpt("quinn@example.co", Failed, None, AccountDisabled)] },
    Row { file: "mailpipe-exchange55-address-in-subject.eml", kind: Kind::Delivery(false), recipients: &[rcpt("rachel.green@corp.example.com", Failed, None, UserUnknown)] },
    Row { file: "mailpipe-exchange55-address-in-body.eml", kind: Kind::Delivery(false), recipients: &[rcpt("steve@example.ca", Failed, Some("5.1.1"), UserUnknown)] },
    Row { file: "mbd-qmail-no-host.eml", kind: Kind::Delivery(false), recipients: &[rcpt("god@heaven.af.mil", Failed, None, InvalidDomain)] },
    // Unsubscribe requests: opt-outs, not auto-replies.
    Row { file: "mailpipe-unsubscribe-one-click.eml", kind: Kind::Unsubscribe, recipients: &[who("tina.user@gmail.example")] },
    Row { file: "mailpipe-unsubscribe-auto-replied.eml", kind: Kind::Unsubscribe, recipients: &[who("uma@example.net")] },
    Row { file: "mailpipe-unsubscribe-reply.eml", kind: Kind::Unsubscribe, recipients: &[who("victor@example.org")] },
    Row { file: "mailpipe-unsubscribe-list-address.eml", kind: Kind::Unsubscribe, recipients: &[who("wendy@example.com")] },
    // DSNs with only a generic status: the reason from the text or the status comment.
    Row { file: "mailpipe-dsn-generic-5.0.0-text.eml", kind: Kind::Delivery(true), recipients: &[rcpt("xavier@example.eu", Failed, Some("5.0.0"), MailboxFull)] },
    Row { file: "mailpipe-dsn-generic-4.0.0-comment.eml", kind: Kind::Delivery(true), recipients: &[rcpt("yolanda@example.io", Delayed, Some("4.0.0"), Unreachable)] },
    Row { file: "mailpipe-dsn-generic-5.0.0-comment.eml", kind: Kind::Delivery(true), recipients: &[rcpt("zack@example.io", Failed, Some("5.0.0"), UserUnknown)] },
    Row { file: "mbd-unknown-status.eml", kind: Kind::Delivery(true), recipients: &[rcpt("email_that_does_not_exists_this_is_just_a_test@test.local", Failed, Some("5.0.999"), UserUnknown)] },
    // Provider "DNS error" texts without a reply code.
    Row { file: "mailpipe-gmail-dns-no-data.eml", kind: Kind::Delivery(false), recipients: &[rcpt("amy@example.invalid", Failed, None, InvalidDomain)] },
    Row { file: "mailpipe-dsn-dns-error-no-code.eml", kind: Kind::Delivery(true), recipients: &[rcpt("bart@nomail.example", Failed, Some("5.0.0"), InvalidDomain)] },
    // Two reports in one mail: both are read.
    Row { file: "mailpipe-two-reports.eml", kind: Kind::Delivery(true), recipients: &[rcpt("cleo@example.com", Failed, Some("5.1.1"), UserUnknown), rcpt("dan@example.net", Failed, Some("5.2.2"), MailboxFull)] },
    Row { file: "mailpipe-two-text-bounces.eml", kind: Kind::Delivery(false), recipients: &[rcpt("eve@example.org", Failed, Some("5.1.1"), UserUnknown), rcpt("fay@example.org", Failed, None, UserUnknown)] },
];

fn check_row(row: &Row, parsed: &Parsed, classifier: &Classifier) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{}: {what}; got {:#?}", row.file, parsed.report));
    let addresses: Vec<&str> = row.recipients.iter().map(|r| r.address).collect();
    match (&row.kind, &parsed.report) {
        (Kind::Delivery(standard), Report::Delivery(report)) => {
            if report.standard != *standard {
                return fail("standard flag");
            }
            let got: Vec<&str> = report
                .recipients
                .iter()
                .map(|r| r.final_recipient.as_deref().unwrap_or(""))
                .collect();
            if got != addresses {
                return fail("recipients");
            }
            for (want, got) in row.recipients.iter().zip(&report.recipients) {
                if Some(got.action) != want.action {
                    return fail(&format!("action of {}", want.address));
                }
                if got.status.as_deref() != want.status {
                    return fail(&format!("status of {}", want.address));
                }
                let class = classifier.classify(&got.failure());
                if Some(class.reason) != want.reason {
                    return Err(format!(
                        "{}: reason {:?} (rule {:?}) for {} from {:?}",
                        row.file,
                        class.reason,
                        class.rule,
                        want.address,
                        got.failure()
                    ));
                }
            }
        }
        (Kind::Complaint(feedback, from), Report::Complaint(report)) => {
            if report.feedback_type != *feedback {
                return fail("feedback type");
            }
            if report.recipients != addresses || report.recipients_from != *from {
                return fail("complainants");
            }
        }
        (Kind::Unsubscribe, Report::Unsubscribe(request)) => {
            if request.address.as_deref() != addresses.first().copied() {
                return fail("unsubscribing address");
            }
        }
        (Kind::AutoReply, Report::AutoReply) => {}
        (Kind::Unrecognized(why), Report::Unrecognized(reason)) => {
            if !reason.contains(why) {
                return fail("unrecognized reason");
            }
        }
        _ => return fail("kind"),
    }
    Ok(())
}

#[test]
fn every_sample_is_read_as_expected() {
    let classifier = Classifier::default();
    let mut errors = Vec::new();
    for row in TABLE {
        let parsed = parse(sample(row.file));
        if let Err(e) = check_row(row, &parsed, &classifier) {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

#[test]
fn the_table_covers_every_sample_and_the_samples_are_listed_in_the_attribution() {
    let attribution = include_str!("samples/ATTRIBUTION.md");
    for (name, _) in SAMPLES {
        assert!(
            TABLE.iter().any(|r| r.file == *name),
            "{name} is not in the table"
        );
        assert!(
            attribution.contains(name),
            "{name} is not in ATTRIBUTION.md"
        );
    }
    assert_eq!(TABLE.len(), SAMPLES.len());
}

#[test]
fn other_line_ends_give_the_same_result() {
    for (name, raw) in SAMPLES {
        let want = parse(raw);
        let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
        let crlf = text.replace('\n', "\r\n");
        let cr = text.replace('\n', "\r");
        assert_eq!(parse(text.as_bytes()), want, "{name} with LF line ends");
        assert_eq!(parse(crlf.as_bytes()), want, "{name} with CRLF line ends");
        assert_eq!(parse(cr.as_bytes()), want, "{name} with CR line ends");
    }
}

#[test]
fn a_leading_mbox_from_line_is_skipped() {
    let raw = sample("sisimai-postfix-03.eml");
    let mut mbox = b"From MAILER-DAEMON Thu Jul  1 23:45:01 2014\n".to_vec();
    mbox.extend_from_slice(raw);
    assert_eq!(parse(&mbox), parse(raw));
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

#[test]
fn a_postfix_dsn_gives_every_recipient_and_the_returned_message() {
    let (parsed, report) = delivery_of("sisimai-postfix-02.eml");
    assert_eq!(report.reporting_mta.as_deref(), Some("smtp.example.com"));
    let second = &report.recipients[1];
    assert_eq!(
        second.final_recipient.as_deref(),
        Some("userunknown@example.co.jp")
    );
    assert_eq!(
        second.original_recipient.as_deref(),
        Some("userunknown@example.co.jp")
    );
    assert_eq!(second.status.as_deref(), Some("5.1.1"));
    assert_eq!(
        second.diagnostic.as_deref(),
        Some("550 5.1.1 <userunknown@example.co.jp>... User Unknown")
    );
    assert_eq!(second.remote_mta.as_deref(), Some("mx.example.co.jp"));
    assert_eq!(
        report.original.return_path.as_deref(),
        Some("kijitora@example.jp")
    );
    assert_eq!(report.original.from.as_deref(), Some("kijitora@example.jp"));
    assert_eq!(parsed.addressed_to, ["kijitora@example.jp"]);
    assert_eq!(
        parsed.subject.as_deref(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(
        parsed.from.as_deref(),
        Some("MAILER-DAEMON@smtp.example.com")
    );
    assert_eq!(
        parsed.message_id.as_deref(),
        Some("20140621183516.0A3541FB98@smtp.example.com")
    );
}

#[test]
fn a_dsn_marked_auto_replied_is_a_delivery_report() {
    // Postfix writes Auto-Submitted: auto-replied on its DSNs (RFC 3834 asks it to).
    let raw = String::from_utf8_lossy(sample("sisimai-postfix-02.eml")).into_owned();
    assert!(raw.contains("Auto-Submitted: auto-replied"));
    assert!(matches!(parse(raw.as_bytes()).report, Report::Delivery(_)));
}

#[test]
fn headers_of_the_returned_message_are_read() {
    let (parsed, report) = delivery_of("flanker-aol-mailbox-full.eml");
    assert_eq!(
        report.original,
        Original {
            mailpipe_id: None,
            message_id: Some("4E326A95.3010907@example.com".into()),
            to: Some("user@aol.com".into()),
            from: Some("bob@example.com".into()),
            return_path: Some("bounce+8c8b98.c-user=aol.com@example.com".into()),
        }
    );
    assert_eq!(
        parsed.addressed_to,
        ["bounce+8c8b98.c-user=aol.com@example.com"]
    );
    assert_eq!(
        report.recipients[0].remote_mta.as_deref(),
        Some("air-dc.gair-dc.mail.aol.com")
    );
    assert_eq!(
        report.recipients[0].diagnostic.as_deref(),
        Some("552 5.2.2 E4.12 user MAILBOX FULL")
    );

    let (parsed, report) = delivery_of("sisimai-exchange2007-04.eml");
    // An ISO-2022-JP encoded subject. Its second encoded word starts in the
    // middle of a character (RFC 2047 forbids that), so only the first one
    // decodes cleanly.
    let subject = parsed.subject.as_deref().unwrap_or("");
    assert!(
        subject.starts_with("Undeliverable: キジトラ・フラッシュ/"),
        "{subject:?}"
    );
    assert_eq!(
        report.recipients[0].original_recipient.as_deref(),
        Some("neko-nyaan@cat.example.jp")
    );
    assert_eq!(
        report.original.message_id.as_deref(),
        Some("78f44d2b2ea5763064d21edacd9d8d18@example.net")
    );
    assert_eq!(
        report.original.to.as_deref(),
        Some("neko-nyaan@cat.example.jp")
    );
}

#[test]
fn text_bounces_give_the_copy_quoted_after_their_marker_line() {
    let (parsed, report) = delivery_of("sisimai-qmail-01.eml");
    assert_eq!(
        report.original,
        Original {
            mailpipe_id: None,
            message_id: Some("000000000.9999999999999.JavaMail.postmaster@mailhub".into()),
            to: Some("kuroneko@example.com".into()),
            from: Some("nekochan@example.jp".into()),
            return_path: Some("nekochan@example.jp".into()),
        }
    );
    assert_eq!(parsed.addressed_to, ["nekochan@example.jp"]);

    let (_, report) = delivery_of("sisimai-exim-02.eml");
    assert_eq!(
        report.original.message_id.as_deref(),
        Some("E1X58pB-0004bW-2s@marutamachi.example.org")
    );
    assert_eq!(
        report.original.return_path.as_deref(),
        Some("shironeko@example.jp")
    );
    let second = &report.recipients[1];
    assert_eq!(
        second.final_recipient.as_deref(),
        Some("sabatora@example.jp")
    );
    assert_eq!(second.status.as_deref(), Some("5.2.1"));
    assert_eq!(
        report.recipients[0].diagnostic.as_deref(),
        Some("SMTP error from remote mail server after RCPT TO:<kijitora@example.jp>: host mx.example.jp [192.0.2.153]: 550 5.1.1 <kijitora@example.jp>... User Unknown")
    );
    assert_eq!(
        report.recipients[0].remote_mta.as_deref(),
        Some("mx.example.jp")
    );

    let (_, report) = delivery_of("sisimai-google-02.eml");
    assert_eq!(
        report.recipients[0].diagnostic.as_deref(),
        Some("550 550 5.1.1 user unknown (UserSearch) (state 14).")
    );
    assert_eq!(
        report.original.message_id.as_deref(),
        Some("45B7FBD7-1218-4FCD-ACA1-4706F111E682@gmail.com")
    );

    let (_, report) = delivery_of("sisimai-yahoo-01.eml");
    assert_eq!(
        report.recipients[0].diagnostic.as_deref(),
        Some("550 5.1.1 <kijitora@example.org>... User Unknown [RCPT_TO]")
    );
    assert_eq!(report.original.to.as_deref(), Some("kijitora@example.org"));

    // An attached message/rfc822 wins over text.
    let (parsed, report) = delivery_of("sisimai-exchange2003-03.eml");
    assert_eq!(
        report.original.message_id.as_deref(),
        Some("00000000000.ffffffffffff.ff@example.net")
    );
    assert_eq!(parsed.addressed_to, ["shironeko@mx.example.jp"]);
}

#[test]
fn feedback_reports_give_their_fields_and_the_reported_message() {
    let (parsed, report) = complaint_of("sisimai-arf-07.eml");
    assert_eq!(report.user_agent.as_deref(), Some("Lua/1.0"));
    assert_eq!(
        report.original_mail_from.as_deref(),
        Some("mail-handler@example.org")
    );
    assert_eq!(
        report.arrival_date.as_deref(),
        Some("Wed, 12 Nov 2014 12:40:48 +0000")
    );
    assert_eq!(report.reported_domain.as_deref(), Some("example.net"));
    assert_eq!(
        report.original.message_id.as_deref(),
        Some("105855309.1523556.1415796020873@example.net")
    );
    assert_eq!(
        report.original.from.as_deref(),
        Some("fake.sender@example.net")
    );
    assert_eq!(parsed.addressed_to, ["dmarc-noreply@example.com"]);

    // Draft-era field name, redacted recipient.
    let (_, report) = complaint_of("sisimai-arf-01.eml");
    assert_eq!(report.user_agent.as_deref(), Some("SMP-FBL"));
    assert_eq!(
        report.arrival_date.as_deref(),
        Some("Thu, 29 Apr 2009 00:00:00 -0000 (EST)")
    );
    assert_eq!(report.reported_domain.as_deref(), Some("example.ed.jp"));
    assert_eq!(
        report.original.return_path.as_deref(),
        Some("support@example.ed.jp")
    );

    // Original-Mail-From that is no address.
    let (parsed, report) = complaint_of("sisimai-arf-05.eml");
    assert_eq!(report.original_mail_from, None);
    assert_eq!(parsed.message_id.as_deref(), Some("1y6Hkr-3SHLw0-L0-ARF"));

    // A text/rfc822-headers third part.
    let (_, report) = complaint_of("sisimai-arf-09.eml");
    assert_eq!(
        report.original.message_id.as_deref(),
        Some("asdjhi9ldn14@example.net")
    );
    assert_eq!(
        report.original.to.as_deref(),
        Some("fake.recipient@example.org")
    );

    // Microsoft JMRP.
    let (_, report) = complaint_of("sisimai-arf-13.eml");
    assert_eq!(
        report.original.message_id.as_deref(),
        Some("d4cb0d6593464552a34f4429b3e7f92f@example.com")
    );
    assert_eq!(
        report.original.return_path.as_deref(),
        Some("sender@example.com")
    );
}

#[test]
fn a_bare_feedback_report_body_is_a_complaint() {
    let raw = b"From: fbl@example.net\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: SomeFBL/1.0\r\nOriginal-Rcpt-To: <Someone@Example.com>\r\n";
    match parse(raw).report {
        Report::Complaint(c) => {
            assert_eq!(c.feedback_type, "abuse");
            assert_eq!(c.original_rcpt_to, ["someone@example.com"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_feedback_report_without_feedback_type_is_unrecognized() {
    let raw = b"Content-Type: message/feedback-report\r\n\r\nUser-Agent: SomeFBL/1.0\r\n";
    assert_eq!(
        parse(raw).report,
        Report::Unrecognized("feedback report without a Feedback-Type field".into())
    );
}

#[test]
fn the_mailpipe_id_of_the_returned_message_is_read() {
    let raw = b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces+abc@mail.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nX-Mailpipe-Id: 0123456789abcdef0123456789abcdef\r\nMessage-ID: <0123456789abcdef0123456789abcdef@mail.example.org>\r\n\r\n--b--\r\n";
    let (Report::Delivery(report), addressed_to) = (parse(raw).report, parse(raw).addressed_to)
    else {
        panic!("not a delivery report");
    };
    assert_eq!(
        report.original.mailpipe_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(addressed_to, ["bounces+abc@mail.example.org"]);
    // No diagnostic: the status is described.
    assert_eq!(
        report.recipients[0].failure(),
        Failure::Reply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            text: "Bad destination mailbox address".into()
        }
    );
}

/// The notification text of a sample (its first part), as a text bounce
/// without a delivery-status part would carry it.
fn notification_text(name: &str) -> String {
    let raw = prepare(sample(name)).into_owned();
    let mail = mime::read(&raw).expect("a mail");
    let part = mail
        .parts
        .iter()
        .find(|p| p.is_plain_text())
        .expect("a text part");
    text::split_at_returned_message(&part.text).0.to_string()
}

fn recognized(name: &str, subject: &str) -> (&'static str, Vec<RecipientStatus>) {
    match text::recognize(&notification_text(name), subject, &[]) {
        TextOutcome::Found { mta, recipients } => (mta, recipients),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn postfix_text_without_its_dsn_is_recognized() {
    let (mta, r) = recognized(
        "sisimai-postfix-02.eml",
        "Undelivered Mail Returned to Sender",
    );
    assert_eq!(mta, "postfix");
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0].final_recipient.as_deref(),
        Some("filtered@example.co.jp")
    );
    assert_eq!(
        r[0].diagnostic.as_deref(),
        Some("host mx.example.co.jp[192.0.2.153] said: 550 5.2.1 <filtered@example.co.jp>... User Unknown (in reply to RCPT TO command)")
    );
    assert_eq!(r[0].status.as_deref(), Some("5.2.1"));
    assert_eq!(r[0].remote_mta.as_deref(), Some("mx.example.co.jp"));
    assert_eq!(
        r[1].final_recipient.as_deref(),
        Some("userunknown@example.co.jp")
    );
    assert_eq!(
        r[1].failure(),
        Failure::Reply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            text: "<userunknown@example.co.jp>... User Unknown (in reply to RCPT TO command)"
                .into()
        }
    );
}

#[test]
fn sendmail_text_without_its_dsn_is_recognized() {
    let (mta, r) = recognized(
        "sisimai-sendmail-01.eml",
        "Returned mail: see transcript for details",
    );
    assert_eq!(mta, "sendmail");
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].final_recipient.as_deref(),
        Some("userunknown@bouncehammer.jp")
    );
    assert_eq!(r[0].action, Action::Failed);
    assert_eq!(
        r[0].diagnostic.as_deref(),
        Some("550 5.1.1 <userunknown@bouncehammer.jp>... User Unknown")
    );
    // The RFC 3464 example's text part: the reason is in the transcript.
    let (mta, r) = recognized(
        "flanker-rfc3464-simple.eml",
        "Returned mail: Cannot send message for 5 days",
    );
    assert_eq!(mta, "sendmail");
    assert_eq!(
        r[0].final_recipient.as_deref(),
        Some("louisl@larry.slip.umd.edu")
    );
    assert_eq!(
        r[0].diagnostic.as_deref(),
        Some("Deferred: Connection timed out with larry.slip.umd.edu.")
    );
}

#[test]
fn exchange_text_without_its_dsn_is_recognized() {
    let (mta, r) = recognized("sisimai-exchange2007-04.eml", "Undeliverable");
    assert_eq!(mta, "exchange");
    assert_eq!(
        r[0].final_recipient.as_deref(),
        Some("neko-nyaan@example.jp")
    );
    assert_eq!(
        r[0].diagnostic.as_deref(),
        Some("550 5.7.1 RESOLVER.RST.AuthRequired; authentication required")
    );
    let (mta, r) = recognized("mbd-exchange-delay.eml", "Delivery delayed:test");
    assert_eq!(mta, "exchange");
    assert_eq!(
        r[0].final_recipient.as_deref(),
        Some("rui.lopes@example.com")
    );
    assert_eq!(r[0].action, Action::Delayed);
}

#[test]
fn garbage_is_unrecognized() {
    for raw in [
        &b""[..],
        b"\0\0\0",
        b"\xff\xfe garbage",
        b"no header here\n",
        b"\n\n\n",
    ] {
        assert!(
            matches!(parse(raw).report, Report::Unrecognized(_)),
            "{raw:?}: {:?}",
            parse(raw).report
        );
    }
}

/// A tiny deterministic generator (xorshift64*), so that the fuzz-style test
/// is reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that make parsers take unusual paths.
const NASTY: &[&[u8]] = &[
    b"\r\n",
    b"\n\n",
    b"\r",
    b"\0",
    b"\xff",
    b"\xc3",
    b"--",
    b"--b--",
    b":",
    b";",
    b"<",
    b">",
    b"\"",
    b"=?utf-8?B?",
    b"?=",
    b"=\r\n",
    b" ",
    b"\t",
    b"Content-Type: multipart/report; boundary=\"",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Final-Recipient: rfc822; ",
    b"Action: ",
    b"Status: 5.",
    b"Diagnostic-Code: smtp; 550 ",
    b"Feedback-Type: ",
    b"message/rfc822",
    b"message/delivery-status",
    b"message/feedback-report",
    b"said: 550 ",
    b"<a@b>:\n",
    b"@",
    b"\xe2\x80\xae",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(8) {
            0 => data.truncate(at),
            1 => {
                let n = rng.below(64).min(data.len() - at);
                data.drain(at..at + n);
            }
            2 => {
                if at < data.len() {
                    data[at] = rng.next() as u8;
                }
            }
            3 => {
                let nasty = NASTY[rng.below(NASTY.len())];
                data.splice(at..at, nasty.iter().copied());
            }
            4 => {
                // Splice in a piece of another sample.
                let start = rng.below(other.len());
                let end = (start + rng.below(2048)).min(other.len());
                data.splice(at..at, other[start..end].iter().copied());
            }
            5 => {
                // Repeat a chunk (many recipients, many parts, long lines).
                let end = (at + rng.below(200)).min(data.len());
                let chunk = data[at..end].to_vec();
                for _ in 0..rng.below(50) {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            6 => {
                for byte in data.iter_mut().skip(at).take(rng.below(32)) {
                    *byte = byte.to_ascii_uppercase();
                }
            }
            _ => {
                let n = rng.below(256);
                let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, noise);
            }
        }
    }
    data
}

#[test]
fn mutated_truncated_and_spliced_samples_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for round in 0..120 {
        for (i, (_, raw)) in SAMPLES.iter().enumerate() {
            let other = SAMPLES[(i + 1 + round) % SAMPLES.len()].1;
            let input = mutate(&mut rng, raw, other);
            let parsed = parse_unguarded(&input);
            // Whatever came out is well formed.
            if let Report::Delivery(report) = &parsed.report {
                assert!(!report.recipients.is_empty());
                for r in &report.recipients {
                    assert!(r.status.as_deref().is_none_or(dsn::valid_status));
                    let _ = r.failure();
                }
            }
            runs += 1;
        }
    }
    // Every prefix of one sample of each kind.
    for name in [
        "sisimai-postfix-02.eml",
        "sisimai-arf-07.eml",
        "sisimai-exim-02.eml",
    ] {
        let raw = sample(name);
        for end in (0..raw.len()).step_by(7) {
            let _ = parse_unguarded(&raw[..end]);
            runs += 1;
        }
    }
    assert!(runs > 3000, "{runs} runs");
}

#[test]
fn pathological_inputs_are_bounded() {
    // Deeply nested multiparts.
    let mut nested = String::new();
    for i in 0..2000 {
        nested.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    nested.push_str("Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\nAction: failed\r\n");
    let _ = parse_unguarded(nested.as_bytes());

    // A header line of a few megabytes, and a header of a million short lines.
    let long = format!("Subject: {}\r\nX: y\r\n\r\nbody", "x".repeat(4 << 20));
    let _ = parse_unguarded(long.as_bytes());
    let many = format!("{}\r\nbody", "X-A: b\r\n".repeat(1 << 20));
    let _ = parse_unguarded(many.as_bytes());

    // Many recipients: capped.
    let mut dsn = String::from("Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n");
    for i in 0..5000 {
        dsn.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; u{i}@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
    }
    dsn.push_str("--b--\r\n");
    match parse_unguarded(dsn.as_bytes()).report {
        Report::Delivery(report) => assert_eq!(report.recipients.len(), dsn::MAX_RECIPIENTS),
        other => panic!("{other:?}"),
    }

    // Random bytes.
    let mut rng = Rng(42);
    for _ in 0..200 {
        let n = rng.below(4096);
        let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let _ = parse_unguarded(&noise);
    }
}

#[test]
fn a_complaint_names_every_recipient_or_falls_back_to_the_returned_to() {
    let (_, report) = complaint_of("mailpipe-arf-two-recipients.eml");
    assert_eq!(
        report.original_rcpt_to,
        ["ann@isp.example", "ben@isp.example"]
    );
    assert_eq!(report.recipients, report.original_rcpt_to);
    assert_eq!(
        report.original.mailpipe_id.as_deref(),
        Some("5d41402abc4b2a76b9719d911017c592")
    );
    // No Original-Rcpt-To: the returned message's To, all of its addresses.
    let (_, report) = complaint_of("mailpipe-arf-no-rcpt-headers.eml");
    assert!(report.original_rcpt_to.is_empty());
    assert_eq!(report.recipients_from, RecipientsFrom::ReturnedTo);
    assert_eq!(
        report.recipients,
        ["grace@hotmail.example", "heidi@hotmail.example"]
    );
    assert_eq!(report.recipients_from.as_str(), "returned_message_to");
}

#[test]
fn a_dsn_with_broken_mime_is_read_inline_with_its_returned_headers() {
    for name in [
        "mailpipe-dsn-no-boundary-lines.eml",
        "mailpipe-dsn-other-boundary.eml",
    ] {
        let (_, report) = delivery_of(name);
        assert!(report.original.mailpipe_id.is_some(), "{name}: {report:?}");
        assert_eq!(report.recipients.len(), 1, "{name}");
    }
    let (_, report) = delivery_of("mailpipe-dsn-no-boundary-lines.eml");
    assert_eq!(report.reporting_mta.as_deref(), Some("mx2.example.org"));
    assert_eq!(
        report.recipients[0].diagnostic.as_deref(),
        Some("550 5.1.1 <ivan@example.org>: Recipient address rejected: User unknown in virtual mailbox table")
    );
}

#[test]
fn a_generic_status_takes_its_reason_from_the_text_or_the_status_comment() {
    let (_, report) = delivery_of("mailpipe-dsn-generic-5.0.0-text.eml");
    assert_eq!(
        report.recipients[0].failure(),
        Failure::Reply {
            code: 550,
            enhanced: Some("5.0.0".into()),
            text: "the mailbox is full and cannot accept more mail".into()
        }
    );
    let (_, report) = delivery_of("mailpipe-dsn-generic-4.0.0-comment.eml");
    assert_eq!(report.recipients[0].action, Action::Delayed);
    assert_eq!(
        report.recipients[0].diagnostic.as_deref(),
        Some("host lookup failed")
    );
}

#[test]
fn unsubscribe_requests_are_opt_outs_and_name_the_message_they_answer() {
    let parsed = parse(sample("mailpipe-unsubscribe-reply.eml"));
    let Report::Unsubscribe(request) = parsed.report else {
        panic!("{:?}", parsed.report);
    };
    assert_eq!(request.address.as_deref(), Some("victor@example.org"));
    assert_eq!(
        request.original.message_id.as_deref(),
        Some("e0e1e2e3e4e5e6e7e8e9eaebecedeeef@mx1.news.example.com")
    );
    // Marked auto-replied or auto-generated, it is still no auto-reply.
    for name in [
        "mailpipe-unsubscribe-one-click.eml",
        "mailpipe-unsubscribe-auto-replied.eml",
    ] {
        assert!(
            matches!(parse(sample(name)).report, Report::Unsubscribe(_)),
            "{name}"
        );
    }
    // A bounce never is one, whatever its subject says.
    let raw = b"From: MAILER-DAEMON@mx.example.org\nSubject: Undeliverable: unsubscribe\n\nDelivery to <x@example.org> failed: user unknown\n";
    assert!(matches!(parse(raw).report, Report::Delivery(_)));
}

#[test]
fn a_daemon_notice_never_takes_its_own_addresses_for_failed_ones() {
    let raw = b"From: MAILER-DAEMON@mx.example.org\nTo: <bounces+tok@bounce.example.com>\nSubject: Returned mail\n\nMail from <bounces+tok@bounce.example.com> to <zoe@example.org> failed: no such user\n";
    let Report::Delivery(report) = parse(raw).report else {
        panic!("not a delivery report");
    };
    assert_eq!(report.recipients.len(), 1);
    assert_eq!(
        report.recipients[0].final_recipient.as_deref(),
        Some("zoe@example.org")
    );
}

#[test]
fn a_notice_listing_bare_addresses_is_read_and_contacts_are_not_recipients() {
    // Lotus Domino's delivery failure report lists the address alone on a
    // line, the reason a few lines below.
    let raw = b"From: Postmaster <postmaster@notes.example.com>\nTo: bounces+tok@bounce.example.com\nSubject: DELIVERY FAILURE: User bob not listed in Domino Directory\n\nYour message\n\n  Subject: Spring\n\nwas not delivered to:\n\n  bob@notes.example.com\n\nbecause:\n\n  User bob (bob@notes.example.com) not listed in Domino Directory\n\nPlease write to postmaster@notes.example.com for help.\n";
    let Report::Delivery(report) = parse(raw).report else {
        panic!("not a delivery report: {:?}", parse(raw).report);
    };
    assert_eq!(report.recipients.len(), 1, "{report:?}");
    let bob = &report.recipients[0];
    assert_eq!(
        bob.final_recipient.as_deref(),
        Some("bob@notes.example.com")
    );
    assert_eq!(
        Classifier::default().classify(&bob.failure()).reason,
        Reason::UserUnknown,
        "{bob:?}"
    );
}

#[test]
fn a_removal_recipient_is_a_complainant() {
    let raw = b"From: scomp@aol.example\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nRemoval-Recipient: <Kim@aol.example>\r\n";
    let Report::Complaint(c) = parse(raw).report else {
        panic!("not a complaint");
    };
    assert_eq!(c.recipients, ["kim@aol.example"]);
    assert_eq!(c.recipients_from, RecipientsFrom::OriginalRcptTo);
}

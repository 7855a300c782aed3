//! Every sample against the table of what it must come out as, and the
//! same samples with other line ends or an mbox `From ` line.

use super::*;

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
    let attribution = include_str!("../samples/ATTRIBUTION.md");
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

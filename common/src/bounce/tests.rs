//! Tests of the report parser over real-world samples (`samples/`, origins
//! in `samples/ATTRIBUTION.md`), plus robustness tests: every sample with
//! other line ends, and thousands of truncated, mutated and spliced variants
//! that must never panic.
//!
//! Expected values were read off the samples by hand; the classification is
//! the shipped classifier's (`Classifier::default()`, `rules/default.yaml`).

use super::*;
use crate::classify::{Classifier, Reason};

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
        "mbd-exchange-delay.eml",
        include_bytes!("samples/mbd-exchange-delay.eml"),
    ),
    (
        "mbd-non-bounce-hello-world.eml",
        include_bytes!("samples/mbd-non-bounce-hello-world.eml"),
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
    /// Complaint with this feedback type.
    Complaint(&'static str),
    AutoReply,
    /// Unrecognized, with a reason containing this text.
    Unrecognized(&'static str),
}

struct Row {
    file: &'static str,
    kind: Kind,
    /// Delivery: number of recipients.
    recipients: usize,
    /// Delivery: the first recipient's address; Complaint: Original-Rcpt-To.
    recipient: Option<&'static str>,
    /// Delivery: the first recipient's action.
    action: Option<Action>,
    /// Delivery: the first recipient's status.
    status: Option<&'static str>,
    /// Delivery: the shipped classifier's reason for the first recipient's failure.
    reason: Option<Reason>,
}

const fn delivery(
    file: &'static str,
    standard: bool,
    recipients: usize,
    recipient: &'static str,
    action: Action,
    status: Option<&'static str>,
    reason: Reason,
) -> Row {
    Row {
        file,
        kind: Kind::Delivery(standard),
        recipients,
        recipient: Some(recipient),
        action: Some(action),
        status,
        reason: Some(reason),
    }
}

const fn other(file: &'static str, kind: Kind, recipient: Option<&'static str>) -> Row {
    Row {
        file,
        kind,
        recipients: 0,
        recipient,
        action: None,
        status: None,
        reason: None,
    }
}

use Action::{Delayed, Failed};
use Reason::{InvalidDomain, MailboxFull, Refused, Unreachable, UserUnknown};

#[rustfmt::skip]
const TABLE: &[Row] = &[
    // RFC 3464 delivery-status notifications.
    delivery("flanker-rfc3464-simple.eml", true, 1, "louisl@larry.slip.umd.edu", Failed, Some("4.0.0"), Unreachable),
    delivery("flanker-aol-mailbox-full.eml", true, 1, "user@aol.com", Failed, Some("5.2.2"), MailboxFull),
    delivery("flanker-delayed-no-mx.eml", true, 1, "user@example.com", Delayed, Some("4.4.4"), Unreachable),
    delivery("flanker-delivery-status-only.eml", true, 1, "demo@example.com", Failed, Some("4.2.2"), MailboxFull),
    delivery("sisimai-postfix-02.eml", true, 2, "filtered@example.co.jp", Failed, Some("5.2.1"), UserUnknown),
    delivery("sisimai-postfix-03.eml", true, 1, "kijitora@example.net", Failed, Some("5.0.0"), UserUnknown),
    delivery("sisimai-sendmail-01.eml", true, 1, "userunknown@bouncehammer.jp", Failed, Some("5.1.1"), UserUnknown),
    delivery("sisimai-exchange2007-04.eml", true, 1, "neko-nyaan@example.jp", Failed, Some("5.7.1"), Refused),
    delivery("mbd-exchange-delay.eml", true, 1, "rui.lopes@example.com", Delayed, Some("4.4.7"), Unreachable),
    // Bounces recognized by their text.
    delivery("sisimai-qmail-01.eml", false, 1, "kijitora@example.ne.jp", Failed, Some("5.5.0"), UserUnknown),
    delivery("sisimai-yahoo-01.eml", false, 1, "kijitora@example.org", Failed, Some("5.1.1"), UserUnknown),
    delivery("sisimai-exim-02.eml", false, 2, "kijitora@example.jp", Failed, Some("5.1.1"), UserUnknown),
    delivery("sisimai-exim-30.eml", false, 1, "kijitora@exmaple.ch", Failed, Some("5.7.1"), Refused),
    delivery("sisimai-google-02.eml", false, 1, "aougoueioaldljgoiuiorghladkgke@example.fr", Failed, Some("5.1.1"), UserUnknown),
    delivery("flanker-gmail-invalid-address.eml", false, 1, "awfawfawfawfawfaw@someserverhere.com", Failed, Some("5.1.0"), UserUnknown),
    delivery("flanker-gmail-no-dns.eml", false, 1, "user@example.comm", Failed, None, InvalidDomain),
    delivery("sisimai-exchange2003-03.eml", false, 1, "kijitora@example.jp", Failed, None, UserUnknown),
    // Feedback reports.
    other("sisimai-arf-01.eml", Kind::Complaint("abuse"), None),
    other("sisimai-arf-05.eml", Kind::Complaint("abuse"), Some("fake.rcpt@example.com")),
    other("sisimai-arf-07.eml", Kind::Complaint("auth-failure"), Some("fake.rcpt@example.com")),
    other("sisimai-arf-09.eml", Kind::Complaint("auth-failure"), None),
    other("sisimai-arf-11.eml", Kind::Complaint("abuse"), None),
    other("sisimai-arf-13.eml", Kind::Complaint("abuse"), Some("recipient@hotmail.com")),
    // Auto-replies.
    other("sisimai-rfc3834-01.eml", Kind::AutoReply, None),
    other("sisimai-rfc3834-04.eml", Kind::AutoReply, None),
    // Neither.
    other("flanker-broken-mime.eml", Kind::Unrecognized("looks like a bounce"), None),
    other("mbd-non-bounce-hello-world.eml", Kind::Unrecognized("no delivery-status or feedback-report part"), None),
];

fn check_row(row: &Row, parsed: &Parsed, classifier: &Classifier) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{}: {what}; got {:#?}", row.file, parsed.report));
    match (&row.kind, &parsed.report) {
        (Kind::Delivery(standard), Report::Delivery(report)) => {
            if report.standard != *standard {
                return fail("standard flag");
            }
            if report.recipients.len() != row.recipients {
                return fail("number of recipients");
            }
            let first = &report.recipients[0];
            if first.final_recipient.as_deref() != row.recipient {
                return fail("recipient");
            }
            if Some(first.action) != row.action {
                return fail("action");
            }
            if first.status.as_deref() != row.status {
                return fail("status");
            }
            let class = classifier.classify(&first.failure());
            if Some(class.reason) != row.reason {
                return Err(format!(
                    "{}: reason {:?} for {:?}",
                    row.file,
                    class.reason,
                    first.failure()
                ));
            }
        }
        (Kind::Complaint(feedback), Report::Complaint(report)) => {
            if report.feedback_type != *feedback {
                return fail("feedback type");
            }
            if report.original_rcpt_to.as_deref() != row.recipient {
                return fail("Original-Rcpt-To");
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
            assert_eq!(c.original_rcpt_to.as_deref(), Some("someone@example.com"));
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
fn failure_finds_the_remote_reply_and_prefers_a_precise_code() {
    let status = |status: Option<&str>, diagnostic: Option<&str>| RecipientStatus {
        final_recipient: Some("bob@example.com".into()),
        original_recipient: None,
        action: Action::Failed,
        status: status.map(str::to_string),
        diagnostic: diagnostic.map(str::to_string),
        remote_mta: None,
    };
    let reply = |code, enhanced: Option<&str>, text: &str| Failure::Reply {
        code,
        enhanced: enhanced.map(str::to_string),
        text: text.into(),
    };
    // Status wins over the code in the text...
    assert_eq!(
        status(Some("5.2.2"), Some("552 5.2.1 over quota")).failure(),
        reply(552, Some("5.2.2"), "over quota")
    );
    // ...unless it only gives the class.
    assert_eq!(
        status(Some("5.0.0"), Some("550 5.1.1 unknown")).failure(),
        reply(550, Some("5.1.1"), "unknown")
    );
    // The code is derived from the status when the text has none.
    assert_eq!(
        status(Some("4.4.1"), Some("connection timed out")).failure(),
        reply(450, Some("4.4.1"), "connection timed out")
    );
    // A reply quoted inside a sentence.
    assert_eq!(
        status(None, Some("host mx.example.com[192.0.2.1] said: 554 5.7.1 rejected (in reply to RCPT TO command)")).failure(),
        reply(554, Some("5.7.1"), "rejected (in reply to RCPT TO command)")
    );
    // Nothing at all.
    assert_eq!(status(None, None).failure(), reply(0, None, ""));
    // A bad status is ignored.
    assert_eq!(status(Some("9.9.9"), None).failure(), reply(0, None, ""));
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

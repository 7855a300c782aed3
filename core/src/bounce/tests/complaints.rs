//! Feedback reports (complaints) and unsubscribe requests: their fields,
//! who complained or asks, and the reported message.

use super::*;

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
fn a_removal_recipient_is_a_complainant() {
    let raw = b"From: scomp@aol.example\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nRemoval-Recipient: <Kim@aol.example>\r\n";
    let Report::Complaint(c) = parse(raw).report else {
        panic!("not a complaint");
    };
    assert_eq!(c.recipients, ["kim@aol.example"]);
    assert_eq!(c.recipients_from, RecipientsFrom::OriginalRcptTo);
}

//! Delivery reports: their recipients, statuses and reasons, the returned
//! message and its mailpipe id, and reports that are broken or terse.

use super::*;

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

//! Bounces in plain text, without a delivery-status part: the returned
//! copy after the marker line, the MTAs' texts recognized, garbage not.

use super::*;

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

//! Which kind of report a mail is: the recognizers tried in order, most
//! specific first (typed report parts, mislabeled or broken reports, JMRP
//! complaints, known MTA wording, pasted status fields, daemon notices,
//! unsubscribe requests, auto-replies).

use super::body::{inline_returned, raw_body, report_text};
use super::delivery::{delivery, merge};
use super::fields::{self, Field};
use super::original::{answered_original, original_from, returned_original, returned_to};
use super::text::{self, TextOutcome};
use super::{arf, autoreply, mime, unsubscribe};
use super::{
    ComplaintReport, DeliveryReport, Original, Parsed, RecipientsFrom, Report, UnsubscribeRequest,
};

/// Decide what the mail is, most specific first.
pub(super) fn classify(mail: &mime::Mail, header: &[Field], parsed: &Parsed, raw: &[u8]) -> Report {
    let is_report = mail.root_type == "multipart/report";
    let report_type = mail.report_type.as_deref().filter(|_| is_report);
    let subject = parsed.subject.as_deref().unwrap_or("");
    let human = report_text(mail);
    let mut reason = None;

    // 1. A typed report part (also when it is the whole mail). Every
    // delivery-status part counts: a mail may carry several reports.
    let feedback_first = report_type == Some("feedback-report");
    for pass in 0..2 {
        let want_feedback = (pass == 0) == feedback_first;
        if want_feedback {
            if let Some(part) = mail
                .parts
                .iter()
                .find(|p| p.ctype == "message/feedback-report")
            {
                return complaint(&part.text, mail);
            }
        } else {
            let mut merged: Option<DeliveryReport> = None;
            let delivery_parts = mail.parts.iter().filter(|p| {
                matches!(
                    p.ctype.as_str(),
                    "message/delivery-status" | "message/global-delivery-status"
                )
            });
            for part in delivery_parts {
                match delivery(&part.text, true, mail, "", &human, subject) {
                    Some(report) => merge(&mut merged, report),
                    None => reason = Some("delivery-status part without any recipient block"),
                }
            }
            if let Some(report) = merged {
                return Report::Delivery(report);
            }
        }
    }

    // 2. A multipart/report whose report part is mislabeled (text/plain, ...).
    match report_type {
        Some("delivery-status") => {
            for part in mail
                .parts
                .iter()
                .skip(1)
                .filter(|p| !p.is_returned_message())
            {
                if let Some(report) = delivery(&part.text, true, mail, "", &human, subject) {
                    return Report::Delivery(report);
                }
            }
        }
        Some("feedback-report") => {
            if let Some(part) = mail.parts.iter().skip(1).find(|p| {
                !p.is_returned_message()
                    && fields::groups(&p.text)
                        .iter()
                        .any(|g| fields::get(g, "feedback-type").is_some())
            }) {
                return complaint(&part.text, mail);
            }
        }
        _ => {}
    }

    // 3. A DSN whose MIME structure is broken: declared multipart/report
    // (delivery-status), but without boundary lines or with other ones, so
    // that its per-recipient fields sit inline in the body.
    if report_type == Some("delivery-status")
        || (mail.root_type.starts_with("multipart/")
            && mail.parts.iter().all(|p| p.text.trim().is_empty()))
    {
        let body = raw_body(raw);
        let (own, _) = text::split_at_returned_message(&body);
        if let Some(mut report) = delivery(own, false, mail, "", &body, subject) {
            if report.original == Original::default() {
                report.original = original_from(&fields::header_block(inline_returned(&body)));
            }
            return Report::Delivery(report);
        }
    }

    // 4. A Microsoft JMRP complaint.
    for part in mail.parts.iter().filter(|p| p.ctype == "message/rfc822") {
        let returned = fields::header_block(&part.text);
        if let Some(recipient) = fields::get(&returned, "x-hmxmroriginalrecipient") {
            let recipients: Vec<String> = fields::bare_address(recipient)
                .map(|a| a.to_ascii_lowercase())
                .into_iter()
                .collect();
            return Report::Complaint(ComplaintReport {
                feedback_type: "abuse".into(),
                user_agent: None,
                original_rcpt_to: Vec::new(),
                recipients_from: if recipients.is_empty() {
                    RecipientsFrom::Nowhere
                } else {
                    RecipientsFrom::JmrpHeader
                },
                recipients,
                original_mail_from: None,
                arrival_date: None,
                reported_domain: None,
                original: original_from(&returned),
            });
        }
    }

    // 5. A bounce in the words of a known MTA.
    let (own_text, quoted) = text::split_at_returned_message(&human);
    let failed_header: Vec<String> = fields::all(header, "x-failed-recipients")
        .flat_map(fields::address_list)
        .map(|a| a.to_ascii_lowercase())
        .collect();
    match text::recognize(own_text, subject, &failed_header) {
        TextOutcome::Found { mta, recipients } => {
            tracing::debug!(
                format = mta,
                recipients = recipients.len(),
                "text bounce recognized"
            );
            return Report::Delivery(DeliveryReport {
                standard: false,
                reporting_mta: None,
                recipients,
                original: returned_original(mail, quoted),
            });
        }
        TextOutcome::NoAddress(mta) => {
            return Report::Unrecognized(format!("{mta} bounce that names no failed address"));
        }
        TextOutcome::NotFound => {}
    }

    // 6. Delivery-status fields pasted into a text part.
    for part in mail.parts.iter().filter(|p| p.is_plain_text()) {
        let (own, quoted) = text::split_at_returned_message(&part.text);
        if let Some(report) = delivery(own, false, mail, quoted, &human, subject) {
            return Report::Delivery(report);
        }
    }

    let looks_like_bounce = autoreply::bounce_look(parsed.from.as_deref(), subject);
    if looks_like_bounce.is_some() {
        // 7. A mailer daemon's short notice: a reason and an <address>.
        let own: Vec<String> = parsed
            .addressed_to
            .iter()
            .cloned()
            .chain(parsed.from.iter().map(|f| f.to_ascii_lowercase()))
            .collect();
        if let Some(recipients) = text::notice(own_text, subject, &own) {
            return Report::Delivery(DeliveryReport {
                standard: false,
                reporting_mta: None,
                recipients,
                original: returned_original(mail, quoted),
            });
        }
    } else if unsubscribe::is_request(subject, own_text, &parsed.addressed_to) {
        // 8. An unsubscribe request (before auto-replies: a mail client's
        // one-click unsubscribe mail is marked Auto-Submitted).
        return Report::Unsubscribe(UnsubscribeRequest {
            address: ["from", "reply-to", "sender"]
                .iter()
                .find_map(|name| fields::get(header, name).and_then(fields::bare_address))
                .map(|a| a.to_ascii_lowercase()),
            original: answered_original(mail, quoted, header),
        });
    }

    // 9. Auto-replies, unless the mail looks like a bounce.
    if looks_like_bounce.is_none() && autoreply::is_auto_reply(header, subject) {
        return Report::AutoReply;
    }
    if let Some(reason) = reason {
        return Report::Unrecognized(reason.into());
    }
    Report::Unrecognized(match looks_like_bounce {
        Some(why) => format!("looks like a bounce ({why}) but its format is not recognized"),
        None => {
            "no delivery-status or feedback-report part, no known bounce text and no auto-reply marker"
                .into()
        }
    })
}

fn complaint(fields_text: &str, mail: &mime::Mail) -> Report {
    let returned_to = mail
        .parts
        .iter()
        .find(|p| p.is_returned_message())
        .map(|p| returned_to(&fields::header_block(&p.text)))
        .unwrap_or_default();
    match arf::parse(fields_text, returned_original(mail, ""), returned_to) {
        Ok(report) => Report::Complaint(report),
        Err(why) => Report::Unrecognized(why),
    }
}

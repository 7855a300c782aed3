//! Reading the mail that comes back after a message was accepted: delivery
//! status notifications (bounces), feedback-loop complaints and
//! auto-replies: the failures that come back after the SMTP transaction succeeded.
//!
//! [`parse`] takes the raw mail as the bounce intake received it (by SMTP on
//! the VERP domain, or fetched by IMAP) and says what it is:
//!
//! - [`Report::Delivery`]: a delivery report. Standard ones are RFC 3464
//!   `multipart/report; report-type=delivery-status` mails; their
//!   `message/delivery-status` part gives one [`RecipientStatus`] per
//!   recipient (`Final-Recipient`, `Action`, `Status`, `Diagnostic-Code`);
//!   a mail with several such parts gives the recipients of all of them.
//!   A recipient without `Diagnostic-Code` (a generic `5.0.0`, say) takes
//!   its reason from a comment after the status (`4.0.0 (host lookup
//!   failed)`) or from what the human-readable part says about its address.
//!   Bounces without that part are recognized by the text their MTA writes
//!   (qmail, Yahoo, Exim, Postfix without DSN, Sendmail, Smail, Gmail,
//!   Exchange 5.5-2003, Exchange 2007+/Office 365), or, for mail that looks
//!   like a bounce, by a notice naming a reason and an `<address>`; they are
//!   marked `standard: false`, and so are DSNs whose MIME structure is broken
//!   (declared `multipart/report` but without the boundary lines), whose
//!   fields are read inline.
//! - [`Report::Complaint`]: an RFC 5965 ARF feedback report (`multipart/report;
//!   report-type=feedback-report`, or a bare `message/feedback-report` mail;
//!   RFC 6591 authentication-failure reports share the format and come out
//!   with `feedback_type: "auth-failure"`), or a Microsoft JMRP complaint
//!   (Outlook.com / Hotmail, which returns the complained-about message with
//!   an `X-HmXmrOriginalRecipient` header instead of ARF fields, and is
//!   reported as `feedback_type: "abuse"`). Every `Original-Rcpt-To` is a
//!   complainant; without any, the returned message's `To` addresses are
//!   ([`ComplaintReport::recipients`], [`RecipientsFrom`]).
//! - [`Report::Unsubscribe`]: an unsubscribe request mailed to the bounce or
//!   List-Unsubscribe address (a mail client's one-click `mailto:`
//!   unsubscribe, often marked `Auto-Submitted`, or a person's
//!   "unsubscribe"): an opt-out of its sender, not an auto-reply.
//! - [`Report::AutoReply`]: an out-of-office or other automatic reply (RFC 3834
//!   `Auto-Submitted: auto-replied`, `X-Autoreply`, `Precedence: auto_reply`,
//!   vacation subjects). Only when the mail is none of the above: a DSN carries
//!   `Auto-Submitted: auto-replied` too, and the report wins.
//! - [`Report::Unrecognized`] with the reason, for logs and the intake's dead
//!   records. Mail that looks like a bounce (from a mailer daemon, or with a
//!   bounce-like subject) but that no recognizer could read is always
//!   Unrecognized, never AutoReply, so that an operator sees it.
//!
//! Finding which sent message a report is about is left to the intake:
//! [`Parsed::addressed_to`] lists the addresses the report was sent to (where
//! a VERP token survives when the envelope is lost, as with IMAP), and
//! [`Original`] gives what identifies the returned message (`X-Mailpipe-Id`,
//! `Message-ID`, `Return-Path`), taken from the returned `message/rfc822` or
//! `text/rfc822-headers` part, or from the copy that text bounces quote
//! after lines such as "--- Below this line is a copy of the message.".
//!
//! [`RecipientStatus::failure`] turns a recipient's status back into the
//! [`Failure`](crate::classify::Failure) the synchronous path would have
//! seen, so that asynchronous bounces go through the same classifier
//! (`crate::classify`) and the same quarantine decisions as SMTP replies.
//!
//! Robustness: the input is untrusted and may be anything. Parsing never
//! panics (the MIME layer is `mail-parser`, which is built for hostile input,
//! and [`parse`] also guards against panics of its own); every loop and
//! every kept value is capped (a mail is read up to [`MAX_MESSAGE_BYTES`],
//! each part up to 512 KiB, 1000 recipients, 4096 characters per value); all
//! patterns are compiled once and run in linear time (`regex`). Line ends
//! may be CRLF, LF or bare CR; a leading mbox `From ` line is skipped.
//!
//! Addresses are returned bare (`user@example.com`, without display name or
//! angle brackets). Recipient addresses and [`Parsed::addressed_to`] are
//! lowercased (mailpipe matches recipients without regard to case); the
//! addresses of [`Original`], [`Parsed::from`] and `original_mail_from` keep
//! the case they were written in.
//!
//! Where each step lives:
//!
//! - `kind.rs`: which kind of report a mail is, the recognizers in the
//!   order they are tried; `report.rs`: the types [`parse`] returns.
//! - `mime.rs`: the MIME structure; `body.rs`: the report's text as the
//!   recognizers read it; `fields.rs`: header-style fields and addresses.
//! - `dsn.rs`: RFC 3464 delivery-status fields; `delivery.rs`: a delivery
//!   report built from them; `text/`: bounces recognized by their MTA's
//!   wording, one file per family; `failure.rs`: a recipient's status as
//!   a classifier input.
//! - `arf.rs`: feedback reports; `unsubscribe.rs`: unsubscribe requests;
//!   `autoreply.rs`: auto-replies and mail that only looks like a bounce;
//!   `original.rs`: what identifies the returned message.

mod arf;
mod autoreply;
mod body;
mod delivery;
mod dsn;
mod failure;
mod fields;
mod kind;
mod mime;
mod original;
mod report;
mod text;
mod unsubscribe;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use self::fields::Field;
use self::kind::classify;

pub use self::report::{
    Action, ComplaintReport, DeliveryReport, Original, Parsed, RecipientStatus, RecipientsFrom,
    Report, UnsubscribeRequest,
};

/// Bytes of a mail that are read; the rest is ignored (what identifies a
/// report comes first, before any returned attachment).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of the report's own header that are read.
const MAX_HEADER_BYTES: usize = 256 * 1024;
/// Bytes of report text given to the text recognizers.
const MAX_TEXT_BYTES: usize = 512 * 1024;

/// Read one mail. Never panics, whatever the input: a panic inside the
/// parser (a bug) becomes [`Report::Unrecognized`].
pub fn parse(raw: &[u8]) -> Parsed {
    std::panic::catch_unwind(|| parse_unguarded(raw)).unwrap_or_else(|_| Parsed {
        report: Report::Unrecognized(
            "internal error: the report parser panicked on this mail".into(),
        ),
        addressed_to: Vec::new(),
        subject: None,
        from: None,
        message_id: None,
    })
}

/// [`parse`] without the panic guard (tests and fuzzing call it so that a
/// panic is seen).
fn parse_unguarded(raw: &[u8]) -> Parsed {
    let raw = prepare(raw);
    let header = fields::header_block(&fields::head_text(&raw, MAX_HEADER_BYTES));
    let mut parsed = Parsed {
        report: Report::Unrecognized(String::new()),
        addressed_to: addressed_to(&header),
        subject: None,
        from: fields::get(&header, "from").and_then(fields::bare_address),
        message_id: fields::get(&header, "message-id").and_then(fields::message_id),
    };
    let Some(mail) = mime::read(&raw) else {
        parsed.report = Report::Unrecognized("not a mail message: no header fields".into());
        return parsed;
    };
    parsed.subject = mail
        .subject
        .clone()
        .or_else(|| fields::get(&header, "subject").map(str::to_string));
    parsed.report = classify(&mail, &header, &parsed, &raw);
    parsed
}

/// Cap, skip an mbox `From ` line, turn bare-CR line ends into LF.
fn prepare(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut raw = &raw[..raw.len().min(MAX_MESSAGE_BYTES)];
    if raw.starts_with(b"From ") {
        if let Some(nl) = raw.iter().position(|&b| b == b'\n') {
            raw = &raw[nl + 1..];
        }
    }
    if !raw.contains(&b'\n') && raw.contains(&b'\r') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'\r' { b'\n' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    }
}

/// The headers that may carry the address the report was sent to, in the
/// order the intake should try them.
const ADDRESSED_TO: &[&str] = &[
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "x-envelope-to",
    "to",
];

fn addressed_to(header: &[Field]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in ADDRESSED_TO {
        for value in fields::all(header, name) {
            for address in fields::address_list(value) {
                let address = address.to_ascii_lowercase();
                if !out.contains(&address) && out.len() < 50 {
                    out.push(address);
                }
            }
        }
    }
    out
}

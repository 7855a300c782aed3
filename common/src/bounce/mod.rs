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
//! [`Failure`] the synchronous path would have seen, so that asynchronous
//! bounces go through the same classifier (`crate::classify`) and the same
//! quarantine decisions as SMTP replies.
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

mod arf;
mod autoreply;
mod dsn;
mod fields;
mod mime;
mod text;
mod unsubscribe;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::classify::Failure;

use self::fields::Field;
use self::text::TextOutcome;

/// Bytes of a mail that are read; the rest is ignored (what identifies a
/// report comes first, before any returned attachment).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of the report's own header that are read.
const MAX_HEADER_BYTES: usize = 256 * 1024;
/// Bytes of report text given to the text recognizers.
const MAX_TEXT_BYTES: usize = 512 * 1024;

/// What [`parse`] found in one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What kind of report it is, with its contents.
    pub report: Report,
    /// Addresses the bounce/report mail itself was addressed to, from its headers
    /// Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, To (in that order, deduplicated,
    /// lowercased, bare addr-spec without <>): where a VERP token can be found when the mail came
    /// by IMAP and the envelope is lost.
    pub addressed_to: Vec<String>,
    /// The report's decoded Subject.
    pub subject: Option<String>,
    /// Bare address of the report's From.
    pub from: Option<String>,
    /// The report's own Message-ID, without <>.
    pub message_id: Option<String>,
}

/// The kind of a report mail and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status notification: RFC 3464 multipart/report; report-type=delivery-status
    /// (standard: true), or a non-standard bounce recognized by its text (standard: false).
    Delivery(DeliveryReport),
    /// An RFC 5965 ARF feedback report (multipart/report; report-type=feedback-report).
    Complaint(ComplaintReport),
    /// A request to unsubscribe (an opt-out) mailed to the bounce or List-Unsubscribe
    /// address: a mail client's one-click `mailto:` unsubscribe, or a person's "unsubscribe".
    Unsubscribe(UnsubscribeRequest),
    /// An auto-reply (RFC 3834 Auto-Submitted: auto-replied, X-Autoreply, vacation/out-of-office
    /// patterns, Precedence: auto_reply ...) that is not a bounce: ignored by the intake.
    AutoReply,
    /// Not recognizable as any of the above; the String says why (for logs and dead records).
    Unrecognized(String),
}

/// A delivery report (bounce, delay warning or success notification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Whether it came as an RFC 3464 delivery-status part (false: read from
    /// the text of a known MTA's bounce).
    pub standard: bool,
    /// `Reporting-MTA` without its type (`dns;`).
    pub reporting_mta: Option<String>,
    /// One entry per recipient the report is about; never empty.
    pub recipients: Vec<RecipientStatus>,
    /// What identifies the returned message.
    pub original: Original,
}

/// An unsubscribe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeRequest {
    /// Who asks to stop receiving mail: the request's `From` (else `Reply-To`,
    /// `Sender`), bare and lowercased.
    pub address: Option<String>,
    /// What identifies the message it answers: an attached or quoted copy,
    /// else the `In-Reply-To` / `References` message id.
    pub original: Original,
}

/// What a report says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// Final-Recipient address (bare, lowercased); for non-standard bounces the address the
    /// text names as failed.
    pub final_recipient: Option<String>,
    /// Original-Recipient address (bare, lowercased), when the report gives it.
    pub original_recipient: Option<String>,
    /// What happened to the message for this recipient.
    pub action: Action,
    /// Enhanced status "5.1.1" as given (validated x.y.z form).
    pub status: Option<String>,
    /// Diagnostic-Code text with its type ("smtp; ") removed, continuation lines unfolded,
    /// e.g. "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown".
    pub diagnostic: Option<String>,
    /// `Remote-MTA` without its type: the server that gave the diagnostic.
    pub remote_mta: Option<String>,
}

/// RFC 3464 `Action` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The message could not be delivered and will not be tried again.
    Failed,
    /// Delivery is late and still being tried (a warning).
    Delayed,
    /// The message was delivered (a positive DSN).
    Delivered,
    /// Handed on to a system that sends no DSNs.
    Relayed,
    /// Delivered to an address that expanded to several (an alias or list).
    Expanded,
}

impl Action {
    /// The lowercase RFC 3464 name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// An `Action` field value (first word, any case; `expanded (to
    /// multi-recipient alias)` is `Expanded`).
    fn parse(value: &str) -> Option<Action> {
        let word = value
            .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
            .next()?
            .to_ascii_lowercase();
        Some(match word.as_str() {
            "failed" | "failure" => Action::Failed,
            "delayed" => Action::Delayed,
            "delivered" => Action::Delivered,
            "relayed" => Action::Relayed,
            "expanded" => Action::Expanded,
            _ => return None,
        })
    }

    /// The action implied by a status class when the report gives none.
    fn from_status(status: &str) -> Action {
        match status.as_bytes().first() {
            Some(b'2') => Action::Delivered,
            Some(b'4') => Action::Delayed,
            _ => Action::Failed,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies the original message, from the returned message/rfc822 or
/// text/rfc822-headers part (or from inline quoted headers in non-standard bounces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    /// X-Mailpipe-Id header of the original (mailpipe writes it).
    pub mailpipe_id: Option<String>,
    /// Message-ID without <>.
    pub message_id: Option<String>,
    /// Bare address of the original To (the first one).
    pub to: Option<String>,
    /// Bare address of the original From.
    pub from: Option<String>,
    /// Return-Path of the original, if present.
    pub return_path: Option<String>,
}

/// An RFC 5965 feedback report (or a JMRP complaint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplaintReport {
    /// "abuse", "fraud", "not-spam", "auth-failure", ... lowercased.
    pub feedback_type: String,
    /// `User-Agent` of the report generator.
    pub user_agent: Option<String>,
    /// Every Original-Rcpt-To (bare, lowercased, in order, without
    /// repeats). Many feedback loops redact or omit it.
    pub original_rcpt_to: Vec<String>,
    /// Who complained: the Original-Rcpt-To addresses, or, when the report
    /// names none, the `To` addresses of the returned message (lowercased).
    pub recipients: Vec<String>,
    /// Where [`ComplaintReport::recipients`] come from.
    pub recipients_from: RecipientsFrom,
    /// Original-Mail-From (bare): the envelope sender, where a VERP token survives.
    pub original_mail_from: Option<String>,
    /// `Arrival-Date` (or the older `Received-Date`) as written.
    pub arrival_date: Option<String>,
    /// The first `Reported-Domain`, lowercased.
    pub reported_domain: Option<String>,
    /// What identifies the complained-about message.
    pub original: Original,
}

/// Where the complainants of a [`ComplaintReport`] were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientsFrom {
    /// The report's `Original-Rcpt-To` fields.
    OriginalRcptTo,
    /// The `To` of the returned message (`message/rfc822` or
    /// `text/rfc822-headers`): the report names no recipient.
    ReturnedTo,
    /// A Microsoft JMRP report's `X-HmXmrOriginalRecipient`.
    JmrpHeader,
    /// Nowhere: the report names no recipient at all.
    Nowhere,
}

impl RecipientsFrom {
    /// A short name for logs and `mailpipe bounces --parse`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientsFrom::OriginalRcptTo => "original_rcpt_to",
            RecipientsFrom::ReturnedTo => "returned_message_to",
            RecipientsFrom::JmrpHeader => "x_hmxmr_original_recipient",
            RecipientsFrom::Nowhere => "none",
        }
    }
}

impl RecipientStatus {
    /// The failure as the synchronous path would have seen it, for the shared classifier:
    /// mailpipe_common::classify::Failure::Reply { code, enhanced, text }. code = the basic reply
    /// code at the start of the diagnostic if any (e.g. 550), else derived from the status class
    /// (5.x.x -> 550, 4.x.x -> 450), else 0; enhanced = Status (or the enhanced code found in the
    /// diagnostic); text = the diagnostic without its leading codes (or a description of the
    /// status when there is no diagnostic).
    ///
    /// Text bounces quote the remote server's reply inside a sentence ("host
    /// mx.example.com said: 550 5.1.1 ...", "... [192.0.2.1]: 550 ..."): that
    /// reply counts as the start of the diagnostic. A `Status` that only
    /// gives its class (`5.0.0`, as Postfix writes for replies without an
    /// enhanced code) yields to a more precise code of the same class found
    /// in the diagnostic.
    pub fn failure(&self) -> Failure {
        let diagnostic = self.diagnostic.as_deref().unwrap_or("").trim();
        let (code, found, text) = if diagnostic.is_empty() {
            (0, None, String::new())
        } else {
            match Failure::from_reply_text(locate_reply(diagnostic)) {
                Failure::Reply {
                    code,
                    enhanced,
                    text,
                } => (code, enhanced, text),
                Failure::Connection { detail, .. } => (0, None, detail),
            }
        };
        let found = found.filter(|e| dsn::valid_status(e));
        let status = self.status.clone().filter(|s| dsn::valid_status(s));
        let enhanced = match (status, found) {
            (Some(status), Some(found))
                if status.ends_with(".0.0")
                    && !found.ends_with(".0.0")
                    && status.as_bytes()[0] == found.as_bytes()[0] =>
            {
                Some(found)
            }
            (Some(status), _) => Some(status),
            (None, found) => found,
        };
        let code = match (code, enhanced.as_deref().and_then(|e| e.bytes().next())) {
            (0, Some(b'5')) => 550,
            (0, Some(b'4')) => 450,
            (code, _) => code,
        };
        let text = if text.is_empty() {
            enhanced
                .as_deref()
                .map(describe_status)
                .unwrap_or_default()
                .to_string()
        } else {
            text
        };
        Failure::Reply {
            code,
            enhanced,
            text,
        }
    }
}

static REPLY_INSIDE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:said|was)?:\s+([245]\d\d)(?:[ \t-]|$)")
        .expect("built-in reply pattern must compile")
});

/// The part of a diagnostic where the remote server's reply starts: the
/// whole text when it starts with a reply code, else the first reply quoted
/// after a colon ("host x said: 550 ...", "[192.0.2.1]: 554 ..."), else the
/// whole text.
fn locate_reply(diagnostic: &str) -> &str {
    let b = diagnostic.as_bytes();
    let starts_with_code = b.len() >= 3
        && matches!(b[0], b'2' | b'4' | b'5')
        && b[1].is_ascii_digit()
        && b[2].is_ascii_digit()
        && b.get(3).is_none_or(|c| matches!(c, b' ' | b'\t' | b'-'));
    if starts_with_code {
        return diagnostic;
    }
    match REPLY_INSIDE.captures(diagnostic).and_then(|c| c.get(1)) {
        Some(m) => &diagnostic[m.start()..],
        None => diagnostic,
    }
}

/// RFC 3463's description of an enhanced status code (subject and detail;
/// the class is said by the code itself).
fn describe_status(status: &str) -> &'static str {
    let mut parts = status.splitn(3, '.').skip(1);
    let subject = parts.next().unwrap_or("");
    let detail = parts.next().unwrap_or("");
    match (subject, detail) {
        ("0", "0") => "Other undefined status",
        ("1", "0") => "Other address status",
        ("1", "1") => "Bad destination mailbox address",
        ("1", "2") => "Bad destination system address",
        ("1", "3") => "Bad destination mailbox address syntax",
        ("1", "4") => "Destination mailbox address ambiguous",
        ("1", "5") => "Destination address valid",
        ("1", "6") => "Destination mailbox has moved, no forwarding address",
        ("1", "7") => "Bad sender's mailbox address syntax",
        ("1", "8") => "Bad sender's system address",
        ("2", "0") => "Other or undefined mailbox status",
        ("2", "1") => "Mailbox disabled, not accepting messages",
        ("2", "2") => "Mailbox full",
        ("2", "3") => "Message length exceeds administrative limit",
        ("2", "4") => "Mailing list expansion problem",
        ("3", "0") => "Other or undefined mail system status",
        ("3", "1") => "Mail system full",
        ("3", "2") => "System not accepting network messages",
        ("3", "3") => "System not capable of selected features",
        ("3", "4") => "Message too big for system",
        ("3", "5") => "System incorrectly configured",
        ("4", "0") => "Other or undefined network or routing status",
        ("4", "1") => "No answer from host",
        ("4", "2") => "Bad connection",
        ("4", "3") => "Directory server failure",
        ("4", "4") => "Unable to route",
        ("4", "5") => "Mail system congestion",
        ("4", "6") => "Routing loop detected",
        ("4", "7") => "Delivery time expired",
        ("5", "0") => "Other or undefined protocol status",
        ("5", "1") => "Invalid command",
        ("5", "2") => "Syntax error",
        ("5", "3") => "Too many recipients",
        ("5", "4") => "Invalid command arguments",
        ("5", "5") => "Wrong protocol version",
        ("6", "0") => "Other or undefined media error",
        ("6", "1") => "Media not supported",
        ("6", "2") => "Conversion required and prohibited",
        ("6", "3") => "Conversion required but not supported",
        ("6", "4") => "Conversion with loss performed",
        ("6", "5") => "Conversion failed",
        ("7", "0") => "Other or undefined security status",
        ("7", "1") => "Delivery not authorized, message refused",
        ("7", "2") => "Mailing list expansion prohibited",
        ("7", "3") => "Security conversion required but not possible",
        ("7", "4") => "Security features not supported",
        ("7", "5") => "Cryptographic failure",
        ("7", "6") => "Cryptographic algorithm not supported",
        ("7", "7") => "Message integrity failure",
        _ => "",
    }
}

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

/// Decide what the mail is, most specific first.
fn classify(mail: &mime::Mail, header: &[Field], parsed: &Parsed, raw: &[u8]) -> Report {
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

/// Adds a report's recipients to the ones already read (several reports in one mail).
fn merge(merged: &mut Option<DeliveryReport>, report: DeliveryReport) {
    match merged {
        None => *merged = Some(report),
        Some(m) => {
            for r in report.recipients {
                if m.recipients.len() < dsn::MAX_RECIPIENTS && !m.recipients.contains(&r) {
                    m.recipients.push(r);
                }
            }
        }
    }
}

/// The body of the raw mail (after its header), as text for the fields
/// reader: lossy, capped, `\n` line ends.
fn raw_body(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(MAX_TEXT_BYTES + MAX_HEADER_BYTES)];
    let text = String::from_utf8_lossy(raw).replace('\r', "");
    let body = text.split_once("\n\n").map_or("", |(_, body)| body);
    let mut end = body.len().min(MAX_TEXT_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_string()
}

static INLINE_RETURNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?im)^content-type:[ \t]*(?:message/rfc822|message/global|text/rfc822-headers|message/rfc822-headers)\b.*$",
    )
    .expect("built-in pattern must compile")
});

/// In a body whose MIME structure is broken: the header of the returned
/// message, after its inline `Content-Type: message/rfc822` (or
/// `text/rfc822-headers`) line and that part's own header.
fn inline_returned(body: &str) -> &str {
    let Some(m) = INLINE_RETURNED.find(body) else {
        return "";
    };
    let after = &body[m.end()..];
    after
        .split_once("\n\n")
        .map_or("", |(_, returned)| returned)
}

/// What an unsubscribe request answers: an attached or quoted copy, else the
/// message id of its `In-Reply-To` / `References`.
fn answered_original(mail: &mime::Mail, quoted: &str, header: &[Field]) -> Original {
    let mut original = returned_original(mail, quoted);
    if original.message_id.is_none() {
        original.message_id = ["in-reply-to", "references"]
            .iter()
            .flat_map(|name| fields::all(header, name))
            .flat_map(|v| v.split_whitespace())
            .find_map(fields::message_id);
    }
    original
}

/// A delivery report from delivery-status fields, if they name a recipient.
/// `human` is the report's human-readable text, which says why when a
/// recipient's fields do not (no Diagnostic-Code).
fn delivery(
    fields_text: &str,
    standard: bool,
    mail: &mime::Mail,
    quoted: &str,
    human: &str,
    subject: &str,
) -> Option<DeliveryReport> {
    if !standard && !looks_like_status_fields(fields_text) {
        return None;
    }
    let mut status = dsn::parse(fields_text);
    if status.recipients.is_empty()
        || status
            .recipients
            .iter()
            .all(|r| r.final_recipient.is_none() && r.original_recipient.is_none())
    {
        return None;
    }
    fill_diagnostics(&mut status.recipients, human, subject);
    Some(DeliveryReport {
        standard,
        reporting_mta: status.reporting_mta,
        recipients: status.recipients,
        original: returned_original(mail, quoted),
    })
}

/// Recipients whose fields give no diagnostic (only a generic `5.0.0` or
/// `4.0.0`, say) take it from the report's human-readable text: from what a
/// known MTA's wording says about that address, else from the line that
/// names the address (or the line after it).
fn fill_diagnostics(recipients: &mut [RecipientStatus], human: &str, subject: &str) {
    if recipients.iter().all(|r| r.diagnostic.is_some()) || human.trim().is_empty() {
        return;
    }
    let (own, _) = text::split_at_returned_message(human);
    let known = match text::recognize(own, subject, &[]) {
        TextOutcome::Found { recipients, .. } => recipients,
        _ => Vec::new(),
    };
    let lines: Vec<&str> = own
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for r in recipients.iter_mut().filter(|r| r.diagnostic.is_none()) {
        let Some(address) = r
            .final_recipient
            .clone()
            .or_else(|| r.original_recipient.clone())
        else {
            continue;
        };
        let from_text = known
            .iter()
            .find(|k| k.final_recipient.as_deref() == Some(address.as_str()))
            .and_then(|k| k.diagnostic.clone())
            .or_else(|| line_about(&lines, &address));
        r.diagnostic = from_text.filter(|d| !d.is_empty());
    }
}

/// What the text says about `address`: the rest of the line that names it
/// (with its indented continuation), or the next line when that says nothing.
fn line_about(lines: &[&str], address: &str) -> Option<String> {
    let i = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().contains(address))?;
    let lower = lines[i].to_ascii_lowercase();
    let at = lower.find(address)?;
    let rest = lines[i][at + address.len()..]
        .trim_start_matches(['>', ':', ',', ' ', '\t', '"', ')'])
        .trim();
    let rest = if rest.chars().filter(|c| c.is_alphabetic()).count() >= 5 {
        rest.to_string()
    } else {
        lines.get(i + 1)?.to_string()
    };
    Some(fields::collapse_whitespace(&rest))
}

static STATUS_FIELDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?im)^final-recipient:").expect("built-in pattern must compile"));
static STATUS_ACTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?im)^(?:action|status):").expect("built-in pattern must compile")
});

/// Whether free text holds delivery-status fields (`Final-Recipient:` and
/// `Action:` or `Status:` at the start of lines).
fn looks_like_status_fields(text: &str) -> bool {
    STATUS_FIELDS.is_match(text) && STATUS_ACTION.is_match(text)
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

/// The report's text for the text recognizers: its plain-text parts (or,
/// without any, its HTML with the tags dropped), `\n` line ends, capped.
fn report_text(mail: &mime::Mail) -> String {
    let mut text = String::new();
    for part in mail.parts.iter().filter(|p| p.is_plain_text()) {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&part.text);
        if text.len() >= MAX_TEXT_BYTES {
            break;
        }
    }
    if text.trim().is_empty() {
        for part in mail.parts.iter().filter(|p| p.ctype == "text/html") {
            text.push_str(&strip_tags(&part.text));
            text.push('\n');
            if text.len() >= MAX_TEXT_BYTES {
                break;
            }
        }
    }
    let mut end = text.len().min(MAX_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.replace('\r', "")
}

/// HTML to text, crudely: tags dropped, block ends become line ends.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag.trim_start_matches('/').to_ascii_lowercase();
                if ["br", "p", "div", "tr", "li"]
                    .iter()
                    .any(|t| name.starts_with(t))
                {
                    out.push('\n');
                }
            }
            (true, c) => {
                if tag.len() < 8 {
                    tag.push(c);
                }
            }
            (false, c) => out.push(c),
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The returned message: the first attached one, else the copy quoted in
/// the text (`quoted`: what follows the "copy of the message" line).
fn returned_original(mail: &mime::Mail, quoted: &str) -> Original {
    if let Some(part) = mail.parts.iter().find(|p| p.is_returned_message()) {
        return original_from(&fields::header_block(&part.text));
    }
    let quoted = quoted.trim_start_matches(['\r', '\n', ' ', '\t']);
    if quoted.is_empty() {
        return Original::default();
    }
    original_from(&fields::header_block(quoted))
}

/// Every `To` address of a returned message's header (lowercased, without
/// repeats, capped).
fn returned_to(header: &[Field]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for address in fields::all(header, "to").flat_map(fields::address_list) {
        let address = address.to_ascii_lowercase();
        if !out.contains(&address) && out.len() < arf::MAX_COMPLAINANTS {
            out.push(address);
        }
    }
    out
}

fn original_from(header: &[Field]) -> Original {
    Original {
        mailpipe_id: fields::get(header, "x-mailpipe-id")
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_string),
        message_id: fields::get(header, "message-id").and_then(fields::message_id),
        to: fields::all(header, "to")
            .flat_map(fields::address_list)
            .next(),
        from: fields::get(header, "from").and_then(fields::bare_address),
        return_path: fields::get(header, "return-path").and_then(fields::bare_address),
    }
}

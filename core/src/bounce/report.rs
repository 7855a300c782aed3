//! What [`parse`](super::parse) returns: the kinds of report a mail can be
//! and what each says (per-recipient statuses, complainants, what identifies
//! the returned message).

/// What [`parse`](super::parse) found in one mail.
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
    pub(super) fn parse(value: &str) -> Option<Action> {
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
    pub(super) fn from_status(status: &str) -> Action {
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

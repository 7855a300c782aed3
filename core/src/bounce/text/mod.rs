//! Bounces without a `message/delivery-status` part, recognized by the text
//! their MTA writes: qmail, Yahoo (qmail-derived), Exim, Postfix (without
//! DSN support), Sendmail, Smail (sectioned "message log" / "failed
//! addresses" parts), Gmail / Google Workspace, Microsoft Exchange 5.5 to
//! 2003 ("did not reach the following recipient(s)", where a recipient may
//! be named only by its display name) and Exchange 2007+ / Office 365; and,
//! for mail that looks like a bounce but follows none of these, a notice
//! that names a reason and an address in angle brackets ([`notice`]).
//!
//! Each recognizer looks for its MTA's fixed sentence, then reads the failed
//! addresses and the text that follows each one. The caller passes the
//! report's text up to the copy of the returned message (see
//! [`split_at_returned_message`]) so that the returned message's own text
//! cannot be mistaken for the report.
//!
//! One file per family of MTA wording (`qmail.rs`, `exim.rs`, `postfix.rs`,
//! `sendmail.rs`, `smail.rs`, `gmail.rs`, `exchange.rs`, and `notice.rs` for
//! the daemon notices); this one tries them in order ([`recognize`]) and
//! holds what they share (reading one recipient, telling a warning).

mod exchange;
mod exim;
mod gmail;
mod notice;
mod postfix;
mod qmail;
mod sendmail;
mod smail;

use std::sync::LazyLock;

use regex::Regex;

use self::exchange::{exchange, exchange2003};
use self::exim::exim;
use self::gmail::gmail;
pub(super) use self::notice::notice;
use self::postfix::postfix;
use self::qmail::{qmail, yahoo};
use self::sendmail::sendmail;
use self::smail::smail;
use super::dsn::{valid_status, MAX_RECIPIENTS};
use super::failure::locate_reply;
use super::fields;
use super::{Action, RecipientStatus};
use crate::classify::Failure;

/// What the text recognizers made of a report.
#[derive(Debug)]
pub(super) enum TextOutcome {
    /// A known format, with its failed recipients.
    Found {
        /// Which recognizer matched (for logs and tests).
        mta: &'static str,
        /// One entry per failed (or delayed) address.
        recipients: Vec<RecipientStatus>,
    },
    /// A known format whose text names no address we could read.
    NoAddress(&'static str),
    /// No known format.
    NotFound,
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in bounce pattern must compile")
}

/// Lines that introduce the copy of the returned message in text bounces.
static RETURNED_MESSAGE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?im)^[ \t]*-*[ \t]*(?:below this line is a copy of the message\.?|this is a copy of the message, including all the headers\.?|original message(?: follows)?\.?|unsent message follows|message header follows|original message headers:|the original message was:)[ \t]*-*[ \t]*$",
    )
});

/// The report's own text and the returned message's copy (empty when the
/// report quotes none).
pub(super) fn split_at_returned_message(text: &str) -> (&str, &str) {
    match RETURNED_MESSAGE.find(text) {
        Some(m) => (&text[..m.start()], &text[m.end()..]),
        None => (text, ""),
    }
}

/// Try every recognizer on `text` (the report's own text, `\n` line ends).
/// `subject` helps to tell warnings from failures; `failed_header` is the
/// report's `X-Failed-Recipients` (Exim, Gmail), used when the text names
/// no address.
pub(super) fn recognize(text: &str, subject: &str, failed_header: &[String]) -> TextOutcome {
    type Recognizer = fn(&str, &str) -> Option<Vec<RecipientStatus>>;
    const RECOGNIZERS: &[(&str, Recognizer)] = &[
        ("qmail", qmail),
        ("yahoo", yahoo),
        ("exim", exim),
        ("postfix", postfix),
        ("sendmail", sendmail),
        ("smail", smail),
        ("gmail", gmail),
        ("exchange2003", exchange2003),
        ("exchange", exchange),
    ];
    let mut without_address = None;
    for &(mta, recognizer) in RECOGNIZERS {
        let Some(mut recipients) = recognizer(text, subject) else {
            continue;
        };
        fill_from_header(&mut recipients, failed_header);
        if recipients.is_empty() && !failed_header.is_empty() {
            let action = if is_warning(text, subject) {
                Action::Delayed
            } else {
                Action::Failed
            };
            recipients = failed_header
                .iter()
                .take(MAX_RECIPIENTS)
                .map(|a| recipient(Some(a.clone()), action, ""))
                .collect();
        }
        if recipients.is_empty() {
            without_address.get_or_insert(mta);
            continue;
        }
        recipients.truncate(MAX_RECIPIENTS);
        return TextOutcome::Found { mta, recipients };
    }
    match without_address {
        Some(mta) => TextOutcome::NoAddress(mta),
        None => TextOutcome::NotFound,
    }
}

/// Addresses the text left incomplete (Exim may name only a local part)
/// completed from `X-Failed-Recipients`.
fn fill_from_header(recipients: &mut [RecipientStatus], failed_header: &[String]) {
    for r in recipients.iter_mut() {
        let Some(current) = r.final_recipient.as_deref() else {
            if failed_header.len() == 1 {
                r.final_recipient = Some(failed_header[0].clone());
            }
            continue;
        };
        if current.contains('@') {
            continue;
        }
        if let Some(full) = failed_header.iter().find(|a| {
            a.split_once('@')
                .is_some_and(|(local, _)| local.eq_ignore_ascii_case(current))
        }) {
            r.final_recipient = Some(full.clone());
        }
    }
}

static WARNING: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)this is a warning only|warning: could not send message|has not yet been delivered|has been delayed|is delayed|still being retried|will be retried until|will keep trying|\bstill trying\b|delivery (?:is )?delayed|delayed mail|transient non-fatal",
    )
});

/// Whether the report is a delay warning rather than a final failure.
fn is_warning(text: &str, subject: &str) -> bool {
    WARNING.is_match(subject) || WARNING.is_match(text)
}

fn action_of(text: &str, subject: &str) -> Action {
    if is_warning(text, subject) {
        Action::Delayed
    } else {
        Action::Failed
    }
}

static REMOTE_HOST: LazyLock<Regex> =
    LazyLock::new(|| re(r"\bhost\s+([A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])\s*\["));

/// One recipient of a text bounce: the address (lowercased), the action and
/// the diagnostic text, whose enhanced code (if any) becomes the status.
fn recipient(address: Option<String>, action: Action, diagnostic: &str) -> RecipientStatus {
    let diagnostic = fields::collapse_whitespace(diagnostic);
    let status = if diagnostic.is_empty() {
        None
    } else {
        match Failure::from_reply_text(locate_reply(&diagnostic)) {
            Failure::Reply { enhanced, .. } => enhanced.filter(|e| valid_status(e)),
            Failure::Connection { .. } => None,
        }
    };
    let remote_mta = REMOTE_HOST
        .captures(&diagnostic)
        .map(|c| c[1].to_ascii_lowercase());
    RecipientStatus {
        final_recipient: address.map(|a| a.to_ascii_lowercase()),
        original_recipient: None,
        action,
        status,
        diagnostic: (!diagnostic.is_empty()).then_some(diagnostic),
        remote_mta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn found(outcome: TextOutcome) -> (&'static str, Vec<RecipientStatus>) {
        match outcome {
            TextOutcome::Found { mta, recipients } => (mta, recipients),
            other => panic!("not recognized: {other:?}"),
        }
    }

    #[test]
    fn a_known_format_without_address_falls_back_to_the_failed_header() {
        let text = "Hi. This is the qmail-send program at example.net.\nI'm afraid I wasn't able to deliver your message.\n";
        let (_, r) = found(recognize(text, "failure notice", &["x@example.org".into()]));
        assert_eq!(r[0].final_recipient.as_deref(), Some("x@example.org"));
        assert!(matches!(
            recognize(text, "failure notice", &[]),
            TextOutcome::NoAddress("qmail")
        ));
    }
}

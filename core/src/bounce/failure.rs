//! A recipient's status turned back into the [`Failure`] the synchronous path
//! would have seen: the remote reply found in the diagnostic, the more precise
//! of two enhanced codes, and RFC 3463's words when there is no text.

use std::sync::LazyLock;

use regex::Regex;

use super::dsn;
use super::RecipientStatus;
use crate::classify::Failure;

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
pub(super) fn locate_reply(diagnostic: &str) -> &str {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::Action;

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
}

//! Parsing of SMTP replies: the basic reply code (RFC 5321), the enhanced
//! status code (RFC 3463) and the text, for single- and multi-line replies
//! and for the loose one-line strings operators paste.
//!
//! Tolerated: `\r\n` or `\n` line ends, leading/trailing whitespace, any
//! letter case, continuation lines without a code, and an enhanced code that
//! only appears inside the text (`550 Requested action not taken: 5.1.1
//! mailbox unavailable`, qmail's `(#5.1.1)`, Barracuda's `550 cuda_nsu 5.1.1`).

use std::fmt;

use super::enhanced::{find_enhanced, leading_code, EnhancedCode};
use super::types::Failure;

/// A parsed SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// Basic reply code, e.g. 550 (0 only when built from a text without one).
    pub code: u16,
    /// Enhanced status code, from the start of the first line or, failing that, from inside the text.
    pub enhanced: Option<EnhancedCode>,
    /// Text without codes; lines joined with one space, runs of whitespace collapsed.
    pub text: String,
}

impl SmtpReply {
    /// A reply from a code and its text lines as a client library hands them
    /// over (without the `550-` prefixes): a leading enhanced code is taken out
    /// of each line, the lines are joined with a space.
    pub fn from_lines<I, S>(code: u16, lines: I) -> SmtpReply
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut acc = Accumulator::default();
        for line in lines {
            for part in line.as_ref().split('\n') {
                acc.push_text(part);
            }
        }
        acc.finish(code)
    }

    /// Whether the reply is transient: a 4xx basic code or a 4.x.x enhanced code.
    pub fn is_transient(&self) -> bool {
        is_transient(self.code, self.enhanced)
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Failure::from(self.clone()).fmt(f)
    }
}

/// Transient when either the basic code (4xx) or the enhanced class (4) says so.
pub(crate) fn is_transient(code: u16, enhanced: Option<EnhancedCode>) -> bool {
    code / 100 == 4 || enhanced.is_some_and(|e| e.is_transient())
}

/// Parse a raw SMTP reply, single- or multi-line.
///
/// Returns `None` when the first non-blank line does not start with a
/// three-digit code followed by a space, a hyphen, a tab or the end of line.
pub fn parse_reply(raw: &str) -> Option<SmtpReply> {
    let mut lines = raw.split('\n').map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next()?;
    let (code, rest) = split_code(first)?;
    let mut acc = Accumulator::default();
    acc.push_text(rest);
    for line in lines {
        match split_code(line) {
            Some((_, rest)) => acc.push_text(rest),
            None => acc.push_continuation(line),
        }
    }
    Some(acc.finish(code))
}

impl Failure {
    /// Operator input: one reply line (or a pasted multi-line reply, or a DSN
    /// `Diagnostic-Code` such as `smtp; 550 5.1.1 ...`).
    ///
    /// Always a [`Failure::Reply`]. When the text has no leading basic code the
    /// result has `code: 0`, the enhanced code found in the text (if any; taken
    /// out of the text only when it leads it) and the rest of the text, so that
    /// text rules and enhanced-code rules
    /// still apply (`5.1.1 user unknown`, `host x said: 550 5.1.1 ...`,
    /// `connect to x[192.0.2.1]:25: Connection refused`).
    pub fn from_reply_text(raw: &str) -> Failure {
        let trimmed = strip_diagnostic_type(raw.trim());
        if let Some(reply) = parse_reply(trimmed) {
            return reply.into();
        }
        let text = collapse_whitespace(trimmed);
        let (enhanced, text) = match leading_code(&text) {
            Some((code, rest)) => (Some(code), rest.to_string()),
            None => (find_enhanced(&text, 0), text),
        };
        Failure::Reply {
            code: 0,
            enhanced: enhanced.map(|e| e.to_string()),
            text,
        }
    }
}

impl From<SmtpReply> for Failure {
    fn from(reply: SmtpReply) -> Self {
        Failure::Reply {
            code: reply.code,
            enhanced: reply.enhanced.map(|e| e.to_string()),
            text: reply.text,
        }
    }
}
/// `550 text`, `550-text`, `550` → (550, "text").
pub(crate) fn split_code(line: &str) -> Option<(u16, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    match bytes.get(3) {
        None => {}
        Some(b' ' | b'-' | b'\t') => {}
        Some(_) => return None,
    }
    let code = bytes[..3]
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let rest = line.get(4..).unwrap_or("").trim();
    Some((code, rest))
}

/// Drop an RFC 3464 diagnostic type such as `smtp;` in front of a reply.
pub(crate) fn strip_diagnostic_type(s: &str) -> &str {
    match s.split_once(';') {
        Some((kind, rest)) if kind.trim().eq_ignore_ascii_case("smtp") => rest.trim(),
        _ => s,
    }
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Gathers the text of reply lines and the first leading enhanced code.
#[derive(Default)]
struct Accumulator {
    /// First leading enhanced code seen.
    enhanced: Option<EnhancedCode>,
    /// Text of each line, whitespace collapsed.
    parts: Vec<String>,
}

impl Accumulator {
    /// Text after the `550-` prefix: a leading enhanced code is taken out.
    fn push_text(&mut self, text: &str) {
        let text = text.trim();
        let rest = match leading_code(text) {
            Some((code, rest)) => {
                self.enhanced.get_or_insert(code);
                rest
            }
            None => text,
        };
        self.push_continuation(rest);
    }

    /// A line kept whole.
    fn push_continuation(&mut self, text: &str) {
        let text = collapse_whitespace(text);
        if !text.is_empty() {
            self.parts.push(text);
        }
    }

    fn finish(self, code: u16) -> SmtpReply {
        let text = self.parts.join(" ");
        let enhanced = self.enhanced.or_else(|| find_enhanced(&text, code));
        SmtpReply {
            code,
            enhanced,
            text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec(s: &str) -> EnhancedCode {
        s.parse().expect("valid enhanced code")
    }
    #[test]
    fn single_line_reply_is_parsed() {
        let r =
            parse_reply("550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown")
                .expect("reply");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, Some(ec("5.1.1")));
        assert_eq!(
            r.text,
            "<bob@example.com>: Recipient address rejected: User unknown"
        );
    }

    #[test]
    fn multiline_reply_is_parsed() {
        let r = parse_reply("550-5.1.1 line one\n550 5.1.1 line two").expect("reply");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, Some(ec("5.1.1")));
        assert_eq!(r.text, "line one line two");

        let gmail = "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
                     550-5.1.1 double-checking the recipient's email address for typos or\r\n\
                     550-5.1.1 unnecessary spaces. For more information, go to\r\n\
                     550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a640c23a62f3a-a9e4b2f1b1bsi123456.45 - gsmtp\r\n";
        let r = parse_reply(gmail).expect("reply");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, Some(ec("5.1.1")));
        assert_eq!(
            r.text,
            "The email account that you tried to reach does not exist. Please try \
             double-checking the recipient's email address for typos or unnecessary spaces. \
             For more information, go to https://support.google.com/mail/?p=NoSuchUser \
             a640c23a62f3a-a9e4b2f1b1bsi123456.45 - gsmtp"
        );
    }

    #[test]
    fn multiline_reply_without_enhanced_code_and_bare_continuation_lines() {
        let r = parse_reply("550-Verification failed for <x@example.org>\n550-Unrouteable address\n550 Sender verify failed")
            .expect("reply");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, None);
        assert_eq!(
            r.text,
            "Verification failed for <x@example.org> Unrouteable address Sender verify failed"
        );
        let r = parse_reply("  452 4.2.2 The email account\n   is over quota  ").expect("reply");
        assert_eq!(r.text, "The email account is over quota");
    }

    #[test]
    fn crlf_whitespace_and_lowercase_are_tolerated() {
        let r = parse_reply("  \r\n\t550 5.2.2 mailbox full \r\n").expect("reply");
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str()),
            (550, Some(ec("5.2.2")), "mailbox full")
        );
        let r = parse_reply("550 5.1.1 user unknown").expect("reply");
        assert_eq!(r.text, "user unknown");
        let r = parse_reply("421").expect("code only");
        assert_eq!((r.code, r.enhanced, r.text.as_str()), (421, None, ""));
    }
    #[test]
    fn text_without_a_leading_code_is_not_a_reply() {
        for raw in [
            "",
            "   ",
            "5.1.1 user unknown",
            "user unknown",
            "55 short",
            "5500 long",
            "550x",
            "smtp; 550 5.1.1 x",
        ] {
            assert_eq!(parse_reply(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn from_lines_strips_enhanced_codes_per_line() {
        let r = SmtpReply::from_lines(
            550,
            [
                "5.1.1 The email account that you tried to reach does not exist.",
                "5.1.1 Please try double-checking",
            ],
        );
        assert_eq!(r.enhanced, Some(ec("5.1.1")));
        assert_eq!(
            r.text,
            "The email account that you tried to reach does not exist. Please try double-checking"
        );
        let r = SmtpReply::from_lines(421, Vec::<String>::new());
        assert_eq!((r.code, r.enhanced, r.text.as_str()), (421, None, ""));
        assert!(r.is_transient());
    }

    #[test]
    fn operator_text_becomes_a_reply_failure() {
        assert_eq!(
            Failure::from_reply_text("550 5.1.1 user unknown"),
            Failure::Reply {
                code: 550,
                enhanced: Some("5.1.1".into()),
                text: "user unknown".into()
            }
        );
        assert_eq!(
            Failure::from_reply_text("smtp; 552 5.2.2 Mailbox full"),
            Failure::Reply {
                code: 552,
                enhanced: Some("5.2.2".into()),
                text: "Mailbox full".into()
            }
        );
        assert_eq!(
            Failure::from_reply_text("  5.1.1   user unknown "),
            Failure::Reply {
                code: 0,
                enhanced: Some("5.1.1".into()),
                text: "user unknown".into()
            }
        );
        assert_eq!(
            Failure::from_reply_text(
                "host mx.example.com[192.0.2.1] said: 550 5.1.1 <x@example.com>: User unknown"
            ),
            Failure::Reply {
                code: 0,
                enhanced: Some("5.1.1".into()),
                text:
                    "host mx.example.com[192.0.2.1] said: 550 5.1.1 <x@example.com>: User unknown"
                        .into()
            }
        );
        assert_eq!(
            Failure::from_reply_text(""),
            Failure::Reply {
                code: 0,
                enhanced: None,
                text: String::new()
            }
        );
    }

    #[test]
    fn smtp_reply_converts_to_failure_and_displays() {
        let r = parse_reply("451 4.4.3 Routing server failure").expect("reply");
        assert!(r.is_transient());
        assert_eq!(r.to_string(), "451 4.4.3 Routing server failure");
        let f: Failure = r.into();
        assert_eq!(
            f,
            Failure::Reply {
                code: 451,
                enhanced: Some("4.4.3".into()),
                text: "Routing server failure".into()
            }
        );
        assert!(parse_reply("550 4.2.2 full").expect("reply").is_transient());
        assert!(!parse_reply("550 5.2.2 full").expect("reply").is_transient());
    }
}

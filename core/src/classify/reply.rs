//! Parsing of SMTP replies: the basic reply code (RFC 5321), the enhanced
//! status code (RFC 3463) and the text, for single- and multi-line replies
//! and for the loose one-line strings operators paste.
//!
//! Tolerated: `\r\n` or `\n` line ends, leading/trailing whitespace, any
//! letter case, continuation lines without a code, and an enhanced code that
//! only appears inside the text (`550 Requested action not taken: 5.1.1
//! mailbox unavailable`, qmail's `(#5.1.1)`, Barracuda's `550 cuda_nsu 5.1.1`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::types::Failure;

/// Enhanced mail system status code `class.subject.detail` (RFC 3463), e.g. `5.1.1`.
///
/// `class` is 2, 4 or 5; `subject` is 0 to 7; `detail` is 0 to 999.
/// Displays and parses as `"5.1.1"`; serializes as that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// 0 to 7: other, addressing, mailbox, mail system, network/routing, protocol, content, security/policy.
    pub subject: u16,
    /// Precise condition within the subject, 0 to 999.
    pub detail: u16,
}

impl EnhancedCode {
    /// A code from its parts; `None` when a part is out of range.
    pub fn new(class: u8, subject: u16, detail: u16) -> Option<Self> {
        (matches!(class, 2 | 4 | 5) && subject <= 7 && detail <= 999).then_some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }

    /// Whether the class says the failure is transient (4.x.x).
    pub fn is_transient(&self) -> bool {
        self.class == 4
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// The text given to [`EnhancedCode::from_str`] is not an enhanced status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an enhanced status code (class.subject.detail, e.g. 5.1.1): {0:?}")]
pub struct ParseEnhancedCodeError(pub String);

impl FromStr for EnhancedCode {
    type Err = ParseEnhancedCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseEnhancedCodeError(s.to_string());
        match scan_code(s.trim().as_bytes(), 0) {
            Some((code, end)) if end == s.trim().len() => Ok(code),
            _ => Err(err()),
        }
    }
}

impl Serialize for EnhancedCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EnhancedCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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

/// Find an enhanced code inside a text: `[245].[0-7].d{1,3}` standing alone
/// (not part of a longer dotted number such as an IP address or a version).
/// With `code` 4xx/5xx only a code of the same class is accepted; with `code`
/// 0 (unknown) class 4 or 5.
pub(crate) fn find_enhanced(text: &str, code: u16) -> Option<EnhancedCode> {
    let bytes = text.as_bytes();
    let wanted = |class: u8| match code / 100 {
        0 => class == 4 || class == 5,
        c => u16::from(class) == c,
    };
    let mut i = 0;
    while i < bytes.len() {
        let prev_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.');
        if prev_ok && matches!(bytes[i], b'2' | b'4' | b'5') {
            if let Some((found, _)) = scan_code(bytes, i) {
                if wanted(found.class) {
                    return Some(found);
                }
            }
        }
        i += 1;
    }
    None
}

/// An enhanced code at the very start of `text` followed by whitespace or the
/// end; returns it and the rest of the text.
pub(crate) fn leading_code(text: &str) -> Option<(EnhancedCode, &str)> {
    let (code, end) = scan_code(text.as_bytes(), 0)?;
    let rest = &text[end..];
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some((code, rest.trim_start()))
}

/// Scan `class.subject.detail` at `start`; the code must not continue with a
/// digit, a letter or `.digit` (so `5.1.10` is not read as `5.1.1`, and
/// `1.2.3.4` is not a code). A trailing sentence dot is fine.
fn scan_code(bytes: &[u8], start: usize) -> Option<(EnhancedCode, usize)> {
    let mut pos = start;
    let mut parts = [0u16; 3];
    for (n, part) in parts.iter_mut().enumerate() {
        if n > 0 {
            if bytes.get(pos) != Some(&b'.') {
                return None;
            }
            pos += 1;
        }
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() && pos - digits_start < 4 {
            pos += 1;
        }
        let len = pos - digits_start;
        let max = if n == 0 { 1 } else { 3 };
        if len == 0 || len > max {
            return None;
        }
        *part = bytes[digits_start..pos]
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    }
    let next = bytes.get(pos).copied();
    if next.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    if next == Some(b'.') && bytes.get(pos + 1).is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    let class = u8::try_from(parts[0]).ok()?;
    EnhancedCode::new(class, parts[1], parts[2]).map(|code| (code, pos))
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
    fn enhanced_code_displays_and_parses() {
        let c = EnhancedCode::new(5, 1, 1).expect("valid");
        assert_eq!(c.to_string(), "5.1.1");
        assert_eq!(ec("5.1.1"), c);
        assert_eq!(ec("5.7.606").detail, 606);
        assert_eq!(ec(" 4.4.3 ").to_string(), "4.4.3");
        assert_eq!(ec("5.1.10").detail, 10);
        for bad in [
            "", "5", "5.1", "5.1.", "3.1.1", "5.8.1", "5.1.1000", "5.1.1.1", "a.b.c", "55.1.1",
            "5.1.1x", "5..1",
        ] {
            assert!(
                bad.parse::<EnhancedCode>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn enhanced_code_serializes_as_a_string() {
        let c = ec("4.7.28");
        assert_eq!(serde_json::to_string(&c).expect("ser"), "\"4.7.28\"");
        assert_eq!(
            serde_json::from_str::<EnhancedCode>("\"4.7.28\"").expect("de"),
            c
        );
        assert!(serde_json::from_str::<EnhancedCode>("\"9.9.9\"").is_err());
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
    fn enhanced_code_inside_the_text_is_found() {
        let r = parse_reply("550 Requested action not taken: 5.1.1 mailbox unavailable")
            .expect("reply");
        assert_eq!(r.enhanced, Some(ec("5.1.1")));
        assert_eq!(
            r.text,
            "Requested action not taken: 5.1.1 mailbox unavailable"
        );

        let r = parse_reply("550 sorry, no mailbox here by that name. (#5.1.1)").expect("reply");
        assert_eq!(r.enhanced, Some(ec("5.1.1")));

        let r = parse_reply(
            "550 cuda_nsu 5.1.1 <x@example.com>: Recipient address rejected: User unknown",
        )
        .expect("reply");
        assert_eq!(r.enhanced, Some(ec("5.1.1")));

        let r =
            parse_reply("421 Service not available, closing transmission channel").expect("reply");
        assert_eq!(r.enhanced, None);
    }

    #[test]
    fn ip_addresses_versions_and_other_classes_are_not_enhanced_codes() {
        for raw in [
            "554 Client host 192.4.5.123 blocked",
            "550 Client 5.6.7.8 rejected",
            "451 mx.example.com Resources temporarily unavailable. Please try again later [#4.16.1].",
            "421 4.16.55.1 deferred",
            "550 running Postfix 2.4.5 here",
            "550 see 5.1.1a",
        ] {
            assert_eq!(parse_reply(raw).expect("reply").enhanced, None, "{raw}");
        }
        // A leading code of another class than the basic code is kept (it is unambiguous)...
        assert_eq!(
            parse_reply("550 4.4.7 delivery expired")
                .expect("reply")
                .enhanced,
            Some(ec("4.4.7"))
        );
        // ...but inside the text only the basic code's class counts.
        assert_eq!(
            parse_reply("550 relayed via 4.4.7 hop")
                .expect("reply")
                .enhanced,
            None
        );
        // 5.1.10 is not 5.1.1.
        assert_eq!(
            parse_reply("556 5.1.10 Recipient address has null MX")
                .expect("reply")
                .enhanced,
            Some(ec("5.1.10"))
        );
        // A sentence dot after an in-text code is fine.
        assert_eq!(
            parse_reply("550 Mailbox unavailable 5.1.1.")
                .expect("reply")
                .enhanced,
            Some(ec("5.1.1"))
        );
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

//! The enhanced status code (RFC 3463), `class.subject.detail`: the type,
//! and finding one at the start of a text or inside it, where servers write
//! it (`550 Requested action not taken: 5.1.1 mailbox unavailable`, qmail's
//! `(#5.1.1)`), but not in an IP address or a version.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::parse_reply;

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
}

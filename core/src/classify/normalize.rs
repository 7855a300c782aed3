//! Qualification normalization: [`normalize`] blanks out the variable parts of
//! a failure text so that identical failures aggregate under one key.
//!
//! - e-mail addresses become `*` (`<bob@example.com>` → `<*>`);
//! - dates, times, IPv4/IPv6 addresses, phone numbers, and every token holding
//!   a digit (ids, hex tokens, numbers, host names such as
//!   `mta1234.mail.bf1.yahoo.com`) become `#xxx#`; so do long hex-letter tokens;
//! - kept as they are: the basic reply code at the start of the text, enhanced
//!   status codes (`5.1.1`, `(#5.7.1)`), and short provider codes made of
//!   capitals then digits (`TSS04`, `CS01`, `S3150`, `BL000010`) which tell
//!   failures apart;
//! - a multi-line reply is folded into one line: the first line's
//!   `550-5.1.1` becomes `550 5.1.1`, the codes of continuation lines go, so
//!   the raw reply and its parsed form (`Failure`'s `Display`) normalize alike;
//! - whitespace is collapsed, and adjacent placeholders merge into one.
//!
//! The result is stable: normalizing it again gives it back.

use std::sync::OnceLock;

use regex::{Captures, Regex};

use super::enhanced::leading_code;
use super::reply::{split_code, strip_diagnostic_type};

/// Placeholder for a variable part.
pub const PLACEHOLDER: &str = "#xxx#";

/// The regexes of [`normalize`], compiled once.
struct Patterns {
    /// E-mail addresses, including `local@[ip]`.
    email: Regex,
    /// `Mon, 15 Jan 2024`.
    rfc5322_date: Regex,
    /// `2024-01-15`, `2024-01-15T12:34:56Z`.
    iso_date: Regex,
    /// `15/01/2024`, `15.01.2024`.
    numeric_date: Regex,
    /// `12:34:56`, with optional am/pm and zone.
    time: Regex,
    /// IPv6 candidates (kept unless they hold a digit).
    ipv6: Regex,
    /// Dotted quads.
    ipv4: Regex,
    /// International and North-American phone numbers.
    phone: Regex,
    /// Word tokens joined by `.` or `-`.
    token: Regex,
    /// A whole token that is an enhanced status code.
    enhanced: Regex,
    /// A whole token that is a provider code such as `TSS04`.
    provider_code: Regex,
    /// A whole token of 8+ hex letters.
    hex_letters: Regex,
    /// Adjacent placeholders.
    repeated: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("normalize patterns are valid");
        Patterns {
            email: re(r"[\w.!#$%&'*+/=?^`{|}~-]+@+(?:\[[^\]\s]+\]|[\w-]+(?:\.[\w-]+)+)"),
            rfc5322_date: re(
                r"(?i)\b(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+)?\d{1,2}\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{2,4}\b",
            ),
            iso_date: re(
                r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z\b|[+-]\d{2}:?\d{2}\b)?)?",
            ),
            numeric_date: re(r"\b(?:\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}\.\d{1,2}\.\d{4})\b"),
            time: re(
                r"(?i)\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[ap]m\b)?(?:\s?(?:z\b|utc\b|gmt\b|[+-]\d{2}:?\d{2}\b))?",
            ),
            ipv6: re(r"(?i)(^|[^0-9a-z:])((?:ipv6:)?[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7})([^0-9a-z:]|$)"),
            ipv4: re(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"),
            phone: re(
                r"(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)|\d{1,4})(?:[\s.-]?\d{2,4}){2,4}\b|\(\d{3}\)\s?\d{3}[\s.-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b)",
            ),
            token: re(r"\w+(?:[.-]\w+)*"),
            enhanced: re(r"^[245]\.[0-7]\.\d{1,3}$"),
            provider_code: re(r"^[A-Z]{1,5}\d{1,6}$"),
            hex_letters: re(r"^[a-fA-F]{8,}$"),
            repeated: re(r"#xxx#(?:\s*#xxx#)+"),
        }
    })
}

/// Replace the variable parts of a failure text (see the module docs) so that
/// identical failures aggregate.
pub fn normalize(text: &str) -> String {
    // One pass can leave work for a second (placeholders that become
    // adjacent once lines are joined, addresses inside addresses); iterate
    // to the fixed point so that normalizing a normalized text changes
    // nothing and equal failures always aggregate. Two or three passes
    // suffice in practice; the cap only bounds hostile input.
    let mut out = normalize_once(text);
    for _ in 0..8 {
        let next = normalize_once(&out);
        if next == out {
            break;
        }
        out = next;
    }
    out
}

fn normalize_once(text: &str) -> String {
    let text = strip_diagnostic_type(text.trim());
    let mut parts: Vec<String> = Vec::new();
    for (i, line) in text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let body = match split_code(line) {
            Some((code, rest)) => {
                let (enhanced, rest) = match leading_code(rest) {
                    Some((e, rest)) => (Some(e), rest),
                    None => (None, rest),
                };
                if i == 0 {
                    parts.push(format!("{code:03}"));
                    parts.extend(enhanced.map(|e| e.to_string()));
                }
                rest
            }
            None => line,
        };
        parts.push(normalize_body(body));
    }
    parts
        .iter()
        .flat_map(|p| p.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

fn normalize_body(body: &str) -> String {
    let p = patterns();
    let mut s = p.email.replace_all(body, "*").into_owned();
    for re in [&p.rfc5322_date, &p.iso_date, &p.numeric_date, &p.time] {
        s = re.replace_all(&s, PLACEHOLDER).into_owned();
    }
    s = p
        .ipv6
        .replace_all(&s, |c: &Captures<'_>| {
            if c[2].bytes().any(|b| b.is_ascii_digit()) {
                format!("{}{PLACEHOLDER}{}", &c[1], &c[3])
            } else {
                c[0].to_string()
            }
        })
        .into_owned();
    for re in [&p.ipv4, &p.phone] {
        s = re.replace_all(&s, PLACEHOLDER).into_owned();
    }
    s = p
        .token
        .replace_all(&s, |c: &Captures<'_>| {
            let token = &c[0];
            let variable = if token.bytes().any(|b| b.is_ascii_digit()) {
                !(p.enhanced.is_match(token) || p.provider_code.is_match(token))
            } else {
                p.hex_letters.is_match(token)
            };
            if variable {
                PLACEHOLDER.to_string()
            } else {
                token.to_string()
            }
        })
        .into_owned();
    p.repeated.replace_all(&s, PLACEHOLDER).into_owned()
}

#[cfg(test)]
mod regression_tests {
    use super::*;

    #[test]
    fn normalize_is_stable_on_the_fuzzers_findings() {
        let cases: &[&[u8]] = &[
            include_bytes!("../../../fuzz/regressions/reply/normalize-unstable-across-lines"),
            include_bytes!("../../../fuzz/regressions/reply/normalize-unstable-address-chain"),
            include_bytes!("../../../fuzz/regressions/reply/normalize-unstable-multiline-reply"),
            include_bytes!(
                "../../../fuzz/regressions/reply/crash-37e4434c3b3458b7e27773eb1ee6b6c64980db20"
            ),
            include_bytes!(
                "../../../fuzz/regressions/reply/crash-592a39d24119bb62002c87d73ba7efc45166c8e8"
            ),
            include_bytes!(
                "../../../fuzz/regressions/reply/crash-60ecfd1c9bd7d370d600211e2b4478d6d841bde2"
            ),
        ];
        for raw in cases {
            let text = String::from_utf8_lossy(raw);
            let once = normalize(&text);
            assert_eq!(normalize(&once), once, "input {text:?}");
        }
        assert_eq!(
            normalize("550 5.1.1 user 12345\n550 5.1.1 67890 gone"),
            normalize("550 5.1.1 user #xxx# gone")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::reply::parse_reply;
    use super::super::types::Failure;
    use super::*;

    #[test]
    fn normalize_aggregates_addresses_and_ids() {
        let bob = "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table";
        let alice = "550 5.1.1 <alice.smith+news@example.org>: Recipient address rejected: User unknown in virtual mailbox table";
        assert_eq!(normalize(bob), normalize(alice));
        assert_eq!(
            normalize(bob),
            "550 5.1.1 <*>: Recipient address rejected: User unknown in virtual mailbox table"
        );

        let gmail = |id: &str| {
            format!(
                "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n\
                 550-5.1.1 double-checking the recipient's email address for typos or\r\n\
                 550-5.1.1 unnecessary spaces. For more information, go to\r\n\
                 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser {id} - gsmtp"
            )
        };
        let a = normalize(&gmail("a640c23a62f3a-a9e4b2f1b1bsi123456.45"));
        let b = normalize(&gmail("d75a77b69052e-4b0f2a1c9e3si98765.12"));
        assert_eq!(a, b);
        assert_eq!(
            a,
            "550 5.1.1 The email account that you tried to reach does not exist. Please try \
             double-checking the recipient's email address for typos or unnecessary spaces. \
             For more information, go to https://support.google.com/mail/?p=NoSuchUser #xxx# - gsmtp"
        );
    }

    #[test]
    fn codes_stay_recognizable() {
        assert_eq!(
            normalize("550 5.1.1 user unknown"),
            "550 5.1.1 user unknown"
        );
        assert_eq!(
            normalize("550-5.1.1 user unknown"),
            "550 5.1.1 user unknown"
        );
        assert_eq!(
            normalize("556 5.1.10 Recipient address has null MX"),
            "556 5.1.10 Recipient address has null MX"
        );
        assert_eq!(
            normalize("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),
            "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
        );
        assert_eq!(normalize("5.1.1 user unknown"), "5.1.1 user unknown");
        assert_eq!(
            normalize("smtp; 421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"),
            "421 4.7.0 [TSS04] Messages from #xxx# temporarily deferred due to unexpected volume or user complaints - #xxx#; see https://postmaster.yahooinc.com/error-codes"
        );
        assert_eq!(
            normalize("451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719) [BN8NAM12FT034.eop-nam12.prod.protection.outlook.com]"),
            "451 4.7.500 Server busy. Please try again later from [#xxx#]. (S77719) [#xxx#]"
        );
    }

    #[test]
    fn variable_parts_are_replaced() {
        let cases = [
            ("550 Client 192.0.2.44 blocked", "550 Client #xxx# blocked"),
            ("550 Client [2001:db8::1] blocked", "550 Client [#xxx#] blocked"),
            ("450 greylisted until 2024-01-15T12:34:56Z", "450 greylisted until #xxx#"),
            ("450 greylisted until 12:34:56 UTC", "450 greylisted until #xxx#"),
            (
                "451 deferred, Date: Mon, 15 Jan 2024 12:34:56 +0000, retry",
                "451 deferred, Date: #xxx#, retry",
            ),
            ("452 try after 15/01/2024", "452 try after #xxx#"),
            ("554 call +1 (555) 123-4567 to unblock", "554 call #xxx# to unblock"),
            ("554 call 555-123-4567 to unblock", "554 call #xxx# to unblock"),
            ("552 message size 52428800 exceeds limit 26214400", "552 message size #xxx# exceeds limit #xxx#"),
            ("550 id=deadbeefcafebabe rejected", "550 id=#xxx# rejected"),
            ("550 queued as 4Xk2Pq1ZzKz9tV", "550 queued as #xxx#"),
            ("554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0] - mta1234.mail.bf1.yahoo.com",
             "554 delivery error: dd This user doesn't have a yahoo.com account (*) [#xxx#] - #xxx#"),
            ("550 x <bounce@[192.0.2.1]> y", "550 x <*> y"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input), expected, "{input}");
        }
    }

    #[test]
    fn normalize_is_idempotent_and_matches_parsed_form() {
        let samples = [
            "550-5.1.1 line one 123\r\n550 5.1.1 line two <a@b.example>",
            "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred - 4.16.55.1",
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "  ",
            "connect to mx.example.com[192.0.2.1]:25: Connection refused",
        ];
        for raw in samples {
            let once = normalize(raw);
            assert_eq!(normalize(&once), once, "{raw}");
            if let Some(reply) = parse_reply(raw) {
                let display = Failure::from(reply).to_string();
                assert_eq!(normalize(&display), once, "{raw}");
            }
        }
        assert_eq!(normalize("  "), "");
    }

    #[test]
    fn words_and_hosts_without_digits_are_kept() {
        assert_eq!(
            normalize("550 Rejected by header based Anti-Spoofing policy"),
            "550 Rejected by header based Anti-Spoofing policy"
        );
        assert_eq!(
            normalize("554 defaced mx.example.com gsmtp"),
            "554 defaced mx.example.com gsmtp"
        );
    }
}

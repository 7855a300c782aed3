//! A mailer daemon's short notice: a reason and the failed address.

use std::sync::LazyLock;

use regex::Regex;

use super::{action_of, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::{fields, RecipientStatus};

/// An address in angle brackets.
static ANGLE_ADDRESS: LazyLock<Regex> = LazyLock::new(|| re(r"<([^<>\s]+@[^<>\s]+)>"));
/// A line that starts with a bare address (a listing of failed recipients).
static LEADING_ADDRESS: LazyLock<Regex> =
    LazyLock::new(|| re(r#"^[\s*"'-]*([^\s<>@"',;:()]+@[^\s<>@"',;:()]+\.[a-zA-Z]{2,})\b"#));
/// Lines of a notice that are read.
const NOTICE_LINES: usize = 40;
/// Local parts of a receiving system's own addresses, named in notices as
/// contacts ("please write to postmaster@..."), never a failed recipient.
const ADMIN_LOCAL_PARTS: &[&str] = &[
    "postmaster",
    "mailer-daemon",
    "abuse",
    "hostmaster",
    "webmaster",
    "noreply",
    "no-reply",
    "root",
];

/// A short notice from a mailer daemon that follows no known MTA's wording
/// but names the failed address and says why ("Delivery to <a@b> failed:
/// mailbox is full", "<a@b> is not a registered user.", or the address
/// alone on a line under "... was not delivered to:"). The caller only asks
/// when the mail looks like a bounce. Addresses in angle brackets are
/// preferred; without any, addresses that start a line are taken. `exclude`
/// are the notice's own addresses (its From and To), never a failed
/// recipient, and neither are postmaster-like contacts. The reason is the
/// line naming the address, without it, or the next line that says
/// something when that one does not.
pub(in crate::bounce) fn notice(
    text: &str,
    subject: &str,
    exclude: &[String],
) -> Option<Vec<RecipientStatus>> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(NOTICE_LINES)
        .collect();
    let action = action_of(text, subject);
    let skip = |address: &str, out: &[RecipientStatus]| {
        let local = address.split('@').next().unwrap_or("");
        exclude.iter().any(|e| e.eq_ignore_ascii_case(address))
            || ADMIN_LOCAL_PARTS.contains(&local)
            || out
                .iter()
                .any(|r| r.final_recipient.as_deref() == Some(address))
            || fields::bare_address(address).is_none()
    };
    let says_something = |s: &str| s.chars().filter(|c| c.is_alphabetic()).count() >= 8;
    let reason_at = |i: usize, rest: &str| -> String {
        if says_something(rest) {
            return rest.to_string();
        }
        lines
            .iter()
            .skip(i + 1)
            .take(3)
            .find(|l| says_something(l) && !l.ends_with(':'))
            .map_or_else(String::new, |l| l.to_string())
    };
    let mut out: Vec<RecipientStatus> = Vec::new();
    for pass in [&*ANGLE_ADDRESS, &*LEADING_ADDRESS] {
        for (i, line) in lines.iter().enumerate() {
            for c in pass.captures_iter(line) {
                let address = c[1].to_ascii_lowercase();
                if skip(&address, &out) {
                    continue;
                }
                let rest = line.replacen(&c[0], "", 1);
                let rest = rest.trim_matches(|c: char| {
                    c.is_whitespace() || matches!(c, ':' | ',' | '-' | '.' | '*')
                });
                out.push(recipient(Some(address), action, &reason_at(i, rest)));
                if out.len() >= MAX_RECIPIENTS {
                    return Some(out);
                }
            }
        }
        if !out.is_empty() {
            return Some(out);
        }
    }
    None
}

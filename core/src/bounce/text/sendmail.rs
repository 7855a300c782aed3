//! Text bounces of Sendmail: "----- The following addresses had permanent
//! fatal errors -----".

use std::sync::LazyLock;

use regex::Regex;

use super::{is_warning, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::{fields, Action, RecipientStatus};

static SENDMAIL_LIST: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?im)^[ \t]*-+[ \t]*the following addresses? (?:had|has) (permanent fatal errors|transient non-fatal errors|delivery problems)[ \t]*-*[ \t]*$",
    )
});
static SENDMAIL_TRANSCRIPT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t]*-+[ \t]*transcript of session follows[ \t]*-*[ \t]*$"));
static SENDMAIL_REASON: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\(reason:\s*(.*?)\)?\s*$"));
static TRANSCRIPT_ADDRESS: LazyLock<Regex> =
    LazyLock::new(|| re(r"^<?([^<>\s]+@[^<>\s]+?)>?\.\.\.\s*(.+)$"));
static TRANSCRIPT_REPLY: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:<<<\s*)?([45]\d\d[ -].*)$"));

pub(super) fn sendmail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let list = SENDMAIL_LIST.captures(text)?;
    let whole = list.get(0).expect("group 0");
    let kind = list[1].to_ascii_lowercase();
    let action = if kind.starts_with("transient") || is_warning("", subject) {
        Action::Delayed
    } else {
        Action::Failed
    };
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    for line in text[whole.end()..].lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            if found.is_empty() {
                continue;
            }
            break;
        }
        if trimmed.starts_with("-----") {
            break;
        }
        if trimmed.starts_with('(') {
            if let (Some(c), Some(last)) = (SENDMAIL_REASON.captures(trimmed), found.last_mut()) {
                last.1 = Some(c[1].to_string());
            }
            continue;
        }
        let (token, rest) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        if let Some(address) = fields::bare_address(token) {
            let reason = SENDMAIL_REASON.captures(rest).map(|c| c[1].to_string());
            found.push((address, reason));
            if found.len() >= MAX_RECIPIENTS {
                break;
            }
        }
    }
    // No "(reason: ...)": the transcript says what the remote server answered.
    let transcript = SENDMAIL_TRANSCRIPT
        .find(text)
        .map_or("", |m| &text[m.end()..]);
    let mut per_address: Vec<(String, String)> = Vec::new();
    let mut first_reply = None;
    let mut lines = transcript.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(c) = TRANSCRIPT_ADDRESS.captures(line.trim()) {
            let mut reason = c[2].to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) && !next.trim().is_empty() {
                    reason.push(' ');
                    reason.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            if per_address.len() < MAX_RECIPIENTS {
                per_address.push((c[1].to_ascii_lowercase(), reason));
            }
        } else if first_reply.is_none() {
            if let Some(c) = TRANSCRIPT_REPLY.captures(line.trim()) {
                first_reply = Some(c[1].to_string());
            }
        }
    }
    Some(
        found
            .into_iter()
            .map(|(address, reason)| {
                let reason = reason
                    .or_else(|| {
                        per_address
                            .iter()
                            .find(|(a, _)| a.eq_ignore_ascii_case(&address))
                            .map(|(_, r)| r.clone())
                    })
                    .or_else(|| first_reply.clone())
                    .unwrap_or_default();
                recipient(Some(address), action, &reason)
            })
            .collect(),
    )
}

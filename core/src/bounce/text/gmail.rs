//! Text bounces of Gmail / Google Workspace (before Google sent DSNs).

use std::sync::LazyLock;

use regex::Regex;

use super::{is_warning, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::{fields, Action, RecipientStatus};

static GMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)delivery to the following recipients? (failed permanently|has been delayed|was unsuccessful)",
    )
});
static GMAIL_DETAILS: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?is)technical details of (?:permanent|temporary) failure:?(.*)"));
static GMAIL_SERVER_SAID: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?is)the error that the other server returned was:?(.*)"));

pub(super) fn gmail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let intro = GMAIL.captures(text)?;
    let whole = intro.get(0).expect("group 0");
    let action = if intro[1].eq_ignore_ascii_case("has been delayed") || is_warning("", subject) {
        Action::Delayed
    } else {
        Action::Failed
    };
    let after = &text[whole.end()..];
    let after = after.split_once('\n').map_or("", |(_, rest)| rest);
    let mut addresses = Vec::new();
    for line in after.lines() {
        if line.trim().is_empty() {
            if addresses.is_empty() {
                continue;
            }
            break;
        }
        if let Some(address) = fields::bare_address(line) {
            addresses.push(address);
        }
        if addresses.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    let details = GMAIL_DETAILS
        .captures(after)
        .map_or("", |c| c.get(1).map_or("", |m| m.as_str()));
    let diagnostic = GMAIL_SERVER_SAID
        .captures(details)
        .and_then(|c| c.get(1))
        .map_or(details, |m| m.as_str());
    Some(
        addresses
            .into_iter()
            .map(|a| recipient(Some(a), action, diagnostic))
            .collect(),
    )
}

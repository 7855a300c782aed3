//! Text bounces of Smail: "Failed addresses follow:" and "Message log
//! follows:" sections.

use std::sync::LazyLock;

use regex::Regex;

use super::{action_of, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::RecipientStatus;

static SMAIL_FAILED: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t|]*-*[ \t]*failed addresses follow:?[ \t]*-*[ \t|]*$"));
static SMAIL_LOG: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t|]*-*[ \t]*message log follows:?[ \t]*-*[ \t|]*$"));
/// The line that starts any Smail section.
static SMAIL_SECTION: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[ \t]*\|?-{5,}.*follows?:?[ \t]*-*\|?[ \t]*$"));
/// `address ... reason`, the address bare or in angle brackets.
static SMAIL_ENTRY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[ \t]*<?([^<>\s]+@[^<>\s]+?)>?(?:[ \t]*\.\.\.[ \t]*(.*))?$"));

/// The lines of the section that starts right after `start`.
fn smail_section(text: &str, start: usize) -> impl Iterator<Item = &str> {
    text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !SMAIL_SECTION.is_match(l))
}

pub(super) fn smail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let failed = SMAIL_FAILED.find(text)?;
    let action = action_of("", subject);
    // The message log says why, per address ("<a@b> ... mailbox full") or
    // for the whole message.
    let mut log_per_address: Vec<(String, String)> = Vec::new();
    let mut log_text: Vec<&str> = Vec::new();
    if let Some(log) = SMAIL_LOG.find(text) {
        for line in smail_section(text, log.start()) {
            match SMAIL_ENTRY.captures(line) {
                Some(c) if c.get(2).is_some() => {
                    log_per_address.push((c[1].to_ascii_lowercase(), c[2].to_string()));
                }
                _ if !line.trim().is_empty() => log_text.push(line.trim()),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for line in smail_section(text, failed.start()) {
        let Some(c) = SMAIL_ENTRY.captures(line) else {
            continue;
        };
        let address = c[1].to_ascii_lowercase();
        let logged = log_per_address
            .iter()
            .find(|(a, _)| *a == address)
            .map(|(_, r)| r.as_str());
        let reason = match (c.get(2).map(|m| m.as_str()), logged) {
            // The log usually says more than the one-word reason.
            (_, Some(logged)) => logged.to_string(),
            (Some(own), None) if !own.trim().is_empty() => own.to_string(),
            _ => log_text.join(" "),
        };
        out.push(recipient(Some(address), action, &reason));
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    Some(out)
}

//! Text bounces of qmail and Yahoo: `"<address>:"` then the reason, blocks
//! separated by blank lines.

use std::sync::LazyLock;

use regex::Regex;

use super::{action_of, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::{Action, RecipientStatus};

static QMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^hi\. this is the qmail|this is the qmail-send program"));
static YAHOO: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)sorry, we were unable to deliver your message to the following address")
});
static ANGLE_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"^[ \t]*<([^<>\s]+@[^<>\s]+)>:?[ \t]*$"));
static REMOTE_SAID: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^remote host said:\s*"));

pub(super) fn qmail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let start = QMAIL.find(text)?.end();
    Some(angle_blocks(
        &text[start..],
        action_of(&text[start..], subject),
    ))
}

pub(super) fn yahoo(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let start = YAHOO.find(text)?.end();
    Some(angle_blocks(
        &text[start..],
        action_of(&text[start..], subject),
    ))
}

fn angle_blocks(text: &str, action: Action) -> Vec<RecipientStatus> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        if let Some(c) = ANGLE_LINE.captures(line) {
            if let Some((address, lines)) = current.take() {
                out.push(recipient(Some(address), action, &lines.join(" ")));
            }
            current = Some((c[1].to_string(), Vec::new()));
            continue;
        }
        let Some((_, lines)) = current.as_mut() else {
            continue;
        };
        if line.trim().is_empty() {
            if !lines.is_empty() {
                let (address, lines) = current.take().expect("current is some");
                out.push(recipient(Some(address), action, &lines.join(" ")));
            }
            continue;
        }
        let line = line.trim();
        let line = REMOTE_SAID.find(line).map_or(line, |m| &line[m.end()..]);
        lines.push(line);
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    if let Some((address, lines)) = current {
        out.push(recipient(Some(address), action, &lines.join(" ")));
    }
    out
}

//! Text bounces of Postfix without DSN: `"<address>: reason"` with indented
//! continuation lines.

use std::sync::LazyLock;

use regex::Regex;

use super::{action_of, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::RecipientStatus;

static POSTFIX: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t]*this is the (?:postfix program|mail system) at host"));
static POSTFIX_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| re(r"^<([^<>\s]+@[^<>\s]+)>(?:[ \t]*\(expanded from <[^>]*>\))?:[ \t]*(.*)$"));

pub(super) fn postfix(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let start = POSTFIX.find(text)?.end();
    let body = &text[start..];
    let action = action_of(body, subject);
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in body.lines() {
        if let Some(c) = POSTFIX_BLOCK.captures(line) {
            if let Some((address, lines)) = current.take() {
                out.push(recipient(Some(address), action, &lines.join(" ")));
                if out.len() >= MAX_RECIPIENTS {
                    return Some(out);
                }
            }
            let first = c.get(2).map_or("", |m| m.as_str());
            current = Some((c[1].to_string(), vec![first]));
        } else if line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            if let Some((_, lines)) = current.as_mut() {
                lines.push(line.trim());
            }
        } else if let Some((address, lines)) = current.take() {
            out.push(recipient(Some(address), action, &lines.join(" ")));
        }
    }
    if let Some((address, lines)) = current {
        out.push(recipient(Some(address), action, &lines.join(" ")));
    }
    Some(out)
}

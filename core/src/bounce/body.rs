//! The report's text as the recognizers read it: its plain-text parts (or
//! its HTML without tags), or the raw body when the MIME structure is broken.

use std::sync::LazyLock;

use regex::Regex;

use super::mime;
use super::{MAX_HEADER_BYTES, MAX_TEXT_BYTES};

/// The body of the raw mail (after its header), as text for the fields
/// reader: lossy, capped, `\n` line ends.
pub(super) fn raw_body(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(MAX_TEXT_BYTES + MAX_HEADER_BYTES)];
    let text = String::from_utf8_lossy(raw).replace('\r', "");
    let body = text.split_once("\n\n").map_or("", |(_, body)| body);
    let mut end = body.len().min(MAX_TEXT_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_string()
}

static INLINE_RETURNED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?im)^content-type:[ \t]*(?:message/rfc822|message/global|text/rfc822-headers|message/rfc822-headers)\b.*$",
    )
    .expect("built-in pattern must compile")
});

/// In a body whose MIME structure is broken: the header of the returned
/// message, after its inline `Content-Type: message/rfc822` (or
/// `text/rfc822-headers`) line and that part's own header.
pub(super) fn inline_returned(body: &str) -> &str {
    let Some(m) = INLINE_RETURNED.find(body) else {
        return "";
    };
    let after = &body[m.end()..];
    after
        .split_once("\n\n")
        .map_or("", |(_, returned)| returned)
}

/// The report's text for the text recognizers: its plain-text parts (or,
/// without any, its HTML with the tags dropped), `\n` line ends, capped.
pub(super) fn report_text(mail: &mime::Mail) -> String {
    let mut text = String::new();
    for part in mail.parts.iter().filter(|p| p.is_plain_text()) {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&part.text);
        if text.len() >= MAX_TEXT_BYTES {
            break;
        }
    }
    if text.trim().is_empty() {
        for part in mail.parts.iter().filter(|p| p.ctype == "text/html") {
            text.push_str(&strip_tags(&part.text));
            text.push('\n');
            if text.len() >= MAX_TEXT_BYTES {
                break;
            }
        }
    }
    let mut end = text.len().min(MAX_TEXT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.replace('\r', "")
}

/// HTML to text, crudely: tags dropped, block ends become line ends.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag.trim_start_matches('/').to_ascii_lowercase();
                if ["br", "p", "div", "tr", "li"]
                    .iter()
                    .any(|t| name.starts_with(t))
                {
                    out.push('\n');
                }
            }
            (true, c) => {
                if tag.len() < 8 {
                    tag.push(c);
                }
            }
            (false, c) => out.push(c),
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

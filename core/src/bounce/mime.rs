//! The MIME structure of a report, read with `mail-parser` (which decodes
//! transfer encodings and charsets) and flattened into the leaf parts of
//! the report itself. Parts of a returned message (`message/rfc822`) are
//! not descended into: a returned message that is itself a bounce must not
//! be taken for the report.
//!
//! mail-parser 0.11 loses track of its parts when a `message/rfc822` (or
//! `message/global`) part that is not base64 or quoted-printable holds,
//! right away, another message of that type, and the multipart around them
//! ends there: a debug assertion fails ("Invalid part ID, could not find
//! multipart"), and a build without debug assertions goes on with a wrong
//! structure. mail-parser 1.0 is a rewrite that needs a newer compiler.
//! As nothing here looks inside a returned message, the parser is not let
//! into one: [`hide_message_types`] changes the last letter of every
//! `rfc822` and `global` in a copy of the mail, so that no part is of type
//! `message/rfc822` or `message/global` for the parser (they come out as
//! opaque bodies, the raw text of the returned message, which is what was
//! kept of them before), and [`unhide`] puts the letters back in every
//! text taken from it.

use std::borrow::Cow;

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// Text kept per part. Reports put what matters first; a returned message
/// with large attachments is only read for its header.
const MAX_PART_BYTES: usize = 512 * 1024;
/// Leaf parts kept.
const MAX_PARTS: usize = 200;

/// One leaf part of the report.
#[derive(Debug)]
pub(super) struct Part {
    /// `type/subtype`, lowercased (`text/plain` when the part names none).
    pub ctype: String,
    /// The decoded content: text as decoded by the parser, other parts as
    /// lossy UTF-8 (a delivery-status part in an odd charset is still
    /// readable), a returned message as its raw text.
    pub text: String,
}

impl Part {
    /// Whether the part holds (the header of) a returned message.
    pub fn is_returned_message(&self) -> bool {
        matches!(
            self.ctype.as_str(),
            "message/rfc822"
                | "message/global"
                | "text/rfc822-headers"
                | "text/rfc822"
                | "message/rfc822-headers"
                | "message/global-headers"
        )
    }

    /// Whether the part is human-readable report text.
    pub fn is_plain_text(&self) -> bool {
        self.ctype.starts_with("text/") && !self.is_returned_message() && self.ctype != "text/html"
    }
}

/// The report as a whole.
#[derive(Debug)]
pub(super) struct Mail {
    /// The decoded `Subject`.
    pub subject: Option<String>,
    /// The top-level `type/subtype`, lowercased.
    pub root_type: String,
    /// The `report-type` parameter of a `multipart/report`, lowercased.
    pub report_type: Option<String>,
    /// Leaf parts, in order (the root itself when it is not multipart).
    pub parts: Vec<Part>,
}

/// Parse `raw`; `None` when it has no header at all.
pub(super) fn read(raw: &[u8]) -> Option<Mail> {
    let hidden = hide_message_types(raw);
    let message = MessageParser::default().parse(hidden.as_ref())?;
    let root = message.parts.first()?;
    let root_type = content_type(root);
    let report_type = root
        .content_type()
        .and_then(|ct| ct.attribute("report-type"))
        .map(|t| unhide(t.trim().to_ascii_lowercase()));
    let mut parts = Vec::new();
    for part in &message.parts {
        if parts.len() >= MAX_PARTS {
            break;
        }
        let text = match &part.body {
            PartType::Multipart(_) => continue,
            PartType::Text(text) | PartType::Html(text) => capped_str(text),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => capped_bytes(bytes),
            // Only a part of a `multipart/digest` that names no type is
            // still parsed as a message; `raw_message` needs a part.
            PartType::Message(inner) if inner.parts.is_empty() => String::new(),
            PartType::Message(inner) => capped_bytes(inner.raw_message()),
        };
        parts.push(Part {
            ctype: content_type(part),
            text: unhide(text),
        });
    }
    Some(Mail {
        subject: message
            .subject()
            .map(|s| unhide(s.trim().to_string()))
            .filter(|s| !s.is_empty()),
        root_type,
        report_type,
        parts,
    })
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => unhide(match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        }),
        None => "text/plain".to_string(),
    }
}

/// The words whose last letter [`hide_message_types`] changes, and what it
/// becomes: a subtype is one run of bytes in the mail, so a type whose
/// subtype is `rfc822` or `global` (in any case) cannot survive. The new
/// letters are token characters, so header fields keep their shape.
const HIDDEN: [(&[u8; 5], u8, u8); 3] = [
    (b"rfc82", b'2', b'~'),
    (b"globa", b'l', b'~'),
    (b"globa", b'L', b'^'),
];

/// `raw` with every `rfc822` and `global` (any case) changed as
/// [`HIDDEN`] says; borrowed when it holds none.
fn hide_message_types(raw: &[u8]) -> Cow<'_, [u8]> {
    let mut out = Cow::Borrowed(raw);
    for i in 5..raw.len() {
        let found = HIDDEN.iter().find(|(stem, last, _)| {
            raw[i] == *last && raw[i - 5..i].eq_ignore_ascii_case(&stem[..])
        });
        if let Some((_, _, hidden)) = found {
            out.to_mut()[i] = *hidden;
        }
    }
    out
}

/// Undoes [`hide_message_types`] in a text taken from the parsed copy
/// (decoded texts included: the changed letters are ASCII, so they decode
/// as themselves in any charset a report uses).
fn unhide(text: String) -> String {
    let bytes = text.as_bytes();
    let mut restore = Vec::new();
    for i in 5..bytes.len() {
        let found = HIDDEN.iter().find(|(stem, _, hidden)| {
            bytes[i] == *hidden && bytes[i - 5..i].eq_ignore_ascii_case(&stem[..])
        });
        if let Some((_, last, _)) = found {
            restore.push((i, *last));
        }
    }
    if restore.is_empty() {
        return text;
    }
    let mut bytes = text.into_bytes();
    for (i, last) in restore {
        bytes[i] = last;
    }
    // Only ASCII bytes were swapped for ASCII bytes: still UTF-8.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn capped_str(text: &str) -> String {
    let mut end = text.len().min(MAX_PART_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace("\r\n", "\n")
}

fn capped_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_PART_BYTES)]).replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `message/rfc822` part that holds a `message/rfc822` right away,
    /// where the multipart around them ends: the input on which mail-parser
    /// 0.11 fails its assertion (found by the `bounce_parse` fuzz target;
    /// also in `fuzz/regressions/bounce_parse/`).
    const MESSAGE_IN_MESSAGE: &[u8] =
        include_bytes!("fixtures/message-in-message-at-closing-boundary.eml");

    #[test]
    fn a_message_in_a_message_is_read_without_entering_it() {
        // No catch_unwind here: a panic fails the test.
        let mail = read(MESSAGE_IN_MESSAGE).expect("a mail");
        assert_eq!(mail.root_type, "multipart/mixed");
        assert_eq!(mail.parts.len(), 1, "{:?}", mail.parts);
        let returned = &mail.parts[0];
        assert_eq!(returned.ctype, "message/rfc822");
        assert!(returned.is_returned_message());
        assert_eq!(
            returned.text,
            "Content-Type: message/rfc822\n\nSubject: inner\n\ntext"
        );
        let parsed = super::super::parse_unguarded(MESSAGE_IN_MESSAGE);
        assert!(matches!(
            parsed.report,
            super::super::Report::Unrecognized(_)
        ));
    }

    /// When this fails, mail-parser no longer asserts on the input, and
    /// [`hide_message_types`] may not be needed any more.
    #[test]
    #[cfg(debug_assertions)]
    fn mail_parser_itself_still_fails_on_a_message_in_a_message() {
        let unguarded = std::panic::catch_unwind(|| {
            MessageParser::default()
                .parse(MESSAGE_IN_MESSAGE)
                .map(|m| m.parts.len())
        });
        assert!(unguarded.is_err());
    }

    #[test]
    fn hidden_words_come_back_as_they_were_in_every_text() {
        let raw = "Subject: Global RFC822 notice\r\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nThe GLOBAL relay said: rfc822 global GlobaL.\r\n\
            --b\r\nContent-Type: message/global-delivery-status\r\n\r\n\
            Final-Recipient: RFC822; a@x.example\r\nStatus: 5.1.1\r\n\
            --b\r\nContent-Type: Text/RFC822-Headers\r\n\r\nMessage-ID: <1@x.example>\r\n\
            --b--\r\n";
        assert!(hide_message_types(raw.as_bytes())
            .windows(6)
            .all(|w| !w.eq_ignore_ascii_case(b"rfc822") && !w.eq_ignore_ascii_case(b"global")));
        let mail = read(raw.as_bytes()).expect("a mail");
        assert_eq!(mail.subject.as_deref(), Some("Global RFC822 notice"));
        assert_eq!(mail.report_type.as_deref(), Some("delivery-status"));
        let shown: Vec<(&str, &str)> = mail
            .parts
            .iter()
            .map(|p| (p.ctype.as_str(), p.text.trim_end()))
            .collect();
        assert_eq!(
            shown,
            vec![
                ("text/plain", "The GLOBAL relay said: rfc822 global GlobaL."),
                (
                    "message/global-delivery-status",
                    "Final-Recipient: RFC822; a@x.example\nStatus: 5.1.1"
                ),
                ("text/rfc822-headers", "Message-ID: <1@x.example>"),
            ]
        );
    }

    #[test]
    fn a_message_part_keeps_its_raw_text() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n\
            --b\r\nContent-Type: message/rfc822\r\n\r\n\
            Message-ID: <7@x.example>\r\nSubject: hi\r\n\r\nbody\r\n\
            --b--\r\n";
        let mail = read(raw).expect("a mail");
        assert_eq!(mail.parts.len(), 1);
        assert_eq!(mail.parts[0].ctype, "message/rfc822");
        assert_eq!(
            mail.parts[0].text,
            "Message-ID: <7@x.example>\nSubject: hi\n\nbody"
        );
    }
}

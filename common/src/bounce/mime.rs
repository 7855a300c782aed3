//! The MIME structure of a report, read with `mail-parser` (which decodes
//! transfer encodings and charsets and never panics) and flattened into the
//! leaf parts of the report itself. Parts of a returned message
//! (`message/rfc822`) are not descended into: a returned message that is
//! itself a bounce must not be taken for the report.

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
    let message = MessageParser::default().parse(raw)?;
    let root = message.parts.first()?;
    let root_type = content_type(root);
    let report_type = root
        .content_type()
        .and_then(|ct| ct.attribute("report-type"))
        .map(|t| t.trim().to_ascii_lowercase());
    let mut parts = Vec::new();
    for part in &message.parts {
        if parts.len() >= MAX_PARTS {
            break;
        }
        let text = match &part.body {
            PartType::Multipart(_) => continue,
            PartType::Text(text) | PartType::Html(text) => capped_str(text),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => capped_bytes(bytes),
            PartType::Message(inner) => capped_bytes(inner.raw_message()),
        };
        parts.push(Part {
            ctype: content_type(part),
            text,
        });
    }
    Some(Mail {
        subject: message
            .subject()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        root_type,
        report_type,
        parts,
    })
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".to_string(),
    }
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

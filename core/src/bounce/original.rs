//! What identifies the message a report is about: the headers of the
//! returned copy (attached or quoted), or what an unsubscribe request answers.

use super::fields::{self, Field};
use super::{arf, mime, Original};

/// What an unsubscribe request answers: an attached or quoted copy, else the
/// message id of its `In-Reply-To` / `References`.
pub(super) fn answered_original(mail: &mime::Mail, quoted: &str, header: &[Field]) -> Original {
    let mut original = returned_original(mail, quoted);
    if original.message_id.is_none() {
        original.message_id = ["in-reply-to", "references"]
            .iter()
            .flat_map(|name| fields::all(header, name))
            .flat_map(|v| v.split_whitespace())
            .find_map(fields::message_id);
    }
    original
}

/// The returned message: the first attached one, else the copy quoted in
/// the text (`quoted`: what follows the "copy of the message" line).
pub(super) fn returned_original(mail: &mime::Mail, quoted: &str) -> Original {
    if let Some(part) = mail.parts.iter().find(|p| p.is_returned_message()) {
        return original_from(&fields::header_block(&part.text));
    }
    let quoted = quoted.trim_start_matches(['\r', '\n', ' ', '\t']);
    if quoted.is_empty() {
        return Original::default();
    }
    original_from(&fields::header_block(quoted))
}

/// Every `To` address of a returned message's header (lowercased, without
/// repeats, capped).
pub(super) fn returned_to(header: &[Field]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for address in fields::all(header, "to").flat_map(fields::address_list) {
        let address = address.to_ascii_lowercase();
        if !out.contains(&address) && out.len() < arf::MAX_COMPLAINANTS {
            out.push(address);
        }
    }
    out
}

pub(super) fn original_from(header: &[Field]) -> Original {
    Original {
        mailpipe_id: fields::get(header, "x-mailpipe-id")
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_string),
        message_id: fields::get(header, "message-id").and_then(fields::message_id),
        to: fields::all(header, "to")
            .flat_map(fields::address_list)
            .next(),
        from: fields::get(header, "from").and_then(fields::bare_address),
        return_path: fields::get(header, "return-path").and_then(fields::bare_address),
    }
}

//! RFC 3464 `message/delivery-status` fields: the per-message block
//! (`Reporting-MTA`, ...) then one block per recipient (`Final-Recipient`,
//! `Action`, `Status`, `Diagnostic-Code`, `Remote-MTA`, ...).
//!
//! Lenient where MTAs are sloppy: recipient blocks that are not separated by
//! a blank line are split at each new `Final-Recipient`; stray `MIME-Version`
//! or `Content-Type` lines inside blocks (AOL) are ignored; a missing
//! `Action` is taken from the status class.

use super::fields::{self, Field};
use super::{Action, RecipientStatus};
use crate::classify::EnhancedCode;

/// Recipients kept from one report.
pub(super) const MAX_RECIPIENTS: usize = 1000;

/// What a delivery-status part says.
#[derive(Debug, Default)]
pub(super) struct DeliveryStatus {
    /// `Reporting-MTA` without its type.
    pub reporting_mta: Option<String>,
    /// One entry per recipient block.
    pub recipients: Vec<RecipientStatus>,
}

/// Fields that only occur in a recipient block.
const RECIPIENT_FIELDS: &[&str] = &[
    "final-recipient",
    "original-recipient",
    "action",
    "status",
    "diagnostic-code",
    "remote-mta",
];

/// Read the fields of a delivery-status part.
pub(super) fn parse(text: &str) -> DeliveryStatus {
    let mut out = DeliveryStatus::default();
    for group in fields::groups(text) {
        let is_recipient = group
            .iter()
            .any(|f| RECIPIENT_FIELDS.contains(&f.name.as_str()));
        if !is_recipient {
            if out.reporting_mta.is_none() {
                out.reporting_mta = fields::get(&group, "reporting-mta")
                    .map(|v| fields::strip_type(v).to_string())
                    .filter(|v| !v.is_empty());
            }
            continue;
        }
        // Per-message fields may share the first block with a recipient.
        if out.reporting_mta.is_none() {
            out.reporting_mta = fields::get(&group, "reporting-mta")
                .map(|v| fields::strip_type(v).to_string())
                .filter(|v| !v.is_empty());
        }
        let mut current: Vec<&Field> = Vec::new();
        for field in &group {
            let starts_next = field.name == "final-recipient"
                && current.iter().any(|f| f.name == "final-recipient");
            if starts_next {
                push_recipient(&mut out.recipients, &current);
                current.clear();
            }
            current.push(field);
        }
        push_recipient(&mut out.recipients, &current);
        if out.recipients.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    out
}

fn push_recipient(recipients: &mut Vec<RecipientStatus>, block: &[&Field]) {
    if recipients.len() >= MAX_RECIPIENTS {
        return;
    }
    let get = |name: &str| {
        block
            .iter()
            .find(|f| f.name == name && !f.value.is_empty())
            .map(|f| f.value.as_str())
    };
    let final_recipient = get("final-recipient").and_then(recipient_address);
    let original_recipient = get("original-recipient").and_then(recipient_address);
    let status = get("status").and_then(status_code);
    let action = get("action")
        .and_then(Action::parse)
        .or_else(|| status.as_deref().map(Action::from_status))
        .unwrap_or(Action::Failed);
    if final_recipient.is_none()
        && original_recipient.is_none()
        && get("action").is_none()
        && status.is_none()
    {
        return;
    }
    // Without a Diagnostic-Code, a comment after the status says why
    // (`Status: 4.0.0 (host lookup failed)`).
    let diagnostic = get("diagnostic-code")
        .map(|v| fields::collapse_whitespace(fields::strip_type(v)))
        .filter(|v| !v.is_empty())
        .or_else(|| get("status").and_then(status_comment));
    let remote_mta = get("remote-mta")
        .map(|v| fields::strip_type(v).to_string())
        .filter(|v| !v.is_empty());
    recipients.push(RecipientStatus {
        final_recipient,
        original_recipient,
        action,
        status,
        diagnostic,
        remote_mta,
    });
}

/// `rfc822; <Bob@Example.com>` → `bob@example.com`.
fn recipient_address(value: &str) -> Option<String> {
    fields::bare_address(value).map(|a| a.to_ascii_lowercase())
}

/// A `Status` value in RFC 3464 form (`class.subject.detail`, class 2, 4 or
/// 5, one to three digits each); a trailing comment is dropped (`5.1.1
/// (user unknown)`). `None` for anything else.
pub(super) fn status_code(value: &str) -> Option<String> {
    let first = value.split_whitespace().next()?;
    let first = first.trim_end_matches([',', ';', ')']);
    valid_status(first).then(|| first.to_string())
}

/// The comment after a `Status` code (`4.0.0 (host lookup failed)` →
/// `host lookup failed`), when it says something.
fn status_comment(value: &str) -> Option<String> {
    let code = value.split_whitespace().next()?;
    status_code(code)?;
    let rest = value[value.find(code)? + code.len()..]
        .trim()
        .trim_start_matches(['(', '-', ':', ';'])
        .trim_end_matches(')')
        .trim();
    let rest = fields::collapse_whitespace(rest);
    (rest.chars().filter(|c| c.is_alphabetic()).count() >= 3).then_some(rest)
}

/// Whether `s` is exactly an RFC 3463 code (`[245].subject.detail`), read
/// as the classifier reads one ([`EnhancedCode`]).
pub(super) fn valid_status(s: &str) -> bool {
    s.len() == s.trim().len() && s.parse::<EnhancedCode>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_message_and_recipient_blocks_are_told_apart() {
        let ds = parse(
            "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 no\n\nFinal-Recipient: rfc822; b@example.com\nAction: delayed\nStatus: 4.4.1\n",
        );
        assert_eq!(ds.reporting_mta.as_deref(), Some("mx.example"));
        assert_eq!(ds.recipients.len(), 2);
        assert_eq!(ds.recipients[0].diagnostic.as_deref(), Some("550 5.1.1 no"));
        assert_eq!(ds.recipients[1].action, Action::Delayed);
    }

    #[test]
    fn recipients_without_blank_lines_between_them_are_split() {
        let ds = parse("Final-Recipient: rfc822; a@x.example\nStatus: 5.0.0\nFinal-Recipient: rfc822; b@x.example\nStatus: 4.0.0\n");
        assert_eq!(ds.recipients.len(), 2);
        assert_eq!(ds.recipients[0].action, Action::Failed);
        assert_eq!(ds.recipients[1].action, Action::Delayed);
    }

    #[test]
    fn a_comment_after_the_status_is_the_diagnostic_when_there_is_none() {
        let ds = parse("Final-Recipient: rfc822; a@x.example\nAction: delayed\nStatus: 4.0.0 (host lookup failed)\n\nFinal-Recipient: rfc822; b@x.example\nStatus: 5.0.0 (unknown user)\nDiagnostic-Code: smtp; 550 no such user\n\nFinal-Recipient: rfc822; c@x.example\nStatus: 5.0.0\n");
        assert_eq!(
            ds.recipients[0].diagnostic.as_deref(),
            Some("host lookup failed")
        );
        assert_eq!(ds.recipients[0].status.as_deref(), Some("4.0.0"));
        assert_eq!(
            ds.recipients[1].diagnostic.as_deref(),
            Some("550 no such user")
        );
        assert_eq!(ds.recipients[2].diagnostic, None);
    }

    #[test]
    fn status_must_have_the_rfc_3464_shape() {
        assert_eq!(status_code("5.1.1").as_deref(), Some("5.1.1"));
        assert_eq!(
            status_code("4.7.500 (throttled)").as_deref(),
            Some("4.7.500")
        );
        for bad in [
            "", "5.1", "6.1.1", "5.1.1.1", "5.1234.1", "x.1.1", "550", "5.9.1",
        ] {
            assert_eq!(status_code(bad), None, "{bad}");
        }
    }
}

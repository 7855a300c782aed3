//! A delivery report built from delivery-status fields: several reports of
//! one mail merged, and recipients without a diagnostic given the reason the
//! human-readable text states for their address.

use std::sync::LazyLock;

use regex::Regex;

use super::original::returned_original;
use super::text::{self, TextOutcome};
use super::{dsn, fields, mime};
use super::{DeliveryReport, RecipientStatus};

/// Adds a report's recipients to the ones already read (several reports in one mail).
pub(super) fn merge(merged: &mut Option<DeliveryReport>, report: DeliveryReport) {
    match merged {
        None => *merged = Some(report),
        Some(m) => {
            for r in report.recipients {
                if m.recipients.len() < dsn::MAX_RECIPIENTS && !m.recipients.contains(&r) {
                    m.recipients.push(r);
                }
            }
        }
    }
}

/// A delivery report from delivery-status fields, if they name a recipient.
/// `human` is the report's human-readable text, which says why when a
/// recipient's fields do not (no Diagnostic-Code).
pub(super) fn delivery(
    fields_text: &str,
    standard: bool,
    mail: &mime::Mail,
    quoted: &str,
    human: &str,
    subject: &str,
) -> Option<DeliveryReport> {
    if !standard && !looks_like_status_fields(fields_text) {
        return None;
    }
    let mut status = dsn::parse(fields_text);
    if status.recipients.is_empty()
        || status
            .recipients
            .iter()
            .all(|r| r.final_recipient.is_none() && r.original_recipient.is_none())
    {
        return None;
    }
    fill_diagnostics(&mut status.recipients, human, subject);
    Some(DeliveryReport {
        standard,
        reporting_mta: status.reporting_mta,
        recipients: status.recipients,
        original: returned_original(mail, quoted),
    })
}

/// Recipients whose fields give no diagnostic (only a generic `5.0.0` or
/// `4.0.0`, say) take it from the report's human-readable text: from what a
/// known MTA's wording says about that address, else from the line that
/// names the address (or the line after it).
fn fill_diagnostics(recipients: &mut [RecipientStatus], human: &str, subject: &str) {
    if recipients.iter().all(|r| r.diagnostic.is_some()) || human.trim().is_empty() {
        return;
    }
    let (own, _) = text::split_at_returned_message(human);
    let known = match text::recognize(own, subject, &[]) {
        TextOutcome::Found { recipients, .. } => recipients,
        _ => Vec::new(),
    };
    let lines: Vec<&str> = own
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for r in recipients.iter_mut().filter(|r| r.diagnostic.is_none()) {
        let Some(address) = r
            .final_recipient
            .clone()
            .or_else(|| r.original_recipient.clone())
        else {
            continue;
        };
        let from_text = known
            .iter()
            .find(|k| k.final_recipient.as_deref() == Some(address.as_str()))
            .and_then(|k| k.diagnostic.clone())
            .or_else(|| line_about(&lines, &address));
        r.diagnostic = from_text.filter(|d| !d.is_empty());
    }
}

/// What the text says about `address`: the rest of the line that names it
/// (with its indented continuation), or the next line when that says nothing.
fn line_about(lines: &[&str], address: &str) -> Option<String> {
    let i = lines
        .iter()
        .position(|l| l.to_ascii_lowercase().contains(address))?;
    let lower = lines[i].to_ascii_lowercase();
    let at = lower.find(address)?;
    let rest = lines[i][at + address.len()..]
        .trim_start_matches(['>', ':', ',', ' ', '\t', '"', ')'])
        .trim();
    let rest = if rest.chars().filter(|c| c.is_alphabetic()).count() >= 5 {
        rest.to_string()
    } else {
        lines.get(i + 1)?.to_string()
    };
    Some(fields::collapse_whitespace(&rest))
}

static STATUS_FIELDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?im)^final-recipient:").expect("built-in pattern must compile"));
static STATUS_ACTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?im)^(?:action|status):").expect("built-in pattern must compile")
});

/// Whether free text holds delivery-status fields (`Final-Recipient:` and
/// `Action:` or `Status:` at the start of lines).
fn looks_like_status_fields(text: &str) -> bool {
    STATUS_FIELDS.is_match(text) && STATUS_ACTION.is_match(text)
}

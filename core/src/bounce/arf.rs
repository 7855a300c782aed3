//! RFC 5965 `message/feedback-report` fields (ARF), also used for RFC 6591
//! authentication-failure reports, which share the format.

use super::fields;
use super::{ComplaintReport, Original, RecipientsFrom};

/// Complainants kept from one report.
pub(super) const MAX_COMPLAINANTS: usize = 1000;

/// Read the fields of a feedback-report part. `Err` says why it is not a
/// usable report (RFC 5965 requires `Feedback-Type`). `returned_to` are the
/// `To` addresses of the returned message, the recipients when the report
/// names none (feedback loops that redact or omit `Original-Rcpt-To`).
pub(super) fn parse(
    text: &str,
    original: Original,
    returned_to: Vec<String>,
) -> Result<ComplaintReport, String> {
    // The fields are one block; tolerate blank lines inside it.
    let fields: Vec<fields::Field> = fields::groups(text).into_iter().flatten().collect();
    let feedback_type = fields::get(&fields, "feedback-type")
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.trim_end_matches(';').to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| "feedback report without a Feedback-Type field".to_string())?;
    let text_field = |name: &str| fields::get(&fields, name).map(str::to_string);
    // Every Original-Rcpt-To is a recipient who complained (a report may
    // cover several copies of one message); a value may list several.
    let mut original_rcpt_to: Vec<String> = Vec::new();
    // `Removal-Recipient` is the name older feedback loops (AOL's) gave it.
    let named =
        fields::all(&fields, "original-rcpt-to").chain(fields::all(&fields, "removal-recipient"));
    for address in named.flat_map(fields::address_list) {
        let address = address.to_ascii_lowercase();
        if !original_rcpt_to.contains(&address) && original_rcpt_to.len() < MAX_COMPLAINANTS {
            original_rcpt_to.push(address);
        }
    }
    let original_mail_from =
        fields::all(&fields, "original-mail-from").find_map(fields::bare_address);
    // `Received-Date` is the name used by drafts of the format, still sent by
    // some feedback loops.
    let arrival_date = text_field("arrival-date").or_else(|| text_field("received-date"));
    let reported_domain = fields::get(&fields, "reported-domain")
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.to_ascii_lowercase());
    let (recipients, recipients_from) = if !original_rcpt_to.is_empty() {
        (original_rcpt_to.clone(), RecipientsFrom::OriginalRcptTo)
    } else if !returned_to.is_empty() {
        (returned_to, RecipientsFrom::ReturnedTo)
    } else {
        (Vec::new(), RecipientsFrom::Nowhere)
    };
    Ok(ComplaintReport {
        feedback_type,
        user_agent: text_field("user-agent"),
        original_rcpt_to,
        recipients,
        recipients_from,
        original_mail_from,
        arrival_date,
        reported_domain,
        original,
    })
}

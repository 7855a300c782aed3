//! RFC 5965 `message/feedback-report` fields (ARF), also used for RFC 6591
//! authentication-failure reports, which share the format.

use super::fields;
use super::{ComplaintReport, Original};

/// Read the fields of a feedback-report part. `Err` says why it is not a
/// usable report (RFC 5965 requires `Feedback-Type`).
pub(super) fn parse(text: &str, original: Original) -> Result<ComplaintReport, String> {
    // The fields are one block; tolerate blank lines inside it.
    let fields: Vec<fields::Field> = fields::groups(text).into_iter().flatten().collect();
    let feedback_type = fields::get(&fields, "feedback-type")
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.trim_end_matches(';').to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| "feedback report without a Feedback-Type field".to_string())?;
    let text_field = |name: &str| fields::get(&fields, name).map(str::to_string);
    let original_rcpt_to = fields::all(&fields, "original-rcpt-to")
        .find_map(fields::bare_address)
        .map(|a| a.to_ascii_lowercase());
    let original_mail_from =
        fields::all(&fields, "original-mail-from").find_map(fields::bare_address);
    // `Received-Date` is the name used by drafts of the format, still sent by
    // some feedback loops.
    let arrival_date = text_field("arrival-date").or_else(|| text_field("received-date"));
    let reported_domain = fields::get(&fields, "reported-domain")
        .and_then(|v| v.split_whitespace().next())
        .map(|v| v.to_ascii_lowercase());
    Ok(ComplaintReport {
        feedback_type,
        user_agent: text_field("user-agent"),
        original_rcpt_to,
        original_mail_from,
        arrival_date,
        reported_domain,
        original,
    })
}

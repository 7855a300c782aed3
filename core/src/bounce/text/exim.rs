//! Text bounces of Exim: indented address lines, more indented reason lines.

use std::sync::LazyLock;

use regex::Regex;

use super::{action_of, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::{fields, RecipientStatus};

static EXIM: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)this message was created automatically by mail delivery software"));
static EXIM_REPORT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)could not be delivered to one or more of\s+its\s+recipients|has not yet been delivered to one or more of\s+its\s+recipients",
    )
});
static EXIM_LIST: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?im)(?:address\(es\) failed|addresses failed|address failed|still being retried|has not yet been delivered is|address\(es\) (?:are|is) still being retried)\s*:[ \t]*$",
    )
});

pub(super) fn exim(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let intro = EXIM.find(text)?;
    let report = EXIM_REPORT.find(&text[intro.end()..])?;
    let after = &text[intro.end() + report.end()..];
    let action = action_of(report.as_str(), subject);
    // Without the list's heading, the addresses cannot be told from prose:
    // leave them to X-Failed-Recipients.
    let Some(list) = EXIM_LIST.find(after).map(|m| m.end()) else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    let mut base = None;
    let mut current: Option<(Option<String>, Vec<&str>)> = None;
    for line in after[list..].lines() {
        if line.trim().is_empty() {
            continue;
        }
        let indent = indent_of(line);
        let base = *base.get_or_insert(indent);
        if base == 0 || indent < base || line.trim_start().starts_with("------") {
            break;
        }
        if indent == base {
            if let Some((address, lines)) = current.take() {
                out.push(recipient(address, action, &lines.join(" ")));
                if out.len() >= MAX_RECIPIENTS {
                    return Some(out);
                }
            }
            let trimmed = line.trim();
            let (token, rest) = trimmed
                .split_once(char::is_whitespace)
                .unwrap_or((trimmed, ""));
            let token = token.trim_matches(['<', '>']).trim_end_matches(':');
            let address = fields::bare_address(token).or_else(|| {
                (!token.is_empty() && !token.contains(['|', '/'])).then(|| token.to_string())
            });
            current = Some((address, vec![rest.trim()]));
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.trim());
        }
    }
    if let Some((address, lines)) = current {
        out.push(recipient(address, action, &lines.join(" ")));
    }
    Some(out)
}

fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 8 } else { 1 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::super::recognize;
    use super::super::tests::found;
    use crate::bounce::Action;

    #[test]
    fn exim_delay_warnings_are_delayed() {
        let text = "This message was created automatically by mail delivery software.\nA message that you sent has not yet been delivered to one or more of its\nrecipients after more than 24 hours on the queue on mx.example.net.\n\nThe address to which the message has not yet been delivered is:\n\n  fullbox@example.com\n    Delay reason: mailbox is full\n\nNo action is required on your part.\n";
        let (mta, r) = found(recognize(text, "Warning: message delayed", &[]));
        assert_eq!(mta, "exim");
        assert_eq!(r[0].action, Action::Delayed);
        assert_eq!(r[0].final_recipient.as_deref(), Some("fullbox@example.com"));
        assert_eq!(
            r[0].diagnostic.as_deref(),
            Some("Delay reason: mailbox is full")
        );
    }
}

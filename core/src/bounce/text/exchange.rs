//! Text bounces of Microsoft Exchange: 5.5 to 2003 ("did not reach the
//! following recipient(s):", where a recipient may be named only by its
//! display name), and Exchange 2007+ / Office 365 text (usually alongside a
//! DSN).

use std::sync::LazyLock;

use regex::Regex;

use super::{action_of, is_warning, re, recipient};
use crate::bounce::dsn::MAX_RECIPIENTS;
use crate::bounce::{fields, Action, RecipientStatus};

// ----- Exchange 5.5 to 2003: "did not reach the following recipient(s):"

static EXCHANGE2003: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)did not reach the following recipient\(s\):?"));
/// A recipient line: an address or a display name, then "on <date>".
static EXCHANGE2003_RECIPIENT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^[ \t]*(\S.*?)\s+on\s+(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s+\d|\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}|\d{1,2}\s+[a-z]{3,}\s+\d{2,4})",
    )
});
/// The "To:" line of the "Your message" block.
static EXCHANGE2003_TO: LazyLock<Regex> = LazyLock::new(|| re(r"(?im)^[ \t]*to:[ \t]*(.+)$"));

pub(super) fn exchange2003(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let intro = EXCHANGE2003.find(text)?;
    let action = action_of("", subject);
    // Where a recipient is named by its display name only, its address is
    // the "To:" of the "Your message" block, else the one in the Subject.
    let fallback = || {
        EXCHANGE2003_TO
            .captures(&text[..intro.start()])
            .and_then(|c| fields::bare_address(&c[1]))
            .or_else(|| fields::bare_address(subject))
    };
    let mut out: Vec<(Option<String>, Vec<&str>)> = Vec::new();
    let mut open = false;
    for line in text[intro.end()..].lines() {
        if let Some(c) = EXCHANGE2003_RECIPIENT.captures(line) {
            out.push((fields::bare_address(&c[1]), Vec::new()));
            open = true;
        } else if line.trim().is_empty() {
            open = false;
        } else if open {
            if let Some((_, lines)) = out.last_mut() {
                lines.push(line.trim());
            }
        }
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    let unnamed = out.iter().filter(|(a, _)| a.is_none()).count();
    Some(
        out.into_iter()
            .filter_map(|(address, lines)| {
                let address = match address {
                    Some(a) => a,
                    // Only one unnamed recipient can be told by the fallback.
                    None if unnamed == 1 => fallback()?,
                    None => return None,
                };
                Some(recipient(Some(address), action, &lines.join(" ")))
            })
            .collect(),
    )
}

// ----- Exchange 2007+ / Office 365 text (usually alongside a DSN)

static EXCHANGE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)delivery (has failed|is delayed) to these recipients or (?:groups|distribution lists):?",
    )
});
static EXCHANGE_ADMIN: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)diagnostic information for administrators:?"));

pub(super) fn exchange(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let intro = EXCHANGE.captures(text)?;
    let whole = intro.get(0).expect("group 0");
    let action = if intro[1].eq_ignore_ascii_case("is delayed") || is_warning("", subject) {
        Action::Delayed
    } else {
        Action::Failed
    };
    let after = &text[whole.end()..];
    let (user_part, admin_part) = match EXCHANGE_ADMIN.find(after) {
        Some(m) => (&after[..m.start()], &after[m.end()..]),
        None => (after, ""),
    };
    // The users' part: an address line, then a paragraph describing the failure.
    let mut found: Vec<(String, Vec<&str>)> = Vec::new();
    for line in user_part.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match fields::bare_address(trimmed).filter(|a| names_only_address(trimmed, a)) {
            Some(address) => found.push((address, Vec::new())),
            None => {
                if let Some((_, lines)) = found.last_mut() {
                    lines.push(trimmed);
                }
            }
        }
        if found.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    // The administrators' part: "address" then "#550 5.1.1 RESOLVER...; text ##".
    let mut admin: Vec<(String, String)> = Vec::new();
    let mut last_address: Option<String> = None;
    for line in admin_part.lines() {
        let trimmed = line.trim();
        if let Some(reply) = trimmed.strip_prefix('#') {
            if let Some(address) = last_address.take().filter(|_| admin.len() < MAX_RECIPIENTS) {
                let reply = reply.split("##").next().unwrap_or(reply);
                admin.push((address.to_ascii_lowercase(), reply.trim().to_string()));
            }
        } else if let Some(address) = fields::bare_address(trimmed) {
            last_address = Some(address);
        }
    }
    Some(
        found
            .into_iter()
            .map(|(address, lines)| {
                let diagnostic = admin
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(&address))
                    .map(|(_, d)| d.clone())
                    .unwrap_or_else(|| lines.join(" "));
                recipient(Some(address), action, &diagnostic)
            })
            .collect(),
    )
}

/// Whether an Exchange line is an address line (`a@b`, `a@b<mailto:a@b>`,
/// `Name (a@b)`), not a sentence that happens to contain an address.
fn names_only_address(line: &str, address: &str) -> bool {
    line.len() <= 320
        && (line.starts_with(address)
            || line.ends_with(&format!("({address})"))
            || line.ends_with(&format!("<{address}>")))
}

#[cfg(test)]
mod tests {
    use super::super::recognize;
    use super::super::tests::found;

    #[test]
    fn exchange_text_prefers_the_administrators_reply() {
        let text = "Delivery has failed to these recipients or groups:\n\nJohn Doe (john@example.com)\nThe email address you entered couldn't be found.\n\nDiagnostic information for administrators:\n\nGenerating server: mx.example.com\n\njohn@example.com\n#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n";
        let (mta, r) = found(recognize(text, "Undeliverable: hi", &[]));
        assert_eq!(mta, "exchange");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].final_recipient.as_deref(), Some("john@example.com"));
        assert_eq!(
            r[0].diagnostic.as_deref(),
            Some("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found")
        );
        assert_eq!(r[0].status.as_deref(), Some("5.1.1"));
    }
}

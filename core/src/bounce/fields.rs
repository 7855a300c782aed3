//! Header-style field blocks and addresses, as the reports write them.
//!
//! One reader serves the top-level header of a report, the fields of a
//! `message/delivery-status` or `message/feedback-report` part and the header
//! of a returned message: `Name: value` lines, continuation lines folded in,
//! names compared without regard to case, blocks separated by blank lines.
//! Lines that are neither a field nor a continuation are skipped, as real
//! reports carry stray text. Everything is capped so that a hostile report
//! costs bounded memory.

/// Longest value kept, in characters; the rest is cut (a folded field that
/// goes on for megabytes is an attack or a broken report, not information).
const MAX_VALUE_CHARS: usize = 4096;
/// Fields kept per block.
const MAX_FIELDS: usize = 2000;
/// Blocks kept per text (a delivery-status part has one per recipient).
const MAX_GROUPS: usize = 1001;

/// One `Name: value` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    /// The name, lowercased.
    pub name: String,
    /// The value with continuation lines joined by one space, trimmed.
    pub value: String,
}

/// The blocks of fields of `text`, split at blank lines (leading and
/// repeated blank lines give no empty block).
pub(super) fn groups(text: &str) -> Vec<Vec<Field>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
                if out.len() >= MAX_GROUPS {
                    return out;
                }
            }
            continue;
        }
        push_line(&mut current, line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The header block at the start of `text`: fields up to the first blank line.
pub(super) fn header_block(text: &str) -> Vec<Field> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            break;
        }
        push_line(&mut fields, line);
    }
    fields
}

fn push_line(fields: &mut Vec<Field>, line: &str) {
    if line.starts_with([' ', '\t']) {
        if let Some(last) = fields.last_mut() {
            let rest = line.trim();
            if !rest.is_empty() && last.value.len() < MAX_VALUE_CHARS {
                if !last.value.is_empty() {
                    last.value.push(' ');
                }
                last.value.push_str(rest);
                truncate_chars(&mut last.value, MAX_VALUE_CHARS);
            }
        }
        return;
    }
    if fields.len() >= MAX_FIELDS {
        return;
    }
    let Some((name, value)) = line.split_once(':') else {
        return;
    };
    let name = name.trim_end();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return;
    }
    let mut value = value.trim().to_string();
    truncate_chars(&mut value, MAX_VALUE_CHARS);
    fields.push(Field {
        name: name.to_ascii_lowercase(),
        value,
    });
}

/// Cut `s` to at most `max` characters.
pub(super) fn truncate_chars(s: &mut String, max: usize) {
    if let Some((cut, _)) = s.char_indices().nth(max) {
        s.truncate(cut);
    }
}

/// The first non-empty value of field `name` (lowercase).
pub(super) fn get<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|f| f.name == name && !f.value.is_empty())
        .map(|f| f.value.as_str())
}

/// Every non-empty value of field `name` (lowercase), in order.
pub(super) fn all<'a>(fields: &'a [Field], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    fields
        .iter()
        .filter(move |f| f.name == name && !f.value.is_empty())
        .map(|f| f.value.as_str())
}

/// `rfc822; user@example.com` → `user@example.com`, `smtp; 550 ...` →
/// `550 ...`: the value without its leading type (an atom before `;`).
pub(super) fn strip_type(value: &str) -> &str {
    let value = value.trim();
    if let Some((kind, rest)) = value.split_once(';') {
        let kind = kind.trim();
        if !kind.is_empty()
            && kind.len() <= 32
            && kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return rest.trim();
        }
    }
    value
}

/// Runs of whitespace (line breaks included) collapsed to one space, trimmed.
pub(super) fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_VALUE_CHARS));
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > MAX_VALUE_CHARS * 4 {
            break;
        }
    }
    truncate_chars(&mut out, MAX_VALUE_CHARS);
    out
}

/// The bare addr-spec in a field value or a line of text: `Name <a@b>`,
/// `<a@b>`, `a@b (comment)`, `"a@b" <a@b>`, `<mailto:a@b>`, `rfc822; a@b`.
/// `None` when nothing in it looks like an address (`<>`, `Undisclosed
/// Recipients`). Case is kept.
pub(super) fn bare_address(value: &str) -> Option<String> {
    let value = strip_type(value);
    // An address in angle brackets wins over whatever surrounds it.
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            break;
        };
        if let Some(address) = clean_address(&after[..close]) {
            return Some(address);
        }
        rest = &after[close + 1..];
    }
    value
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '(' | ')'))
        .find_map(clean_address)
}

/// Every address of an address-list value (`a@b, "Doe, J" <c@d>`): split at
/// commas outside quotes, angle brackets and comments.
pub(super) fn address_list(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let (mut quoted, mut angle, mut comment) = (false, false, 0u32);
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            '(' if !quoted => comment = comment.saturating_add(1),
            ')' if !quoted => comment = comment.saturating_sub(1),
            ',' if !quoted && !angle && comment == 0 => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items.into_iter().filter_map(bare_address).collect()
}

/// `candidate` trimmed of quotes, `mailto:` and trailing punctuation, if it
/// has the shape `local@domain` (one domain without spaces, both sides non-empty).
fn clean_address(candidate: &str) -> Option<String> {
    let mut s = candidate
        .trim()
        .trim_matches(|c| matches!(c, '"' | '\'' | '`'));
    if s.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("mailto:"))
    {
        s = &s[7..];
    }
    let s = s.trim_end_matches(['.', ',', ';', ':']);
    let (local, domain) = s.rsplit_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && s.len() <= 320
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains(['<', '>', '(', ')', '[', ']', '"', ',', ';'])
        && !local.contains(['<', '>', '(', ')', ',', ';']);
    ok.then(|| s.to_string())
}

/// A Message-ID value without its angle brackets: `<a@b>` → `a@b`; a value
/// written without brackets is kept as given (first word).
pub(super) fn message_id(value: &str) -> Option<String> {
    let value = value.trim();
    let id = match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value.split_whitespace().next().unwrap_or(""),
    };
    let id = id.trim();
    (!id.is_empty() && !id.chars().any(char::is_control)).then(|| id.to_string())
}

/// The start of the header block of `raw` up to its first blank line (or
/// all of it), as text. Used for returned messages and for the report's own
/// header: a bounded, lossy view that never fails.
pub(super) fn head_text(raw: &[u8], max: usize) -> String {
    let raw = &raw[..raw.len().min(max)];
    let end = find_blank_line(raw).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Offset of the first blank line (`\n\n` or `\n\r\n`), if any.
fn find_blank_line(raw: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = raw[i..].iter().position(|&b| b == b'\n') {
        let at = i + pos;
        match raw.get(at + 1) {
            Some(b'\n') => return Some(at + 1),
            Some(b'\r') if raw.get(at + 2) == Some(&b'\n') => return Some(at + 1),
            _ => {}
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_fields_are_unfolded_and_names_lowercased() {
        let g = groups("Reporting-MTA: dns; a.example\r\n\r\nFinal-Recipient: rfc822;\r\n  Bob@Example.com\r\nDiagnostic-Code: smtp; 550\r\n\t5.1.1 no\r\n");
        assert_eq!(g.len(), 2);
        assert_eq!(get(&g[0], "reporting-mta"), Some("dns; a.example"));
        assert_eq!(
            get(&g[1], "final-recipient"),
            Some("rfc822; Bob@Example.com")
        );
        assert_eq!(get(&g[1], "diagnostic-code"), Some("smtp; 550 5.1.1 no"));
    }

    #[test]
    fn addresses_are_found_in_every_usual_shape() {
        for (value, want) in [
            ("rfc822; user@aol.com", Some("user@aol.com")),
            ("RFC822; <demo@example.com>", Some("demo@example.com")),
            (
                "\"fake.rcpt@example.org\" <fake.rcpt@example.org>",
                Some("fake.rcpt@example.org"),
            ),
            (
                "Fake User <fake.sender@example.net>",
                Some("fake.sender@example.net"),
            ),
            ("root@test.local (root)", Some("root@test.local")),
            (
                "neko@example.jp<mailto:neko@example.jp>",
                Some("neko@example.jp"),
            ),
            ("<Undisclosed Recipients>", None),
            ("<>", None),
            ("test", None),
        ] {
            assert_eq!(bare_address(value).as_deref(), want, "{value}");
        }
        assert_eq!(
            address_list("\"Doe, J\" <j@example.com>, k@example.org"),
            ["j@example.com", "k@example.org"]
        );
    }

    #[test]
    fn types_are_stripped_only_when_they_are_atoms() {
        assert_eq!(strip_type("smtp; 550 5.1.1 x"), "550 5.1.1 x");
        assert_eq!(strip_type("X-Postfix; host said: no"), "host said: no");
        assert_eq!(
            strip_type("550 user unknown; try again"),
            "550 user unknown; try again"
        );
    }

    #[test]
    fn message_ids_lose_their_brackets() {
        assert_eq!(message_id("<a.b@c>").as_deref(), Some("a.b@c"));
        assert_eq!(
            message_id("8787KJ.mail@example.net").as_deref(),
            Some("8787KJ.mail@example.net")
        );
        assert_eq!(message_id("  "), None);
    }

    #[test]
    fn huge_values_are_capped() {
        let text = format!("A: {}\n{}", "x".repeat(100_000), " y\n".repeat(100_000));
        let block = header_block(&text);
        assert_eq!(block[0].value.chars().count(), MAX_VALUE_CHARS);
    }
}

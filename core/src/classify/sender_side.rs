//! Whether a reply's text names the sending side: an IP address (a reply
//! only ever names the connecting client's), our sender address or domain,
//! or words such as "sender", "your server", "HELO". Used by the fallback
//! table (`names_sender: true`) so that an unclassified 5xx that is about us
//! is not counted against the recipient.

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in sender-side pattern must compile")
}

/// Dotted quads, optionally in brackets.
static IPV4: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"));
/// IPv6 candidates; checked further in code (a time such as `12:30:45` is not one).
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?:ipv6:)?[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}"));
/// Words that name the sending side.
static WORDS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:your|the sending|sending|the sender.?s|sender.?s|connecting|originating|source|client) (?:ip|ip address|host ?name|host|server|mail ?server|mta|domain|network|system|isp|provider|e-?mail address|address)\b|\bsender\b|\bmail from\b|\benvelope[- ]from\b|\breturn-path\b|\bhelo\b|\behlo\b|\bfrom (?:your|this) (?:ip|host|server|domain|network)\b",
    )
});
/// E-mail addresses.
static ADDRESS: LazyLock<Regex> =
    LazyLock::new(|| re(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"));

/// Whether `text` names the sending side. `recipient`, when the caller
/// knows it, lets an address in the text count: one that is not the
/// recipient's is the sender's (or a contact of the receiving side, which
/// is no reason to blame the recipient either).
pub(super) fn names_sender_side(text: &str, recipient: Option<&str>) -> bool {
    if IPV4.is_match(text) || WORDS.is_match(text) {
        return true;
    }
    let ipv6 = IPV6.find_iter(text).any(|m| {
        let s = m.as_str();
        s.contains("::") || s.matches(':').count() >= 5
    });
    if ipv6 {
        return true;
    }
    match recipient {
        Some(recipient) => ADDRESS
            .find_iter(text)
            .any(|m| !m.as_str().eq_ignore_ascii_case(recipient)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_words_and_other_addresses_name_the_sender() {
        for text in [
            "Message from 192.0.2.1 rejected",
            "[192.0.2.1] is not permitted",
            "connection from [2001:db8::25] refused",
            "Your server cannot deliver here",
            "Not accepting mail from sender.example",
            "Bad HELO",
        ] {
            assert!(names_sender_side(text, None), "{text}");
        }
        for text in [
            "Requested action not taken",
            "something nobody has seen before",
            "no entry at 12:30:45",
            "5.1.1 <bob@example.com> not here",
        ] {
            assert!(!names_sender_side(text, None), "{text}");
        }
        // An address is only telling when the recipient is known.
        let text = "bounce@mail.example is not welcome here";
        assert!(!names_sender_side(text, None));
        assert!(names_sender_side(text, Some("bob@example.com")));
        assert!(!names_sender_side(
            "<Bob@Example.com> is not welcome here",
            Some("bob@example.com")
        ));
    }
}

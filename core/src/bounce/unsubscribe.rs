//! Unsubscribe requests mailed to the bounce or List-Unsubscribe address:
//! the mail a mail client sends for a `mailto:` List-Unsubscribe (one-click
//! unsubscribe in Gmail, Apple Mail, Outlook; often marked `Auto-Submitted`,
//! subject "Unsubscribe"), or a person's reply that says "unsubscribe" or
//! "remove me". These are opt-outs, not auto-replies to ignore.

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in unsubscribe pattern must compile")
}

/// Subjects of unsubscribe requests, in the languages mail clients and
/// people use (a `mailto:` URL's `?subject=` is often just "unsubscribe").
static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:unsubscribe|un-subscribe|opt[- ]?out)\b|^\s*(?:(?:re|aw|sv|fwd?|tr|wg)\s*:\s*)*(?:remove(?: me)?|stop|cancel(?: subscription)?|d[ée]sabonne(?:ment|r)|d[ée]sinscri(?:ption|re)|abmelden|abbestellen|austragen|darse de baja|baja|cancelar (?:la )?suscripci[oó]n|disiscriviti|cancella iscrizione)\s*[.!]*\s*$",
    )
});
/// The first lines of a person's request.
static BODY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^\s*(?:unsubscribe|remove(?: me)?|opt[- ]?out)\b|^\s*stop\s*[.!]*\s*$|\b(?:unsubscribe me|remove me from|take me off|opt me out|stop sending me)\b",
    )
});
/// Lines of the request's own text that are read.
const BODY_LINES: usize = 3;

/// Whether a mail (not a bounce: the caller checks) asks to unsubscribe:
/// by its subject, by its first lines, or by being addressed to an
/// unsubscribe mailbox (`unsubscribe@...`, `list-unsubscribe+x@...`).
pub(super) fn is_request(subject: &str, own_text: &str, addressed_to: &[String]) -> bool {
    if SUBJECT.is_match(subject) {
        return true;
    }
    let first = own_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('>'))
        .take(BODY_LINES);
    if first.into_iter().any(|l| BODY.is_match(l)) {
        return true;
    }
    addressed_to.iter().any(|a| {
        a.split('@')
            .next()
            .is_some_and(|local| local.contains("unsubscribe"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_bodies_and_unsubscribe_mailboxes_are_requests() {
        assert!(is_request("Unsubscribe", "", &[]));
        assert!(is_request("unsubscribe 1234", "", &[]));
        assert!(is_request("Re: remove me", "", &[]));
        assert!(is_request("Désabonnement", "", &[]));
        assert!(is_request("Re: Your digest", "UNSUBSCRIBE\n\nthanks", &[]));
        assert!(is_request("Hi", "Please remove me from your list", &[]));
        assert!(is_request(
            "",
            "",
            &["list-unsubscribe+news@bounce.example.com".into()]
        ));
        assert!(!is_request(
            "Re: Your digest",
            "Thanks, see you Monday.",
            &[]
        ));
        assert!(!is_request("Stop by our booth", "", &[]));
        assert!(!is_request(
            "Hello",
            "> unsubscribe\nI like it",
            &["bounces@bounce.example.com".into()]
        ));
    }
}

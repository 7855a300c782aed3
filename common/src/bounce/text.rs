//! Bounces without a `message/delivery-status` part, recognized by the text
//! their MTA writes: qmail, Yahoo (qmail-derived), Exim, Postfix (without
//! DSN support), Sendmail, Smail (sectioned "message log" / "failed
//! addresses" parts), Gmail / Google Workspace, Microsoft Exchange 5.5 to
//! 2003 ("did not reach the following recipient(s)", where a recipient may
//! be named only by its display name) and Exchange 2007+ / Office 365; and,
//! for mail that looks like a bounce but follows none of these, a notice
//! that names a reason and an address in angle brackets ([`notice`]).
//!
//! Each recognizer looks for its MTA's fixed sentence, then reads the failed
//! addresses and the text that follows each one. The caller passes the
//! report's text up to the copy of the returned message (see
//! [`split_at_returned_message`]) so that the returned message's own text
//! cannot be mistaken for the report.

use std::sync::LazyLock;

use regex::Regex;

use super::dsn::{valid_status, MAX_RECIPIENTS};
use super::failure::locate_reply;
use super::fields;
use super::{Action, RecipientStatus};
use crate::classify::Failure;

/// What the text recognizers made of a report.
#[derive(Debug)]
pub(super) enum TextOutcome {
    /// A known format, with its failed recipients.
    Found {
        /// Which recognizer matched (for logs and tests).
        mta: &'static str,
        /// One entry per failed (or delayed) address.
        recipients: Vec<RecipientStatus>,
    },
    /// A known format whose text names no address we could read.
    NoAddress(&'static str),
    /// No known format.
    NotFound,
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in bounce pattern must compile")
}

/// Lines that introduce the copy of the returned message in text bounces.
static RETURNED_MESSAGE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?im)^[ \t]*-*[ \t]*(?:below this line is a copy of the message\.?|this is a copy of the message, including all the headers\.?|original message(?: follows)?\.?|unsent message follows|message header follows|original message headers:|the original message was:)[ \t]*-*[ \t]*$",
    )
});

/// The report's own text and the returned message's copy (empty when the
/// report quotes none).
pub(super) fn split_at_returned_message(text: &str) -> (&str, &str) {
    match RETURNED_MESSAGE.find(text) {
        Some(m) => (&text[..m.start()], &text[m.end()..]),
        None => (text, ""),
    }
}

/// Try every recognizer on `text` (the report's own text, `\n` line ends).
/// `subject` helps to tell warnings from failures; `failed_header` is the
/// report's `X-Failed-Recipients` (Exim, Gmail), used when the text names
/// no address.
pub(super) fn recognize(text: &str, subject: &str, failed_header: &[String]) -> TextOutcome {
    type Recognizer = fn(&str, &str) -> Option<Vec<RecipientStatus>>;
    const RECOGNIZERS: &[(&str, Recognizer)] = &[
        ("qmail", qmail),
        ("yahoo", yahoo),
        ("exim", exim),
        ("postfix", postfix),
        ("sendmail", sendmail),
        ("smail", smail),
        ("gmail", gmail),
        ("exchange2003", exchange2003),
        ("exchange", exchange),
    ];
    let mut without_address = None;
    for &(mta, recognizer) in RECOGNIZERS {
        let Some(mut recipients) = recognizer(text, subject) else {
            continue;
        };
        fill_from_header(&mut recipients, failed_header);
        if recipients.is_empty() && !failed_header.is_empty() {
            let action = if is_warning(text, subject) {
                Action::Delayed
            } else {
                Action::Failed
            };
            recipients = failed_header
                .iter()
                .take(MAX_RECIPIENTS)
                .map(|a| recipient(Some(a.clone()), action, ""))
                .collect();
        }
        if recipients.is_empty() {
            without_address.get_or_insert(mta);
            continue;
        }
        recipients.truncate(MAX_RECIPIENTS);
        return TextOutcome::Found { mta, recipients };
    }
    match without_address {
        Some(mta) => TextOutcome::NoAddress(mta),
        None => TextOutcome::NotFound,
    }
}

/// Addresses the text left incomplete (Exim may name only a local part)
/// completed from `X-Failed-Recipients`.
fn fill_from_header(recipients: &mut [RecipientStatus], failed_header: &[String]) {
    for r in recipients.iter_mut() {
        let Some(current) = r.final_recipient.as_deref() else {
            if failed_header.len() == 1 {
                r.final_recipient = Some(failed_header[0].clone());
            }
            continue;
        };
        if current.contains('@') {
            continue;
        }
        if let Some(full) = failed_header.iter().find(|a| {
            a.split_once('@')
                .is_some_and(|(local, _)| local.eq_ignore_ascii_case(current))
        }) {
            r.final_recipient = Some(full.clone());
        }
    }
}

static WARNING: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)this is a warning only|warning: could not send message|has not yet been delivered|has been delayed|is delayed|still being retried|will be retried until|will keep trying|\bstill trying\b|delivery (?:is )?delayed|delayed mail|transient non-fatal",
    )
});

/// Whether the report is a delay warning rather than a final failure.
fn is_warning(text: &str, subject: &str) -> bool {
    WARNING.is_match(subject) || WARNING.is_match(text)
}

fn action_of(text: &str, subject: &str) -> Action {
    if is_warning(text, subject) {
        Action::Delayed
    } else {
        Action::Failed
    }
}

static REMOTE_HOST: LazyLock<Regex> =
    LazyLock::new(|| re(r"\bhost\s+([A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])\s*\["));

/// One recipient of a text bounce: the address (lowercased), the action and
/// the diagnostic text, whose enhanced code (if any) becomes the status.
fn recipient(address: Option<String>, action: Action, diagnostic: &str) -> RecipientStatus {
    let diagnostic = fields::collapse_whitespace(diagnostic);
    let status = if diagnostic.is_empty() {
        None
    } else {
        match Failure::from_reply_text(locate_reply(&diagnostic)) {
            Failure::Reply { enhanced, .. } => enhanced.filter(|e| valid_status(e)),
            Failure::Connection { .. } => None,
        }
    };
    let remote_mta = REMOTE_HOST
        .captures(&diagnostic)
        .map(|c| c[1].to_ascii_lowercase());
    RecipientStatus {
        final_recipient: address.map(|a| a.to_ascii_lowercase()),
        original_recipient: None,
        action,
        status,
        diagnostic: (!diagnostic.is_empty()).then_some(diagnostic),
        remote_mta,
    }
}

fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 8 } else { 1 })
        .sum()
}

// ----- qmail and Yahoo: "<address>:" then the reason, blocks separated by blank lines

static QMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^hi\. this is the qmail|this is the qmail-send program"));
static YAHOO: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)sorry, we were unable to deliver your message to the following address")
});
static ANGLE_LINE: LazyLock<Regex> = LazyLock::new(|| re(r"^[ \t]*<([^<>\s]+@[^<>\s]+)>:?[ \t]*$"));
static REMOTE_SAID: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)^remote host said:\s*"));

fn qmail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let start = QMAIL.find(text)?.end();
    Some(angle_blocks(
        &text[start..],
        action_of(&text[start..], subject),
    ))
}

fn yahoo(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let start = YAHOO.find(text)?.end();
    Some(angle_blocks(
        &text[start..],
        action_of(&text[start..], subject),
    ))
}

fn angle_blocks(text: &str, action: Action) -> Vec<RecipientStatus> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        if let Some(c) = ANGLE_LINE.captures(line) {
            if let Some((address, lines)) = current.take() {
                out.push(recipient(Some(address), action, &lines.join(" ")));
            }
            current = Some((c[1].to_string(), Vec::new()));
            continue;
        }
        let Some((_, lines)) = current.as_mut() else {
            continue;
        };
        if line.trim().is_empty() {
            if !lines.is_empty() {
                let (address, lines) = current.take().expect("current is some");
                out.push(recipient(Some(address), action, &lines.join(" ")));
            }
            continue;
        }
        let line = line.trim();
        let line = REMOTE_SAID.find(line).map_or(line, |m| &line[m.end()..]);
        lines.push(line);
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    if let Some((address, lines)) = current {
        out.push(recipient(Some(address), action, &lines.join(" ")));
    }
    out
}

// ----- Exim: indented address lines, more indented reason lines

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

fn exim(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
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

// ----- Postfix without DSN: "<address>: reason" with indented continuation lines

static POSTFIX: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t]*this is the (?:postfix program|mail system) at host"));
static POSTFIX_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| re(r"^<([^<>\s]+@[^<>\s]+)>(?:[ \t]*\(expanded from <[^>]*>\))?:[ \t]*(.*)$"));

fn postfix(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let start = POSTFIX.find(text)?.end();
    let body = &text[start..];
    let action = action_of(body, subject);
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in body.lines() {
        if let Some(c) = POSTFIX_BLOCK.captures(line) {
            if let Some((address, lines)) = current.take() {
                out.push(recipient(Some(address), action, &lines.join(" ")));
                if out.len() >= MAX_RECIPIENTS {
                    return Some(out);
                }
            }
            let first = c.get(2).map_or("", |m| m.as_str());
            current = Some((c[1].to_string(), vec![first]));
        } else if line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            if let Some((_, lines)) = current.as_mut() {
                lines.push(line.trim());
            }
        } else if let Some((address, lines)) = current.take() {
            out.push(recipient(Some(address), action, &lines.join(" ")));
        }
    }
    if let Some((address, lines)) = current {
        out.push(recipient(Some(address), action, &lines.join(" ")));
    }
    Some(out)
}

// ----- Sendmail: "----- The following addresses had permanent fatal errors -----"

static SENDMAIL_LIST: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?im)^[ \t]*-+[ \t]*the following addresses? (?:had|has) (permanent fatal errors|transient non-fatal errors|delivery problems)[ \t]*-*[ \t]*$",
    )
});
static SENDMAIL_TRANSCRIPT: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t]*-+[ \t]*transcript of session follows[ \t]*-*[ \t]*$"));
static SENDMAIL_REASON: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\(reason:\s*(.*?)\)?\s*$"));
static TRANSCRIPT_ADDRESS: LazyLock<Regex> =
    LazyLock::new(|| re(r"^<?([^<>\s]+@[^<>\s]+?)>?\.\.\.\s*(.+)$"));
static TRANSCRIPT_REPLY: LazyLock<Regex> = LazyLock::new(|| re(r"^(?:<<<\s*)?([45]\d\d[ -].*)$"));

fn sendmail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let list = SENDMAIL_LIST.captures(text)?;
    let whole = list.get(0).expect("group 0");
    let kind = list[1].to_ascii_lowercase();
    let action = if kind.starts_with("transient") || is_warning("", subject) {
        Action::Delayed
    } else {
        Action::Failed
    };
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    for line in text[whole.end()..].lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            if found.is_empty() {
                continue;
            }
            break;
        }
        if trimmed.starts_with("-----") {
            break;
        }
        if trimmed.starts_with('(') {
            if let (Some(c), Some(last)) = (SENDMAIL_REASON.captures(trimmed), found.last_mut()) {
                last.1 = Some(c[1].to_string());
            }
            continue;
        }
        let (token, rest) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        if let Some(address) = fields::bare_address(token) {
            let reason = SENDMAIL_REASON.captures(rest).map(|c| c[1].to_string());
            found.push((address, reason));
            if found.len() >= MAX_RECIPIENTS {
                break;
            }
        }
    }
    // No "(reason: ...)": the transcript says what the remote server answered.
    let transcript = SENDMAIL_TRANSCRIPT
        .find(text)
        .map_or("", |m| &text[m.end()..]);
    let mut per_address: Vec<(String, String)> = Vec::new();
    let mut first_reply = None;
    let mut lines = transcript.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(c) = TRANSCRIPT_ADDRESS.captures(line.trim()) {
            let mut reason = c[2].to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) && !next.trim().is_empty() {
                    reason.push(' ');
                    reason.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            if per_address.len() < MAX_RECIPIENTS {
                per_address.push((c[1].to_ascii_lowercase(), reason));
            }
        } else if first_reply.is_none() {
            if let Some(c) = TRANSCRIPT_REPLY.captures(line.trim()) {
                first_reply = Some(c[1].to_string());
            }
        }
    }
    Some(
        found
            .into_iter()
            .map(|(address, reason)| {
                let reason = reason
                    .or_else(|| {
                        per_address
                            .iter()
                            .find(|(a, _)| a.eq_ignore_ascii_case(&address))
                            .map(|(_, r)| r.clone())
                    })
                    .or_else(|| first_reply.clone())
                    .unwrap_or_default();
                recipient(Some(address), action, &reason)
            })
            .collect(),
    )
}

// ----- Gmail / Google Workspace (before Google sent DSNs)

static GMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)delivery to the following recipients? (failed permanently|has been delayed|was unsuccessful)",
    )
});
static GMAIL_DETAILS: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?is)technical details of (?:permanent|temporary) failure:?(.*)"));
static GMAIL_SERVER_SAID: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?is)the error that the other server returned was:?(.*)"));

fn gmail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let intro = GMAIL.captures(text)?;
    let whole = intro.get(0).expect("group 0");
    let action = if intro[1].eq_ignore_ascii_case("has been delayed") || is_warning("", subject) {
        Action::Delayed
    } else {
        Action::Failed
    };
    let after = &text[whole.end()..];
    let after = after.split_once('\n').map_or("", |(_, rest)| rest);
    let mut addresses = Vec::new();
    for line in after.lines() {
        if line.trim().is_empty() {
            if addresses.is_empty() {
                continue;
            }
            break;
        }
        if let Some(address) = fields::bare_address(line) {
            addresses.push(address);
        }
        if addresses.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    let details = GMAIL_DETAILS
        .captures(after)
        .map_or("", |c| c.get(1).map_or("", |m| m.as_str()));
    let diagnostic = GMAIL_SERVER_SAID
        .captures(details)
        .and_then(|c| c.get(1))
        .map_or(details, |m| m.as_str());
    Some(
        addresses
            .into_iter()
            .map(|a| recipient(Some(a), action, diagnostic))
            .collect(),
    )
}

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

fn exchange2003(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
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

// ----- Smail: "Failed addresses follow:" and "Message log follows:" sections

static SMAIL_FAILED: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t|]*-*[ \t]*failed addresses follow:?[ \t]*-*[ \t|]*$"));
static SMAIL_LOG: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?im)^[ \t|]*-*[ \t]*message log follows:?[ \t]*-*[ \t|]*$"));
/// The line that starts any Smail section.
static SMAIL_SECTION: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)^[ \t]*\|?-{5,}.*follows?:?[ \t]*-*\|?[ \t]*$"));
/// `address ... reason`, the address bare or in angle brackets.
static SMAIL_ENTRY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[ \t]*<?([^<>\s]+@[^<>\s]+?)>?(?:[ \t]*\.\.\.[ \t]*(.*))?$"));

/// The lines of the section that starts right after `start`.
fn smail_section(text: &str, start: usize) -> impl Iterator<Item = &str> {
    text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !SMAIL_SECTION.is_match(l))
}

fn smail(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
    let failed = SMAIL_FAILED.find(text)?;
    let action = action_of("", subject);
    // The message log says why, per address ("<a@b> ... mailbox full") or
    // for the whole message.
    let mut log_per_address: Vec<(String, String)> = Vec::new();
    let mut log_text: Vec<&str> = Vec::new();
    if let Some(log) = SMAIL_LOG.find(text) {
        for line in smail_section(text, log.start()) {
            match SMAIL_ENTRY.captures(line) {
                Some(c) if c.get(2).is_some() => {
                    log_per_address.push((c[1].to_ascii_lowercase(), c[2].to_string()));
                }
                _ if !line.trim().is_empty() => log_text.push(line.trim()),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for line in smail_section(text, failed.start()) {
        let Some(c) = SMAIL_ENTRY.captures(line) else {
            continue;
        };
        let address = c[1].to_ascii_lowercase();
        let logged = log_per_address
            .iter()
            .find(|(a, _)| *a == address)
            .map(|(_, r)| r.as_str());
        let reason = match (c.get(2).map(|m| m.as_str()), logged) {
            // The log usually says more than the one-word reason.
            (_, Some(logged)) => logged.to_string(),
            (Some(own), None) if !own.trim().is_empty() => own.to_string(),
            _ => log_text.join(" "),
        };
        out.push(recipient(Some(address), action, &reason));
        if out.len() >= MAX_RECIPIENTS {
            break;
        }
    }
    Some(out)
}

// ----- Exchange 2007+ / Office 365 text (usually alongside a DSN)

static EXCHANGE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)delivery (has failed|is delayed) to these recipients or (?:groups|distribution lists):?",
    )
});
static EXCHANGE_ADMIN: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)diagnostic information for administrators:?"));

fn exchange(text: &str, subject: &str) -> Option<Vec<RecipientStatus>> {
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

// ----- A mailer daemon's short notice: a reason and the failed address

/// An address in angle brackets.
static ANGLE_ADDRESS: LazyLock<Regex> = LazyLock::new(|| re(r"<([^<>\s]+@[^<>\s]+)>"));
/// A line that starts with a bare address (a listing of failed recipients).
static LEADING_ADDRESS: LazyLock<Regex> =
    LazyLock::new(|| re(r#"^[\s*"'-]*([^\s<>@"',;:()]+@[^\s<>@"',;:()]+\.[a-zA-Z]{2,})\b"#));
/// Lines of a notice that are read.
const NOTICE_LINES: usize = 40;
/// Local parts of a receiving system's own addresses, named in notices as
/// contacts ("please write to postmaster@..."), never a failed recipient.
const ADMIN_LOCAL_PARTS: &[&str] = &[
    "postmaster",
    "mailer-daemon",
    "abuse",
    "hostmaster",
    "webmaster",
    "noreply",
    "no-reply",
    "root",
];

/// A short notice from a mailer daemon that follows no known MTA's wording
/// but names the failed address and says why ("Delivery to <a@b> failed:
/// mailbox is full", "<a@b> is not a registered user.", or the address
/// alone on a line under "... was not delivered to:"). The caller only asks
/// when the mail looks like a bounce. Addresses in angle brackets are
/// preferred; without any, addresses that start a line are taken. `exclude`
/// are the notice's own addresses (its From and To), never a failed
/// recipient, and neither are postmaster-like contacts. The reason is the
/// line naming the address, without it, or the next line that says
/// something when that one does not.
pub(super) fn notice(
    text: &str,
    subject: &str,
    exclude: &[String],
) -> Option<Vec<RecipientStatus>> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(NOTICE_LINES)
        .collect();
    let action = action_of(text, subject);
    let skip = |address: &str, out: &[RecipientStatus]| {
        let local = address.split('@').next().unwrap_or("");
        exclude.iter().any(|e| e.eq_ignore_ascii_case(address))
            || ADMIN_LOCAL_PARTS.contains(&local)
            || out
                .iter()
                .any(|r| r.final_recipient.as_deref() == Some(address))
            || fields::bare_address(address).is_none()
    };
    let says_something = |s: &str| s.chars().filter(|c| c.is_alphabetic()).count() >= 8;
    let reason_at = |i: usize, rest: &str| -> String {
        if says_something(rest) {
            return rest.to_string();
        }
        lines
            .iter()
            .skip(i + 1)
            .take(3)
            .find(|l| says_something(l) && !l.ends_with(':'))
            .map_or_else(String::new, |l| l.to_string())
    };
    let mut out: Vec<RecipientStatus> = Vec::new();
    for pass in [&*ANGLE_ADDRESS, &*LEADING_ADDRESS] {
        for (i, line) in lines.iter().enumerate() {
            for c in pass.captures_iter(line) {
                let address = c[1].to_ascii_lowercase();
                if skip(&address, &out) {
                    continue;
                }
                let rest = line.replacen(&c[0], "", 1);
                let rest = rest.trim_matches(|c: char| {
                    c.is_whitespace() || matches!(c, ':' | ',' | '-' | '.' | '*')
                });
                out.push(recipient(Some(address), action, &reason_at(i, rest)));
                if out.len() >= MAX_RECIPIENTS {
                    return Some(out);
                }
            }
        }
        if !out.is_empty() {
            return Some(out);
        }
    }
    None
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
    use super::*;

    fn found(outcome: TextOutcome) -> (&'static str, Vec<RecipientStatus>) {
        match outcome {
            TextOutcome::Found { mta, recipients } => (mta, recipients),
            other => panic!("not recognized: {other:?}"),
        }
    }

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

    #[test]
    fn a_known_format_without_address_falls_back_to_the_failed_header() {
        let text = "Hi. This is the qmail-send program at example.net.\nI'm afraid I wasn't able to deliver your message.\n";
        let (_, r) = found(recognize(text, "failure notice", &["x@example.org".into()]));
        assert_eq!(r[0].final_recipient.as_deref(), Some("x@example.org"));
        assert!(matches!(
            recognize(text, "failure notice", &[]),
            TextOutcome::NoAddress("qmail")
        ));
    }
}

//! Address quality: recipients whose address is valid but will surely fail,
//! found at expansion before they cost a transaction and count against the
//! sender's reputation.
//!
//! - `no_mail_host`: the domain has no mail host: no MX and no address
//!   (A/AAAA), a null MX (RFC 7505: one MX whose exchange is the root), or
//!   the domain does not exist. Decided by [`mail_host`] from the DNS
//!   answers (the lookups are `dns.rs`'s).
//! - `likely_typo`: the domain is a small edit away from a large provider's
//!   (`gmial.com` for `gmail.com`). Decided by [`likely_typo`]; it excludes
//!   the recipient or only flags it, as configured.
//!
//! A domain whose DNS does not answer (a timeout, a server failure) is not
//! excluded: only a definite answer says a domain has no mail host.

use serde::{Deserialize, Serialize};

/// An address check a request can ask for (`quality` field) or get by
/// default (`expander.quality.checks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityCheck {
    NoMailHost,
    LikelyTypo,
}

impl QualityCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            QualityCheck::NoMailHost => "no_mail_host",
            QualityCheck::LikelyTypo => "likely_typo",
        }
    }
}

impl std::str::FromStr for QualityCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "no_mail_host" => Ok(QualityCheck::NoMailHost),
            "likely_typo" => Ok(QualityCheck::LikelyTypo),
            other => Err(format!(
                "unknown address check {other:?} (no_mail_host, likely_typo)"
            )),
        }
    }
}

/// What a likely typo does to its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypoAction {
    /// Sent anyway; counted as `flagged` and told in a `flagged` event.
    #[default]
    Flag,
    /// Excluded as `likely_typo`.
    Exclude,
}

/// Edit distance between `a` and `b` (insertions, deletions,
/// substitutions and swaps of two neighbours, each 1), or `None` when it is
/// above `max` (found without computing the rest).
pub fn edit_distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    // Three rows of the optimal-string-alignment table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            cur[j] = d;
            row_min = row_min.min(d);
        }
        if row_min > max {
            return None;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    Some(prev[b.len()]).filter(|d| *d <= max)
}

/// The provider domain that `domain` is likely a typo of: within
/// `max_distance` edits of one of `providers` and not one of them itself.
/// The nearest wins; of two equally near, the first listed.
pub fn likely_typo<'a>(
    domain: &str,
    providers: &'a [String],
    max_distance: usize,
) -> Option<&'a str> {
    if max_distance == 0 || providers.iter().any(|p| p == domain) {
        return None;
    }
    providers
        .iter()
        .filter_map(|p| edit_distance(domain, p, max_distance).map(|d| (d, p.as_str())))
        .min_by_key(|(d, _)| *d)
        .map(|(_, p)| p)
}

/// A DNS answer as far as mail hosts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Records of the type asked for.
    Records(T),
    /// The name exists but has no records of that type.
    NoRecords,
    /// The name does not exist.
    NxDomain,
    /// No answer (timeout, server failure, refused): nothing is known.
    Failed(String),
}

/// What is known about a domain's mail host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailHost {
    /// It has one: MX hosts, or its own address.
    Found,
    /// It has none, and why (for logs and the dry run).
    Missing(&'static str),
    /// The DNS did not say; the recipient is not excluded.
    Unknown(String),
    /// The MX lookup found no records: the addresses decide (implicit MX).
    AskAddresses,
}

/// Whether an MX answer's exchanges are a null MX (RFC 7505): one record
/// whose exchange is the root.
pub fn is_null_mx(exchanges: &[String]) -> bool {
    exchanges.len() == 1 && matches!(exchanges[0].as_str(), "." | "")
}

/// The decision on a domain's mail host from its MX answer and, when that
/// has no records, its address answer (A and AAAA together).
pub fn mail_host(mx: &Answer<Vec<String>>, addresses: Option<&Answer<usize>>) -> MailHost {
    match mx {
        Answer::Records(exchanges) if is_null_mx(exchanges) => MailHost::Missing("null MX"),
        Answer::Records(exchanges) if !exchanges.is_empty() => MailHost::Found,
        Answer::NxDomain => MailHost::Missing("the domain does not exist"),
        Answer::Failed(e) => MailHost::Unknown(format!("MX lookup: {e}")),
        Answer::Records(_) | Answer::NoRecords => match addresses {
            None => MailHost::AskAddresses,
            Some(Answer::Records(n)) if *n > 0 => MailHost::Found,
            Some(Answer::Failed(e)) => MailHost::Unknown(format!("address lookup: {e}")),
            Some(_) => MailHost::Missing("no MX and no address"),
        },
    }
}

/// The providers a typo is measured against by default: the largest
/// mailbox providers' domains. A domain on the list is never a typo, so
/// two providers a letter apart (`mail.com`, `gmail.com`) are both safe.
pub fn default_providers() -> Vec<String> {
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "ymail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "icloud.com",
        "aol.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "proton.me",
        "protonmail.com",
        "comcast.net",
        "orange.fr",
        "t-online.de",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_each_insertion_deletion_change_and_swap_once() {
        let table = [
            ("gmail.com", "gmail.com", 2, Some(0)),
            ("gmial.com", "gmail.com", 2, Some(1)),
            ("gmai.com", "gmail.com", 2, Some(1)),
            ("gmaill.com", "gmail.com", 2, Some(1)),
            ("gmail.con", "gmail.com", 2, Some(1)),
            ("gnail.con", "gmail.com", 2, Some(2)),
            ("gnail.con", "gmail.com", 1, None),
            ("example.com", "gmail.com", 2, None),
            ("a", "abcd", 2, None),
            ("", "ab", 2, Some(2)),
        ];
        for (a, b, max, want) in table {
            assert_eq!(edit_distance(a, b, max), want, "{a} {b} (max {max})");
            assert_eq!(edit_distance(b, a, max), want, "{b} {a} (max {max})");
        }
    }

    #[test]
    fn a_domain_a_small_edit_from_a_providers_is_a_likely_typo() {
        let providers = default_providers();
        let table = [
            ("gmial.com", 1, Some("gmail.com")),
            ("gmail.co", 1, Some("gmail.com")),
            ("hotmial.com", 1, Some("hotmail.com")),
            ("yahooo.com", 1, Some("yahoo.com")),
            ("outlok.com", 1, Some("outlook.com")),
            ("gmail.com", 1, None),
            ("mail.com", 1, None),
            ("ymail.com", 1, None),
            ("example.com", 1, None),
            ("gnail.con", 1, None),
            ("gnail.con", 2, Some("gmail.com")),
            ("gmial.com", 0, None),
        ];
        for (domain, max, want) in table {
            assert_eq!(
                likely_typo(domain, &providers, max),
                want,
                "{domain} (max {max})"
            );
        }
        // A provider is never a typo, though some are one edit apart
        // (`gmail.com`, `ymail.com`, `mail.com`).
        for p in &providers {
            assert_eq!(likely_typo(p, &providers, 2), None, "{p}");
        }
    }

    #[test]
    fn a_domain_has_no_mail_host_only_when_the_dns_says_so() {
        use Answer::*;
        let mx = |hosts: &[&str]| Records(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        // (MX answer, address answer, decision)
        type Case = (Answer<Vec<String>>, Option<Answer<usize>>, MailHost);
        let table: Vec<Case> = vec![
            (mx(&["mx1.example.com."]), None, MailHost::Found),
            (mx(&["."]), None, MailHost::Missing("null MX")),
            (mx(&[""]), None, MailHost::Missing("null MX")),
            (mx(&[".", "mx.example.com."]), None, MailHost::Found),
            (
                NxDomain,
                None,
                MailHost::Missing("the domain does not exist"),
            ),
            (NoRecords, None, MailHost::AskAddresses),
            (NoRecords, Some(Records(2)), MailHost::Found),
            (
                NoRecords,
                Some(NoRecords),
                MailHost::Missing("no MX and no address"),
            ),
            (
                NoRecords,
                Some(NxDomain),
                MailHost::Missing("no MX and no address"),
            ),
            (
                NoRecords,
                Some(Failed("timeout".into())),
                MailHost::Unknown("address lookup: timeout".into()),
            ),
            (
                Failed("SERVFAIL".into()),
                None,
                MailHost::Unknown("MX lookup: SERVFAIL".into()),
            ),
        ];
        for (mx, addresses, want) in table {
            assert_eq!(
                mail_host(&mx, addresses.as_ref()),
                want,
                "{mx:?} {addresses:?}"
            );
        }
    }

    #[test]
    fn checks_read_by_name() {
        for c in [QualityCheck::NoMailHost, QualityCheck::LikelyTypo] {
            assert_eq!(c.as_str().parse::<QualityCheck>(), Ok(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert!("typo".parse::<QualityCheck>().is_err());
    }
}

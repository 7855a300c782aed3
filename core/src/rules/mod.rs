//! Exclusion rules: operators' standing orders about whom never to send to,
//! edited at run time (`mailpipe rules`) and applied by the expander while
//! it screens each batch of recipients.
//!
//! A rule has a name, a match (address patterns, domains, domain suffixes,
//! local-part patterns, or membership in a named list imported from a
//! file), a scope (all mail, bulk mail only, or one tenant's mail), an
//! optional expiry and an on/off switch. A recipient that a rule matches is
//! excluded as `excluded_by_rule`, with the rule's name.
//!
//! The decision is [`RuleSet::first_match`]: the rules that apply to one
//! request are compiled once ([`RuleSet::compile`]) into hash maps and one
//! regex set, so matching a recipient costs a few hash look-ups and no
//! round trip to Redis. The rules and lists themselves live in Redis
//! (`store/rules.rs`).

mod matcher;
mod presets;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::message::Lane;

pub use matcher::{DomainMatch, DomainMemo, ListMembers, RuleSet};
pub use presets::presets;

/// The reason of a recipient a rule excluded (in status counts and events).
pub const EXCLUDED_BY_RULE: &str = "excluded_by_rule";

/// Longest rule or list name.
pub const MAX_NAME: usize = 64;

/// One exclusion rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in `mailpipe status` and in `excluded` events.
    pub name: String,
    /// Which recipients it names.
    #[serde(rename = "match")]
    pub matches: RuleMatch,
    /// Which requests it applies to.
    #[serde(default)]
    pub scope: RuleScope,
    /// Unix time after which it no longer applies; `None`: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// A disabled rule is kept but applies to nothing.
    pub enabled: bool,
    /// Why the rule exists, for the next operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it was stored (Unix time; 0 for a built-in rule never stored).
    #[serde(default)]
    pub created: i64,
}

/// What a rule matches. Patterns are lowercase; `*` stands for any run of
/// characters and `?` for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleMatch {
    /// Whole addresses: `*@competitor.example`, `ceo@acme.example`.
    Address(Vec<String>),
    /// Domains, exactly: `competitor.example` (not its subdomains).
    Domain(Vec<String>),
    /// Domains and all their subdomains: `competitor.example` also names
    /// `mail.competitor.example`.
    DomainSuffix(Vec<String>),
    /// Local parts (before the `@`): `postmaster`, `no-reply*`.
    Local(Vec<String>),
    /// Membership in a named list (`mailpipe rules import`): its entries are
    /// addresses, or domains (which name their subdomains too).
    List(String),
}

impl RuleMatch {
    /// `kind: values`, for tables.
    pub fn describe(&self) -> String {
        match self {
            RuleMatch::Address(v) => format!("address {}", v.join(", ")),
            RuleMatch::Domain(v) => format!("domain {}", v.join(", ")),
            RuleMatch::DomainSuffix(v) => format!("domain suffix {}", v.join(", ")),
            RuleMatch::Local(v) => format!("local part {}", v.join(", ")),
            RuleMatch::List(l) => format!("list {l}"),
        }
    }
}

/// Which requests a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RuleScope {
    /// Every request, bulk and transactional.
    #[default]
    All,
    /// Bulk requests only: transactional mail is never excluded by it.
    Bulk,
    /// Requests of this tenant only (both lanes).
    Tenant(String),
}

impl RuleScope {
    /// Whether the scope covers a request of `tenant` in `lane`.
    pub fn covers(&self, tenant: Option<&str>, lane: Lane) -> bool {
        match self {
            RuleScope::All => true,
            RuleScope::Bulk => lane == Lane::Bulk,
            RuleScope::Tenant(t) => tenant == Some(t.as_str()),
        }
    }
}

impl fmt::Display for RuleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleScope::All => f.write_str("all"),
            RuleScope::Bulk => f.write_str("bulk"),
            RuleScope::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

impl FromStr for RuleScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(RuleScope::All),
            "bulk" => Ok(RuleScope::Bulk),
            other => match other.strip_prefix("tenant:") {
                Some(t) if !t.is_empty() && t.len() <= 128 && !t.chars().any(char::is_control) => {
                    Ok(RuleScope::Tenant(t.to_string()))
                }
                _ => Err(format!(
                    "unknown scope {other:?} (all, bulk or tenant:NAME)"
                )),
            },
        }
    }
}

impl Serialize for RuleScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RuleScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether `name` can name a rule or a list: 1-64 characters of a-z 0-9 . _ -,
/// starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// A domain as rules compare it: lowercase ASCII (punycode), without a
/// leading `@`, `.` or `*.` and a trailing dot. One label (a top-level
/// domain) is allowed, for suffixes.
pub fn normalize_domain(raw: &str) -> Result<String, String> {
    let d = raw
        .trim()
        .trim_start_matches('@')
        .trim_start_matches("*.")
        .trim_start_matches('.')
        .trim_end_matches('.');
    let ascii = idna::domain_to_ascii(d).map_err(|_| format!("{raw:?} is not a domain"))?;
    let ok = !ascii.is_empty()
        && ascii.len() <= 253
        && ascii.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(ascii)
    } else {
        Err(format!("{raw:?} is not a domain"))
    }
}

/// A pattern as rules compare it: lowercase, `*` and `?` as wildcards,
/// nothing else special; no spaces or control characters.
fn normalize_pattern(raw: &str, what: &str) -> Result<String, String> {
    let p = raw.trim().to_ascii_lowercase();
    if p.is_empty() || p.len() > 254 || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{what} pattern {raw:?} is empty or has spaces"));
    }
    Ok(p)
}

impl Rule {
    /// Checks a rule before it is stored and puts its patterns in the form
    /// the matcher compares (lowercase, ASCII domains, sorted, no repeats).
    pub fn normalized(mut self) -> Result<Self, String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "rule name {:?} must be 1-{MAX_NAME} characters of a-z 0-9 . _ - (starting with a letter or digit)",
                self.name
            ));
        }
        let tidy = |v: &mut Vec<String>| {
            v.sort();
            v.dedup();
        };
        match &mut self.matches {
            RuleMatch::Address(v) => {
                *v = v
                    .iter()
                    .map(|p| {
                        let p = normalize_pattern(p, "address")?;
                        let (_, domain) = p
                            .rsplit_once('@')
                            .ok_or_else(|| format!("address pattern {p:?} has no '@'"))?;
                        if domain.is_empty() {
                            return Err(format!("address pattern {p:?} has no domain"));
                        }
                        Ok(p)
                    })
                    .collect::<Result<_, String>>()?;
                tidy(v);
            }
            RuleMatch::Domain(v) | RuleMatch::DomainSuffix(v) => {
                *v = v
                    .iter()
                    .map(|d| normalize_domain(d))
                    .collect::<Result<_, _>>()?;
                tidy(v);
            }
            RuleMatch::Local(v) => {
                *v = v
                    .iter()
                    .map(|p| {
                        let p = normalize_pattern(p, "local part")?;
                        if p.contains('@') {
                            return Err(format!("local part pattern {p:?} contains '@'"));
                        }
                        Ok(p)
                    })
                    .collect::<Result<_, String>>()?;
                tidy(v);
            }
            RuleMatch::List(l) => {
                if !valid_name(l) {
                    return Err(format!("list name {l:?} is not valid"));
                }
            }
        }
        let empty = match &self.matches {
            RuleMatch::Address(v)
            | RuleMatch::Domain(v)
            | RuleMatch::DomainSuffix(v)
            | RuleMatch::Local(v) => v.is_empty(),
            RuleMatch::List(_) => false,
        };
        if empty {
            return Err(format!("rule {} matches nothing", self.name));
        }
        if self.note.as_ref().is_some_and(|n| n.len() > 500) {
            return Err("a rule's note is at most 500 characters".into());
        }
        Ok(self)
    }

    /// Whether the rule applies to a request of `tenant` in `lane` at `now`.
    pub fn applies(&self, tenant: Option<&str>, lane: Lane, now: i64) -> bool {
        self.enabled && self.expires.is_none_or(|e| now < e) && self.scope.covers(tenant, lane)
    }
}

/// A list entry as the matcher compares it: an address key
/// (`local@domain`, lowercase, ASCII domain) or a domain of at least two
/// labels; `None` for an entry that is neither.
pub fn normalize_list_entry(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.contains('@') && !raw.starts_with('@') {
        crate::address::EmailAddress::parse(raw)
            .ok()
            .map(|a| a.key())
    } else {
        normalize_domain(raw).ok().filter(|d| d.contains('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_and_print_the_same_and_cover_their_requests() {
        for s in ["all", "bulk", "tenant:acme"] {
            assert_eq!(s.parse::<RuleScope>().unwrap().to_string(), s);
        }
        assert!("tenant:".parse::<RuleScope>().is_err());
        assert!("everyone".parse::<RuleScope>().is_err());
        let table = [
            (RuleScope::All, None, Lane::Transactional, true),
            (RuleScope::Bulk, None, Lane::Bulk, true),
            (RuleScope::Bulk, Some("acme"), Lane::Transactional, false),
            (
                RuleScope::Tenant("acme".into()),
                Some("acme"),
                Lane::Transactional,
                true,
            ),
            (
                RuleScope::Tenant("acme".into()),
                Some("other"),
                Lane::Bulk,
                false,
            ),
            (RuleScope::Tenant("acme".into()), None, Lane::Bulk, false),
        ];
        for (scope, tenant, lane, covered) in table {
            assert_eq!(
                scope.covers(tenant, lane),
                covered,
                "{scope} {tenant:?} {lane:?}"
            );
        }
    }

    #[test]
    fn rules_are_checked_and_normalized_before_they_are_stored() {
        let rule = |name: &str, m: RuleMatch| Rule {
            name: name.into(),
            matches: m,
            scope: RuleScope::All,
            expires: None,
            enabled: true,
            note: None,
            created: 0,
        };
        let ok = rule(
            "competitors",
            RuleMatch::DomainSuffix(vec![
                "@Bücher.Example.".into(),
                "b.example".into(),
                "b.example".into(),
            ]),
        )
        .normalized()
        .unwrap();
        assert_eq!(
            ok.matches,
            RuleMatch::DomainSuffix(vec!["b.example".into(), "xn--bcher-kva.example".into()])
        );
        let local = rule("roles", RuleMatch::Local(vec![" PostMaster ".into()]))
            .normalized()
            .unwrap();
        assert_eq!(local.matches, RuleMatch::Local(vec!["postmaster".into()]));
        let refused = [
            rule("Bad Name", RuleMatch::Local(vec!["x".into()])),
            rule("", RuleMatch::Local(vec!["x".into()])),
            rule("-x", RuleMatch::Local(vec!["x".into()])),
            rule("x", RuleMatch::Local(vec![])),
            rule("x", RuleMatch::Local(vec!["a@b".into()])),
            rule("x", RuleMatch::Address(vec!["nobody".into()])),
            rule("x", RuleMatch::Address(vec!["a b@example.com".into()])),
            rule("x", RuleMatch::Domain(vec!["not a domain".into()])),
            rule("x", RuleMatch::List("Has Space".into())),
        ];
        for r in refused {
            assert!(r.clone().normalized().is_err(), "{r:?}");
        }
        let json = serde_json::to_string(&ok).unwrap();
        assert!(
            json.contains(r#""match":{"domain_suffix":["b.example""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), ok);
    }

    #[test]
    fn list_entries_are_addresses_or_domains() {
        let table = [
            ("Ann@Example.COM", Some("ann@example.com")),
            ("example.com", Some("example.com")),
            ("@Example.com", Some("example.com")),
            ("bücher.example", Some("xn--bcher-kva.example")),
            ("not an entry", None),
            ("domain", None),
            ("a@", None),
        ];
        for (raw, want) in table {
            assert_eq!(normalize_list_entry(raw).as_deref(), want, "{raw}");
        }
    }
}

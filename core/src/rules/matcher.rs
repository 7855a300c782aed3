//! The compiled form of the rules that apply to one request, and the one
//! decision they make: which rule, if any, excludes an address.
//!
//! Literal patterns and list entries go into hash maps (an exact address, a
//! domain, each suffix of a domain, a local part); patterns with wildcards
//! into one regex set per kind. A recipient costs a handful of look-ups,
//! whatever the number of rules. When several rules match, the one whose
//! name sorts first is reported, so the answer does not depend on the
//! order rules were stored in.

use std::collections::HashMap;

use regex::{Regex, RegexSet};

/// The rule maps are looked up several times per recipient (address,
/// domain, local part, each suffix of the domain), so they use foldhash's
/// fast hasher instead of SipHash, which was about a sixth of the extra CPU
/// of screening with rules in the expander's profile. Their keys are the
/// operator's own rules and lists, and the hasher is seeded per process.
type Map = foldhash::HashMap<String, u32>;

use super::{Rule, RuleMatch};
use crate::message::Lane;

/// The members of the named lists rules refer to (list name → entries, as
/// [`super::normalize_list_entry`] made them).
pub type ListMembers = HashMap<String, Vec<String>>;

/// Rules compiled for one request (its tenant and lane, at one time).
#[derive(Debug, Default)]
pub struct RuleSet {
    /// The applicable rules' names, sorted: an index into this is a rule.
    names: Vec<String>,
    addresses: Map,
    domains: Map,
    suffixes: Map,
    locals: Map,
    /// Address patterns that do not split at one `@` into a local and a
    /// domain half (say `*example.com`).
    address_globs: Globs,
    /// Address patterns with one `@`, by halves: the domain halves are
    /// asked once per domain ([`RuleSet::domain_match`]), the local half
    /// only of the patterns whose domain half matched.
    split_globs: SplitGlobs,
    /// Every address pattern whole, for the rare address whose local part
    /// holds an `@` itself (quoted), where the halves do not apply.
    all_address_globs: Globs,
    local_globs: Globs,
    /// The earliest expiry among the compiled rules: from then on the set
    /// must be compiled again.
    valid_until: Option<i64>,
}

/// Wildcard patterns of one kind and the rule of each.
#[derive(Debug, Default)]
struct Globs {
    set: Option<RegexSet>,
    rules: Vec<u32>,
}

impl Globs {
    fn build(patterns: Vec<(String, u32)>) -> Self {
        if patterns.is_empty() {
            return Self::default();
        }
        let regexes: Vec<String> = patterns.iter().map(|(p, _)| glob_regex(p)).collect();
        // The patterns were validated and every character but the
        // wildcards is escaped, so the set always compiles.
        match RegexSet::new(&regexes) {
            Ok(set) => Self {
                set: Some(set),
                rules: patterns.into_iter().map(|(_, r)| r).collect(),
            },
            Err(e) => {
                tracing::error!(error = %e, "exclusion rule patterns do not compile; they are ignored");
                Self::default()
            }
        }
    }

    fn first(&self, text: &str) -> Option<u32> {
        let set = self.set.as_ref()?;
        // Most addresses match no pattern: a plain yes/no search settles
        // them, and only a match pays for finding every pattern it hits.
        if !set.is_match(text) {
            return None;
        }
        set.matches(text).iter().map(|i| self.rules[i]).min()
    }
}

/// Address patterns split at their `@`: one regex set over the domain
/// halves, and the local half and rule of each.
#[derive(Debug, Default)]
struct SplitGlobs {
    domains: Option<RegexSet>,
    locals: Vec<Regex>,
    rules: Vec<u32>,
}

impl SplitGlobs {
    fn build(patterns: &[(String, u32)]) -> Self {
        let mut domains = Vec::new();
        let mut locals = Vec::new();
        let mut rules = Vec::new();
        for (p, rule) in patterns {
            let Some((local, domain)) = p.split_once('@') else {
                continue;
            };
            // Validated and escaped like the whole patterns: always compiles.
            let Ok(local) = Regex::new(&glob_regex(local)) else {
                continue;
            };
            domains.push(glob_regex(domain));
            locals.push(local);
            rules.push(*rule);
        }
        if domains.is_empty() {
            return Self::default();
        }
        match RegexSet::new(&domains) {
            Ok(set) => Self {
                domains: Some(set),
                locals,
                rules,
            },
            Err(e) => {
                tracing::error!(error = %e, "exclusion rule patterns do not compile; they are ignored");
                Self::default()
            }
        }
    }

    /// The patterns whose domain half matches `domain`.
    fn candidates(&self, domain: &str) -> Vec<u32> {
        let Some(set) = &self.domains else {
            return Vec::new();
        };
        if !set.is_match(domain) {
            return Vec::new();
        }
        set.matches(domain).iter().map(|i| i as u32).collect()
    }
}

/// What the rules say about a domain alone: the first rule that excludes
/// every address at it (a domain, a suffix), and the address patterns
/// whose domain half it matches. An expansion keeps one per domain
/// ([`DomainMemo`]), so a recipient costs the look-ups of its own address
/// and local part only.
#[derive(Debug, Clone, Default)]
pub struct DomainMatch {
    rule: Option<u32>,
    patterns: Vec<u32>,
}

/// `*` → any run, `?` → one character, everything else literal; anchored.
fn glob_regex(pattern: &str) -> String {
    let mut out = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push('$');
    out
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?'])
}

/// Keeps the lowest rule index for a key (the rule whose name sorts first).
fn put(map: &mut Map, key: &str, rule: u32) {
    map.entry(key.to_string())
        .and_modify(|r| *r = (*r).min(rule))
        .or_insert(rule);
}

impl RuleSet {
    /// Compiles the rules that apply to a request of `tenant` in `lane` at
    /// `now` (enabled, not expired, in scope); a rule whose list is missing
    /// from `lists` matches nothing.
    pub fn compile(
        rules: &[Rule],
        lists: &ListMembers,
        tenant: Option<&str>,
        lane: Lane,
        now: i64,
    ) -> Self {
        let mut applicable: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.applies(tenant, lane, now))
            .collect();
        applicable.sort_by(|a, b| a.name.cmp(&b.name));
        let mut set = RuleSet {
            valid_until: applicable.iter().filter_map(|r| r.expires).min(),
            ..Default::default()
        };
        let mut address_globs = Vec::new();
        let mut local_globs = Vec::new();
        for (i, rule) in applicable.iter().enumerate() {
            let i = i as u32;
            set.names.push(rule.name.clone());
            match &rule.matches {
                RuleMatch::Address(patterns) => {
                    for p in patterns {
                        match p.strip_prefix("*@") {
                            // The common `*@domain` is a domain look-up.
                            Some(domain) if !is_glob(domain) => put(&mut set.domains, domain, i),
                            _ if is_glob(p) => address_globs.push((p.clone(), i)),
                            _ => put(&mut set.addresses, p, i),
                        }
                    }
                }
                RuleMatch::Domain(domains) => {
                    for d in domains {
                        put(&mut set.domains, d, i);
                    }
                }
                RuleMatch::DomainSuffix(domains) => {
                    for d in domains {
                        put(&mut set.suffixes, d, i);
                    }
                }
                RuleMatch::Local(patterns) => {
                    for p in patterns {
                        if is_glob(p) {
                            local_globs.push((p.clone(), i));
                        } else {
                            put(&mut set.locals, p, i);
                        }
                    }
                }
                RuleMatch::List(list) => {
                    for entry in lists.get(list).into_iter().flatten() {
                        if entry.contains('@') {
                            put(&mut set.addresses, entry, i);
                        } else {
                            put(&mut set.suffixes, entry, i);
                        }
                    }
                }
            }
        }
        let (split, whole): (Vec<_>, Vec<_>) = address_globs
            .iter()
            .cloned()
            .partition(|(p, _)| p.matches('@').count() == 1);
        set.split_globs = SplitGlobs::build(&split);
        set.address_globs = Globs::build(whole);
        set.all_address_globs = Globs::build(address_globs);
        set.local_globs = Globs::build(local_globs);
        set
    }

    /// Whether no rule applies (matching then costs nothing).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How many rules apply.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the set must be compiled again at `now` (a rule expired).
    pub fn expired(&self, now: i64) -> bool {
        self.valid_until.is_some_and(|t| now >= t)
    }

    /// The name of the rule that excludes the address `key` (an address key:
    /// lowercase, ASCII domain), if one does.
    pub fn first_match(&self, key: &str) -> Option<&str> {
        if self.names.is_empty() {
            return None;
        }
        let (_, domain) = key.rsplit_once('@')?;
        self.first_match_at(key, &self.domain_match(domain))
    }

    /// What the rules say about `domain` alone, for [`Self::first_match_at`].
    pub fn domain_match(&self, domain: &str) -> DomainMatch {
        if self.names.is_empty() {
            return DomainMatch::default();
        }
        let mut rule = self.domains.get(domain).copied();
        if !self.suffixes.is_empty() {
            let mut rest = domain;
            loop {
                rule = lowest(rule, self.suffixes.get(rest).copied());
                match rest.split_once('.') {
                    Some((_, tail)) => rest = tail,
                    None => break,
                }
            }
        }
        DomainMatch {
            rule,
            patterns: self.split_globs.candidates(domain),
        }
    }

    /// [`Self::first_match`] of an address whose domain's [`DomainMatch`]
    /// is known.
    pub fn first_match_at(&self, key: &str, at: &DomainMatch) -> Option<&str> {
        self.first_index_at(key, at)
            .map(|i| self.names[i as usize].as_str())
    }

    fn first_index_at(&self, key: &str, at: &DomainMatch) -> Option<u32> {
        if self.names.is_empty() {
            return None;
        }
        let (local, _) = key.rsplit_once('@')?;
        let mut best = lowest(at.rule, self.addresses.get(key).copied());
        best = lowest(best, self.locals.get(local).copied());
        if local.contains('@') {
            best = lowest(best, self.all_address_globs.first(key));
        } else {
            best = lowest(best, self.address_globs.first(key));
            for &i in &at.patterns {
                let i = i as usize;
                if self.split_globs.locals[i].is_match(local) {
                    best = lowest(best, Some(self.split_globs.rules[i]));
                }
            }
        }
        lowest(best, self.local_globs.first(local))
    }
}

/// The rule that sorts first of two, either of which may be none.
fn lowest(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The [`DomainMatch`] of each domain an expansion has met, for the rules
/// it was computed with: asking a recipient costs one look-up for
/// everything that depends on its domain alone.
#[derive(Debug)]
pub struct DomainMemo {
    rules: std::sync::Arc<RuleSet>,
    domains: foldhash::HashMap<String, DomainMatch>,
}

/// Domains remembered at most; beyond this the memo starts over.
const MEMO_MAX: usize = 100_000;

impl DomainMemo {
    pub fn new(rules: std::sync::Arc<RuleSet>) -> Self {
        Self {
            rules,
            domains: Default::default(),
        }
    }

    /// Uses `rules` from now on (forgetting what was computed with others).
    pub fn set_rules(&mut self, rules: std::sync::Arc<RuleSet>) {
        if !std::sync::Arc::ptr_eq(&self.rules, &rules) {
            self.rules = rules;
            self.domains.clear();
        }
    }

    /// [`RuleSet::first_match`] of `key`, the domain's part remembered.
    pub fn first_match(&mut self, key: &str) -> Option<&str> {
        if self.rules.is_empty() {
            return None;
        }
        let (_, domain) = key.rsplit_once('@')?;
        let rule = match self.domains.get(domain) {
            Some(at) => self.rules.first_index_at(key, at),
            None => {
                let at = self.rules.domain_match(domain);
                let rule = self.rules.first_index_at(key, &at);
                if self.domains.len() >= MEMO_MAX {
                    self.domains.clear();
                }
                self.domains.insert(domain.to_string(), at);
                rule
            }
        };
        rule.map(|i| self.rules.names[i as usize].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleScope;

    fn rule(name: &str, m: RuleMatch, scope: RuleScope) -> Rule {
        Rule {
            name: name.into(),
            matches: m,
            scope,
            expires: None,
            enabled: true,
            note: None,
            created: 0,
        }
        .normalized()
        .unwrap()
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_rule_excludes_the_addresses_it_names_in_its_scope() {
        let mut expiring = rule(
            "old-promo",
            RuleMatch::Domain(v(&["promo.example"])),
            RuleScope::All,
        );
        expiring.expires = Some(1_000);
        let mut disabled = rule("off", RuleMatch::Local(v(&["*"])), RuleScope::All);
        disabled.enabled = false;
        let rules = vec![
            rule(
                "competitors",
                RuleMatch::DomainSuffix(v(&["competitor.example"])),
                RuleScope::All,
            ),
            rule(
                "roles",
                RuleMatch::Local(v(&["postmaster", "abuse", "no-reply*", "noreply"])),
                RuleScope::Bulk,
            ),
            rule(
                "acme-partners",
                RuleMatch::List("partners".into()),
                RuleScope::Tenant("acme".into()),
            ),
            rule(
                "vips",
                RuleMatch::Address(v(&[
                    "ceo@acme.example",
                    "*@board.example",
                    "test-??@qa.example",
                ])),
                RuleScope::All,
            ),
            rule(
                "exact-domain",
                RuleMatch::Domain(v(&["exact.example"])),
                RuleScope::All,
            ),
            // Matches the same as `competitors`; the name that sorts first wins.
            rule(
                "a-first",
                RuleMatch::Address(v(&["boss@competitor.example"])),
                RuleScope::All,
            ),
            expiring,
            disabled,
        ];
        let lists: ListMembers = [(
            "partners".to_string(),
            v(&["partner.example", "ann@friend.example"]),
        )]
        .into();
        use Lane::{Bulk, Transactional as Txn};
        // (tenant, lane, now, address, the rule that excludes it)
        type Case<'a> = (Option<&'a str>, Lane, i64, &'a str, Option<&'a str>);
        let table: &[Case] = &[
            (None, Bulk, 0, "bob@competitor.example", Some("competitors")),
            (
                None,
                Txn,
                0,
                "bob@mail.competitor.example",
                Some("competitors"),
            ),
            (None, Bulk, 0, "bob@notcompetitor.example", None),
            (None, Bulk, 0, "bob@competitor.example.org", None),
            (None, Bulk, 0, "boss@competitor.example", Some("a-first")),
            (None, Bulk, 0, "postmaster@shop.example", Some("roles")),
            (
                None,
                Bulk,
                0,
                "no-reply-billing@shop.example",
                Some("roles"),
            ),
            (None, Bulk, 0, "noreply@shop.example", Some("roles")),
            (None, Bulk, 0, "noreplyx@shop.example", None),
            (None, Bulk, 0, "postmaster2@shop.example", None),
            (None, Txn, 0, "postmaster@shop.example", None),
            (
                Some("acme"),
                Bulk,
                0,
                "x@partner.example",
                Some("acme-partners"),
            ),
            (
                Some("acme"),
                Txn,
                0,
                "x@eu.partner.example",
                Some("acme-partners"),
            ),
            (
                Some("acme"),
                Bulk,
                0,
                "ann@friend.example",
                Some("acme-partners"),
            ),
            (Some("acme"), Bulk, 0, "bob@friend.example", None),
            (Some("other"), Bulk, 0, "x@partner.example", None),
            (None, Bulk, 0, "x@partner.example", None),
            (None, Txn, 0, "ceo@acme.example", Some("vips")),
            (None, Bulk, 0, "anyone@board.example", Some("vips")),
            (None, Bulk, 0, "anyone@sub.board.example", None),
            (None, Bulk, 0, "test-42@qa.example", Some("vips")),
            (None, Bulk, 0, "test-420@qa.example", None),
            (None, Bulk, 0, "x@exact.example", Some("exact-domain")),
            (None, Bulk, 0, "x@sub.exact.example", None),
            (None, Bulk, 999, "x@promo.example", Some("old-promo")),
            (None, Bulk, 1_000, "x@promo.example", None),
            (None, Bulk, 0, "someone@else.example", None),
        ];
        for (tenant, lane, now, address, want) in table {
            let set = RuleSet::compile(&rules, &lists, *tenant, *lane, *now);
            assert_eq!(
                set.first_match(address),
                *want,
                "{address} ({tenant:?}, {lane:?}, at {now})"
            );
        }
    }

    #[test]
    fn a_set_knows_when_a_rule_in_it_expires_and_an_empty_set_matches_nothing() {
        let mut r = rule("x", RuleMatch::Local(v(&["a"])), RuleScope::All);
        r.expires = Some(50);
        let set = RuleSet::compile(&[r], &ListMembers::new(), None, Lane::Bulk, 10);
        assert_eq!(set.len(), 1);
        assert!(!set.expired(49));
        assert!(set.expired(50));
        let empty = RuleSet::compile(&[], &ListMembers::new(), None, Lane::Bulk, 0);
        assert!(empty.is_empty());
        assert_eq!(empty.first_match("a@example.com"), None);
        // A rule whose list does not exist matches nothing.
        let missing = rule("gone", RuleMatch::List("nolist".into()), RuleScope::All);
        let set = RuleSet::compile(&[missing], &ListMembers::new(), None, Lane::Bulk, 0);
        assert_eq!(set.first_match("a@example.com"), None);
    }

    #[test]
    fn wildcards_are_the_only_special_characters_in_a_pattern() {
        let r = rule(
            "dots",
            RuleMatch::Address(v(&["a.b+*@x.example"])),
            RuleScope::All,
        );
        let set = RuleSet::compile(&[r], &ListMembers::new(), None, Lane::Bulk, 0);
        assert_eq!(set.first_match("a.b+news@x.example"), Some("dots"));
        assert_eq!(set.first_match("axb+news@x.example"), None);
        assert_eq!(set.first_match("a.bb+news@x.example"), None);
    }

    #[test]
    fn address_patterns_match_by_halves_and_the_memo_answers_as_the_set() {
        let all = RuleScope::All;
        let rules = vec![
            rule(
                "a-split",
                RuleMatch::Address(v(&["user*@bad?.example", "x@*.corp.example", "a@b*"])),
                all.clone(),
            ),
            rule(
                "b-any-domain",
                RuleMatch::Address(v(&["*spam*@*", "*@*@q.example"])),
                all.clone(),
            ),
            rule(
                "c-domain",
                RuleMatch::Domain(v(&["d.example"])),
                all.clone(),
            ),
            rule("d-local", RuleMatch::Local(v(&["trap*"])), all.clone()),
            rule(
                "e-suffix",
                RuleMatch::DomainSuffix(v(&["corp.example"])),
                all,
            ),
        ];
        let set = std::sync::Arc::new(RuleSet::compile(
            &rules,
            &ListMembers::new(),
            None,
            Lane::Bulk,
            0,
        ));
        let table = [
            ("user1@bad1.example", Some("a-split")),
            ("user1@bad10.example", None),
            ("usr@bad1.example", None),
            ("x@mail.corp.example", Some("a-split")),
            ("y@mail.corp.example", Some("e-suffix")),
            ("x@corp.example", Some("e-suffix")),
            ("spammer@e.example", Some("b-any-domain")),
            ("me@spamhaus.example", None),
            // Two `@` in the pattern: matched whole.
            ("z@b@q.example", Some("b-any-domain")),
            ("trap7@d.example", Some("c-domain")),
            ("trap7@e.example", Some("d-local")),
            ("ok@e.example", None),
            // A local part that holds an `@` (quoted): the pattern is
            // matched whole, where its halves would not line up.
            ("a@b@c.example", Some("a-split")),
            ("a@c.example", None),
            ("no-at-sign", None),
        ];
        let mut memo = DomainMemo::new(set.clone());
        // Twice: the second round answers from the memo.
        for round in 0..2 {
            for (key, want) in table {
                assert_eq!(set.first_match(key), want, "{key}");
                assert_eq!(memo.first_match(key), want, "{key} (memo, round {round})");
            }
        }
        // Other rules: what the memo knew of the old ones is forgotten.
        let fewer = std::sync::Arc::new(RuleSet::compile(
            &rules[3..4],
            &ListMembers::new(),
            None,
            Lane::Bulk,
            0,
        ));
        memo.set_rules(fewer);
        assert_eq!(memo.first_match("trap7@d.example"), Some("d-local"));
        assert_eq!(memo.first_match("user1@bad1.example"), None);
    }
}

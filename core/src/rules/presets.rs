//! The built-in rules: role accounts, shipped disabled. A role address is a
//! function, not a person: nobody subscribed `postmaster@` to a newsletter,
//! mail to `noreply@` is never read, and a shared `info@` inbox is where
//! complaints come from. Each set is bulk-only, so transactional mail (an
//! invoice to `billing@`, a reset for `admin@`) still reaches them.
//! Operators switch one on with `mailpipe rules enable NAME`.

use super::{Rule, RuleMatch, RuleScope};

/// `(name, local parts, why)` of each built-in rule.
const ROLE_ACCOUNTS: &[(&str, &[&str], &str)] = &[
    (
        "role-admin",
        &[
            "abuse",
            "admin",
            "administrator",
            "hostmaster",
            "postmaster",
            "root",
            "security",
            "webmaster",
        ],
        "role accounts of the mail and web operators (RFC 2142 and the usual others)",
    ),
    (
        "role-noreply",
        &[
            "bounce",
            "bounces",
            "do-not-reply*",
            "donotreply*",
            "mailer-daemon",
            "no-reply*",
            "no_reply*",
            "noreply*",
        ],
        "addresses that send mail and read none",
    ),
    (
        "role-shared",
        &[
            "contact",
            "enquiries",
            "hello",
            "info",
            "office",
            "sales",
            "support",
            "team",
        ],
        "shared inboxes that many people read and nobody subscribed",
    ),
];

/// The built-in rules, disabled, as `mailpipe rules list` shows them until
/// an operator enables (and so stores) one.
pub fn presets() -> Vec<Rule> {
    ROLE_ACCOUNTS
        .iter()
        .map(|(name, locals, why)| Rule {
            name: name.to_string(),
            matches: RuleMatch::Local(locals.iter().map(|l| l.to_string()).collect()),
            scope: RuleScope::Bulk,
            expires: None,
            enabled: false,
            note: Some(why.to_string()),
            created: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Lane;
    use crate::rules::{ListMembers, RuleSet};

    #[test]
    fn the_built_in_rules_are_valid_disabled_and_bulk_only() {
        for r in presets() {
            assert!(!r.enabled, "{}", r.name);
            assert_eq!(r.scope, RuleScope::Bulk, "{}", r.name);
            assert_eq!(
                r.clone().normalized().as_ref(),
                Ok(&r),
                "{} is normalized",
                r.name
            );
        }
        let disabled = RuleSet::compile(&presets(), &ListMembers::new(), None, Lane::Bulk, 0);
        assert!(disabled.is_empty());
        let enabled: Vec<Rule> = presets()
            .into_iter()
            .map(|r| Rule { enabled: true, ..r })
            .collect();
        let set = RuleSet::compile(&enabled, &ListMembers::new(), None, Lane::Bulk, 0);
        let table = [
            ("postmaster@example.com", Some("role-admin")),
            ("noreply@example.com", Some("role-noreply")),
            ("no-reply-billing@example.com", Some("role-noreply")),
            ("info@example.com", Some("role-shared")),
            ("ann@example.com", None),
            ("information@example.com", None),
        ];
        for (address, want) in table {
            assert_eq!(set.first_match(address), want, "{address}");
        }
        let txn = RuleSet::compile(&enabled, &ListMembers::new(), None, Lane::Transactional, 0);
        assert_eq!(txn.first_match("postmaster@example.com"), None);
    }
}

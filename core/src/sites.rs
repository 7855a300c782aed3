//! Sites: the mail systems behind recipient domains.
//!
//! A mailbox provider enforces its limits on its MX hosts, which serve
//! thousands of domains: mail to a thousand domains hosted at Google is one
//! destination to Google. So every recipient domain belongs to a site,
//! named from its most preferred MX host:
//!
//! 1. the first rule whose MX host pattern covers that host names the site
//!    (the operator's rules, `sites.rules`, before the shipped ones:
//!    `*.google.com` and `*.googlemail.com` are `google`,
//!    `*.protection.outlook.com` is `microsoft`, `*.yahoodns.net` is
//!    `yahoo`);
//! 2. else the host's registered domain is the site (`mx1.mail.example.net`
//!    → `example.net`, by the public suffix list), so the domains one
//!    hosting company serves share a site without a rule;
//! 3. a domain without MX records (mail goes to its own address), with a
//!    null MX, or whose lookup failed is its own site.
//!
//! [`site_of`] is the whole decision, a pure function of the lookup's
//! answer and the rules, with a table test.

use serde::Deserialize;

/// One operator rule: MX hosts that `mx` covers belong to `site`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteRule {
    /// `*.example.com` (any host below example.com) or an exact host name.
    pub mx: String,
    /// The site's name.
    pub site: String,
}

/// The rules mailpipe ships, applied after the operator's.
pub fn shipped_rules() -> Vec<SiteRule> {
    [
        ("*.google.com", "google"),
        ("*.googlemail.com", "google"),
        ("*.protection.outlook.com", "microsoft"),
        ("*.yahoodns.net", "yahoo"),
    ]
    .into_iter()
    .map(|(mx, site)| SiteRule {
        mx: mx.into(),
        site: site.into(),
    })
    .collect()
}

/// A compiled host pattern.
#[derive(Debug, Clone)]
enum Pattern {
    /// This host only.
    Exact(String),
    /// Any host below this domain (stored with its leading dot).
    Below(String),
}

/// The rules, compiled once: the operator's, then the shipped ones.
#[derive(Debug, Clone)]
pub struct SiteRules {
    rules: Vec<(Pattern, String)>,
}

impl SiteRules {
    /// Compiles the operator's rules followed by the shipped ones; a rule
    /// with an empty pattern or site, or a `*` anywhere but in front, is
    /// refused with the reason.
    pub fn new(operator: &[SiteRule]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for r in operator.iter().chain(shipped_rules().iter()) {
            let mx = host(&r.mx);
            let site = r.site.trim().to_ascii_lowercase();
            if site.is_empty() || mx.is_empty() {
                return Err(format!(
                    "site rule {r:?}: an MX pattern and a site name are needed"
                ));
            }
            let pattern = match mx.strip_prefix("*.") {
                Some(below) if !below.is_empty() && !below.contains('*') => {
                    Pattern::Below(format!(".{below}"))
                }
                None if !mx.contains('*') => Pattern::Exact(mx),
                _ => {
                    return Err(format!(
                        "site rule {r:?}: a pattern is a host name or `*.` and a domain"
                    ))
                }
            };
            rules.push((pattern, site));
        }
        Ok(Self { rules })
    }

    /// The site the first rule covering `host` names.
    fn site_for_host(&self, host: &str) -> Option<&str> {
        self.rules.iter().find_map(|(p, site)| {
            let covers = match p {
                Pattern::Exact(h) => h == host,
                Pattern::Below(suffix) => host.ends_with(suffix.as_str()),
            };
            covers.then_some(site.as_str())
        })
    }
}

impl Default for SiteRules {
    fn default() -> Self {
        Self::new(&[]).expect("the shipped site rules compile")
    }
}

/// A host name as compared: lowercase, without the root's trailing dot.
fn host(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The site of `domain`. `mx` is its MX hosts, most preferred first, or
/// `None` when it has none (no MX records, a null MX, or a failed lookup).
pub fn site_of(domain: &str, mx: Option<&[String]>, rules: &SiteRules) -> String {
    let Some(primary) = mx.and_then(|hosts| hosts.first()).map(|h| host(h)) else {
        return host(domain);
    };
    if primary.is_empty() {
        return host(domain);
    }
    if let Some(site) = rules.site_for_host(&primary) {
        return site.to_string();
    }
    psl::domain_str(&primary)
        .map(str::to_string)
        .unwrap_or(primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_belongs_to_the_site_of_its_most_preferred_mx_host() {
        let rules = SiteRules::new(&[SiteRule {
            mx: "*.mx.partner.example".into(),
            site: "Partner".into(),
        }])
        .unwrap();
        let hosts = |h: &[&str]| Some(h.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // (domain, MX hosts by preference, site)
        let table: Vec<(&str, Option<Vec<String>>, &str)> = vec![
            // Shipped rules.
            (
                "gmail.com",
                hosts(&[
                    "gmail-smtp-in.l.google.com.",
                    "alt1.gmail-smtp-in.l.google.com.",
                ]),
                "google",
            ),
            ("acme.example", hosts(&["ASPMX.L.GOOGLE.COM"]), "google"),
            ("old.example", hosts(&["aspmx.googlemail.com"]), "google"),
            (
                "contoso.example",
                hosts(&["contoso-example.mail.protection.outlook.com"]),
                "microsoft",
            ),
            ("yahoo.com", hosts(&["mta5.am0.yahoodns.net"]), "yahoo"),
            // The operator's rule, named in lowercase.
            ("a.example", hosts(&["in1.mx.partner.example"]), "partner"),
            // No rule: the primary MX host's registered domain.
            (
                "b.example",
                hosts(&["mx1.hosting.example.net", "mx2.other.example"]),
                "example.net",
            ),
            (
                "c.example",
                hosts(&["mail.provider.co.uk"]),
                "provider.co.uk",
            ),
            // The site is the most preferred host's, whatever the backups.
            (
                "d.example",
                hosts(&["mx.own.example", "aspmx.l.google.com"]),
                "own.example",
            ),
            // A pattern covers hosts below its domain, not the domain itself
            // nor look-alikes.
            ("e.example", hosts(&["google.com"]), "google.com"),
            ("f.example", hosts(&["mx.notgoogle.com"]), "notgoogle.com"),
            // No MX, null MX, failed lookup: the domain is its own site.
            ("Plain.Example", None, "plain.example"),
            ("g.example", hosts(&[]), "g.example"),
        ];
        for (domain, mx, want) in table {
            assert_eq!(
                site_of(domain, mx.as_deref(), &rules),
                want,
                "{domain}: {mx:?}"
            );
        }
    }

    #[test]
    fn a_rule_that_is_not_a_host_or_a_wildcard_domain_is_refused() {
        for (mx, site) in [
            ("", "x"),
            ("*.a.example", ""),
            ("mx*.a.example", "x"),
            ("*.", "x"),
        ] {
            let rule = SiteRule {
                mx: mx.into(),
                site: site.into(),
            };
            assert!(SiteRules::new(&[rule]).is_err(), "{mx:?} -> {site:?}");
        }
        assert!(SiteRules::new(&[]).is_ok());
    }
}

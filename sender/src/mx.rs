//! MX delivery: where a recipient domain's mail goes when mailpipe delivers
//! directly instead of through a relay.
//!
//! The domain's MX records are looked up (answers cached for their TTL by
//! the resolver), hosts are tried in preference order (backup MX after the
//! primary), each host's addresses in turn; a domain without MX records
//! falls back to its own A/AAAA records (RFC 5321 §5.1 "implicit MX"), and a
//! null MX (RFC 7505: a single MX with the root as exchange) or a domain
//! that does not exist is answered with a failure the classifier calls
//! `invalid_domain`.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::proto::rr::{RData, Record};
use hickory_resolver::TokioResolver;
use mailpipe_common::classify::{ConnectionError, Failure};

/// One mail exchanger and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanger {
    pub host: String,
    pub preference: u16,
    pub addresses: Vec<IpAddr>,
}

/// Looks up mail exchangers.
pub struct MxResolver {
    resolver: TokioResolver,
}

impl MxResolver {
    /// A resolver using `nameservers` (`ip:port`), or the system's
    /// configuration when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> anyhow::Result<Self> {
        Ok(Self {
            resolver: mailpipe_common::dns::resolver(nameservers)?,
        })
    }

    /// The exchangers of a domain in the order to try them.
    pub async fn exchangers(&self, domain: &str) -> Result<Vec<Exchanger>, Failure> {
        let fqdn = fqdn(domain);
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mx = mx_records(lookup.answers());
                let hosts: Vec<String> = mx.iter().map(|(_, h)| h.clone()).collect();
                if mailpipe_common::quality::is_null_mx(&hosts) {
                    return Err(null_mx(domain));
                }
                let mut out = Vec::new();
                for (preference, host) in by_preference(mx) {
                    // A host that does not resolve is skipped; the next MX is tried.
                    if let Ok(ips) = self.resolver.lookup_ip(host.as_str()).await {
                        let addresses: Vec<IpAddr> = ips.iter().collect();
                        if !addresses.is_empty() {
                            out.push(Exchanger {
                                host: host.trim_end_matches('.').to_string(),
                                preference,
                                addresses,
                            });
                        }
                    }
                }
                if out.is_empty() {
                    return Err(Failure::Connection {
                        error: ConnectionError::Dns,
                        detail: format!("no MX host of {domain} resolves to an address"),
                    });
                }
                Ok(out)
            }
            Err(e) if e.is_nx_domain() => Err(Failure::Reply {
                code: 550,
                enhanced: Some("5.1.2".into()),
                text: format!("Host or domain name not found: {domain} does not exist (NXDOMAIN)"),
            }),
            Err(e) if e.is_no_records_found() => {
                // No MX: the domain's own address is its mail exchanger.
                match self.resolver.lookup_ip(fqdn.as_str()).await {
                    Ok(ips) if ips.iter().next().is_some() => Ok(vec![Exchanger {
                        host: domain.to_string(),
                        preference: 0,
                        addresses: ips.iter().collect(),
                    }]),
                    _ => Err(Failure::Reply {
                        code: 550,
                        enhanced: Some("5.1.2".into()),
                        text: format!(
                            "Host or domain name not found: {domain} has no MX and no address"
                        ),
                    }),
                }
            }
            Err(e) => Err(Failure::Connection {
                error: ConnectionError::Dns,
                detail: format!("MX lookup of {domain} failed: {e}"),
            }),
        }
    }
}

impl MxResolver {
    /// A domain's MX hosts, most preferred first, for its site, and until
    /// when the answer holds (its TTL): `None` when it has none (no MX
    /// records, a null MX, a domain that does not exist) or the lookup
    /// failed, which is then asked again after a minute.
    pub async fn mx_hosts(&self, domain: &str) -> (Option<Vec<String>>, std::time::Instant) {
        let fqdn = fqdn(domain);
        let now = std::time::Instant::now();
        let retry = now + std::time::Duration::from_secs(60);
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let hosts: Vec<String> = by_preference(mx_records(lookup.answers()))
                    .into_iter()
                    .map(|(_, h)| h)
                    .collect();
                (
                    (!hosts.is_empty()).then_some(hosts),
                    lookup
                        .valid_until()
                        .max(now + std::time::Duration::from_secs(1)),
                )
            }
            Err(_) => (None, retry),
        }
    }
}

/// A domain as an absolute name, for the resolver.
fn fqdn(domain: &str) -> String {
    format!("{}.", domain.trim_end_matches('.'))
}

/// The MX records of an answer: each one's preference and exchange.
fn mx_records(answers: &[Record]) -> Vec<(u16, String)> {
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(m) => Some((m.preference, m.exchange.to_ascii())),
            _ => None,
        })
        .collect()
}

/// The hosts an MX answer names (not the root of a null MX), most
/// preferred first.
fn by_preference(mut mx: Vec<(u16, String)>) -> Vec<(u16, String)> {
    mx.retain(|(_, host)| host != "." && !host.is_empty());
    mx.sort();
    mx
}

/// The failure of a domain that publishes a null MX (RFC 7505).
pub fn null_mx(domain: &str) -> Failure {
    Failure::Reply {
        code: 556,
        enhanced: Some("5.1.10".into()),
        text: format!(
            "Recipient address rejected: {domain} publishes a null MX and accepts no mail"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_mx_is_classified_as_an_invalid_domain_that_is_not_retried() {
        let c =
            mailpipe_common::classify::Classifier::default().classify(&null_mx("nomail.example"));
        assert_eq!(c.reason, mailpipe_common::classify::Reason::InvalidDomain);
        assert!(!c.retry);
    }

    #[test]
    fn a_domain_that_does_not_exist_is_an_invalid_domain() {
        let f = Failure::Reply {
            code: 550,
            enhanced: Some("5.1.2".into()),
            text: "Host or domain name not found: x.example does not exist (NXDOMAIN)".into(),
        };
        let c = mailpipe_common::classify::Classifier::default().classify(&f);
        assert_eq!(c.reason, mailpipe_common::classify::Reason::InvalidDomain);
    }
    #[test]
    fn mx_hosts_go_by_preference_without_the_root_of_a_null_mx() {
        let mx = |v: &[(u16, &str)]| -> Vec<(u16, String)> {
            v.iter().map(|(p, h)| (*p, h.to_string())).collect()
        };
        assert_eq!(
            by_preference(mx(&[
                (20, "b.example."),
                (10, "c.example."),
                (10, "a.example.")
            ])),
            mx(&[(10, "a.example."), (10, "c.example."), (20, "b.example.")])
        );
        assert_eq!(by_preference(mx(&[(0, ".")])), mx(&[]));
        assert_eq!(
            by_preference(mx(&[(0, ""), (5, "a.example.")])),
            mx(&[(5, "a.example.")])
        );
        assert_eq!(fqdn("example.com"), "example.com.");
        assert_eq!(fqdn("example.com."), "example.com.");
    }
}

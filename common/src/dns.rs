//! DNS for mail: the resolver the sender delivers with (`sender.mx.nameservers`,
//! or the system's configuration) and, on it, the lookup of whether a
//! domain has a mail host, which the expander's `no_mail_host` check and
//! `mailpipe submit --dry-run` ask. The decision from the answers is
//! [`crate::quality::mail_host`]; this file only asks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::quality::{mail_host, Answer, MailHost};

/// A resolver using `nameservers` (`ip:port`), or the system's
/// configuration when the list is empty. It caches answers for their TTL.
pub fn resolver(nameservers: &[SocketAddr]) -> anyhow::Result<TokioResolver> {
    if nameservers.is_empty() {
        return Ok(TokioResolver::builder_tokio()?.build()?);
    }
    let servers = nameservers
        .iter()
        .map(|sa| {
            let mut ns = NameServerConfig::udp_and_tcp(sa.ip());
            for c in &mut ns.connections {
                c.port = sa.port();
            }
            ns
        })
        .collect();
    Ok(Resolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .build()?)
}

/// Answers about domains' mail hosts, each domain asked once per
/// `cache_ttl` by this process (a definite answer is kept; a failed lookup
/// is not, so the next campaign asks again).
pub struct MailHosts {
    resolver: TokioResolver,
    timeout: Duration,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, (MailHost, Instant)>>,
    lookups: AtomicU64,
}

/// Domains kept in the cache before expired answers are dropped (and, if
/// that is not enough, all of them).
const CACHE_MAX: usize = 200_000;

impl MailHosts {
    pub fn new(
        nameservers: &[SocketAddr],
        timeout: Duration,
        cache_ttl: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            resolver: resolver(nameservers)?,
            timeout,
            cache_ttl,
            cache: Mutex::new(HashMap::new()),
            lookups: AtomicU64::new(0),
        })
    }

    /// The cached answer about `domain`, if it is still fresh.
    pub fn cached(&self, domain: &str) -> Option<MailHost> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(domain)
            .filter(|(_, at)| at.elapsed() < self.cache_ttl)
            .map(|(h, _)| h.clone())
    }

    /// Lookups made so far (not counting answers from the cache).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Looks `domain` up (within the timeout) and caches a definite answer.
    pub async fn lookup(&self, domain: &str) -> MailHost {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let answer = match tokio::time::timeout(self.timeout, self.ask(domain)).await {
            Ok(a) => a,
            Err(_) => MailHost::Unknown(format!("no answer within {:?}", self.timeout)),
        };
        if !matches!(answer, MailHost::Unknown(_)) {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= CACHE_MAX {
                    let ttl = self.cache_ttl;
                    cache.retain(|_, (_, at)| at.elapsed() < ttl);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(domain.to_string(), (answer.clone(), Instant::now()));
            }
        }
        answer
    }

    async fn ask(&self, domain: &str) -> MailHost {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let mx = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => Answer::Records(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(m) => Some(m.exchange.to_ascii()),
                        _ => None,
                    })
                    .collect(),
            ),
            Err(e) if e.is_nx_domain() => Answer::NxDomain,
            Err(e) if e.is_no_records_found() => Answer::NoRecords,
            Err(e) => Answer::Failed(e.to_string()),
        };
        match mail_host(&mx, None) {
            MailHost::AskAddresses => {}
            decided => return decided,
        }
        let addresses = match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => Answer::Records(ips.iter().count()),
            Err(e) if e.is_nx_domain() => Answer::NxDomain,
            Err(e) if e.is_no_records_found() => Answer::NoRecords,
            Err(e) => Answer::Failed(e.to_string()),
        };
        mail_host(&mx, Some(&addresses))
    }
}

//! Which site a recipient domain belongs to ([`mailpipe_common::sites`]),
//! in relay mode as in MX mode: a provider throttles the relay's address
//! all the same. The MX answers are kept for their TTL (a failed lookup for
//! a minute), so a campaign costs one lookup per domain, not per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mailpipe_common::sites::{site_of, SiteRules};

use crate::mx::MxResolver;

/// The sites of the domains this sender meets.
pub(crate) struct Sites {
    resolver: Arc<MxResolver>,
    rules: SiteRules,
    /// Domain → its site, and until when that holds.
    known: Mutex<HashMap<String, (Arc<str>, Instant)>>,
}

/// Longest wait for a domain's MX answer.
const LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most domains remembered; past it the expired ones are dropped first.
const MOST_KNOWN: usize = 100_000;

impl Sites {
    pub(crate) fn new(resolver: Arc<MxResolver>, rules: SiteRules) -> Self {
        Self {
            resolver,
            rules,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The site of `domain`.
    pub(crate) async fn of(&self, domain: &str) -> Arc<str> {
        let now = Instant::now();
        if let Some((site, until)) = self.lock().get(domain) {
            if *until > now {
                return site.clone();
            }
        }
        // A slow resolver must not hold the mail: past the wait, the domain
        // is its own site for a minute.
        let (hosts, until) =
            match tokio::time::timeout(LOOKUP_WAIT, self.resolver.mx_hosts(domain)).await {
                Ok(answer) => answer,
                Err(_) => (None, now + std::time::Duration::from_secs(60)),
            };
        let site: Arc<str> = site_of(domain, hosts.as_deref(), &self.rules).into();
        let mut known = self.lock();
        if known.len() >= MOST_KNOWN {
            known.retain(|_, (_, until)| *until > now);
            if known.len() >= MOST_KNOWN {
                known.clear();
            }
        }
        known.insert(domain.to_string(), (site.clone(), until));
        site
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<str>, Instant)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! Sites, the mail systems behind recipient domains: MX host rules, each
//! site's MX rule (limits), its adaptive rate and warm-up ceilings.

use serde::Deserialize;

/// Sites: the mail systems behind recipient domains (see [`crate::sites`]).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SiteSettings {
    /// MX host pattern → site, checked before the shipped rules
    /// (`*.google.com` → google, ...).
    pub rules: Vec<crate::sites::SiteRule>,
    /// MX rules per site, by site name: rate, burst, connections and
    /// messages per connection, shared by every sender replica. A domain's
    /// own limits apply as well: a message waits for both.
    pub limits: std::collections::BTreeMap<String, SiteLimits>,
    /// The controller that adapts each site's allowed rate to the replies
    /// it gets ([`crate::adaptive`]).
    pub adaptive: crate::adaptive::AdaptiveSettings,
    /// An optional day-indexed ceiling per sending domain and site
    /// ([`crate::warmup`]).
    pub warmup: crate::warmup::WarmupSettings,
}

/// The MX rule of one site.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SiteLimits {
    /// Messages per period to the site across all senders, e.g. "300/s".
    pub rate: Option<crate::ratelimit::Rate>,
    /// Messages allowed at once above the rate.
    pub burst: Option<u32>,
    /// Transactions in flight to the site across all senders.
    pub concurrency: Option<u32>,
    /// A connection to the site's hosts is closed after this many messages.
    pub messages_per_connection: Option<u32>,
}

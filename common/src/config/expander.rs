//! The expander's settings, with the address quality checks it runs at
//! expansion.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::values::duration;

/// The expander's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpanderSettings {
    /// Address of the health and metrics endpoint.
    pub listen: String,
    /// Bulk requests (parts) taken from the queue at once. They are
    /// expanded one at a time, in queue order; transactional requests get
    /// 8 more slots on top and are expanded at once, beside a bulk one.
    pub prefetch: u16,
    /// Recipients checked against Redis in one round trip.
    pub batch_size: usize,
    /// Largest request body accepted, in bytes; larger ones are dead-lettered
    /// (submit large campaigns in parts).
    pub max_request_bytes: usize,
    /// Publishes in flight before the expander waits for their confirms.
    pub publish_window: usize,
    /// Recipients of one request carried by one job message of a send lane
    /// (1 = one message per recipient). The broker's work is per message,
    /// so this divides its cost per recipient; each recipient is still
    /// leased, recorded and retried on its own.
    pub jobs_per_message: usize,
    /// Address quality checks at expansion.
    pub quality: QualitySettings,
}

impl Default for ExpanderSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9101".into(),
            prefetch: 2,
            batch_size: 500,
            max_request_bytes: 32 * 1024 * 1024,
            publish_window: 1000,
            jobs_per_message: 50,
            quality: QualitySettings::default(),
        }
    }
}

/// Address quality checks: recipients whose address is valid but will
/// surely fail (`no_mail_host`, `likely_typo`), found at expansion. The
/// DNS servers are the sender's (`sender.mx.nameservers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualitySettings {
    /// The checks a request gets when it does not name its own (its
    /// `quality` field); none by default.
    #[serde(deserialize_with = "quality_checks")]
    pub checks: Vec<crate::quality::QualityCheck>,
    /// What a likely typo does: `flag` (sent, counted as flagged, a
    /// `flagged` event) or `exclude` (excluded as `likely_typo`).
    pub typo_action: crate::quality::TypoAction,
    /// The large providers' domains typos are measured against; a domain on
    /// the list is never a typo.
    pub providers: Vec<String>,
    /// The largest edit distance (insertion, deletion, change, swap of two
    /// neighbours) from a provider's domain that counts as a typo.
    pub typo_distance: usize,
    /// How long one domain's DNS lookup may take; a domain without an
    /// answer by then is not excluded.
    #[serde(deserialize_with = "duration")]
    pub lookup_timeout: Duration,
    /// Domains one expansion looks up at once. Recipients wait only for
    /// their own domain's answer; the others are expanded meanwhile.
    pub lookups_in_flight: usize,
    /// How long an expander reuses an answer about a domain.
    #[serde(deserialize_with = "duration")]
    pub cache_ttl: Duration,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            typo_action: crate::quality::TypoAction::Flag,
            providers: crate::quality::default_providers(),
            typo_distance: 1,
            lookup_timeout: Duration::from_secs(5),
            lookups_in_flight: 64,
            cache_ttl: Duration::from_secs(3600),
        }
    }
}

/// A list of address checks, as a YAML list or as one comma-separated
/// string (an environment variable).
fn quality_checks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::quality::QualityCheck>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<crate::quality::QualityCheck>),
        Text(String),
    }
    match ListOrText::deserialize(d)? {
        ListOrText::List(v) => Ok(v),
        ListOrText::Text(t) => t
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect(),
    }
}

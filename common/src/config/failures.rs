//! What failures lead to: the classification rules that judge them and the
//! quarantine of addresses that failed for good or too often.

use std::time::Duration;

use serde::Deserialize;

use super::values::duration;

/// Address quarantine: addresses that failed for good (or too often) are not
/// sent to until the quarantine expires.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuarantineSettings {
    /// Recipient-scope soft failures after which an address is quarantined.
    pub threshold: u32,
    /// How long a quarantine lasts (hard bounces, repeated soft failures).
    #[serde(deserialize_with = "duration")]
    pub expiry: Duration,
    /// How long a `mailbox_full` quarantine lasts: the address becomes
    /// valid again after that.
    #[serde(deserialize_with = "duration")]
    pub mailbox_full_expiry: Duration,
    /// How long soft-failure counters are kept without a new failure.
    #[serde(deserialize_with = "duration")]
    pub counter_ttl: Duration,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        Self {
            threshold: 5,
            expiry: Duration::from_secs(365 * 24 * 3600),
            mailbox_full_expiry: Duration::from_secs(30 * 24 * 3600),
            counter_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Failure classification rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierSettings {
    /// Operator rule files (YAML, same format as the shipped defaults),
    /// applied before the kept rows of the qualification table and the
    /// defaults.
    pub rules_files: Vec<std::path::PathBuf>,
    /// How often a worker checks whether operators changed the kept rows
    /// of the qualification table (one Redis GET of a version number), and
    /// so how soon it classifies with them.
    #[serde(deserialize_with = "duration")]
    pub kept_rules_poll: Duration,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        Self {
            rules_files: Vec::new(),
            kept_rules_poll: Duration::from_secs(2),
        }
    }
}

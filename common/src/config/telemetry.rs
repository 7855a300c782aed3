//! Log output: format, filter and address hashing.

use serde::Deserialize;

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,mailpipe_sender=debug`.
    /// `RUST_LOG` overrides it when set.
    pub filter: String,
    /// Replace email addresses in logged replies with a hash of them.
    pub hash_addresses: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".into(),
            hash_addresses: false,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

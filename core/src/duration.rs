//! Durations as config files and environment variables write them
//! (`"30s"`, `"250ms"`, a bare number of seconds, comma-separated lists),
//! parsed and formatted, and the serde helpers of the settings that hold
//! them (`#[serde(deserialize_with = "...::duration")]`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `"30s"`, `"5m"`, `"250ms"` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw).map_err(|e| format!("invalid duration {raw:?}: {e}"))
}

/// Formats a duration the way config files write it (`"1h"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(u64),
    Text(String),
}

impl RawDuration {
    fn into_duration(self) -> Result<Duration, String> {
        match self {
            RawDuration::Secs(s) => Ok(Duration::from_secs(s)),
            RawDuration::Text(t) => parse_duration(&t),
        }
    }
}

/// Deserializes one duration: a number of seconds or a text
/// [`parse_duration`] reads.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    RawDuration::deserialize(d)?
        .into_duration()
        .map_err(serde::de::Error::custom)
}

/// Deserializes a list of durations, or one comma-separated string
/// (environment variables).
pub fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<RawDuration>),
        Text(String),
    }
    let items = match ListOrText::deserialize(d)? {
        ListOrText::List(items) => items,
        // Environment variables arrive as one string: "1m,2m,4m".
        ListOrText::Text(t) => t
            .split(',')
            .map(|s| RawDuration::Text(s.to_string()))
            .collect(),
    };
    items
        .into_iter()
        .map(|r| r.into_duration().map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_from_text_and_numbers() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }
}

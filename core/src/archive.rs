//! The archive of delivered mail: its settings, what one archived message
//! carries, and the export's decisions (where to start reading, which
//! messages to keep, when to stop, what to name a file).
//!
//! When `sender.archive.enabled`, a sender publishes the exact bytes it sent
//! for each accepted message (after DKIM signing, before SMTP's
//! dot-stuffing) to the RabbitMQ stream `{prefix}.archive`, and settles the
//! message only once that publish is confirmed. A stream keeps its messages
//! for every reader, by age and size (`max_age`, `max_bytes`), so
//! compliance consumers read it with any stream client, from any offset,
//! without taking anything from anyone.
//!
//! Pure: values in, values out. The stream itself is declared in
//! `topology.rs`, published to in the sender's settlement and read by
//! `mailpipe archive export`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `sender.archive`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveSettings {
    /// Publish every delivered message to the archive stream. Off by
    /// default: the stream holds a copy of every message sent.
    pub enabled: bool,
    /// Messages older than this are deleted from the stream (RabbitMQ's
    /// `x-max-age`, applied a segment at a time).
    #[serde(deserialize_with = "crate::duration::duration")]
    pub max_age: Duration,
    /// The stream's size limit in bytes (`x-max-length-bytes`): the oldest
    /// segments are deleted to stay under it. A number, or a text such as
    /// `"50GB"` or `"20GiB"`.
    #[serde(deserialize_with = "byte_size")]
    pub max_bytes: u64,
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 50_000_000_000,
        }
    }
}

/// The stream's retention, as its queue arguments spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `x-max-age`, in seconds (written `"{n}s"`).
    pub max_age_secs: u64,
    /// `x-max-length-bytes`.
    pub max_bytes: u64,
    /// `x-stream-max-segment-size-bytes`: retention deletes whole segments,
    /// so a segment is a tenth of the size limit (at most RabbitMQ's own
    /// default of 500 MB, at least 1 MB): the stream then holds between
    /// 90 % and 100 % of `max_bytes` once full.
    pub segment_bytes: u64,
}

impl ArchiveSettings {
    /// The stream's retention, or `None` when the archive is off (no stream
    /// is declared then).
    pub fn retention(&self) -> Option<Retention> {
        self.enabled.then(|| Retention {
            max_age_secs: self.max_age.as_secs().max(1),
            max_bytes: self.max_bytes,
            segment_bytes: (self.max_bytes / 10).clamp(1_000_000, 500_000_000),
        })
    }
}

/// Parses a byte size: a bare number, or a number with `B`, `KB`, `MB`,
/// `GB`, `TB` (powers of 1000) or `KiB`, `MiB`, `GiB`, `TiB` (powers of
/// 1024); case-insensitive, spaces allowed before the unit.
pub fn parse_byte_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {raw:?}: expected a number of bytes"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("invalid size {raw:?}: unknown unit {other:?}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("invalid size {raw:?}: too large"))
}

fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => parse_byte_size(&t).map_err(serde::de::Error::custom),
    }
}

/// Header of an archived message: mailpipe's message id (also its AMQP
/// `message_id`, and the name of its exported file).
pub const MESSAGE_HEADER: &str = "x-mailpipe-message";
/// Header of an archived message: the request it belongs to.
pub const REQUEST_HEADER: &str = "x-mailpipe-request";
/// Header of an archived message: the envelope recipient.
pub const RECIPIENT_HEADER: &str = "x-mailpipe-recipient";
/// Header of an archived message: when the server accepted it, Unix
/// seconds (also its AMQP `timestamp`).
pub const SENT_AT_HEADER: &str = "x-mailpipe-sent-at";

/// One delivered message, as the archive keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub message: String,
    pub request: String,
    pub recipient: String,
    /// Unix seconds of the server's acceptance.
    pub at: i64,
    /// The message exactly as sent: after DKIM signing, before
    /// dot-stuffing.
    pub bytes: Vec<u8>,
}

impl Archived {
    /// The headers that say what the bytes are.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (MESSAGE_HEADER, self.message.clone()),
            (REQUEST_HEADER, self.request.clone()),
            (RECIPIENT_HEADER, self.recipient.clone()),
            (SENT_AT_HEADER, self.at.to_string()),
        ]
    }
}

/// How far before the request's creation time (the expander's clock) the
/// export starts reading: the stream's timestamps are the broker's clock,
/// and the two may disagree by this much.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(300);

/// The stream timestamp (Unix seconds) the export of a request created at
/// `created` starts reading from: no message of the request can have been
/// archived before the request was registered.
pub fn start_timestamp(created: i64, margin: Duration) -> u64 {
    (created - margin.as_secs() as i64).max(0) as u64
}

/// What the export does with one message read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The request's: write it to this file name.
    Write(String),
    /// Another request's, or a message without mailpipe's headers.
    Skip,
    /// The request's, but its message id cannot be a file name: reported,
    /// not written.
    BadId(String),
}

/// Decides what the export of `request` does with a message whose headers
/// name `request_header` and `message_header`.
pub fn read(request: &str, request_header: Option<&str>, message_header: Option<&str>) -> Read {
    if request_header != Some(request) {
        return Read::Skip;
    }
    let Some(id) = message_header else {
        return Read::BadId(String::new());
    };
    let safe = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'));
    if safe {
        Read::Write(format!("{id}.eml"))
    } else {
        Read::BadId(id.to_string())
    }
}

/// Whether the export stops: it has every sent message of the request
/// (`found` distinct ids of `sent`), or nothing arrived for the idle period
/// (it reached the stream's tail).
pub fn export_done(found: u64, sent: u64, idle: bool) -> bool {
    found >= sent || idle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        let table = [
            ("1024", Ok(1024)),
            ("10GB", Ok(10_000_000_000)),
            ("10 gb", Ok(10_000_000_000)),
            ("500MB", Ok(500_000_000)),
            ("2KiB", Ok(2048)),
            ("1GiB", Ok(1 << 30)),
            ("3TB", Ok(3_000_000_000_000)),
            ("7B", Ok(7)),
        ];
        for (raw, want) in table {
            assert_eq!(parse_byte_size(raw), want, "{raw}");
        }
        for bad in ["", "GB", "10 parsecs", "-1", "99999999999999999999TB"] {
            assert!(parse_byte_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_archive_is_off_by_default_and_its_retention_follows_the_settings() {
        let d = ArchiveSettings::default();
        assert!(!d.enabled);
        assert_eq!(d.retention(), None);
        let on = |max_age: u64, max_bytes: u64| ArchiveSettings {
            enabled: true,
            max_age: Duration::from_secs(max_age),
            max_bytes,
        };
        let table = [
            // A segment is a tenth of the size limit, 1 MB to 500 MB.
            (
                (604_800, 50_000_000_000),
                (604_800, 50_000_000_000, 500_000_000),
            ),
            ((3600, 1_000_000_000), (3600, 1_000_000_000, 100_000_000)),
            ((60, 5_000_000), (60, 5_000_000, 1_000_000)),
            // Less than a second is a second.
            ((0, 5_000_000), (1, 5_000_000, 1_000_000)),
        ];
        for ((age, bytes), (want_age, want_bytes, want_segment)) in table {
            assert_eq!(
                on(age, bytes).retention(),
                Some(Retention {
                    max_age_secs: want_age,
                    max_bytes: want_bytes,
                    segment_bytes: want_segment,
                })
            );
        }
    }

    #[test]
    fn settings_read_from_yaml_keep_the_defaults_they_do_not_set() {
        let s: ArchiveSettings = serde_yaml::from_str("enabled: true\nmax_bytes: 20GiB\n").unwrap();
        assert!(s.enabled);
        assert_eq!(s.max_bytes, 20 << 30);
        assert_eq!(s.max_age, ArchiveSettings::default().max_age);
        let s: ArchiveSettings = serde_yaml::from_str("max_age: 3d\nmax_bytes: 1000\n").unwrap();
        assert_eq!(s.max_age, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(s.max_bytes, 1000);
        assert!(serde_yaml::from_str::<ArchiveSettings>("max_bytes: lots\n").is_err());
        assert!(serde_yaml::from_str::<ArchiveSettings>("enable: true\n").is_err());
    }

    #[test]
    fn the_export_keeps_the_request_s_messages_under_safe_file_names() {
        let id = "0123456789abcdef0123456789abcdef";
        let table = [
            (Some("r1"), Some(id), Read::Write(format!("{id}.eml"))),
            (Some("r2"), Some(id), Read::Skip),
            (None, Some(id), Read::Skip),
            (None, None, Read::Skip),
            (Some("r1"), None, Read::BadId(String::new())),
            (
                Some("r1"),
                Some("../etc/passwd"),
                Read::BadId("../etc/passwd".into()),
            ),
            (Some("r1"), Some(".hidden"), Read::BadId(".hidden".into())),
            (Some("r1"), Some("a/b"), Read::BadId("a/b".into())),
            (Some("r1"), Some(""), Read::BadId(String::new())),
        ];
        for (request, message, want) in table {
            assert_eq!(
                read("r1", request, message),
                want,
                "{request:?} {message:?}"
            );
        }
    }

    #[test]
    fn the_export_starts_before_the_request_and_stops_when_complete_or_idle() {
        assert_eq!(
            start_timestamp(1_000_000, Duration::from_secs(300)),
            999_700
        );
        assert_eq!(start_timestamp(100, Duration::from_secs(300)), 0);
        let table = [
            ((0, 0, false), true),
            ((999, 1000, false), false),
            ((1000, 1000, false), true),
            ((1001, 1000, false), true),
            ((10, 1000, true), true),
        ];
        for ((found, sent, idle), want) in table {
            assert_eq!(
                export_done(found, sent, idle),
                want,
                "{found} {sent} {idle}"
            );
        }
    }
}

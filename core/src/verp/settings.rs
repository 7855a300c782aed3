//! Asynchronous bounces and complaints (`bounces.*`): the VERP return path
//! and the intake's SMTP listener and IMAP mailbox. Plain serde structs:
//! `mailpipe_common::config` reads them as part of its settings.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::duration::duration;
use crate::tls_mode::TlsMode;

/// Asynchronous bounces and complaints (failures reported after delivery): the VERP return path the
/// sender writes and the intake that reads what comes back to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BounceSettings {
    /// The bounce domain. When set, each message's envelope sender is
    /// `{local_part}+{token}@{domain}`, the token naming the message and
    /// signed with `keys[0]`; when not set, the envelope sender is the From
    /// address and bounces are matched by the returned message's headers.
    pub domain: Option<String>,
    /// Local part before the `+token`.
    pub local_part: String,
    /// HMAC keys of the VERP tokens (keep them in a Secret). The first
    /// signs; every one verifies, so a key can be rotated without losing
    /// the bounces of mail sent under the previous one. In an environment
    /// variable: comma-separated.
    #[serde(deserialize_with = "secrets")]
    pub keys: Vec<SecretString>,
    /// The intake's health and metrics endpoint.
    pub listen: String,
    /// The intake's SMTP listener for the bounce domain (the domain's MX
    /// points here); empty disables it.
    pub smtp_listen: String,
    /// Host name in the intake's SMTP greeting.
    pub hostname: String,
    /// Largest mail the intake accepts, in bytes.
    pub max_message_bytes: usize,
    /// Deadline of one SMTP command or of the message data.
    #[serde(deserialize_with = "duration")]
    pub smtp_timeout: Duration,
    /// A mailbox polled over IMAP for bounces and feedback-loop reports.
    pub imap: Option<ImapSettings>,
}

impl Default for BounceSettings {
    fn default() -> Self {
        Self {
            domain: None,
            local_part: "bounces".into(),
            keys: Vec::new(),
            listen: "0.0.0.0:9104".into(),
            smtp_listen: "0.0.0.0:2526".into(),
            hostname: "localhost".into(),
            max_message_bytes: 10 * 1024 * 1024,
            smtp_timeout: Duration::from_secs(60),
            imap: None,
        }
    }
}

/// The IMAP mailbox of `bounces.imap`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSettings {
    pub host: String,
    #[serde(default = "imaps_port")]
    pub port: u16,
    /// `implicit` (IMAPS, the default), `starttls` or `none`.
    #[serde(default = "tls_implicit")]
    pub tls: TlsMode,
    pub username: String,
    /// Set it through `MAILPIPE__BOUNCES__IMAP__PASSWORD` from a Secret.
    #[serde(default = "no_secret")]
    pub password: SecretString,
    #[serde(default = "inbox")]
    pub mailbox: String,
    /// Time between two polls of the mailbox.
    #[serde(default = "sixty_seconds", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Processed mail is moved here; when not set it is deleted.
    #[serde(default)]
    pub archive_mailbox: Option<String>,
}

fn imaps_port() -> u16 {
    993
}
fn tls_implicit() -> TlsMode {
    TlsMode::Implicit
}
fn no_secret() -> SecretString {
    SecretString::from("")
}
fn inbox() -> String {
    "INBOX".into()
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}

/// A list of secrets, or one comma-separated string (environment variables).
fn secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    let items = match ListOrText::deserialize(d)? {
        ListOrText::List(items) => items,
        ListOrText::Text(t) => t.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
        .collect())
}

//! How a connection is secured, as the settings name it (`tls: starttls`):
//! the sender's SMTP relays and MX delivery, the intake's IMAP mailbox.

use serde::Deserialize;

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    None,
    Opportunistic,
    Starttls,
    Implicit,
}

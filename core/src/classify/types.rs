//! Vocabulary of the classifier: what failed ([`Failure`], [`ConnectionError`])
//! and what the classifier decided about it ([`Classification`] and its parts).
//!
//! Every enum serializes in `snake_case`, which is also the spelling used by
//! the rules file and returned by the `as_str()` methods.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong in one delivery attempt, as the sender saw it. Serialized in failure messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The server answered with a negative reply.
    Reply {
        /// Basic reply code (RFC 5321), e.g. `550`; `0` when the text carried no
        /// basic code (operator input such as `5.1.1 user unknown`).
        code: u16,
        /// Enhanced status code (RFC 3463) as written, e.g. `"5.1.1"`.
        enhanced: Option<String>,
        /// Reply text without the codes; lines of a multi-line reply joined with a space.
        text: String,
    },
    /// No usable reply: the connection failed.
    Connection {
        /// Which way the connection failed.
        error: ConnectionError,
        /// Free-form detail from the transport (error message), matched by rule patterns.
        detail: String,
    },
}

impl Failure {
    /// A connection-level failure.
    pub fn connection(error: ConnectionError, detail: impl Into<String>) -> Self {
        Failure::Connection {
            error,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Reply {
                code,
                enhanced,
                text,
            } => {
                let mut sep = "";
                if *code != 0 {
                    write!(f, "{code}")?;
                    sep = " ";
                }
                // The sender keeps the text as the server wrote it, enhanced
                // code first: written once, as in the server's line.
                let leads = |e: &str| {
                    text.strip_prefix(e)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
                };
                if let Some(enhanced) = enhanced.as_deref().filter(|e| !leads(e)) {
                    write!(f, "{sep}{enhanced}")?;
                    sep = " ";
                }
                if !text.is_empty() {
                    write!(f, "{sep}{text}")?;
                }
                Ok(())
            }
            Failure::Connection { error, detail } => {
                if detail.is_empty() {
                    write!(f, "connection {}", error.as_str())
                } else {
                    write!(f, "connection {}: {detail}", error.as_str())
                }
            }
        }
    }
}

/// How a connection failed before a usable reply was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionError {
    /// The remote host actively refused the TCP connection.
    Refused,
    /// Connecting, or waiting for a reply, took too long.
    Timeout,
    /// STARTTLS / TLS handshake or certificate verification failed.
    Tls,
    /// Resolving the MX or address records failed.
    Dns,
    /// The server closed the connection in the middle of the transaction.
    Disconnected,
    /// Any other transport error.
    Other,
}

impl ConnectionError {
    /// Every variant, in declaration order.
    pub const ALL: [ConnectionError; 6] = [
        ConnectionError::Refused,
        ConnectionError::Timeout,
        ConnectionError::Tls,
        ConnectionError::Dns,
        ConnectionError::Disconnected,
        ConnectionError::Other,
    ];

    /// The `snake_case` name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionError::Refused => "refused",
            ConnectionError::Timeout => "timeout",
            ConnectionError::Tls => "tls",
            ConnectionError::Dns => "dns",
            ConnectionError::Disconnected => "disconnected",
            ConnectionError::Other => "other",
        }
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a failure, as the platform's failure types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// Definitive for this address (or this message): do not retry.
    Hard,
    /// Possibly temporary.
    Soft,
    /// Not a delivery problem for the address (auto-reply, technical noise).
    Ignored,
}

impl FailureType {
    /// The `snake_case` name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureType::Hard => "hard",
            FailureType::Soft => "soft",
            FailureType::Ignored => "ignored",
        }
    }
}

impl fmt::Display for FailureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The address does not exist (or is syntactically invalid).
    UserUnknown,
    /// The recipient's domain does not exist or accepts no mail.
    InvalidDomain,
    /// The mailbox exists but is disabled, inactive or suspended.
    AccountDisabled,
    /// The mailbox is over quota.
    MailboxFull,
    /// The destination could not be reached (network, routing, DNS, TLS).
    Unreachable,
    /// The destination asks us to slow down (throttling, volume deferrals,
    /// too many connections or recipients).
    RateLimited,
    /// Greylisting: the destination defers the first attempt from an unknown
    /// (client, sender, recipient) triplet and accepts a later retry. It says
    /// nothing about the domain's capacity, so it never slows the domain down.
    Greylisted,
    /// The destination refuses the sender: spam, blocklists, reputation,
    /// authentication (SPF/DKIM/DMARC/PTR), relay or policy. Never the recipient's fault.
    Refused,
    /// The message is too large for the destination. Never the recipient's fault.
    MessageTooLarge,
    /// Out-of-office or other automatic reply.
    AutoReply,
    /// Not recognised: to be qualified by an operator.
    Undefined,
}

impl Reason {
    /// Every variant, in declaration order.
    pub const ALL: [Reason; 11] = [
        Reason::UserUnknown,
        Reason::InvalidDomain,
        Reason::AccountDisabled,
        Reason::MailboxFull,
        Reason::Unreachable,
        Reason::RateLimited,
        Reason::Greylisted,
        Reason::Refused,
        Reason::MessageTooLarge,
        Reason::AutoReply,
        Reason::Undefined,
    ];

    /// The `snake_case` name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UserUnknown => "user_unknown",
            Reason::InvalidDomain => "invalid_domain",
            Reason::AccountDisabled => "account_disabled",
            Reason::MailboxFull => "mailbox_full",
            Reason::Unreachable => "unreachable",
            Reason::RateLimited => "rate_limited",
            Reason::Greylisted => "greylisted",
            Reason::Refused => "refused",
            Reason::MessageTooLarge => "message_too_large",
            Reason::AutoReply => "auto_reply",
            Reason::Undefined => "undefined",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to the recipient address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quarantine {
    /// Quarantine the address now.
    Immediate,
    /// Count the failure; the address is quarantined when its counter reaches the threshold.
    Count,
    /// Leave the address alone.
    None,
}

impl Quarantine {
    /// The `snake_case` name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Quarantine::Immediate => "immediate",
            Quarantine::Count => "count",
            Quarantine::None => "none",
        }
    }
}

impl fmt::Display for Quarantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom the failure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// This one recipient address.
    Recipient,
    /// Every recipient at the destination domain (throttle or pause the domain).
    Domain,
    /// The sender (IP, domain, authentication, content): nothing to hold against the recipient.
    Sender,
}

impl Scope {
    /// The `snake_case` name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Recipient => "recipient",
            Scope::Domain => "domain",
            Scope::Sender => "sender",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one classified failure does to the sending policy of its destination
/// domain (the sender applies it right after the attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainEffect {
    /// The failure counts toward the domain's circuit breaker: it is about
    /// the domain or about the sender (blocks, unreachable, throttling), not
    /// about one recipient.
    pub counts_toward_breaker: bool,
    /// The domain asked us to slow down: its rate is lowered.
    pub slows_down: bool,
}

/// The classifier's verdict on one [`Failure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// Hard, soft or ignored.
    #[serde(rename = "type")]
    pub kind: FailureType,
    /// Why delivery failed.
    pub reason: Reason,
    /// Whether the retrier should try this message again.
    pub retry: bool,
    /// What happens to the recipient address.
    pub quarantine: Quarantine,
    /// Whom the failure is about.
    pub scope: Scope,
    /// Name of the rule that matched; None when only the basic-code fallback applied ("to qualify").
    pub rule: Option<String>,
}

impl Classification {
    /// What this failure does to its domain's sending policy. Only a
    /// failure about one recipient leaves the breaker alone; only throttling
    /// (`rate_limited`) lowers the domain's rate. Greylisting is about one
    /// (client, sender, recipient) triplet: it does neither.
    pub fn domain_effect(&self) -> DomainEffect {
        DomainEffect {
            counts_toward_breaker: self.scope != Scope::Recipient,
            slows_down: self.reason == Reason::RateLimited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_serializes_with_a_kind_tag() {
        let f = Failure::Reply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            text: "user unknown".into(),
        };
        let json = serde_json::to_string(&f).expect("serialize");
        assert_eq!(
            json,
            r#"{"kind":"reply","code":550,"enhanced":"5.1.1","text":"user unknown"}"#
        );
        let back: Failure = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, f);

        let c = Failure::connection(ConnectionError::Disconnected, "eof");
        let json = serde_json::to_string(&c).expect("serialize");
        assert_eq!(
            json,
            r#"{"kind":"connection","error":"disconnected","detail":"eof"}"#
        );
        assert_eq!(serde_json::from_str::<Failure>(&json).expect("de"), c);
    }

    #[test]
    fn classification_serializes_type_and_snake_case_values() {
        let c = Classification {
            kind: FailureType::Hard,
            reason: Reason::MessageTooLarge,
            retry: false,
            quarantine: Quarantine::None,
            scope: Scope::Sender,
            rule: Some("size".into()),
        };
        let json = serde_json::to_string(&c).expect("serialize");
        assert_eq!(
            json,
            r#"{"type":"hard","reason":"message_too_large","retry":false,"quarantine":"none","scope":"sender","rule":"size"}"#
        );
        assert_eq!(
            serde_json::from_str::<Classification>(&json).expect("de"),
            c
        );
    }

    #[test]
    fn as_str_matches_serde_names() {
        for r in Reason::ALL {
            assert_eq!(
                serde_json::to_string(&r).expect("ser"),
                format!("\"{}\"", r.as_str())
            );
        }
        for e in ConnectionError::ALL {
            assert_eq!(
                serde_json::to_string(&e).expect("ser"),
                format!("\"{}\"", e.as_str())
            );
        }
        for t in [FailureType::Hard, FailureType::Soft, FailureType::Ignored] {
            assert_eq!(serde_json::to_string(&t).expect("ser"), format!("\"{t}\""));
        }
        for q in [Quarantine::Immediate, Quarantine::Count, Quarantine::None] {
            assert_eq!(serde_json::to_string(&q).expect("ser"), format!("\"{q}\""));
        }
        for s in [Scope::Recipient, Scope::Domain, Scope::Sender] {
            assert_eq!(serde_json::to_string(&s).expect("ser"), format!("\"{s}\""));
        }
    }

    #[test]
    fn failure_displays_like_a_reply_line() {
        let f = Failure::Reply {
            code: 550,
            enhanced: Some("5.1.1".into()),
            text: "user unknown".into(),
        };
        assert_eq!(f.to_string(), "550 5.1.1 user unknown");
        let f = Failure::Reply {
            code: 0,
            enhanced: None,
            text: "mailbox full".into(),
        };
        assert_eq!(f.to_string(), "mailbox full");
        let c = Failure::connection(ConnectionError::Timeout, "after 30s");
        assert_eq!(c.to_string(), "connection timeout: after 30s");
        // A text that starts with its enhanced code (as the sender keeps
        // the server's text) writes it once.
        let f = Failure::Reply {
            code: 550,
            enhanced: Some("5.0.0".into()),
            text: "5.0.0 <bob@example.com>: no".into(),
        };
        assert_eq!(f.to_string(), "550 5.0.0 <bob@example.com>: no");
        assert_eq!(
            f.to_string(),
            Failure::from_reply_text("550 5.0.0 <bob@example.com>: no").to_string()
        );
        let f = Failure::Reply {
            code: 550,
            enhanced: Some("5.0.0".into()),
            text: "5.0.00 odd".into(),
        };
        assert_eq!(f.to_string(), "550 5.0.0 5.0.00 odd");
    }
}

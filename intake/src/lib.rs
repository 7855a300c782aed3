//! The intake: receives bounce and complaint mail after the SMTP session
//! (seeds/003), over SMTP for the bounce domain and by polling an IMAP
//! mailbox, and feeds each report into the same quarantine, counters and
//! events as synchronous failures.

pub mod imap;
pub mod smtp;

/// Where an inbound mail came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Smtp,
    Imap,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Smtp => "smtp",
            Source::Imap => "imap",
        }
    }
}

/// One mail received by the intake.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub source: Source,
    /// Envelope sender (`MAIL FROM`); empty for the null sender `<>` that
    /// bounces use, and for IMAP (unknown).
    pub mail_from: String,
    /// Envelope recipients (`RCPT TO`); empty for IMAP (unknown).
    pub rcpt_to: Vec<String>,
    /// The raw RFC 5322 message, CRLF line ends, dot-unstuffed.
    pub data: Vec<u8>,
}

/// Why a mail could not be taken now; the sender of it should try again
/// later (SMTP 451, or IMAP: left in the mailbox for the next poll).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Temporary(pub String);

/// What the intake does with each mail. `accept` returns once the mail is
/// recorded for good (processed, or recorded as unprocessable): only then
/// does the SMTP listener answer 250 or the IMAP poller delete the mail.
pub trait Handler: Send + Sync + 'static {
    /// Whether a `RCPT TO` address is one the intake takes mail for (the
    /// SMTP listener answers 550 otherwise).
    fn accepts_recipient(&self, address: &str) -> Result<(), String>;
    fn accept(
        &self,
        mail: Inbound,
    ) -> impl std::future::Future<Output = Result<(), Temporary>> + Send;
}

/// Runs the intake until `shutdown` is cancelled.
pub async fn run_until_stopped(
    _settings: mailpipe_common::config::Settings,
    _shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    anyhow::bail!("the intake is being built")
}

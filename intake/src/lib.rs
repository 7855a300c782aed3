//! The intake: receives bounce and complaint mail after the SMTP session
//! (failures reported after delivery), over SMTP for the bounce domain and by polling an IMAP
//! mailbox, and feeds each report into the same quarantine, counters and
//! events as synchronous failures. Its metrics, and the events that count
//! and log, are in `events.rs`.

mod events;
pub mod imap;
pub mod process;
pub mod smtp;

pub use events::IntakeMetrics;

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
    /// Whether this replica may poll `mailbox` now: replicas sharing one
    /// mailbox take turns, so no two move or delete the same mail at once.
    /// [`Handler::polled`] ends the turn. By default every poller may.
    fn may_poll(&self, mailbox: &str) -> impl std::future::Future<Output = bool> + Send {
        let _ = mailbox;
        async { true }
    }
    /// The end of a turn taken with [`Handler::may_poll`].
    fn polled(&self, mailbox: &str) -> impl std::future::Future<Output = ()> + Send {
        let _ = mailbox;
        async {}
    }
}

/// Runs the intake until `shutdown` is cancelled: the SMTP listener (when
/// `bounces.smtp_listen` is set), the IMAP poller (when `bounces.imap` is),
/// and a broker session for events and dead-letter records.
pub async fn run_until_stopped(
    settings: mailpipe_common::config::Settings,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::sync::Arc;
    use std::time::Duration;

    let Some((metrics, health, store)) = mailpipe_state::worker::start::<IntakeMetrics>(
        &settings.bounces.listen,
        &settings.redis,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let classifier = mailpipe_state::live_rules::LiveClassifier::start(
        &settings.classifier,
        store.clone(),
        metrics.kept_rules_version().clone(),
        shutdown.clone(),
    )
    .await?;
    if settings.bounces.domain.is_none() {
        tracing::warn!("bounces.domain is not set: mail carries no VERP token and bounces are matched by the returned message's headers only");
    }
    let intake = Arc::new(process::Intake::new(
        settings.clone(),
        store,
        classifier,
        metrics,
    ));
    let tasks = tokio_util::task::TaskTracker::new();
    if !settings.bounces.smtp_listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&settings.bounces.smtp_listen)
            .await
            .with_context(|| {
                format!(
                    "binding the SMTP listener on {}",
                    settings.bounces.smtp_listen
                )
            })?;
        tracing::info!(listen = %settings.bounces.smtp_listen, "bounce intake listening for SMTP");
        tasks.spawn(smtp::serve(
            listener,
            smtp::SmtpListen::from_settings(&settings.bounces),
            intake.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(imap) = imap::ImapPoll::from_settings(&settings.bounces) {
        tracing::info!(host = %imap.imap.host, mailbox = %imap.imap.mailbox, "bounce intake polling IMAP");
        tasks.spawn(imap::poll(imap, intake.clone(), shutdown.clone()));
    }
    tasks.close();
    mailpipe_common::worker::run_sessions(
        &settings.amqp,
        "mailpipe-intake",
        &health,
        &shutdown,
        |conn| {
            let intake = intake.clone();
            let shutdown = shutdown.clone();
            let health = health.clone();
            let topology = mailpipe_common::topology::Topology::from_settings(&settings);
            async move {
                let channel = Arc::new(mailpipe_common::amqp::channel(&conn, None).await?);
                topology.declare(&conn).await.context("declaring topology")?;
                intake.set_channel(Some(channel.clone()));
                health.set_ready(true);
                let end = loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break Ok(mailpipe_common::worker::SessionEnd::Stopped),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {
                            if !conn.status().connected() || !channel.status().connected() {
                                break Err(anyhow::anyhow!("the broker connection was lost"));
                            }
                        }
                    }
                };
                intake.set_channel(None);
                end
            }
        },
    )
    .await;
    tasks.wait().await;
    tracing::info!("intake stopped");
    Ok(())
}

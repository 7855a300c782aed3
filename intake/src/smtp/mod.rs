//! The SMTP listener of the bounce domain: a small RFC 5321 server that the
//! domain's MX points at. It takes mail for the addresses the [`Handler`]
//! accepts and answers 250 only once [`Handler::accept`] has recorded the
//! mail, so nothing is lost: on a temporary failure the remote MTA keeps the
//! bounce and tries again later.
//!
//! Hand-written on tokio rather than built on a crate: the async SMTP server
//! crates (`samotop`, `mailin-embedded`, `smtpbis`) are unmaintained or
//! thread-based, and the server needed here is small — no relaying, no AUTH,
//! no STARTTLS (bounces arrive from MTAs that fall back to plain text when
//! STARTTLS is not offered).
//!
//! Limits, all from [`SmtpListen`]: command lines of at most
//! [`MAX_COMMAND_LINE`] octets, [`SmtpListen::max_recipients`] per
//! transaction, messages of at most [`SmtpListen::max_message_bytes`] (never
//! buffering more; the rest is read and discarded up to the final dot, then
//! 552), a deadline on every read, [`SmtpListen::max_connections`] sessions
//! and [`MAX_ERRORS`] bad commands per session.
//!
//! Files: this one listens and runs sessions; [`session`] holds a
//! session's state machine and its buffered connection, [`command`] parses
//! command lines, [`data`] decodes message data.

mod command;
mod data;
mod session;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailpipe_common::config::BounceSettings;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Handler;
use session::Session;

/// Longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4 says
/// 512; the SIZE, BODY and SMTPUTF8 parameters may need more).
pub const MAX_COMMAND_LINE: usize = 1000;

/// Longest address (RFC 5321 §4.5.3.1.3: a path is at most 256 octets).
const MAX_PATH: usize = 256;

/// Bad commands (5xx answers to the client's mistakes) before the session
/// is closed with 421, as Postfix's `smtpd_hard_error_limit`.
pub const MAX_ERRORS: u32 = 20;

/// How the listener behaves. [`SmtpListen::from_settings`] builds it from
/// the `bounces` section of the configuration; tests set fields directly.
#[derive(Debug, Clone)]
pub struct SmtpListen {
    /// Name in the 220 greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in bytes after dot-unstuffing: advertised
    /// as `SIZE`, checked against `MAIL FROM … SIZE=` and enforced while
    /// the data is read.
    pub max_message_bytes: usize,
    /// Deadline of every read from (and write to) the client, and of a
    /// whole command line: an idle client gets 421 and is disconnected.
    pub timeout: Duration,
    /// Deadline of the whole message data, from the 354 to the final dot
    /// (RFC 5321 §4.5.3.2.6 suggests 10 minutes).
    pub data_timeout: Duration,
    /// Sessions at once; a connection beyond them gets 421 and is closed.
    pub max_connections: usize,
    /// Recipients of one transaction; the next `RCPT TO` gets 452 (RFC
    /// 5321 §4.5.3.1.10: the client sends the rest in another transaction).
    pub max_recipients: usize,
    /// On shutdown, how long sessions in the middle of a message may take
    /// to finish it; the ones still busy then are dropped unanswered (the
    /// client keeps the mail and retries).
    pub shutdown_grace: Duration,
}

impl SmtpListen {
    /// The listener of `bounces.smtp_listen`: `smtp_timeout` is the
    /// per-command deadline and the grace period of a shutdown; the data
    /// may take ten times as long.
    pub fn from_settings(settings: &BounceSettings) -> Self {
        Self {
            hostname: settings.hostname.clone(),
            max_message_bytes: settings.max_message_bytes,
            timeout: settings.smtp_timeout,
            data_timeout: settings.smtp_timeout * 10,
            max_connections: 200,
            max_recipients: 100,
            shutdown_grace: settings.smtp_timeout,
        }
    }
}

/// Serves SMTP on `listener` until `shutdown` is cancelled, then stops
/// accepting connections, answers 421 to the sessions waiting for a
/// command, lets the ones in the middle of a message finish (for at most
/// [`SmtpListen::shutdown_grace`]) and returns.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    settings: SmtpListen,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut sessions = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "SMTP listener ready");
    }
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(done) = sessions.join_next(), if !sessions.is_empty() => log_join(done),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let settings = settings.clone();
                        let handler = handler.clone();
                        let shutdown = shutdown.clone();
                        let span = tracing::info_span!("smtp_session", %peer);
                        sessions.spawn(
                            async move {
                                run_session(stream, peer, &settings, &*handler, &shutdown).await;
                                drop(permit);
                            }
                            .instrument(span),
                        );
                    }
                    Err(_) => {
                        tracing::warn!(%peer, max = settings.max_connections, "421: too many connections");
                        let deadline = settings.timeout;
                        sessions.spawn(refuse(stream, deadline));
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait a little
                    // instead of spinning on the error.
                    tracing::warn!(error.message = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if !sessions.is_empty() {
        tracing::info!(
            sessions = sessions.len(),
            "SMTP listener stopped; waiting for sessions to finish"
        );
    }
    let drained = timeout(settings.shutdown_grace, async {
        while let Some(done) = sessions.join_next().await {
            log_join(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "sessions still busy after the grace period; dropping them"
        );
        sessions.shutdown().await;
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error.message = %e, "SMTP session panicked");
        }
    }
}

/// Answers a connection beyond the cap with 421 and closes it.
async fn refuse(mut stream: TcpStream, deadline: Duration) {
    let _ = timeout(deadline.min(Duration::from_secs(5)), async {
        stream
            .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
            .await?;
        stream.shutdown().await
    })
    .await;
}

async fn run_session<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    settings: &SmtpListen,
    handler: &H,
    shutdown: &CancellationToken,
) {
    let (read, write) = stream.into_split();
    match run_session_on(read, write, settings, handler, shutdown).await {
        Ok(()) => tracing::debug!(%peer, "session closed"),
        Err(e) => tracing::debug!(%peer, error.message = %e, "session ended"),
    }
}

/// One session on any pair of byte streams, from the 220 greeting to the
/// close: what [`serve`] runs for each connection. Public (but not part of
/// the intake's API) so that the fuzz target plays hostile clients through
/// the very same code, without sockets.
#[doc(hidden)]
pub async fn run_session_on<H: Handler, R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    read: R,
    write: W,
    settings: &SmtpListen,
    handler: &H,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let mut session = Session::new(read, write, settings, handler);
    let result = session.run(shutdown).await;
    let _ = timeout(settings.timeout, session.conn.close()).await;
    result
}

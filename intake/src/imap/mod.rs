//! The IMAP poller: a mailbox that receives bounces and feedback-loop
//! reports (when the bounce domain's MX is someone else's server) is read
//! every `poll_interval`. Each round connects, logs in, selects the mailbox,
//! fetches every message not flagged `\Deleted` (oldest first, in batches)
//! and hands each to [`Handler::accept`]. A message the handler took is then
//! moved to `archive_mailbox` (`UID MOVE`, or `UID COPY` + `\Deleted` where
//! the server has no MOVE) or, without an archive, flagged `\Deleted`; and
//! expunged (`UID EXPUNGE` with UIDPLUS, else `EXPUNGE`). A temporary
//! failure leaves the message where it is and ends the round: it comes back
//! first in the next one.
//!
//! Errors (connection, TLS, login, a command refused) end the round; the
//! loop logs them and tries again after a backoff that starts at
//! `min(poll_interval, 1 s)` and doubles up to [`MAX_BACKOFF`]. It never
//! returns before `shutdown`.
//!
//! A message larger than [`ImapPoll::max_message_bytes`] is not fetched: it
//! is left in the mailbox, untouched, with a warning in every round, for an
//! operator to look at. Deleting or archiving it would hide a report the
//! intake never read.
//!
//! Built on `async-imap` (maintained by the chatmail/Delta Chat team, who
//! run it in production against every kind of server; tokio runtime
//! feature) with rustls, the ring provider and the system's root
//! certificates, as the rest of the workspace.
//!
//! Connecting, TLS and login are in `connection.rs`.
//!
//! Just over 500 lines: one poll round, from the mailbox's listing to the
//! flags of the messages taken, reads in order, with its tests.

mod connection;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_imap::error::Error as ProtocolError;
use async_imap::types::Flag;
use async_imap::Session;
use futures_lite::{Stream, StreamExt};
use mailpipe_common::config::{BounceSettings, ImapSettings};
use tokio_util::sync::CancellationToken;

use crate::{Handler, Inbound, Source};
use connection::connect;

/// Longest wait between two attempts after errors.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Messages fetched with one `UID FETCH`.
const BATCH_MESSAGES: usize = 20;
/// Bytes (as the server announced them) fetched with one `UID FETCH`; a
/// batch holds at least one message.
const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// What the poller needs: the mailbox and the intake's limits.
#[derive(Debug, Clone)]
pub struct ImapPoll {
    /// The mailbox (`bounces.imap`).
    pub imap: ImapSettings,
    /// Larger messages are left in the mailbox (see the module docs).
    pub max_message_bytes: usize,
    /// Deadline of connecting, of the TLS handshake and of every command
    /// (of every response line of a FETCH).
    pub timeout: Duration,
}

impl ImapPoll {
    /// The poller of `bounces.imap`, if set, with the intake's message size
    /// limit and `smtp_timeout` as the command deadline.
    pub fn from_settings(settings: &BounceSettings) -> Option<Self> {
        Some(Self {
            imap: settings.imap.clone()?,
            max_message_bytes: settings.max_message_bytes,
            timeout: settings.smtp_timeout,
        })
    }
}

impl From<ImapSettings> for ImapPoll {
    /// The mailbox with the defaults of `BounceSettings` (10 MiB, 60 s).
    fn from(imap: ImapSettings) -> Self {
        let defaults = BounceSettings::default();
        Self {
            imap,
            max_message_bytes: defaults.max_message_bytes,
            timeout: defaults.smtp_timeout,
        }
    }
}

/// Why a round ended early. Every variant says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("connecting to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS with {host}")]
    Tls {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("the server refused STARTTLS (tls: starttls requires it)")]
    StartTls(#[source] ProtocolError),
    #[error("login as {user} refused")]
    Login {
        user: String,
        #[source]
        source: ProtocolError,
    },
    #[error("{command} failed")]
    Command {
        command: &'static str,
        #[source]
        source: ProtocolError,
    },
    #[error("{command} timed out after {after:?}")]
    Timeout {
        command: &'static str,
        after: Duration,
    },
}

/// How a round went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Every message was handled (`accepted` of them) except `oversize`
    /// ones, left in the mailbox.
    Done { accepted: usize, oversize: usize },
    /// The handler failed temporarily on a message after `accepted` others:
    /// it and the rest wait for the next round.
    Deferred { accepted: usize },
    /// `shutdown` was cancelled during the round.
    Stopped,
}

/// Polls the mailbox every `poll_interval` until `shutdown` is cancelled;
/// errors are logged and retried with a backoff, never returned. Takes an
/// [`ImapSettings`] (with the default limits) or an [`ImapPoll`].
pub async fn poll<H: Handler>(
    settings: impl Into<ImapPoll>,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let settings = settings.into();
    let interval = settings.imap.poll_interval;
    let mut failures = 0u32;
    tracing::info!(
        host = %settings.imap.host,
        port = settings.imap.port,
        mailbox = %settings.imap.mailbox,
        "IMAP poller started"
    );
    let turn = format!(
        "{}@{}:{}/{}",
        settings.imap.username, settings.imap.host, settings.imap.port, settings.imap.mailbox
    );
    loop {
        if !handler.may_poll(&turn).await {
            // Another replica polls this mailbox now.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            continue;
        }
        let round = poll_once(&settings, &*handler, &shutdown).await;
        handler.polled(&turn).await;
        let wait = match round {
            Ok(RoundOutcome::Stopped) => break,
            Ok(outcome) => {
                failures = 0;
                tracing::debug!(?outcome, "IMAP round done");
                interval
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, interval);
                tracing::warn!(
                    error.cause_chain = %format!("{e:#}"),
                    error.message = %e,
                    failures,
                    retry_in = ?wait,
                    "IMAP round failed"
                );
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    tracing::info!("IMAP poller stopped");
}

/// Delay before the next attempt after `failures` failed rounds in a row:
/// `min(poll_interval, 1 s)`, doubling, at most [`MAX_BACKOFF`] (but never
/// less than the first delay).
pub fn backoff(failures: u32, poll_interval: Duration) -> Duration {
    let first = poll_interval.min(Duration::from_secs(1));
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    first.saturating_mul(factor).min(MAX_BACKOFF.max(first))
}

/// One round: connects, takes every message the handler accepts, logs
/// out. The step the tests drive directly.
pub async fn poll_once<H: Handler>(
    settings: &ImapPoll,
    handler: &H,
    shutdown: &CancellationToken,
) -> Result<RoundOutcome, ImapError> {
    let t = settings.timeout;
    let mut session = tokio::select! {
        _ = shutdown.cancelled() => return Ok(RoundOutcome::Stopped),
        s = connect(settings) => s?,
    };
    let outcome = process(&mut session, settings, handler, shutdown).await;
    // The outcome stands whether or not the server answers the LOGOUT.
    let _ = tokio::time::timeout(t, session.logout()).await;
    outcome
}

/// The selected-state part of a round.
async fn process<H: Handler>(
    session: &mut Session<ImapStream>,
    settings: &ImapPoll,
    handler: &H,
    shutdown: &CancellationToken,
) -> Result<RoundOutcome, ImapError> {
    let t = settings.timeout;
    let imap = &settings.imap;
    let caps = within(t, "CAPABILITY", session.capabilities()).await?;
    let server = Server {
        can_move: caps.has_str("MOVE"),
        uidplus: caps.has_str("UIDPLUS"),
    };
    if let Some(archive) = &imap.archive_mailbox {
        // Creating it every round is simpler than listing first; a NO means
        // it exists (or the account may not create it, and the MOVE below
        // will say so).
        match within(t, "CREATE", session.create(archive)).await {
            Ok(()) => tracing::info!(mailbox = %archive, "created the archive mailbox"),
            Err(ImapError::Command {
                source: ProtocolError::No(_),
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    let mailbox = within(t, "SELECT", session.select(&imap.mailbox)).await?;
    if mailbox.exists == 0 {
        return Ok(RoundOutcome::Done {
            accepted: 0,
            oversize: 0,
        });
    }
    let listing = collect(t, "UID FETCH", {
        within(
            t,
            "UID FETCH",
            session.uid_fetch("1:*", "(UID RFC822.SIZE FLAGS)"),
        )
        .await?
    })
    .await?;
    let mut todo: Vec<(u32, u64)> = Vec::new();
    let mut oversize = 0;
    for fetch in &listing {
        let Some(uid) = fetch.uid else { continue };
        if fetch.flags().any(|f| f == Flag::Deleted) {
            continue;
        }
        let size = u64::from(fetch.size.unwrap_or(0));
        if size > settings.max_message_bytes as u64 {
            oversize += 1;
            tracing::warn!(
                uid,
                size,
                max = settings.max_message_bytes,
                mailbox = %imap.mailbox,
                "message too big for the intake; left in the mailbox"
            );
            continue;
        }
        todo.push((uid, size));
    }
    drop(listing);
    todo.sort_unstable();
    let mut accepted = 0;
    for batch in batches(&todo) {
        let query = "(UID BODY.PEEK[])";
        let mut fetched: Vec<(u32, Vec<u8>)> = collect(t, "UID FETCH", {
            within(t, "UID FETCH", session.uid_fetch(uid_set(&batch), query)).await?
        })
        .await?
        .into_iter()
        .filter_map(|f| Some((f.uid?, f.body()?.to_vec())))
        .collect();
        fetched.sort_unstable_by_key(|(uid, _)| *uid);
        let mut done = Vec::new();
        let mut end = None;
        for (uid, data) in fetched {
            if shutdown.is_cancelled() {
                end = Some(RoundOutcome::Stopped);
                break;
            }
            if data.len() > settings.max_message_bytes {
                // RFC822.SIZE said otherwise; the next round will skip it.
                tracing::warn!(
                    uid,
                    size = data.len(),
                    "message too big for the intake; left in the mailbox"
                );
                continue;
            }
            let bytes = data.len();
            let mail = Inbound {
                source: Source::Imap,
                mail_from: String::new(),
                rcpt_to: Vec::new(),
                data,
            };
            match handler.accept(mail).await {
                Ok(()) => {
                    tracing::info!(uid, bytes, "mail accepted");
                    done.push(uid);
                }
                Err(e) => {
                    tracing::warn!(uid, error.message = %e, "mail not taken: temporary failure; left for the next round");
                    end = Some(RoundOutcome::Deferred {
                        accepted: accepted + done.len(),
                    });
                    break;
                }
            }
        }
        if !done.is_empty() {
            settle(session, settings, server, &done).await?;
            accepted += done.len();
        }
        // Unilateral EXISTS/EXPUNGE notices are of no use here.
        while session.unsolicited_responses.try_recv().is_ok() {}
        if let Some(end) = end {
            return Ok(end);
        }
    }
    Ok(RoundOutcome::Done { accepted, oversize })
}

/// What the server can do, from its CAPABILITY.
#[derive(Debug, Clone, Copy)]
struct Server {
    can_move: bool,
    uidplus: bool,
}

/// Removes the handled messages from the mailbox: into the archive, or
/// deleted.
async fn settle(
    session: &mut Session<ImapStream>,
    settings: &ImapPoll,
    server: Server,
    uids: &[u32],
) -> Result<(), ImapError> {
    let t = settings.timeout;
    let set = uid_set(uids);
    match &settings.imap.archive_mailbox {
        Some(archive) if server.can_move => {
            return within(t, "UID MOVE", session.uid_mv(&set, archive)).await;
        }
        Some(archive) => within(t, "UID COPY", session.uid_copy(&set, archive)).await?,
        None => {}
    }
    collect(t, "UID STORE", {
        within(
            t,
            "UID STORE",
            session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)"),
        )
        .await?
    })
    .await?;
    if server.uidplus {
        collect(t, "UID EXPUNGE", {
            within(t, "UID EXPUNGE", session.uid_expunge(&set)).await?
        })
        .await?;
    } else {
        // Also removes messages someone else flagged \Deleted, which is
        // what EXPUNGE means for them too.
        collect(t, "EXPUNGE", within(t, "EXPUNGE", session.expunge()).await?).await?;
    }
    Ok(())
}

/// Splits the messages to fetch into batches of [`BATCH_MESSAGES`] and
/// about [`BATCH_BYTES`].
fn batches(todo: &[(u32, u64)]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in todo {
        match out.last_mut() {
            Some(batch) if batch.len() < BATCH_MESSAGES && bytes + size <= BATCH_BYTES => {
                batch.push(uid);
                bytes += size;
            }
            _ => {
                out.push(vec![uid]);
                bytes = size;
            }
        }
    }
    out
}

/// `1,2,5` — a UID set as IMAP writes it.
fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs one command with the deadline.
async fn within<T>(
    after: Duration,
    command: &'static str,
    fut: impl Future<Output = async_imap::error::Result<T>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(ImapError::Command { command, source }),
        Err(_) => Err(ImapError::Timeout { command, after }),
    }
}

/// Reads a command's responses to the end, each within the deadline.
async fn collect<T>(
    after: Duration,
    command: &'static str,
    stream: impl Stream<Item = async_imap::error::Result<T>>,
) -> Result<Vec<T>, ImapError> {
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(after, stream.next()).await {
            Ok(Some(Ok(v))) => out.push(v),
            Ok(Some(Err(source))) => return Err(ImapError::Command { command, source }),
            Ok(None) => return Ok(out),
            Err(_) => return Err(ImapError::Timeout { command, after }),
        }
    }
}

/// The connection to the IMAP server, plain or TLS.
pub type ImapStream = mailpipe_common::tls::Stream;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_small_doubles_and_is_capped() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let minute: Vec<Duration> = (1..=11).map(|n| backoff(n, s(60))).collect();
        assert_eq!(
            minute,
            vec![
                s(1),
                s(2),
                s(4),
                s(8),
                s(16),
                s(32),
                s(64),
                s(128),
                s(256),
                s(300),
                s(300)
            ]
        );
        let fast: Vec<Duration> = (1..=4).map(|n| backoff(n, ms(100))).collect();
        assert_eq!(fast, vec![ms(100), ms(200), ms(400), ms(800)]);
        assert_eq!(backoff(u32::MAX, s(60)), s(300));
    }

    #[test]
    fn batches_hold_at_most_twenty_messages_or_about_32_mib() {
        let small: Vec<(u32, u64)> = (1..=45).map(|u| (u, 100)).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![20, 20, 5]);
        let mib = 1024 * 1024;
        let big = [(1, 20 * mib), (2, 20 * mib), (3, 1), (4, 40 * mib)];
        assert_eq!(
            batches(&big),
            vec![vec![1], vec![2, 3], vec![4]],
            "a batch of one may exceed the byte budget"
        );
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn uid_sets_are_comma_separated() {
        assert_eq!(uid_set(&[3, 7, 12]), "3,7,12");
    }
}

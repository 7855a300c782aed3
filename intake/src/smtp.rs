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

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailpipe_common::config::BounceSettings;
use mailpipe_common::telemetry::scrub;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Handler, Inbound, Source};

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

/// The client's side of a session: buffered both ways. Replies are written
/// to the buffer and flushed only when the client has nothing more pending
/// (PIPELINING, RFC 2920 §3.1: a group of commands gets its replies in one
/// go), so every read that would block flushes first.
struct Conn<R, W> {
    reader: BufReader<R>,
    writer: BufWriter<W>,
    timeout: Duration,
}

/// What [`Conn::read_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A line, in the caller's buffer with its line end.
    Line,
    /// A line longer than the limit, read and thrown away.
    TooLong,
    /// The client closed the connection.
    Eof,
}

fn timed_out(_: tokio::time::error::Elapsed) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client timed out")
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// Makes sure input is buffered (flushing the replies first when
    /// waiting for it); returns how much, 0 at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.reader.buffer().is_empty() {
            self.flush().await?;
        }
        let n = timeout(self.timeout, self.reader.fill_buf())
            .await
            .map_err(timed_out)??
            .len();
        Ok(n)
    }

    async fn flush(&mut self) -> io::Result<()> {
        timeout(self.timeout, self.writer.flush())
            .await
            .map_err(timed_out)?
    }

    /// Reads one line of at most `max` octets (line end included) into
    /// `line`; a longer one is consumed up to its end and reported.
    async fn read_line(&mut self, line: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
        line.clear();
        let mut too_long = false;
        loop {
            if self.fill().await? == 0 {
                return Ok(LineRead::Eof);
            }
            let buf = self.reader.buffer();
            let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long {
                if line.len() + take > max {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(&buf[..take]);
                }
            }
            self.reader.consume(take);
            if complete {
                return Ok(if too_long {
                    LineRead::TooLong
                } else {
                    LineRead::Line
                });
            }
        }
    }

    /// Reads message data up to the final dot; `None` when the client
    /// closed the connection before it.
    async fn read_data(&mut self, max: usize) -> io::Result<Option<DotReader>> {
        let mut dot = DotReader::new(max);
        loop {
            if self.fill().await? == 0 {
                return Ok(None);
            }
            let buf = self.reader.buffer();
            let (used, done) = match dot.feed(buf) {
                Some(n) => (n, true),
                None => (buf.len(), false),
            };
            self.reader.consume(used);
            if done {
                return Ok(Some(dot));
            }
        }
    }

    /// Queues one reply line (without its CRLF).
    async fn reply(&mut self, text: &str) -> io::Result<()> {
        timeout(self.timeout, async {
            self.writer.write_all(text.as_bytes()).await?;
            self.writer.write_all(b"\r\n").await
        })
        .await
        .map_err(timed_out)?
    }

    async fn close(&mut self) -> io::Result<()> {
        self.writer.flush().await?;
        self.writer.shutdown().await
    }
}

/// One SMTP session: the connection and the transaction state.
struct Session<'a, H, R, W> {
    conn: Conn<R, W>,
    settings: &'a SmtpListen,
    handler: &'a H,
    /// The EHLO/HELO argument; `None` until the client introduced itself.
    helo: Option<String>,
    /// `MAIL FROM` of the current transaction (empty for `<>`).
    mail_from: Option<String>,
    /// Accepted `RCPT TO` addresses of the current transaction.
    rcpt_to: Vec<String>,
    /// Bad commands so far, against [`MAX_ERRORS`].
    errors: u32,
}

/// How a command ended the session, if it did.
enum Next {
    Continue,
    Close,
}

impl<'a, H: Handler, R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<'a, H, R, W> {
    fn new(read: R, write: W, settings: &'a SmtpListen, handler: &'a H) -> Self {
        Self {
            conn: Conn {
                reader: BufReader::with_capacity(16 * 1024, read),
                writer: BufWriter::new(write),
                timeout: settings.timeout,
            },
            settings,
            handler,
            helo: None,
            mail_from: None,
            rcpt_to: Vec::new(),
            errors: 0,
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> io::Result<()> {
        self.conn
            .reply(&format!(
                "220 {} ESMTP mailpipe intake",
                self.settings.hostname
            ))
            .await?;
        let mut line = Vec::with_capacity(MAX_COMMAND_LINE);
        loop {
            if shutdown.is_cancelled() {
                return self.shutting_down().await;
            }
            let read = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return self.shutting_down().await,
                r = timeout(self.settings.timeout, self.conn.read_line(&mut line, MAX_COMMAND_LINE)) => r,
            };
            let read = match read.map_err(timed_out).and_then(|r| r) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    tracing::warn!("421: client timed out waiting for a command");
                    let _ = self
                        .conn
                        .reply("421 4.4.2 Timeout, closing connection")
                        .await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            let next = match read {
                LineRead::Eof => return Ok(()),
                LineRead::TooLong => self.error("500 5.5.2 Line too long").await?,
                LineRead::Line => match parse_command(&line) {
                    Ok(command) => self.execute(command).await?,
                    Err(reply) => self.error(reply).await?,
                },
            };
            if let Next::Close = next {
                return Ok(());
            }
        }
    }

    async fn shutting_down(&mut self) -> io::Result<()> {
        tracing::warn!("421: shutting down");
        self.conn
            .reply("421 4.3.2 Service shutting down, try again later")
            .await
    }

    /// Answers a client mistake; closes the session after too many.
    async fn error(&mut self, reply: &str) -> io::Result<Next> {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            tracing::warn!(errors = self.errors, "421: too many errors");
            self.conn
                .reply("421 4.7.0 Too many errors, closing connection")
                .await?;
            return Ok(Next::Close);
        }
        self.conn.reply(reply).await?;
        Ok(Next::Continue)
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    async fn execute(&mut self, command: Command) -> io::Result<Next> {
        match command {
            Command::Ehlo(domain) => {
                self.reset();
                self.helo = Some(domain);
                let s = self.settings;
                let reply = format!(
                    "250-{}\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8",
                    s.hostname, s.max_message_bytes
                );
                self.conn.reply(&reply).await?;
            }
            Command::Helo(domain) => {
                self.reset();
                self.helo = Some(domain);
                let reply = format!("250 {}", self.settings.hostname);
                self.conn.reply(&reply).await?;
            }
            Command::Mail { from, size } => {
                if self.helo.is_none() {
                    return self.error("503 5.5.1 Send EHLO or HELO first").await;
                }
                if self.mail_from.is_some() {
                    return self.error("503 5.5.1 Sender already specified").await;
                }
                if size.is_some_and(|n| n > self.settings.max_message_bytes as u64) {
                    self.conn
                        .reply("552 5.3.4 Message size exceeds fixed maximum message size")
                        .await?;
                    return Ok(Next::Continue);
                }
                self.mail_from = Some(from);
                self.conn.reply("250 2.1.0 Ok").await?;
            }
            Command::Rcpt { to } => {
                if self.mail_from.is_none() {
                    return self.error("503 5.5.1 Need MAIL command").await;
                }
                if self.rcpt_to.len() >= self.settings.max_recipients {
                    self.conn.reply("452 4.5.3 Too many recipients").await?;
                    return Ok(Next::Continue);
                }
                match self.handler.accepts_recipient(&to) {
                    Ok(()) => {
                        self.rcpt_to.push(to);
                        self.conn.reply("250 2.1.5 Ok").await?;
                    }
                    Err(why) => {
                        tracing::info!(rcpt = %scrub(&to), reason = %scrub(&why), "recipient refused");
                        let reply = format!("550 5.1.1 {}", reply_text(&why));
                        self.conn.reply(&reply).await?;
                    }
                }
            }
            Command::Data => {
                if self.mail_from.is_none() {
                    return self.error("503 5.5.1 Need MAIL command").await;
                }
                if self.rcpt_to.is_empty() {
                    return self.error("554 5.5.1 No valid recipients").await;
                }
                return self.data().await;
            }
            Command::Rset => {
                self.reset();
                self.conn.reply("250 2.0.0 Ok").await?;
            }
            Command::Noop => self.conn.reply("250 2.0.0 Ok").await?,
            Command::Vrfy => self.conn.reply("252 2.5.0 Cannot VRFY user").await?,
            Command::Help => {
                self.conn
                    .reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY QUIT")
                    .await?
            }
            Command::Quit => {
                self.conn.reply("221 2.0.0 Bye").await?;
                return Ok(Next::Close);
            }
            Command::NotImplemented => {
                return self.error("502 5.5.1 Command not implemented").await;
            }
        }
        Ok(Next::Continue)
    }

    /// DATA: reads the message and hands it to the handler; the reply says
    /// whether the handler recorded it.
    async fn data(&mut self) -> io::Result<Next> {
        self.conn
            .reply("354 End data with <CR><LF>.<CR><LF>")
            .await?;
        let read = timeout(
            self.settings.data_timeout,
            self.conn.read_data(self.settings.max_message_bytes),
        )
        .await
        .map_err(timed_out)
        .and_then(|r| r);
        let dot = match read {
            Ok(Some(dot)) => dot,
            Ok(None) => {
                tracing::info!("client closed the connection in the middle of the data");
                return Ok(Next::Close);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                tracing::warn!("421: client timed out sending the data");
                let _ = self
                    .conn
                    .reply("421 4.4.2 Timeout, closing connection")
                    .await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpt_to = std::mem::take(&mut self.rcpt_to);
        if dot.oversize() {
            tracing::info!(
                bytes = dot.total(),
                max = self.settings.max_message_bytes,
                "message refused: too big"
            );
            self.conn
                .reply("552 5.3.4 Message size exceeds fixed maximum message size")
                .await?;
            return Ok(Next::Continue);
        }
        let data = dot.into_data();
        let bytes = data.len();
        let recipients = rcpt_to.len();
        let from = scrub(&mail_from).into_owned();
        let mail = Inbound {
            source: Source::Smtp,
            mail_from,
            rcpt_to,
            data,
        };
        match self.handler.accept(mail).await {
            Ok(()) => {
                tracing::info!(bytes, recipients, mail_from = %from, "mail accepted");
                self.conn.reply("250 2.0.0 Ok: queued").await?;
            }
            Err(e) => {
                tracing::warn!(bytes, mail_from = %from, error.message = %e, "mail not taken: temporary failure");
                self.conn
                    .reply("451 4.3.0 Temporary failure, try again later")
                    .await?;
            }
        }
        Ok(Next::Continue)
    }
}

/// A text for a reply line: printable, on one line, not too long.
fn reply_text(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if clean.trim().is_empty() {
        "Recipient address rejected".into()
    } else {
        clean
    }
}

/// One client command, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Ehlo(String),
    Helo(String),
    /// `from` is empty for the null sender `<>`.
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    /// A known command this server does not offer (EXPN, STARTTLS, AUTH,
    /// BDAT, …).
    NotImplemented,
}

/// Parses a command line (line end included or not); `Err` is the reply.
fn parse_command(line: &[u8]) -> Result<Command, &'static str> {
    const UNRECOGNIZED: &str = "500 5.5.2 Syntax error, command unrecognized";
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).map_err(|_| UNRECOGNIZED)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(UNRECOGNIZED);
    }
    let line = line.trim_end();
    let (verb, args) = match line.split_once([' ', '\t']) {
        Some((v, a)) => (v, a.trim_start()),
        None => (line, ""),
    };
    let no_args = |command: Command| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err("501 5.5.4 Syntax error: no parameters allowed")
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" if args.is_empty() => Err("501 5.5.4 Syntax: EHLO hostname"),
        "EHLO" => Ok(Command::Ehlo(args.to_string())),
        "HELO" => Ok(Command::Helo(args.to_string())),
        "MAIL" => {
            let rest =
                strip_prefix_ci(args, "FROM:").ok_or("501 5.5.4 Syntax: MAIL FROM:<address>")?;
            let (from, params) = parse_path(rest).ok_or("501 5.1.7 Bad sender address syntax")?;
            let mut size = None;
            for param in params.split_whitespace() {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                match key.to_ascii_uppercase().as_str() {
                    "SIZE" => {
                        size = Some(
                            value
                                .parse::<u64>()
                                .map_err(|_| "501 5.5.4 Bad SIZE parameter")?,
                        )
                    }
                    "BODY"
                        if value.eq_ignore_ascii_case("7BIT")
                            || value.eq_ignore_ascii_case("8BITMIME") => {}
                    "SMTPUTF8" if value.is_empty() => {}
                    _ => return Err("555 5.5.4 Unsupported MAIL parameter"),
                }
            }
            Ok(Command::Mail { from, size })
        }
        "RCPT" => {
            let rest = strip_prefix_ci(args, "TO:").ok_or("501 5.5.4 Syntax: RCPT TO:<address>")?;
            let (to, params) = parse_path(rest).ok_or("501 5.1.3 Bad recipient address syntax")?;
            if to.is_empty() {
                return Err("501 5.1.3 Bad recipient address syntax");
            }
            if !params.trim().is_empty() {
                return Err("555 5.5.4 Unsupported RCPT parameter");
            }
            Ok(Command::Rcpt { to })
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        // NOOP and HELP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" | "STARTTLS" | "AUTH" | "BDAT" | "TURN" | "ETRN" | "ATRN" | "SEND" | "SOML"
        | "SAML" => Ok(Command::NotImplemented),
        _ => Err(UNRECOGNIZED),
    }
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s[prefix.len()..].trim_start())
}

/// Splits `<address> params` into the address (source route dropped, as
/// RFC 5321 §4.1.1.3 allows) and the rest. Tolerates a missing pair of
/// angle brackets, as Postfix does by default.
fn parse_path(s: &str) -> Option<(String, &str)> {
    let (path, rest) = if let Some(inner) = s.strip_prefix('<') {
        let mut quoted = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '>' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        (&inner[..end], &inner[end + 1..])
    } else {
        let end = s.find([' ', '\t']).unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        (&s[..end], &s[end..])
    };
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let path = match path.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => path,
    };
    if path.len() > MAX_PATH || path.contains(['<', '>']) {
        return None;
    }
    // Whitespace only inside a quoted local part.
    let mut quoted = false;
    for c in path.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return None,
            _ => {}
        }
    }
    Some((path.to_string(), rest.trim_start()))
}

/// Where [`DotReader`] is within a line of message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotState {
    /// At the start of a line.
    LineStart,
    /// After a dot at the start of a line.
    Dot,
    /// After a dot and a CR at the start of a line.
    DotCr,
    /// Inside a line.
    Middle,
    /// After a CR inside a line.
    Cr,
}

/// Decodes SMTP message data (RFC 5321 §4.5.2): finds the final dot,
/// removes the dot that stuffs lines starting with one, writes every line
/// end as CRLF (bare LF tolerated), and keeps at most `max` bytes — past
/// that it only counts, so an oversize message costs no memory.
#[derive(Debug)]
struct DotReader {
    state: DotState,
    data: Vec<u8>,
    max: usize,
    /// Bytes of decoded data seen, kept or not.
    total: u64,
    oversize: bool,
}

impl DotReader {
    fn new(max: usize) -> Self {
        Self {
            state: DotState::LineStart,
            data: Vec::new(),
            max,
            total: 0,
            oversize: false,
        }
    }

    /// Decodes `input`; returns how many bytes were used, final dot line
    /// included, once it was found (the rest belongs to the next command).
    fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                DotState::Middle => {
                    let run = input[i..]
                        .iter()
                        .position(|&c| c == b'\r' || c == b'\n')
                        .unwrap_or(input.len() - i);
                    if run > 0 {
                        self.push(&input[i..i + run]);
                        i += run;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = DotState::Cr;
                    } else {
                        self.push(b"\r\n");
                        self.state = DotState::LineStart;
                    }
                    i += 1;
                }
                DotState::LineStart => {
                    if b == b'.' {
                        self.state = DotState::Dot;
                        i += 1;
                    } else {
                        self.state = DotState::Middle;
                    }
                }
                DotState::Dot => match b {
                    b'\r' => {
                        self.state = DotState::DotCr;
                        i += 1;
                    }
                    b'\n' => return Some(i + 1),
                    // A stuffed dot: dropped, the line goes on.
                    _ => self.state = DotState::Middle,
                },
                DotState::DotCr => {
                    if b == b'\n' {
                        return Some(i + 1);
                    }
                    // ".\r" and more: the dot was stuffing, the CR is data.
                    self.state = DotState::Cr;
                }
                DotState::Cr => {
                    if b == b'\n' {
                        self.push(b"\r\n");
                        self.state = DotState::LineStart;
                        i += 1;
                    } else {
                        self.push(b"\r");
                        self.state = DotState::Middle;
                    }
                }
            }
        }
        None
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        if self.oversize {
            return;
        }
        if self.data.len() + bytes.len() > self.max {
            self.oversize = true;
            self.data = Vec::new();
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    fn oversize(&self) -> bool {
        self.oversize
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn into_data(self) -> Vec<u8> {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], max: usize) -> (Option<usize>, Vec<u8>, bool) {
        let mut d = DotReader::new(max);
        let used = d.feed(input);
        let over = d.oversize();
        (used, d.into_data(), over)
    }

    #[test]
    fn dot_reader_unstuffs_normalizes_and_stops_at_the_final_dot() {
        let cases: &[(&[u8], Option<usize>, &[u8])] = &[
            (b".\r\n", Some(3), b""),
            (b"a\r\n.\r\n", Some(6), b"a\r\n"),
            (b"a\r\n.\r\nMAIL", Some(6), b"a\r\n"),
            (b"..x\r\n.\r\n", Some(8), b".x\r\n"),
            (b"a\n..b\n.\n", Some(8), b"a\r\n.b\r\n"),
            (b"a\r\n..\r\n.\r\n", Some(10), b"a\r\n.\r\n"),
            (b"a\rb\r\n.\r\n", Some(8), b"a\rb\r\n"),
            (b".\rx\r\n.\r\n", Some(8), b"\rx\r\n"),
            (b"x.\r\n.\r\n", Some(7), b"x.\r\n"),
            (b"a\r\n.", None, b"a\r\n"),
            (b"a\r\n.x", None, b"a\r\nx"),
        ];
        for (input, used, data) in cases {
            let (u, d, _) = decode(input, 1000);
            assert_eq!(
                (u, d.as_slice()),
                (*used, *data),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn dot_reader_finds_the_end_across_chunk_boundaries() {
        let input = b"l1\r\n..l2\nl3\r\n.\r\n";
        for split in 0..input.len() {
            let mut d = DotReader::new(1000);
            let (a, b) = input.split_at(split);
            let used = match d.feed(a) {
                Some(n) => n,
                None => a.len() + d.feed(b).expect("end found in the second chunk"),
            };
            assert_eq!(used, input.len(), "split at {split}");
            assert_eq!(d.into_data(), b"l1\r\n.l2\r\nl3\r\n", "split at {split}");
        }
    }

    #[test]
    fn dot_reader_keeps_nothing_past_the_cap_but_finds_the_end() {
        let (used, data, over) = decode(b"0123456789\r\nabc\r\n.\r\n", 8);
        assert_eq!(used, Some(20));
        assert!(over);
        assert!(data.is_empty());
        let (_, data, over) = decode(b"0123\r\n.\r\n", 6);
        assert!(!over);
        assert_eq!(data, b"0123\r\n");
    }

    #[test]
    fn commands_parse_or_give_the_reply() {
        use Command::*;
        let ok: &[(&str, Command)] = &[
            ("EHLO mx.example\r\n", Ehlo("mx.example".into())),
            ("helo mx\n", Helo("mx".into())),
            (
                "MAIL FROM:<>\r\n",
                Mail {
                    from: String::new(),
                    size: None,
                },
            ),
            (
                "mail from: <a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8",
                Mail {
                    from: "a@b.example".into(),
                    size: Some(1000),
                },
            ),
            (
                "MAIL FROM:<@relay.example:a@b.example>",
                Mail {
                    from: "a@b.example".into(),
                    size: None,
                },
            ),
            (
                "MAIL FROM:a@b.example",
                Mail {
                    from: "a@b.example".into(),
                    size: None,
                },
            ),
            (
                "RCPT TO:<\"x y\"@b.example>",
                Rcpt {
                    to: "\"x y\"@b.example".into(),
                },
            ),
            (
                "RCPT TO:<bounces+tok@bounce.example>",
                Rcpt {
                    to: "bounces+tok@bounce.example".into(),
                },
            ),
            (
                "RCPT TO:<Postmaster>",
                Rcpt {
                    to: "Postmaster".into(),
                },
            ),
            ("DATA", Data),
            ("rset", Rset),
            ("NOOP hello", Noop),
            ("VRFY someone", Vrfy),
            ("QUIT", Quit),
            ("STARTTLS", NotImplemented),
            ("BDAT 10 LAST", NotImplemented),
        ];
        for (line, command) in ok {
            assert_eq!(
                parse_command(line.as_bytes()).as_ref(),
                Ok(command),
                "{line}"
            );
        }
        let err: &[(&[u8], &str)] = &[
            (b"EHLO", "501"),
            (b"MAIL TO:<a@b>", "501"),
            (b"MAIL FROM:<a@b", "501"),
            (b"MAIL FROM:<a b@c>", "501"),
            (b"MAIL FROM:<a@b> SIZE=big", "501"),
            (b"MAIL FROM:<a@b> RET=FULL", "555"),
            (b"MAIL FROM:<a@b>junk", "501"),
            (b"RCPT TO:<>", "501"),
            (b"RCPT TO:<a@b> NOTIFY=NEVER", "555"),
            (b"DATA now", "501"),
            (b"FROB", "500"),
            (b"", "500"),
            (b"\xff\xfe\x00binary", "500"),
            (b"NOOP \x00", "500"),
        ];
        for (line, code) in err {
            let reply = parse_command(line).expect_err("an error reply");
            assert!(
                reply.starts_with(code),
                "{:?}: {reply}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

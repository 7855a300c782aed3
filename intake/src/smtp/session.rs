//! One SMTP session of the bounce intake: the buffered connection and the
//! state machine from greeting to QUIT.

use std::io;
use std::time::Duration;

use mailpipe_common::telemetry::scrub;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::command::{parse_command, Command};
use super::data::DotReader;
use super::{SmtpListen, MAX_COMMAND_LINE, MAX_ERRORS};
use crate::{Handler, Inbound, Source};

/// to the buffer and flushed only when the client has nothing more pending
/// (PIPELINING, RFC 2920 §3.1: a group of commands gets its replies in one
/// go), so every read that would block flushes first.
pub(super) struct Conn<R, W> {
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

    pub(super) async fn close(&mut self) -> io::Result<()> {
        self.writer.flush().await?;
        self.writer.shutdown().await
    }
}

/// One SMTP session: the connection and the transaction state.
pub(super) struct Session<'a, H, R, W> {
    pub(super) conn: Conn<R, W>,
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
    pub(super) fn new(read: R, write: W, settings: &'a SmtpListen, handler: &'a H) -> Self {
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

    pub(super) async fn run(&mut self, shutdown: &CancellationToken) -> io::Result<()> {
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
                    return Err(self.close_timed_out(e).await);
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

    /// A client that let its timeout pass is told so (421) as the session
    /// ends with `e`, whether or not the reply reaches it.
    async fn close_timed_out(&mut self, e: io::Error) -> io::Error {
        let _ = self
            .conn
            .reply("421 4.4.2 Timeout, closing connection")
            .await;
        e
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
                return Err(self.close_timed_out(e).await);
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

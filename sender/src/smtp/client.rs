//! mailpipe's SMTP client: one connection to a relay or MX host, from the
//! greeting through EHLO, STARTTLS (or TLS from the start) and AUTH to any
//! number of mail transactions.
//!
//! A transaction costs two round trips when the server offers PIPELINING
//! (RFC 2920): `MAIL FROM`, `RCPT TO` and `DATA` go out in one write, and the
//! dot-stuffed message with its terminating `.` in another. Without
//! PIPELINING each command waits for its reply, as RFC 5321 requires. Every
//! reply keeps its code and all its lines, so a failure reaches the
//! classifier and operators exactly as the server wrote it.

use std::io;
use std::sync::Arc;

use data_encoding::BASE64;
use mailpipe_common::tls::Stream;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// Longest reply line accepted (RFC 5321 allows 512 octets; servers write longer).
const MAX_LINE: usize = 4096;
/// Most lines in one reply.
const MAX_LINES: usize = 100;

/// A reply of the server: its code and its text lines (without the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The lines joined with spaces; an enhanced status code that starts
    /// every line is kept only once.
    pub fn text(&self) -> String {
        let Some((first, rest)) = self.lines.split_first() else {
            return String::new();
        };
        let code = first
            .split_whitespace()
            .next()
            .filter(|w| super::enhanced_code(w).is_some());
        let mut text = first.clone();
        for line in rest {
            text.push(' ');
            let line = match code {
                Some(c) => line
                    .strip_prefix(c)
                    .filter(|r| r.starts_with(' '))
                    .map_or(line.as_str(), str::trim_start),
                None => line.as_str(),
            };
            text.push_str(line);
        }
        text
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// Why an SMTP exchange failed.
#[derive(Debug)]
pub enum SmtpError {
    /// The server answered with a negative reply.
    Reply(Reply),
    /// The connection failed (reset, closed, timed out).
    Io(io::Error),
    /// The TLS handshake failed.
    Tls(io::Error),
    /// The server's answer is not SMTP, or it cannot do what is required
    /// (STARTTLS, SMTPUTF8, an AUTH mechanism).
    Protocol(String),
    /// The server lacks an extension this message needs (SMTPUTF8 for a
    /// non-ASCII address, 8BITMIME for 8-bit data): nothing was sent and
    /// the connection stays usable. The message waits for a server that
    /// offers it (another MX host, or this one once upgraded).
    Unsupported {
        /// The RFC 3463 code that names the lack: `4.6.7` (non-ASCII
        /// addresses) or `4.6.3` (8-bit data).
        enhanced: &'static str,
        detail: String,
    },
    /// The caller's "data sent" mark could not be written, so the
    /// transaction was abandoned before the final dot (nothing delivered).
    Aborted,
}

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpError::Reply(r) => write!(f, "{r}"),
            SmtpError::Io(e) => write!(f, "{e}"),
            SmtpError::Tls(e) => write!(f, "TLS: {e}"),
            SmtpError::Protocol(e) => write!(f, "{e}"),
            SmtpError::Unsupported { enhanced, detail } => write!(f, "{enhanced} {detail}"),
            SmtpError::Aborted => {
                write!(f, "transaction abandoned before the final dot (no mark)")
            }
        }
    }
}

impl std::error::Error for SmtpError {}

impl From<io::Error> for SmtpError {
    fn from(e: io::Error) -> Self {
        SmtpError::Io(e)
    }
}

/// Whether a connection may carry another transaction (after RSET) once a
/// transaction failed with `e`, provided every reply was read: only after
/// a 4xx or 5xx reply, and never after 421, with which the server says it
/// is closing the connection; and after a message the server could not
/// take for want of an extension (nothing was sent). I/O, TLS and protocol
/// errors leave it in an unknown state.
pub fn reusable_after(e: &SmtpError) -> bool {
    match e {
        SmtpError::Reply(r) => r.code != 421 && (400..600).contains(&r.code),
        SmtpError::Unsupported { .. } => true,
        _ => false,
    }
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub starttls: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    /// AUTH mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    fn parse(ehlo: &Reply) -> Self {
        let mut caps = Capabilities::default();
        // The first line is the server's name.
        for line in ehlo.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "AUTH" => caps.auth.extend(
                    words
                        .map(|w| w.to_ascii_uppercase())
                        .filter(|w| !w.is_empty()),
                ),
                _ => {}
            }
        }
        caps
    }
}

/// How to use TLS on a connection.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// The name the certificate must be valid for (and SNI).
    pub name: ServerName<'static>,
}

/// When to use TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsUse {
    /// Never.
    None,
    /// From the first byte (SMTPS).
    Implicit,
    /// STARTTLS, and fail when the server does not offer it.
    Required,
    /// STARTTLS when the server offers it.
    Opportunistic,
}

/// One SMTP connection, ready for transactions. Generic over the stream
/// only so that the fuzz target can play a server from memory
/// ([`fuzzing`]); the sender always uses [`Stream`].
pub struct Client<S = Stream> {
    io: BufReader<S>,
    caps: Capabilities,
    /// Set once an exchange failed in a way that leaves the connection in
    /// an unknown state; such a connection is never used again.
    broken: bool,
    /// Whether every reply of the current transaction has been read, so
    /// that a failed transaction leaves the connection in step with the
    /// server (see [`reusable_after`]).
    in_step: bool,
    /// Reused for every command and message written.
    out: Vec<u8>,
    /// The final dot of the current transaction is being sent or was sent
    /// and its reply not read yet: if the transaction fails now, nobody
    /// knows whether the server took the message.
    awaiting_data_reply: bool,
    /// Transactions started on this connection.
    transactions: u32,
}

impl Client {
    /// Opens the session on a connected stream: reads the greeting, says
    /// EHLO, upgrades to TLS as `tls_use` says, and authenticates when
    /// `credentials` are given (PLAIN, else LOGIN, as the server offers).
    pub async fn open(
        tcp: TcpStream,
        hello: &str,
        tls_use: TlsUse,
        tls: Option<&Tls>,
        credentials: Option<(&str, &str)>,
    ) -> Result<Client, SmtpError> {
        let stream = match (tls_use, tls) {
            (TlsUse::Implicit, Some(tls)) => handshake(tcp, tls).await?,
            _ => Stream::Plain(tcp),
        };
        let mut client = Client::greet(stream, hello).await?;
        let upgrade = match tls_use {
            TlsUse::Required if !client.caps.starttls => {
                return Err(SmtpError::Protocol(
                    "the server does not offer STARTTLS, which is required".into(),
                ))
            }
            TlsUse::Required => true,
            TlsUse::Opportunistic => client.caps.starttls,
            TlsUse::None | TlsUse::Implicit => false,
        };
        if let (true, Some(tls)) = (upgrade, tls) {
            client.command("STARTTLS").await?;
            let Stream::Plain(tcp) = client.io.into_inner() else {
                return Err(SmtpError::Protocol("STARTTLS on a TLS connection".into()));
            };
            client.io = BufReader::new(handshake(tcp, tls).await?);
            client.hello(hello).await?;
        }
        if let Some((user, password)) = credentials {
            client.authenticate(user, password).await?;
        }
        Ok(client)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads the server's greeting on a connected stream and says EHLO
    /// (HELO to an old server).
    async fn greet(stream: S, hello: &str) -> Result<Self, SmtpError> {
        let mut client = Client {
            io: BufReader::new(stream),
            caps: Capabilities::default(),
            broken: false,
            in_step: true,
            out: Vec::with_capacity(256),
            awaiting_data_reply: false,
            transactions: 0,
        };
        let greeting = client.read_reply().await?;
        if greeting.code != 220 {
            return Err(SmtpError::Reply(greeting));
        }
        client.hello(hello).await?;
        Ok(client)
    }

    /// What the server offered (after TLS, when it was used).
    #[cfg(test)]
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Transactions started on this connection.
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// Whether the connection must not be used again.
    pub fn has_broken(&self) -> bool {
        self.broken
    }

    /// Sends one message. `from` is the envelope sender (empty for the null
    /// sender), `message` the formatted message with CRLF line ends.
    ///
    /// A transaction the server refused with a reply (a 4xx or 5xx to MAIL,
    /// RCPT, DATA or the data), with every reply read, is ended with RSET
    /// and the connection stays usable: a rejected recipient must not cost
    /// a new connection (and a TLS handshake). Any other failure, a 421, or
    /// a RSET that is not answered 250, leaves the connection broken.
    pub async fn send(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<Reply, SmtpError> {
        self.send_marked(from, to, message, std::future::ready(true))
            .await
    }

    /// [`Self::send`], with `mark` run once the server is asked for DATA
    /// (at the same time as its reply is awaited, so it costs no round
    /// trip): the final dot is sent only once `mark` answers `true`. With
    /// `false`, the transaction is abandoned before the dot
    /// ([`SmtpError::Aborted`]) and the connection is not reused.
    pub async fn send_marked(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
        mark: impl std::future::Future<Output = bool>,
    ) -> Result<Reply, SmtpError> {
        self.in_step = false;
        self.awaiting_data_reply = false;
        self.transactions = self.transactions.saturating_add(1);
        let result = self.transaction(from, to, message, mark).await;
        if let Err(e) = &result {
            // A refusal before anything was written needs no RSET: no
            // transaction was begun.
            let nothing_written = matches!(e, SmtpError::Unsupported { .. });
            let keep = self.in_step && reusable_after(e) && (nothing_written || self.reset().await);
            if !keep {
                self.broken = true;
            }
        }
        result
    }

    /// Whether the last transaction failed after its final dot was (being)
    /// sent and before its reply was read: its outcome is unknown.
    pub fn outcome_unknown(&self) -> bool {
        self.awaiting_data_reply
    }

    /// RSET: whether the server confirmed it (250).
    async fn reset(&mut self) -> bool {
        matches!(self.command("RSET").await, Ok(r) if r.code == 250)
    }

    async fn transaction(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
        mark: impl std::future::Future<Output = bool>,
    ) -> Result<Reply, SmtpError> {
        let mut params = String::new();
        let utf8 = !from.is_ascii() || to.iter().any(|t| !t.is_ascii());
        if utf8 {
            if !self.caps.smtputf8 {
                // Nothing written: the connection is in step.
                self.in_step = true;
                return Err(SmtpError::Unsupported {
                    enhanced: "4.6.7",
                    detail: "the server does not offer SMTPUTF8, which a non-ASCII address \
                             needs (RFC 6531); deferred until a server that offers it takes it"
                        .into(),
                });
            }
            params.push_str(" SMTPUTF8");
        }
        if !message.is_ascii() {
            // A server that offers SMTPUTF8 takes 8-bit data (RFC 6531).
            if !self.caps.eightbitmime && !utf8 {
                self.in_step = true;
                return Err(SmtpError::Unsupported {
                    enhanced: "4.6.3",
                    detail: "the server does not offer 8BITMIME, which the message's 8-bit \
                             data needs; deferred until a server that offers it takes it"
                        .into(),
                });
            }
            if self.caps.eightbitmime {
                params.push_str(" BODY=8BITMIME");
            }
        }
        let mail = format!("MAIL FROM:<{from}>{params}");
        if self.caps.pipelining {
            self.out.clear();
            push_line(&mut self.out, &mail);
            for rcpt in to {
                self.out.extend_from_slice(b"RCPT TO:<");
                self.out.extend_from_slice(rcpt.as_bytes());
                self.out.extend_from_slice(b">\r\n");
            }
            self.out.extend_from_slice(b"DATA\r\n");
            self.flush_out().await?;
            let (replies, marked) = tokio::join!(self.envelope_replies(to.len()), mark);
            replies?;
            if !marked {
                self.broken = true;
                return Err(SmtpError::Aborted);
            }
        } else {
            // One command at a time: a negative reply is read whole, so
            // the connection is in step unless the I/O itself failed.
            self.in_step = true;
            self.command(&mail).await.and_then(accepted)?;
            for rcpt in to {
                self.command(&format!("RCPT TO:<{rcpt}>"))
                    .await
                    .and_then(accepted)?;
            }
            let (r, marked) = tokio::join!(self.command("DATA"), mark);
            let r = r?;
            if r.code != 354 {
                return Err(SmtpError::Reply(r));
            }
            if !marked {
                self.broken = true;
                return Err(SmtpError::Aborted);
            }
        }
        self.in_step = false;
        self.out.clear();
        stuff(message, &mut self.out);
        self.awaiting_data_reply = true;
        self.flush_out().await?;
        let reply = self.read_reply().await?;
        self.awaiting_data_reply = false;
        self.in_step = true;
        if reply.code / 100 == 2 {
            Ok(reply)
        } else {
            Err(SmtpError::Reply(reply))
        }
    }

    /// Reads the pipelined replies to MAIL, each RCPT and DATA: `Ok` when
    /// every one is positive and DATA got 354. The first negative reply is
    /// the transaction's failure (a server that closes after it, as with a
    /// 421, leaves the later replies unread).
    async fn envelope_replies(&mut self, recipients: usize) -> Result<(), SmtpError> {
        let mut failure = None;
        for _ in 0..recipients + 1 {
            match self.read_reply().await {
                Ok(r) => {
                    if let Err(refused) = accepted(r) {
                        failure.get_or_insert(refused);
                    }
                }
                Err(e) => return Err(failure.unwrap_or(e)),
            }
        }
        let data = self.read_reply().await;
        match (failure, data) {
            (None, Ok(r)) if r.code == 354 => Ok(()),
            (None, Ok(r)) => {
                self.in_step = true;
                Err(SmtpError::Reply(r))
            }
            (None, Err(e)) => Err(e),
            (Some(failure), Ok(r)) if r.code == 354 => {
                // DATA was accepted after all (RFC 2920, 3.1): end the
                // empty message so that nothing is delivered.
                self.write_all(b".\r\n").await?;
                self.in_step = self.read_reply().await.is_ok();
                Err(failure)
            }
            (Some(failure), Ok(_)) => {
                self.in_step = true;
                Err(failure)
            }
            (Some(failure), Err(_)) => Err(failure),
        }
    }

    /// NOOP: whether the server still answers.
    pub async fn noop(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let ok = matches!(self.command("NOOP").await, Ok(r) if r.code == 250);
        if !ok {
            self.broken = true;
        }
        ok
    }

    /// Ends the session politely (QUIT), ignoring what happens.
    pub async fn quit(&mut self) {
        if !self.broken {
            let _ = self.command("QUIT").await;
        }
        self.broken = true;
        let _ = self.io.get_mut().shutdown().await;
    }

    async fn hello(&mut self, name: &str) -> Result<(), SmtpError> {
        self.write_line(&format!("EHLO {name}")).await?;
        let reply = self.read_reply().await?;
        if reply.code == 250 {
            self.caps = Capabilities::parse(&reply);
            return Ok(());
        }
        if reply.code / 100 != 5 {
            return Err(SmtpError::Reply(reply));
        }
        // An old server without ESMTP.
        self.command(&format!("HELO {name}")).await?;
        self.caps = Capabilities::default();
        Ok(())
    }

    async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), SmtpError> {
        let offers = |m: &str| self.caps.auth.iter().any(|a| a == m);
        if offers("PLAIN") {
            let token = BASE64.encode(format!("\0{user}\0{password}").as_bytes());
            self.command(&format!("AUTH PLAIN {token}")).await?;
        } else if offers("LOGIN") {
            let r = self.command("AUTH LOGIN").await?;
            if r.code != 334 {
                return Err(SmtpError::Reply(r));
            }
            let r = self.command(&BASE64.encode(user.as_bytes())).await?;
            if r.code != 334 {
                return Err(SmtpError::Reply(r));
            }
            self.command(&BASE64.encode(password.as_bytes())).await?;
        } else {
            return Err(SmtpError::Protocol(format!(
                "the server offers no AUTH mechanism mailpipe can use (PLAIN, LOGIN); it offers {:?}",
                self.caps.auth
            )));
        }
        Ok(())
    }

    /// Writes a command and reads its reply; a negative reply is an error.
    async fn command(&mut self, line: &str) -> Result<Reply, SmtpError> {
        self.write_line(line).await?;
        let reply = self.read_reply().await?;
        if reply.is_positive() {
            Ok(reply)
        } else {
            Err(SmtpError::Reply(reply))
        }
    }

    async fn write_line(&mut self, line: &str) -> Result<(), SmtpError> {
        self.out.clear();
        push_line(&mut self.out, line);
        self.flush_out().await
    }

    async fn flush_out(&mut self) -> Result<(), SmtpError> {
        let out = std::mem::take(&mut self.out);
        let result = self.write_all(&out).await;
        self.out = out;
        result
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), SmtpError> {
        let stream = self.io.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Reads one (possibly multi-line) reply.
    async fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        let mut lines = Vec::new();
        let mut code = None;
        let mut raw = Vec::with_capacity(128);
        loop {
            raw.clear();
            let n = (&mut self.io)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut raw)
                .await?;
            if n == 0 {
                return Err(SmtpError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection (incomplete reply)",
                )));
            }
            if raw.last() != Some(&b'\n') {
                return Err(SmtpError::Protocol(format!(
                    "reply line longer than {MAX_LINE} bytes"
                )));
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let (this, last, text) = parse_line(line).ok_or_else(|| {
                SmtpError::Protocol(format!("not an SMTP reply: {:?}", truncate(line)))
            })?;
            if *code.get_or_insert(this) != this {
                return Err(SmtpError::Protocol(format!(
                    "reply lines with different codes: {:?}",
                    truncate(line)
                )));
            }
            lines.push(text.to_string());
            if last {
                return Ok(Reply { code: this, lines });
            }
            if lines.len() >= MAX_LINES {
                return Err(SmtpError::Protocol(format!(
                    "reply longer than {MAX_LINES} lines"
                )));
            }
        }
    }
}

/// The reply to MAIL or RCPT, which only a 2xx accepts (RFC 5321, 4.3.2):
/// a 4xx or 5xx is the server's refusal, and any other reply (a 3xx) means
/// the server is not answering the command the client sent, so the
/// transaction must not go on to the message.
fn accepted(reply: Reply) -> Result<Reply, SmtpError> {
    match reply.code / 100 {
        2 => Ok(reply),
        4 | 5 => Err(SmtpError::Reply(reply)),
        _ => Err(SmtpError::Protocol(format!(
            "{} is no reply to MAIL or RCPT",
            truncate(&reply.to_string())
        ))),
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One reply line: its code, whether it is the last line, its text.
fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = line[..3].parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    match bytes.get(3) {
        None => Some((code, true, "")),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

/// Appends the message in its DATA form: a `.` that starts a line is
/// doubled (RFC 5321, 4.5.2), and the terminating `.` follows on a line of
/// its own.
fn stuff(message: &[u8], out: &mut Vec<u8>) {
    out.reserve(message.len() + 8);
    let mut start = 0;
    if message.first() == Some(&b'.') {
        out.push(b'.');
    }
    for nl in memchr::memchr_iter(b'\n', message) {
        if message.get(nl + 1) == Some(&b'.') {
            out.extend_from_slice(&message[start..=nl]);
            out.push(b'.');
            start = nl + 1;
        }
    }
    out.extend_from_slice(&message[start..]);
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

async fn handshake(tcp: TcpStream, tls: &Tls) -> Result<Stream, SmtpError> {
    TlsConnector::from(tls.config.clone())
        .connect(tls.name.clone(), tcp)
        .await
        .map(|s| Stream::Tls(Box::new(s)))
        .map_err(SmtpError::Tls)
}

/// The client on any byte stream, for the fuzz target that plays hostile
/// servers from memory. Not part of the sender's API.
#[doc(hidden)]
pub mod fuzzing {
    use tokio::io::{AsyncRead, AsyncWrite};

    pub use super::{Capabilities, Client, Reply, SmtpError};

    /// Opens a session as [`Client::open`] does without TLS: greeting,
    /// EHLO (or HELO), then AUTH when `credentials` are given.
    pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(
        stream: S,
        hello: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Client<S>, SmtpError> {
        let mut client = Client::greet(stream, hello).await?;
        if let Some((user, password)) = credentials {
            client.authenticate(user, password).await?;
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(m: &str) -> String {
        let mut out = Vec::new();
        stuff(m.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_dot_that_starts_a_line_is_doubled_and_the_message_ends_with_a_lone_dot() {
        assert_eq!(stuffed("a\r\n.b\r\n"), "a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(".x\r\n..y\r\nz.\r\n"), "..x\r\n...y\r\nz.\r\n.\r\n");
        assert_eq!(stuffed("no final line end"), "no final line end\r\n.\r\n");
        assert_eq!(stuffed("a\r\n.\r\n"), "a\r\n..\r\n.\r\n");
        assert_eq!(stuffed(""), ".\r\n");
    }

    #[test]
    fn reply_lines_are_parsed_with_their_code_and_continuation() {
        assert_eq!(
            parse_line("250-PIPELINING"),
            Some((250, false, "PIPELINING"))
        );
        assert_eq!(parse_line("250 OK"), Some((250, true, "OK")));
        assert_eq!(parse_line("250"), Some((250, true, "")));
        assert_eq!(parse_line("250 "), Some((250, true, "")));
        assert_eq!(parse_line("25"), None);
        assert_eq!(parse_line("abc def"), None);
        assert_eq!(parse_line("250xOK"), None);
        assert_eq!(parse_line("999 no"), None);
    }

    #[test]
    fn a_repeated_enhanced_code_is_kept_once_in_the_text() {
        let r = Reply {
            code: 550,
            lines: vec![
                "5.1.1 The email account that you tried to reach does not exist.".into(),
                "5.1.1 Please try double-checking the recipient's email address.".into(),
            ],
        };
        assert_eq!(
            r.text(),
            "5.1.1 The email account that you tried to reach does not exist. \
             Please try double-checking the recipient's email address."
        );
        let plain = Reply {
            code: 421,
            lines: vec!["Service not available,".into(), "closing channel".into()],
        };
        assert_eq!(plain.text(), "Service not available, closing channel");
        assert_eq!(
            plain.to_string(),
            "421 Service not available, closing channel"
        );
    }

    #[test]
    fn capabilities_are_read_from_the_ehlo_reply() {
        let r = Reply {
            code: 250,
            lines: vec![
                "relay.example".into(),
                "PIPELINING".into(),
                "8bitmime".into(),
                "AUTH PLAIN login".into(),
                "STARTTLS".into(),
                "".into(),
            ],
        };
        let caps = Capabilities::parse(&r);
        assert!(caps.pipelining && caps.eightbitmime && caps.starttls);
        assert!(!caps.smtputf8);
        assert_eq!(caps.auth, vec!["PLAIN", "LOGIN"]);
    }

    /// A server played from a script over a real socket: each element is
    /// what the client must have sent (a prefix is enough) and the reply.
    async fn scripted(
        script: Vec<(&'static str, &'static str)>,
    ) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"220 test ESMTP\r\n").await.unwrap();
            let mut seen = Vec::new();
            let mut buf = Vec::new();
            for (expect, reply) in script {
                while !String::from_utf8_lossy(&buf).contains(expect) {
                    let mut chunk = [0u8; 8192];
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return seen;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let at = text.find(expect).unwrap() + expect.len();
                seen.push(text[..at].to_string());
                buf.drain(..at);
                if !reply.is_empty() {
                    s.write_all(reply.as_bytes()).await.unwrap();
                }
            }
            seen
        });
        (port, task)
    }

    async fn client(port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Client::open(tcp, "sender.test", TlsUse::None, None, None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn with_pipelining_the_envelope_goes_in_one_write_and_every_reply_is_read() {
        let (port, server) = scripted(vec![
            ("EHLO sender.test\r\n", "250-test\r\n250 PIPELINING\r\n"),
            (
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
                "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n",
            ),
            ("\r\n.\r\n", "250 2.0.0 queued\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        assert!(c.capabilities().pipelining);
        let r = c
            .send("a@x.test", &["b@y.test"], b"Subject: t\r\n\r\n.hi\r\n")
            .await
            .unwrap();
        assert_eq!((r.code, r.text()), (250, "2.0.0 queued".to_string()));
        assert!(!c.has_broken());
        let seen = server.await.unwrap();
        assert_eq!(seen[2], "Subject: t\r\n\r\n..hi\r\n.\r\n");
    }

    #[tokio::test]
    async fn a_refused_recipient_is_the_failure_even_if_the_server_hangs_up_after_it() {
        let (port, _server) = scripted(vec![
            ("EHLO", "250-test\r\n250 PIPELINING\r\n"),
            (
                "DATA\r\n",
                "250 ok\r\n421 4.7.0 Try again later, closing connection\r\n",
            ),
        ])
        .await;
        let mut c = client(port).await;
        match c.send("a@x.test", &["b@y.test"], b"x\r\n").await {
            Err(SmtpError::Reply(r)) => {
                assert_eq!(r.code, 421);
                assert_eq!(r.text(), "4.7.0 Try again later, closing connection");
            }
            other => panic!("{other:?}"),
        }
        assert!(c.has_broken());
    }

    #[tokio::test]
    async fn data_accepted_after_a_refused_recipient_ends_an_empty_message() {
        let (port, server) = scripted(vec![
            ("EHLO", "250-test\r\n250 PIPELINING\r\n"),
            (
                "DATA\r\n",
                "250 ok\r\n550 5.1.1 no such user\r\n354 go ahead anyway\r\n",
            ),
            (".\r\n", "554 5.5.1 no valid recipients\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        match c.send("a@x.test", &["b@y.test"], b"body\r\n").await {
            Err(SmtpError::Reply(r)) => assert_eq!(r.code, 550),
            other => panic!("{other:?}"),
        }
        let seen = server.await.unwrap();
        assert_eq!(seen.last().unwrap(), ".\r\n", "the body was sent: {seen:?}");
    }

    #[test]
    fn only_a_negative_reply_other_than_421_leaves_a_connection_reusable() {
        let reply = |code| {
            SmtpError::Reply(Reply {
                code,
                lines: vec![],
            })
        };
        let io = || SmtpError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
        let table = [
            (reply(550), true),
            (reply(554), true),
            (reply(552), true),
            (reply(451), true),
            (reply(452), true),
            (reply(450), true),
            (reply(421), false),
            (io(), false),
            (SmtpError::Tls(io::Error::other("bad certificate")), false),
            (SmtpError::Protocol("not SMTP".into()), false),
        ];
        for (e, expected) in table {
            assert_eq!(reusable_after(&e), expected, "{e}");
        }
    }

    #[tokio::test]
    async fn a_refused_recipient_is_reset_and_the_connection_carries_the_next_message() {
        let (port, server) = scripted(vec![
            ("EHLO", "250-test\r\n250 PIPELINING\r\n"),
            (
                "DATA\r\n",
                "250 ok\r\n550 5.1.1 no such user\r\n503 5.5.1 no valid recipients\r\n",
            ),
            ("RSET\r\n", "250 2.0.0 flushed\r\n"),
            (
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n",
                "250 ok\r\n250 ok\r\n354 go\r\n",
            ),
            ("\r\n.\r\n", "554 5.7.1 rejected as spam\r\n"),
            ("RSET\r\n", "250 2.0.0 flushed\r\n"),
            ("DATA\r\n", "250 ok\r\n250 ok\r\n354 go\r\n"),
            ("\r\n.\r\n", "250 2.0.0 queued\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        match c.send("a@x.test", &["b@y.test"], b"x\r\n").await {
            Err(SmtpError::Reply(r)) => assert_eq!(r.code, 550),
            other => panic!("{other:?}"),
        }
        assert!(
            !c.has_broken(),
            "a refused recipient must not cost the connection"
        );
        match c.send("a@x.test", &["c@y.test"], b"x\r\n").await {
            Err(SmtpError::Reply(r)) => assert_eq!(r.code, 554),
            other => panic!("{other:?}"),
        }
        assert!(
            !c.has_broken(),
            "a refused message must not cost the connection"
        );
        let r = c.send("a@x.test", &["d@y.test"], b"x\r\n").await.unwrap();
        assert_eq!(r.code, 250);
        assert!(!c.has_broken());
        assert_eq!(server.await.unwrap().len(), 8);
    }

    #[tokio::test]
    async fn a_connection_whose_reset_is_refused_is_not_used_again() {
        let (port, _server) = scripted(vec![
            ("EHLO", "250-test\r\n250 PIPELINING\r\n"),
            (
                "DATA\r\n",
                "250 ok\r\n451 4.3.0 try later\r\n503 5.5.1 no valid recipients\r\n",
            ),
            ("RSET\r\n", "500 5.5.1 what?\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        assert!(c.send("a@x.test", &["b@y.test"], b"x\r\n").await.is_err());
        assert!(c.has_broken());
    }

    #[tokio::test]
    async fn without_pipelining_each_command_waits_for_its_reply() {
        let (port, _server) = scripted(vec![
            ("EHLO", "250 test\r\n"),
            ("MAIL FROM:<a@x.test>\r\n", "250 ok\r\n"),
            ("RCPT TO:<b@y.test>\r\n", "250 ok\r\n"),
            ("DATA\r\n", "354 go\r\n"),
            ("\r\n.\r\n", "250 queued\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        assert!(!c.capabilities().pipelining);
        let r = c.send("a@x.test", &["b@y.test"], b"x\r\n").await.unwrap();
        assert_eq!(r.code, 250);
    }

    /// Found by the sender_smtp fuzz target (fuzz/regressions/sender_smtp/):
    /// a server that answered RCPT with 354 got the message.
    #[tokio::test]
    async fn only_a_2xx_accepts_a_recipient() {
        let (port, server) = scripted(vec![
            ("EHLO", "250 test\r\n"),
            ("MAIL FROM:<a@x.test>\r\n", "250 ok\r\n"),
            ("RCPT TO:<b@y.test>\r\n", "354 go on\r\n"),
            ("DATA\r\n", "354 go\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        match c.send("a@x.test", &["b@y.test"], b"x\r\n").await {
            Err(SmtpError::Protocol(e)) => assert!(e.contains("354 go on"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(c.has_broken());
        c.quit().await;
        assert_eq!(server.await.unwrap().len(), 3, "DATA was sent");

        let (port, server) = scripted(vec![
            ("EHLO", "250-test\r\n250 PIPELINING\r\n"),
            (
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
                "250 ok\r\n354 go on\r\n354 go\r\n",
            ),
            (".\r\n", "250 nothing\r\n"),
            ("the body", ""),
        ])
        .await;
        let mut c = client(port).await;
        let r = c.send("a@x.test", &["b@y.test"], b"the body\r\n").await;
        assert!(matches!(r, Err(SmtpError::Protocol(_))), "{r:?}");
        assert!(c.has_broken());
        c.quit().await;
        assert_eq!(server.await.unwrap().len(), 3, "the message was sent");
    }

    #[tokio::test]
    async fn an_old_server_gets_helo_and_non_ascii_needs_the_extensions() {
        let (port, server) = scripted(vec![
            ("EHLO", "502 5.5.2 what?\r\n"),
            ("HELO sender.test\r\n", "250 hello\r\n"),
            ("QUIT\r\n", "221 bye\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        assert_eq!(c.capabilities(), &Capabilities::default());
        // Nothing of the message is written (not even a RSET: no
        // transaction was begun), and the connection is kept.
        match c.send("a@x.test", &["bücher@y.test"], b"x\r\n").await {
            Err(SmtpError::Unsupported { enhanced, detail }) => {
                assert_eq!(enhanced, "4.6.7");
                assert!(detail.contains("SMTPUTF8"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.has_broken());
        match c.send("a@x.test", &["b@y.test"], "é\r\n".as_bytes()).await {
            Err(SmtpError::Unsupported { enhanced, detail }) => {
                assert_eq!(enhanced, "4.6.3");
                assert!(detail.contains("8BITMIME"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.has_broken());
        c.quit().await;
        let seen = server.await.unwrap();
        assert!(
            !seen
                .iter()
                .any(|l| l.contains("MAIL FROM") || l.contains("RSET")),
            "a transaction was begun: {seen:?}"
        );
    }

    #[tokio::test]
    async fn an_smtputf8_server_gets_non_ascii_addresses_with_the_parameter() {
        let (port, server) = scripted(vec![
            ("EHLO", "250-test\r\n250 SMTPUTF8\r\n"),
            ("MAIL FROM:<a@x.test> SMTPUTF8\r\n", "250 ok\r\n"),
            ("RCPT TO:<josé@y.test>\r\n", "250 ok\r\n"),
            ("DATA\r\n", "354 go\r\n"),
            (".\r\n", "250 queued\r\n"),
        ])
        .await;
        let mut c = client(port).await;
        let r = c
            .send(
                "a@x.test",
                &["josé@y.test"],
                "To: josé@y.test\r\n\r\nhi\r\n".as_bytes(),
            )
            .await;
        assert!(matches!(&r, Ok(reply) if reply.code == 250), "{r:?}");
        c.quit().await;
        server.await.unwrap();
    }

    #[tokio::test]
    async fn auth_plain_is_preferred_and_login_is_the_fallback() {
        let (port, server) = scripted(vec![
            ("EHLO", "250-test\r\n250 AUTH LOGIN PLAIN\r\n"),
            ("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n", "235 2.7.0 ok\r\n"),
        ])
        .await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Client::open(tcp, "s", TlsUse::None, None, Some(("user", "secret")))
            .await
            .unwrap();
        assert_eq!(server.await.unwrap().len(), 2);

        let (port, _server) = scripted(vec![
            ("EHLO", "250-test\r\n250 AUTH LOGIN\r\n"),
            ("AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n"),
            ("dXNlcg==\r\n", "334 UGFzc3dvcmQ6\r\n"),
            ("c2VjcmV0\r\n", "535 5.7.8 bad credentials\r\n"),
        ])
        .await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        match Client::open(tcp, "s", TlsUse::None, None, Some(("user", "secret"))).await {
            Err(SmtpError::Reply(r)) => assert_eq!(r.code, 535),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn starttls_that_is_required_but_not_offered_is_refused() {
        let (port, _server) = scripted(vec![("EHLO", "250-test\r\n250 PIPELINING\r\n")]).await;
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
        .with_no_client_auth();
        let tls = Tls {
            config: Arc::new(config),
            name: ServerName::try_from("relay.test").unwrap(),
        };
        match Client::open(tcp, "s", TlsUse::Required, Some(&tls), None).await {
            Err(SmtpError::Protocol(e)) => assert!(e.contains("STARTTLS"), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}

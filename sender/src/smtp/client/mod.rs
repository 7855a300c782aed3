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
//!
//! This file holds the session (connection, EHLO, TLS, AUTH, NOOP, QUIT);
//! one transaction is in `transaction.rs`, reading a reply in `reply.rs`,
//! the errors in `error.rs`.

mod error;
mod reply;
mod transaction;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use data_encoding::BASE64;
use mailpipe_common::tls::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

pub use error::{reusable_after, SmtpError};
pub use reply::Reply;

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
}

fn push_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
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

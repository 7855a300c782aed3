//! One mail transaction: MAIL, RCPT and DATA (pipelined when the server
//! offers PIPELINING), the dot-stuffed message, and the RSET that keeps a
//! refused transaction's connection usable.

use tokio::io::{AsyncRead, AsyncWrite};

use super::reply::truncate;
use super::{push_line, reusable_after, Client, Reply, SmtpError};

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
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
}

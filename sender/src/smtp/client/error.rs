//! Why an SMTP exchange failed, and whether the connection survives it.

use std::io;

use super::Reply;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! A server's reply: reading one (possibly multi-line) reply off the
//! connection, each line checked, every line and the code kept.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite};

use super::{Client, SmtpError};

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
            .filter(|w| crate::smtp::enhanced_code(w).is_some());
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

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads one (possibly multi-line) reply.
    pub(super) async fn read_reply(&mut self) -> Result<Reply, SmtpError> {
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

pub(super) fn truncate(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

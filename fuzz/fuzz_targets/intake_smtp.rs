//! The intake's SMTP server (`mailpipe_intake::smtp`) played by a hostile
//! client: the input is everything the client sends on one connection
//! (commands, pipelined groups, message data, junk), run through the
//! session code that serves real connections, without a socket.
//!
//! The first byte sets how the bytes arrive (0: all at once; n: in pieces
//! of 1 to 64 bytes, as TCP may cut them), the rest is the stream. The
//! handler takes every recipient except those starting with `refuse`, and
//! fails temporarily on a message holding `TEMPFAIL`.
//!
//! What must hold:
//! - the session ends (the stream's end closes it) without a panic;
//! - every line the server writes is an SMTP reply: a code from 200 to 599,
//!   then a space or (inside a multi-line reply, followed by a line of the
//!   same code) a hyphen, no CR or LF inside, at most 1000 octets; the
//!   first is the 220 greeting, and nothing follows a 221 or 421;
//! - a mail is handed to the handler only with 1 to `max_recipients`
//!   recipients, all of them accepted by the handler, a sender and
//!   recipients of at most 256 octets without angle brackets, and data of
//!   at most `max_message_bytes` with CRLF line ends only; each one the
//!   handler took is answered `250 2.0.0 Ok: queued`, one for one;
//! - how the bytes are cut changes nothing: the replies and the mails are
//!   the same as when the stream arrives in one piece.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mailpipe_intake::smtp::{run_session_on, SmtpListen};
use mailpipe_intake::{Handler, Inbound, Temporary};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

const MAX_MESSAGE: usize = 2000;
const MAX_RECIPIENTS: usize = 3;

/// The client's bytes, handed out in pieces of at most `piece` bytes.
struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.data.len().min(self.piece).min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

#[derive(Default)]
struct Recorder {
    taken: Mutex<Vec<Inbound>>,
}

impl Handler for Recorder {
    fn accepts_recipient(&self, address: &str) -> Result<(), String> {
        if address.starts_with("refuse") {
            Err(format!("no mailbox here by that name: {address}"))
        } else {
            Ok(())
        }
    }

    fn accept(
        &self,
        mail: Inbound,
    ) -> impl std::future::Future<Output = Result<(), Temporary>> + Send {
        let result = if mail.data.windows(8).any(|w| w == b"TEMPFAIL") {
            Err(Temporary("the store is down".into()))
        } else {
            self.taken.lock().unwrap().push(mail);
            Ok(())
        };
        async move { result }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn settings() -> SmtpListen {
    SmtpListen {
        hostname: "bounce.fuzz.test".into(),
        max_message_bytes: MAX_MESSAGE,
        timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(60),
        max_connections: 1,
        max_recipients: MAX_RECIPIENTS,
        shutdown_grace: Duration::from_secs(1),
    }
}

/// Plays the session; returns what the server wrote and the mails taken.
fn session(stream: &[u8], piece: usize) -> (Vec<u8>, Vec<Inbound>) {
    let handler = Recorder::default();
    let mut out = Vec::new();
    let shutdown = CancellationToken::new();
    let settings = settings();
    let reader = Pieces {
        data: stream,
        piece,
    };
    // The result is an I/O error only when the stream fails, which an
    // in-memory one does not.
    let result = runtime().block_on(run_session_on(
        reader, &mut out, &settings, &handler, &shutdown,
    ));
    assert!(result.is_ok(), "session failed: {result:?}");
    (out, handler.taken.into_inner().unwrap())
}

fn check_replies(out: &[u8]) {
    let text = std::str::from_utf8(out).expect("replies are UTF-8");
    assert!(text.ends_with("\r\n"), "unterminated reply: {text:?}");
    let lines: Vec<&str> = text[..text.len() - 2].split("\r\n").collect();
    assert!(lines[0].starts_with("220 "), "no greeting: {:?}", lines[0]);
    let mut continued: Option<&str> = None;
    for (i, line) in lines.iter().enumerate() {
        assert!(line.len() <= 1000, "reply line too long: {line:?}");
        assert!(!line.contains(['\r', '\n']), "CR or LF inside {line:?}");
        let code = line.get(..3).unwrap_or_default();
        assert!(
            code.bytes().all(|b| b.is_ascii_digit()) && ("200".."600").contains(&code),
            "not a reply code: {line:?}"
        );
        if let Some(previous) = continued {
            assert_eq!(
                previous, code,
                "a multi-line reply changes its code: {line:?}"
            );
        }
        continued = match line.as_bytes().get(3) {
            Some(b'-') => Some(code),
            Some(b' ') => None,
            _ => panic!("no space or hyphen after the code: {line:?}"),
        };
        if code == "221" || code == "421" {
            assert_eq!(
                i,
                lines.len() - 1,
                "the server wrote after closing: {lines:?}"
            );
        }
    }
    assert!(continued.is_none(), "the last reply is unfinished");
}

fn check_mails(out: &[u8], taken: &[Inbound]) {
    let queued = out
        .split(|&b| b == b'\n')
        .filter(|line| line == b"250 2.0.0 Ok: queued\r")
        .count();
    assert_eq!(queued, taken.len(), "replies and mails taken differ");
    for mail in taken {
        assert!(
            (1..=MAX_RECIPIENTS).contains(&mail.rcpt_to.len()),
            "{} recipients",
            mail.rcpt_to.len()
        );
        for address in mail.rcpt_to.iter().chain([&mail.mail_from]) {
            assert!(address.len() <= 256, "address too long: {address:?}");
            assert!(!address.contains(['<', '>']), "brackets in {address:?}");
        }
        for rcpt in &mail.rcpt_to {
            assert!(!rcpt.is_empty() && !rcpt.starts_with("refuse"), "{rcpt:?}");
        }
        assert!(
            mail.data.len() <= MAX_MESSAGE,
            "{} bytes kept",
            mail.data.len()
        );
        for (i, &b) in mail.data.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && mail.data[i - 1] == b'\r', "bare LF in the data");
            }
        }
    }
}

fn summary(taken: &[Inbound]) -> Vec<(String, Vec<String>, Vec<u8>)> {
    taken
        .iter()
        .map(|m| (m.mail_from.clone(), m.rcpt_to.clone(), m.data.clone()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let piece = if first == 0 {
        usize::MAX
    } else {
        1 + usize::from(first % 64)
    };
    let (out, taken) = session(stream, piece);
    check_replies(&out);
    check_mails(&out, &taken);
    if piece != usize::MAX {
        let (whole_out, whole_taken) = session(stream, usize::MAX);
        assert!(
            out == whole_out,
            "the replies depend on how the stream is cut:\n{}\n---\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&whole_out)
        );
        assert!(
            summary(&taken) == summary(&whole_taken),
            "the mails depend on how the stream is cut"
        );
    }
});

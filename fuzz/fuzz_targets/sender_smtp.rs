//! The sender's SMTP client (`mailpipe_sender::fuzzing`, the client the
//! sender's connection pool uses, on an in-memory stream) played against a
//! hostile or broken server: the input is everything the server answers,
//! from the greeting on, and the client goes through a whole session —
//! greeting, EHLO (HELO to an old server), AUTH when it has credentials,
//! one to four transactions as long as the connection is not broken, a
//! NOOP and QUIT.
//!
//! The first byte chooses the session (credentials, number of recipients,
//! non-ASCII sender and message, number of transactions), the second how
//! the server's bytes arrive (0: as much as the client asks for; n: in
//! pieces of 1 to 64 bytes); the rest is the server's stream. A read never
//! hands out bytes past the end of a line, so the log of the exchange
//! shows which reply lines the client had read before each write.
//!
//! What must hold:
//! - no panic, no hang: the session ends when the server's bytes do;
//! - the message is written only after the server accepted the sender and
//!   every recipient with 2xx replies and answered DATA with 354 (read
//!   from the exchange itself, not from the client's state), and the
//!   client reads one reply after it before writing anything else;
//! - a transaction reported delivered got a 2xx as the last reply it
//!   read, after writing its message;
//! - a connection the client keeps after a transaction (delivered, or
//!   refused with a 4xx or 5xx other than 421 and then reset with RSET) is
//!   in step with the server: it has read one reply per command it wrote
//!   (the message counting as one), plus the greeting; after any other
//!   failure it is marked broken, and the pool never reuses it;
//! - every error reply keeps a code from 200 to 599 and 1 to 100 lines;
//! - every write is whole CRLF-terminated lines, no AUTH is sent without
//!   credentials, and nothing is written after the connection is shut;
//! - how the server's bytes are cut changes nothing.
#![no_main]

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use mailpipe_sender::fuzzing::{open, Reply, SmtpError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One step of the exchange, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// Bytes the server handed to the client (never past a line end).
    Read(Vec<u8>),
    /// Bytes the client wrote.
    Write(Vec<u8>),
    /// The client shut the connection.
    Shutdown,
}

type Log = Rc<RefCell<Vec<Event>>>;

/// The server: its scripted answers, and the log of the exchange (shared
/// with the harness, which reads it while the client holds the server).
struct Server<'a> {
    answers: &'a [u8],
    piece: usize,
    log: Log,
}

impl AsyncRead for Server<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let line_end = self
            .answers
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.answers.len(), |i| i + 1);
        let n = line_end.min(self.piece).min(buf.remaining());
        if n > 0 {
            let (now, rest) = self.answers.split_at(n);
            buf.put_slice(now);
            self.log.borrow_mut().push(Event::Read(now.to_vec()));
            self.answers = rest;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Server<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut log = self.log.borrow_mut();
        assert!(
            !log.contains(&Event::Shutdown),
            "written after the shutdown"
        );
        match log.last_mut() {
            Some(Event::Write(w)) => w.extend_from_slice(buf),
            _ => log.push(Event::Write(buf.to_vec())),
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.log.borrow_mut().push(Event::Shutdown);
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

/// A line of the message that only the message holds (and its stuffed
/// form, which only a written message holds).
const MARKER: &[u8] = b"fuzz-body-marker";
const STUFFED: &[u8] = b"\r\n..dot-line\r\n";

/// What the client asked for.
struct Plan {
    credentials: bool,
    recipients: usize,
    utf8_from: bool,
    eight_bit: bool,
    transactions: usize,
}

impl Plan {
    fn from_byte(b: u8) -> Self {
        Plan {
            credentials: b & 1 != 0,
            recipients: 1 + usize::from((b >> 1) & 3),
            utf8_from: b & 8 != 0,
            eight_bit: b & 16 != 0,
            transactions: 1 + usize::from(b >> 5) % 4,
        }
    }
}

/// How one transaction ended: the final reply's code, or the error.
type Outcome = Result<u16, String>;

fn session(plan: &Plan, answers: &[u8], piece: usize) -> (Vec<Outcome>, Vec<Event>) {
    let log = Log::default();
    let server = Server {
        answers,
        piece,
        log: log.clone(),
    };
    let from = if plan.utf8_from {
        "jörg@sender.test"
    } else {
        "news@sender.test"
    };
    let to: Vec<String> = (0..plan.recipients)
        .map(|i| format!("r{i}@example.test"))
        .collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let mut message = b"Subject: fuzz\r\n\r\n".to_vec();
    message.extend_from_slice(MARKER);
    message.extend_from_slice(b"\r\n.dot-line\r\n");
    if plan.eight_bit {
        message.extend_from_slice("caf\u{e9}\r\n".as_bytes());
    }
    let credentials = plan.credentials.then_some(("user", "secret"));
    let outcomes = runtime().block_on(async {
        let mut outcomes = Vec::new();
        let Ok(mut client) = open(server, "sender.fuzz.test", credentials).await else {
            return outcomes;
        };
        for _ in 0..plan.transactions {
            let result = client.send(from, &to, &message).await;
            check_transaction(&result, client.has_broken(), &log.borrow());
            outcomes.push(result.map(|r| r.code).map_err(|e| e.to_string()));
            if client.has_broken() {
                break;
            }
        }
        if !client.has_broken() {
            client.noop().await;
        }
        client.quit().await;
        outcomes
    });
    let log = log.borrow().clone();
    (outcomes, log)
}

/// What must hold once a transaction ended, `broken` or not.
fn check_transaction(result: &Result<Reply, SmtpError>, broken: bool, log: &[Event]) {
    match result {
        Ok(reply) => assert!((200..300).contains(&reply.code), "delivered with {reply}"),
        Err(e) => {
            if let SmtpError::Reply(r) = e {
                assert!((200..600).contains(&r.code), "code {}", r.code);
                assert!(
                    (1..=100).contains(&r.lines.len()),
                    "{} lines",
                    r.lines.len()
                );
            }
            if !broken {
                let last_write = log.iter().rev().find_map(|e| match e {
                    Event::Write(w) => Some(w.as_slice()),
                    _ => None,
                });
                match e {
                    // Refused before MAIL FROM for want of an extension
                    // (SMTPUTF8, 8BITMIME): nothing of it was written.
                    SmtpError::Unsupported { .. } => assert!(
                        !last_write.is_some_and(|w| w.starts_with(b"MAIL FROM:")),
                        "MAIL FROM written for a transaction refused as unsupported"
                    ),
                    SmtpError::Reply(r) if r.code != 421 && r.code >= 400 => {
                        assert_eq!(last_write, Some(&b"RSET\r\n"[..]), "kept without a RSET")
                    }
                    _ => panic!("the connection is kept after {e}"),
                }
            }
        }
    }
    if !broken {
        let (commands, replies) = count_exchange(log);
        assert_eq!(
            replies,
            commands + 1,
            "kept out of step ({commands} commands, {replies} replies) after {result:?}"
        );
    }
}

/// Commands the client wrote (a message and its final dot counting as
/// one) and whole replies it read.
fn count_exchange(log: &[Event]) -> (usize, usize) {
    let mut commands = 0;
    let mut reads = Vec::new();
    for event in log {
        match event {
            Event::Write(w) if w.windows(MARKER.len()).any(|x| x == MARKER) => commands += 1,
            Event::Write(w) => commands += w.windows(2).filter(|x| x == b"\r\n").count(),
            Event::Read(r) => reads.push(r.as_slice()),
            Event::Shutdown => {}
        }
    }
    (commands, replies(&reads).iter().flatten().count())
}

/// A reply line: its code and whether it is the last of its reply.
fn reply_line(line: &[u8]) -> Option<(u16, bool)> {
    // Line ends as the client takes them: LF, after any number of CRs.
    let mut line = line.strip_suffix(b"\n")?;
    while let Some(l) = line.strip_suffix(b"\r") {
        line = l;
    }
    let code = std::str::from_utf8(line.get(..3)?).ok()?.parse().ok()?;
    match line.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        Some(_) => None,
    }
}

/// The final lines' codes of the whole replies in `reads` (a partial line
/// at the end is left out).
fn replies(reads: &[&[u8]]) -> Vec<Option<u16>> {
    let mut line = Vec::new();
    let mut out = Vec::new();
    for r in reads {
        line.extend_from_slice(r);
        if line.ends_with(b"\n") {
            match reply_line(&line) {
                Some((code, true)) => out.push(Some(code)),
                Some((_, false)) => {}
                None => out.push(None),
            }
            line.clear();
        }
    }
    out
}

fn check_exchange(plan: &Plan, outcomes: &[Outcome], log: &[Event]) {
    let mut body_writes = 0;
    for (i, event) in log.iter().enumerate() {
        let Event::Write(w) = event else { continue };
        assert!(
            w.ends_with(b"\r\n"),
            "a write that is not whole lines: {w:?}"
        );
        if !plan.credentials {
            assert!(
                !w.windows(5).any(|x| x == b"AUTH "),
                "AUTH without credentials"
            );
        }
        if !w.windows(MARKER.len()).any(|x| x == MARKER) {
            continue;
        }
        body_writes += 1;
        assert!(
            w.windows(STUFFED.len()).any(|x| x == STUFFED),
            "the message was written without dot-stuffing"
        );
        // The replies read since the transaction began.
        let mail = log[..i]
            .iter()
            .rposition(|e| matches!(e, Event::Write(w) if w.starts_with(b"MAIL FROM:")))
            .expect("a message written without MAIL FROM");
        let reads: Vec<&[u8]> = log[mail..i]
            .iter()
            .filter_map(|e| match e {
                Event::Read(r) => Some(r.as_slice()),
                _ => None,
            })
            .collect();
        let codes = replies(&reads);
        let Some((last, envelope)) = codes.split_last() else {
            panic!("the message was written before any reply");
        };
        assert_eq!(
            *last,
            Some(354),
            "the message was written without a 354: {codes:?}"
        );
        assert_eq!(
            envelope.len(),
            plan.recipients + 1,
            "replies before DATA: {codes:?}"
        );
        assert!(
            envelope
                .iter()
                .all(|c| c.is_some_and(|c| (200..300).contains(&c))),
            "the message was written after a refusal: {codes:?}"
        );
        // Then the final reply, and only it, before the next write.
        let next_write = log[i + 1..]
            .iter()
            .position(|e| !matches!(e, Event::Read(_)))
            .map_or(log.len(), |p| i + 1 + p);
        let after: Vec<&[u8]> = log[i + 1..next_write]
            .iter()
            .filter_map(|e| match e {
                Event::Read(r) => Some(r.as_slice()),
                _ => None,
            })
            .collect();
        assert!(
            replies(&after).len() <= 1,
            "more than one reply read after the message"
        );
    }
    let delivered = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!(
        delivered <= body_writes,
        "{delivered} delivered, {body_writes} messages written"
    );
}

fuzz_target!(|data: &[u8]| {
    let [options, pieces, answers @ ..] = data else {
        return;
    };
    let plan = Plan::from_byte(*options);
    let piece = if *pieces == 0 {
        usize::MAX
    } else {
        1 + usize::from(pieces % 64)
    };
    let (outcomes, log) = session(&plan, answers, piece);
    check_exchange(&plan, &outcomes, &log);
    if piece != usize::MAX {
        let (whole, whole_log) = session(&plan, answers, usize::MAX);
        assert_eq!(
            outcomes, whole,
            "the outcome depends on how the replies are cut"
        );
        let writes = |log: &[Event]| -> Vec<Vec<u8>> {
            log.iter()
                .filter_map(|e| match e {
                    Event::Write(w) => Some(w.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            writes(&log),
            writes(&whole_log),
            "the writes depend on how the replies are cut"
        );
    }
});

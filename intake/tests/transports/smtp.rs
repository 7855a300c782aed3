//! The SMTP listener: a real client (lettre), raw TCP scripts for what
//! clients should not do, and Postfix's `smtp-source` for volume.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mailpipe_intake::smtp::{serve, SmtpListen};
use mailpipe_intake::Source;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::Recorder;

const MAX: usize = 64 * 1024;

fn settings() -> SmtpListen {
    SmtpListen {
        hostname: "bounce.test".into(),
        max_message_bytes: MAX,
        timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(10),
        max_connections: 20,
        max_recipients: 5,
        shutdown_grace: Duration::from_secs(3),
    }
}

struct Server {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(settings: SmtpListen) -> Self {
        mailpipe_common::telemetry::init_for_tests();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let recorder = Arc::new(Recorder::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            settings,
            recorder.clone(),
            shutdown.clone(),
        ));
        Self {
            addr,
            recorder,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve did not panic");
    }
}

/// A raw SMTP client for scripts.
struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    /// Connects and reads the greeting.
    async fn connect(addr: SocketAddr) -> (Self, String) {
        let (r, w) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        let mut c = Self {
            r: BufReader::new(r),
            w,
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// Connects, reads the 220 and says EHLO.
    async fn ready(addr: SocketAddr) -> Self {
        let (mut c, greeting) = Self::connect(addr).await;
        assert!(greeting.starts_with("220 bounce.test"), "{greeting}");
        let ehlo = c.cmd("EHLO client.test").await;
        assert!(ehlo.starts_with("250"), "{ehlo}");
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("send");
    }

    /// One whole reply, all its lines; empty when the server closed.
    async fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
                .await
                .expect("a reply within 10 s")
                .expect("read reply");
            if n == 0 {
                return out;
            }
            out.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return out;
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Whether the server closed the connection (within 10 s).
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.r.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// MAIL, RCPT, DATA and the data; returns the reply to the data.
    async fn transaction(&mut self, from: &str, to: &str, data: &[u8]) -> String {
        assert!(self
            .cmd(&format!("MAIL FROM:<{from}>"))
            .await
            .starts_with("250"));
        assert!(self
            .cmd(&format!("RCPT TO:<{to}>"))
            .await
            .starts_with("250"));
        assert!(self.cmd("DATA").await.starts_with("354"));
        self.send(data).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

#[tokio::test]
async fn lettre_delivers_a_null_sender_bounce_byte_for_byte() {
    let server = Server::start(settings()).await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .hello_name(ClientId::Domain("mx.remote.test".into()))
        .build();
    let envelope = Envelope::new(
        None,
        vec!["bounces+tok3n@bounce.test".parse().expect("address")],
    )
    .expect("envelope");
    let raw: &[u8] = b"From: MAILER-DAEMON@mx.remote.test\r\n\
        To: bounces+tok3n@bounce.test\r\n\
        Subject: Undelivered Mail Returned to Sender\r\n\
        \r\n\
        .a line that starts with a dot\r\n\
        ..and one with two\r\n\
        8bit: caf\xc3\xa9\r\n\
        .\tdot and tab\r\n\
        the last line";
    transport.send_raw(&envelope, raw).await.expect("sent");
    let mails = server.recorder.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.source, Source::Smtp);
    assert_eq!(mail.mail_from, "", "the null sender");
    assert_eq!(mail.rcpt_to, vec!["bounces+tok3n@bounce.test".to_string()]);
    // lettre ends the data with CRLF . CRLF, so the last line gains a CRLF.
    let mut expected = raw.to_vec();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&mail.data),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(mail.data, expected);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_and_the_data_is_unstuffed() {
    let server = Server::start(settings()).await;
    let (mut c, greeting) = Client::connect(server.addr).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<a@bounce.test>\r\n\
          RCPT TO:<b@bounce.test>\r\nDATA\r\n",
    )
    .await;
    let ehlo = c.reply().await;
    for ext in [
        "250-bounce.test",
        "SIZE 65536",
        "8BITMIME",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "250 SMTPUTF8",
    ] {
        assert!(ehlo.contains(ext), "{ext} in {ehlo}");
    }
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("354"));
    // Dot-stuffed lines, a bare LF line end, a line of dots, then the end
    // and QUIT in the same write.
    c.send(b"Subject: t\r\n\r\n..leading dot\nbare LF before this\r\n...\r\n.\r\nQUIT\r\n")
        .await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: queued\r\n");
    assert!(c.reply().await.starts_with("221"));
    assert!(c.closed().await);
    let mails = server.recorder.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&mails[0].data),
        "Subject: t\r\n\r\n.leading dot\r\nbare LF before this\r\n..\r\n"
    );
    assert_eq!(mails[0].rcpt_to, vec!["a@bounce.test", "b@bounce.test"]);
    server.stop().await;
}

#[tokio::test]
async fn oversize_mail_gets_552_and_the_session_stays_usable() {
    let server = Server::start(settings()).await;
    let mut c = Client::ready(server.addr).await;
    let announced = c.cmd(&format!("MAIL FROM:<> SIZE={}", MAX + 1)).await;
    assert!(announced.starts_with("552 5.3.4"), "{announced}");
    let line = [b'x'; 998];
    let mut big = Vec::new();
    while big.len() <= 2 * MAX {
        big.extend_from_slice(&line);
        big.extend_from_slice(b"\r\n");
    }
    let reply = c.transaction("", "a@bounce.test", &big).await;
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    // Exactly at the limit is fine.
    let mut exact = vec![b'y'; MAX - 2];
    exact.extend_from_slice(b"\r\n");
    let reply = c.transaction("", "a@bounce.test", &exact).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert_eq!(server.recorder.data(), vec![exact]);
    server.stop().await;
}

#[tokio::test]
async fn refused_recipients_get_550_and_the_rest_go_through() {
    let server = Server::start(settings()).await;
    let mut c = Client::ready(server.addr).await;
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250"));
    let refused = c.cmd("RCPT TO:<unknown@bounce.test>").await;
    assert_eq!(
        refused,
        "550 5.1.1 <unknown@bounce.test>: Recipient address rejected\r\n"
    );
    let nothing = c.cmd("DATA").await;
    assert!(
        nothing.starts_with("554"),
        "DATA without recipients: {nothing}"
    );
    assert!(c.cmd("RCPT TO:<ok@bounce.test>").await.starts_with("250"));
    for i in 1..5 {
        let r = c.cmd(&format!("RCPT TO:<ok{i}@bounce.test>")).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let capped = c.cmd("RCPT TO:<ok5@bounce.test>").await;
    assert!(capped.starts_with("452 4.5.3"), "{capped}");
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    let mails = server.recorder.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_to.len(), 5);
    assert!(!mails[0].rcpt_to.iter().any(|r| r.starts_with("unknown")));
    server.stop().await;
}

#[tokio::test]
async fn commands_out_of_sequence_get_503() {
    let server = Server::start(settings()).await;
    let (mut c, _) = Client::connect(server.addr).await;
    let r = c.cmd("MAIL FROM:<>").await;
    assert!(r.starts_with("503"), "MAIL before EHLO: {r}");
    assert!(c
        .cmd("HELO client.test")
        .await
        .starts_with("250 bounce.test"));
    let r = c.cmd("RCPT TO:<a@bounce.test>").await;
    assert!(r.starts_with("503"), "RCPT before MAIL: {r}");
    let r = c.cmd("DATA").await;
    assert!(r.starts_with("503"), "DATA before MAIL: {r}");
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250"));
    let r = c.cmd("MAIL FROM:<>").await;
    assert!(r.starts_with("503"), "second MAIL: {r}");
    assert!(c.cmd("RSET").await.starts_with("250"));
    let r = c.cmd("RCPT TO:<a@bounce.test>").await;
    assert!(r.starts_with("503"), "RCPT after RSET: {r}");
    assert!(server.recorder.mails().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn garbage_binary_and_long_lines_get_error_replies_not_a_crash() {
    let server = Server::start(settings()).await;
    let mut c = Client::ready(server.addr).await;
    c.send(b"\x00\xff\xfe\x80 binary \x1b[31m\r\n").await;
    assert!(c.reply().await.starts_with("500"));
    let long = format!("NOOP {}", "z".repeat(2000));
    assert_eq!(c.cmd(&long).await, "500 5.5.2 Line too long\r\n");
    assert!(c.cmd("FROB nicate").await.starts_with("500"));
    assert!(c.cmd("EXPN staff").await.starts_with("502"));
    assert!(c.cmd("STARTTLS").await.starts_with("502"));
    assert!(c.cmd("VRFY someone").await.starts_with("252"));
    assert!(c.cmd("MAIL FROM:<a@b> RET=HDRS").await.starts_with("555"));
    assert!(c.cmd("MAIL FROM:<unterminated").await.starts_with("501"));
    // Still serving: a whole transaction goes through.
    let reply = c
        .transaction("", "a@bounce.test", b"Subject: after garbage\r\n\r\nok\r\n")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(server.recorder.mails().len(), 1);
    // And the server still takes new connections.
    let (_c2, greeting) = Client::connect(server.addr).await;
    assert!(greeting.starts_with("220"));
    server.stop().await;
}

#[tokio::test]
async fn too_many_bad_commands_close_the_session_with_421() {
    let server = Server::start(settings()).await;
    let mut c = Client::ready(server.addr).await;
    let mut last = String::new();
    for _ in 0..mailpipe_intake::smtp::MAX_ERRORS {
        last = c.cmd("FROB").await;
    }
    assert!(last.starts_with("421"), "{last}");
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn a_temporary_failure_gets_451_and_nothing_is_recorded() {
    let server = Server::start(settings()).await;
    let mut c = Client::ready(server.addr).await;
    server.recorder.set_failing(true);
    let data = b"Subject: bounce\r\n\r\nreport\r\n";
    let reply = c.transaction("", "a@bounce.test", data).await;
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert_eq!(server.recorder.attempts(), 1, "the handler was asked");
    assert!(server.recorder.mails().is_empty());
    // The client tries again later, and then it is taken.
    server.recorder.set_failing(false);
    let reply = c.transaction("", "a@bounce.test", data).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(server.recorder.data(), vec![data.to_vec()]);
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_get_421() {
    let server = Server::start(SmtpListen {
        max_connections: 2,
        ..settings()
    })
    .await;
    let a = Client::ready(server.addr).await;
    let b = Client::ready(server.addr).await;
    let (mut c, greeting) = Client::connect(server.addr).await;
    assert!(greeting.starts_with("421 4.7.0"), "{greeting}");
    assert!(c.closed().await);
    drop((a, b));
    // Slots come back once sessions end.
    let mut greeting = String::new();
    for _ in 0..50 {
        greeting = Client::connect(server.addr).await.1;
        if greeting.starts_with("220") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(greeting.starts_with("220"), "{greeting}");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_client_gets_421_after_the_timeout() {
    let server = Server::start(SmtpListen {
        timeout: Duration::from_millis(300),
        ..settings()
    })
    .await;
    let mut c = Client::ready(server.addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_answers_421_to_idle_sessions_and_lets_a_message_finish() {
    let server = Server::start(settings()).await;
    let mut idle = Client::ready(server.addr).await;
    let mut busy = Client::ready(server.addr).await;
    assert!(busy.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(busy.cmd("RCPT TO:<a@bounce.test>").await.starts_with("250"));
    assert!(busy.cmd("DATA").await.starts_with("354"));
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();
    let reply = idle.reply().await;
    assert!(reply.starts_with("421 4.3.2"), "{reply}");
    // New connections are refused once the listener is gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = match TcpStream::connect(server.addr).await {
        Err(_) => true,
        Ok(mut s) => {
            let mut buf = [0u8; 16];
            matches!(s.read(&mut buf).await, Ok(0) | Err(_))
        }
    };
    assert!(refused, "no new session after shutdown");
    busy.send(b"second half\r\n.\r\n").await;
    let reply = busy.reply().await;
    assert!(reply.starts_with("250"), "the message in flight: {reply}");
    let reply = busy.reply().await;
    assert!(reply.starts_with("421"), "then 421: {reply}");
    assert_eq!(
        server.recorder.data(),
        vec![b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n".to_vec()]
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returns once the message is done")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_source_delivers_200_messages_over_10_sessions() {
    const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
    if !std::path::Path::new(SMTP_SOURCE).exists() {
        eprintln!("SKIPPED: {SMTP_SOURCE} is missing (Debian package postfix; scripts/services installs it)");
        return;
    }
    let server = Server::start(SmtpListen {
        max_connections: 10,
        ..settings()
    })
    .await;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(SMTP_SOURCE)
            .args(["-s", "10", "-m", "200", "-d", "-l", "2000"])
            .args(["-M", "mx.remote.test", "-f", "mailer-daemon@mx.remote.test"])
            .args(["-t", "bounces@bounce.test"])
            .arg(server.addr.to_string())
            .output(),
    )
    .await
    .expect("smtp-source finishes within 60 s")
    .expect("run smtp-source");
    assert!(
        out.status.success(),
        "smtp-source: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mails = server.recorder.mails();
    assert_eq!(mails.len(), 200);
    for m in &mails {
        assert_eq!(m.rcpt_to, vec!["bounces@bounce.test"]);
        assert_eq!(m.mail_from, "mailer-daemon@mx.remote.test");
        assert!(m.data.len() >= 2000, "{} bytes", m.data.len());
        assert!(m.data.ends_with(b"\r\n"));
    }
    server.stop().await;
}

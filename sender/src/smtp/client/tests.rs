//! The client against a server played from a script over a real socket:
//! pipelining, refusals and RSET, HELO, the extensions a message needs,
//! AUTH and STARTTLS; and the capabilities read from an EHLO reply.

use super::*;

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

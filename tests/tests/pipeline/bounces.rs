//! Asynchronous bounces and complaints: real bounces from a real Postfix,
//! feedback-loop reports, and the intake refusing what it must not trust.
//!
//! Over 500 lines: one theme's scenarios (what comes back by mail), kept
//! together.

use std::time::Duration;

use futures_lite::StreamExt;
use mailpipe_tests::postfix::{self, Postfix};
use mailpipe_tests::{events_in, wait_for, SmtpSink, TestPipeline, Workers};

const VERP_KEY: &str = "test-verp-key-0123456789abcdef";

fn verp(s: &mut mailpipe_common::config::Settings) {
    s.bounces.domain = Some("bounce.test".into());
    s.bounces.keys = vec![VERP_KEY.to_string().into()];
}

/// Events received until `until` has been seen (or the timeout).
async fn collect_until(
    consumer: &mut lapin::Consumer,
    timeout: Duration,
    until: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !until(&seen) {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => seen.extend(events_in(&d.data)),
            _ => break,
        }
    }
    seen
}

fn kinds_for<'a>(events: &'a [serde_json::Value], recipient: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["recipient"] == recipient)
        .filter_map(|e| e["event"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_postfix_bounce_comes_back_through_verp_and_quarantines_the_address() {
    if !postfix::available() {
        panic!("this test needs Debian's postfix package and root (scripts/services installs it)");
    }
    let sink = SmtpSink::start();
    let sink_port = sink.port;
    // The pipeline's ports are chosen before Postfix, which routes the
    // bounce domain to the intake.
    let mut settings_probe = mailpipe_tests::test_settings(0);
    verp(&mut settings_probe);
    let intake_addr = settings_probe.bounces.smtp_listen.clone();
    let intake_port: u16 = intake_addr.rsplit(':').next().unwrap().parse().unwrap();
    let mta = Postfix::start(&[("bounce.test", intake_port), ("sink.test", sink_port)]);
    let p = TestPipeline::spawn_for_port(mta.port, Workers::ALL, |s| {
        verp(s);
        s.bounces.smtp_listen = intake_addr.clone();
    })
    .await;
    let mut p = p;
    p.start_worker("intake");
    let (_conn, mut consumer) = p.subscribe_events().await;

    let request = serde_json::json!({
        "schema_version": 1,
        "request_id": "bounce-e2e",
        "campaign": "spring",
        "lane": "bulk",
        "from": "ACME News <news@acme.example>",
        "subject": "Hello {{ name }}",
        "text": "Hello {{ name }}.",
        "recipients": [
            {"email": "nobody-lives-here@local.test", "name": "Ghost"},
            {"email": "reader@sink.test", "name": "Reader"},
        ],
    });
    p.publish_json(&request).await;
    // Postfix accepts both in the SMTP session: both are `sent`.
    let status = p.wait_complete("bounce-e2e", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 2, "{status:?}");

    // Postfix's local delivery bounces the first, to its VERP address;
    // the bounce reaches the intake and quarantines the address.
    let q = wait_for(
        "the bounced address to be quarantined",
        Duration::from_secs(90),
        || async {
            p.store
                .quarantine("nobody-lives-here@local.test")
                .await
                .unwrap()
        },
    )
    .await;
    assert_eq!(q["reason"], "user_unknown", "{q}");
    assert!(
        p.store
            .quarantine("reader@sink.test")
            .await
            .unwrap()
            .is_none(),
        "the delivered address is not quarantined"
    );
    let log = mta.log();
    assert!(
        log.contains("status=bounced") && log.contains("bounce.test"),
        "Postfix bounced the mail to the VERP address:\n{log}"
    );
    // The delivered message reached the sink; its envelope sender is a VERP
    // address of the bounce domain.
    let delivered = wait_for("the relayed message", Duration::from_secs(30), || async {
        sink.received().into_iter().next()
    })
    .await;
    assert!(
        delivered.mail_from.starts_with("bounces+")
            && delivered.mail_from.ends_with("@bounce.test"),
        "envelope sender {}",
        delivered.mail_from
    );

    // The count follows the quarantine (and the events) in the intake; on
    // a loaded machine (the full suite beside it) that took over 10 s once.
    let status = wait_for("the bounce counted", Duration::from_secs(30), || async {
        let s = p.status("bounce-e2e").await;
        (!s.bounced.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(status.bounced.get("user_unknown"), Some(&1), "{status:?}");
    assert_eq!(status.sent, 2);
    let seen = collect_until(&mut consumer, Duration::from_secs(20), |seen| {
        kinds_for(seen, "nobody-lives-here@local.test").contains(&"quarantined")
    })
    .await;
    let ghost = kinds_for(&seen, "nobody-lives-here@local.test");
    assert!(
        ghost.contains(&"sent") && ghost.contains(&"bounced") && ghost.contains(&"quarantined"),
        "{seen:?}"
    );
    assert_eq!(
        kinds_for(&seen, "reader@sink.test"),
        vec!["sent"],
        "{seen:?}"
    );
    // `mailpipe queue show` tells of the bounce in the message's history.
    let mid = mailpipe_common::message::message_id(
        "bounce-e2e",
        &mailpipe_common::address::EmailAddress::parse("nobody-lives-here@local.test")
            .unwrap()
            .key(),
    );
    let history = p.store.history(&mid).await.unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["decision"] == "bounced_after_delivery" && h["reason"] == "user_unknown"),
        "{history:?}"
    );
    let intake_bounced = p
        .metric(
            "intake",
            "mailpipe_intake_mails_total{outcome=\"bounced\",source=\"smtp\"}",
        )
        .await;
    assert_eq!(intake_bounced, 1.0);

    // The next campaign to the quarantined address skips it.
    let mut again = request.clone();
    again["request_id"] = "bounce-e2e-2".into();
    p.publish_json(&again).await;
    let status = p
        .wait_complete("bounce-e2e-2", Duration::from_secs(60))
        .await;
    assert_eq!(status.sent, 1, "{status:?}");
    assert_eq!(status.excluded.get("quarantined"), Some(&1), "{status:?}");
    drop(mta);
    p.shutdown().await;
}

/// One SMTP transaction against the intake; the reply code of RCPT TO when
/// it refused the recipient, else the code after the data.
async fn submit(addr: &str, rcpt: &str, data: &str) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            assert!(line.len() >= 4, "short reply {line:?}");
            if line.as_bytes()[3] == b' ' {
                return line[..3].parse().unwrap();
            }
        }
    }
    assert_eq!(reply(&mut r).await, 220);
    w.write_all(b"EHLO fbl.example\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, 250);
    w.write_all(b"MAIL FROM:<>\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, 250);
    w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())
        .await
        .unwrap();
    let code = reply(&mut r).await;
    if code != 250 {
        return code;
    }
    w.write_all(b"DATA\r\n").await.unwrap();
    assert_eq!(reply(&mut r).await, 354);
    let body = data.replace("\r\n", "\n").replace('\n', "\r\n");
    let stuffed = body
        .split("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    w.write_all(stuffed.as_bytes()).await.unwrap();
    w.write_all(b"\r\n.\r\n").await.unwrap();
    let code = reply(&mut r).await;
    w.write_all(b"QUIT\r\n").await.unwrap();
    code
}

/// The returned-message part of a report: the headers of a message as
/// the recipient's mailbox stored it (with its Return-Path).
fn returned_headers(m: &mailpipe_tests::ReceivedMail) -> String {
    let mut out = format!("Return-Path: <{}>\n", m.mail_from);
    for (n, v) in &m.headers {
        if !n.starts_with("X-Rcpt-Args")
            && !n.starts_with("X-Mail-Args")
            && !n.starts_with("X-Client")
            && !n.starts_with("X-Helo")
        {
            out.push_str(&format!("{n}: {v}\n"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaints_denylist_header_matched_bounces_quarantine_and_forgeries_are_refused() {
    let mut p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, verp).await;
    p.start_worker("intake");
    let intake = p.settings.bounces.smtp_listen.clone();
    wait_for("the intake to listen", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(&intake).await.ok()
    })
    .await;
    let (_conn, mut consumer) = p.subscribe_events().await;
    let request = serde_json::json!({
        "schema_version": 1,
        "request_id": "fbl-1",
        "campaign": "autumn",
        "lane": "bulk",
        "from": "ACME News <news@acme.example>",
        "subject": "Hello {{ name }}",
        "text": "Hello {{ name }}.",
        "recipients": [
            {"email": "alice@fbl.example", "name": "Alice"},
            {"email": "bob@fbl.example", "name": "Bob"},
        ],
    });
    p.publish_json(&request).await;
    let status = p.wait_complete("fbl-1", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 2);
    let mails = wait_for(
        "both messages at the sink",
        Duration::from_secs(20),
        || async {
            let r = p.sink().received();
            (r.len() == 2).then_some(r)
        },
    )
    .await;
    let to = |addr: &str| mails.iter().find(|m| m.rcpt == [addr]).unwrap().clone();
    let (alice, bob) = (to("alice@fbl.example"), to("bob@fbl.example"));

    // An RFC 5965 abuse report about Alice's message, sent to the plain
    // feedback address: matched by the VERP token of the returned message's
    // Return-Path.
    let arf = format!(
        "From: Feedback Loop <fbl@isp.example>\n\
To: bounces@bounce.test\n\
Subject: FW: Hello Alice\n\
Message-ID: <fbl-1@isp.example>\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"part\"\n\
\n\
--part\n\
Content-Type: text/plain\n\
\n\
This is an email abuse report for an email message received from IP 192.0.2.1.\n\
--part\n\
Content-Type: message/feedback-report\n\
\n\
Feedback-Type: abuse\n\
User-Agent: SomeGenerator/1.0\n\
Version: 1\n\
Original-Mail-From: <{from}>\n\
Original-Rcpt-To: <alice@fbl.example>\n\
Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT\n\
Reported-Domain: acme.example\n\
\n\
--part\n\
Content-Type: message/rfc822\n\
\n\
{headers}\n\
Hello Alice.\n\
--part--\n",
        from = alice.mail_from,
        headers = returned_headers(&alice),
    );
    assert_eq!(submit(&intake, "bounces@bounce.test", &arf).await, 250);
    wait_for("Alice on the denylist", Duration::from_secs(10), || async {
        p.store
            .list_contains("denylist", "alice@fbl.example")
            .await
            .unwrap()
            .then_some(())
    })
    .await;
    // The same report again counts nothing twice.
    assert_eq!(submit(&intake, "bounces@bounce.test", &arf).await, 250);

    // A DSN without a VERP envelope (to the plain address), matched by
    // the returned headers' X-Mailpipe-Id: Bob's address is unknown.
    let dsn = format!(
        "From: MAILER-DAEMON@mx.fbl.example\n\
To: bounces@bounce.test\n\
Subject: Undelivered Mail Returned to Sender\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\n\
\n\
--b1\n\
Content-Type: text/plain\n\
\n\
I'm sorry to have to inform you that your message could not be delivered.\n\
--b1\n\
Content-Type: message/delivery-status\n\
\n\
Reporting-MTA: dns; mx.fbl.example\n\
\n\
Final-Recipient: rfc822; bob@fbl.example\n\
Action: failed\n\
Status: 5.1.1\n\
Diagnostic-Code: smtp; 550 5.1.1 <bob@fbl.example>: Recipient address rejected: User unknown in virtual mailbox table\n\
\n\
--b1\n\
Content-Type: text/rfc822-headers\n\
\n\
{headers}\n\
--b1--\n",
        headers = returned_headers(&bob).lines().filter(|l| !l.starts_with("Return-Path")).collect::<Vec<_>>().join("\n"),
    );
    assert_eq!(submit(&intake, "bounces@bounce.test", &dsn).await, 250);
    let q = wait_for("Bob quarantined", Duration::from_secs(10), || async {
        p.store.quarantine("bob@fbl.example").await.unwrap()
    })
    .await;
    assert_eq!(q["reason"], "user_unknown");

    // Forged and unknown bounce addresses are refused in the session.
    let token_addr = alice.mail_from.clone();
    let (local, domain) = token_addr.split_once('@').unwrap();
    let mut forged: Vec<char> = local.chars().collect();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == 'a' { 'b' } else { 'a' };
    let forged = format!("{}@{domain}", forged.into_iter().collect::<String>());
    assert_eq!(
        submit(&intake, &forged, &dsn).await,
        550,
        "forged token {forged}"
    );
    assert_eq!(
        submit(&intake, "postmaster-nobody@bounce.test", &dsn).await,
        550
    );

    // Mail that is no report is kept for operators, not lost, not fatal.
    assert_eq!(
        submit(
            &intake,
            "bounces@bounce.test",
            "Subject: hi\n\njust saying hello\n"
        )
        .await,
        250
    );
    let unprocessed = p.store.unprocessed(10).await.unwrap();
    assert_eq!(unprocessed.len(), 1, "{unprocessed:?}");
    assert!(
        unprocessed[0].contains("\"outcome\":\"unrecognized\""),
        "{unprocessed:?}"
    );
    // For people, a table with a readable time; JSON with --json.
    let (code, table) = p.cli(&["bounces", "--unprocessed"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("unrecognized") && table.contains("hi") && !table.contains('{'),
        "{table}"
    );

    let status = wait_for("the bounce counted", Duration::from_secs(10), || async {
        let s = p.status("fbl-1").await;
        (!s.bounced.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(status.complained, 1, "{status:?}");
    assert_eq!(status.bounced.get("user_unknown"), Some(&1), "{status:?}");
    let seen = collect_until(&mut consumer, Duration::from_secs(10), |seen| {
        kinds_for(seen, "bob@fbl.example").contains(&"quarantined")
    })
    .await;
    let alice_events = kinds_for(&seen, "alice@fbl.example");
    assert_eq!(
        alice_events.iter().filter(|k| **k == "complained").count(),
        1,
        "{seen:?}"
    );
    assert!(
        kinds_for(&seen, "bob@fbl.example").contains(&"bounced"),
        "{seen:?}"
    );
    let dup = p
        .metric(
            "intake",
            "mailpipe_intake_mails_total{outcome=\"duplicate\",source=\"smtp\"}",
        )
        .await;
    assert_eq!(dup, 1.0);

    // The next campaign skips both: Alice denylisted, Bob quarantined.
    let mut again = request.clone();
    again["request_id"] = "fbl-2".into();
    p.publish_json(&again).await;
    let status = p.wait_complete("fbl-2", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 0, "{status:?}");
    assert_eq!(status.excluded.values().sum::<u64>(), 2, "{status:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_read_from_an_imap_mailbox_quarantine_and_auto_replies_are_ignored() {
    use mailpipe_tests::dovecot::Dovecot;
    let imap = Dovecot::start();
    let (port, user, password) = (imap.port, imap.user.clone(), imap.password.clone());
    let mut p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        verp(s);
        s.bounces.imap = Some(mailpipe_common::config::ImapSettings {
            host: "127.0.0.1".into(),
            port,
            tls: mailpipe_common::config::TlsMode::None,
            username: user,
            password: password.into(),
            mailbox: "INBOX".into(),
            poll_interval: Duration::from_millis(300),
            archive_mailbox: Some("Processed".into()),
        });
    })
    .await;
    let mut request = mailpipe_tests::sample_request("imap-1", 2, "imap.example");
    request["campaign"] = "winter".into();
    p.publish_json(&request).await;
    let status = p.wait_complete("imap-1", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 2);
    let sent = wait_for(
        "the message at the sink",
        Duration::from_secs(20),
        || async {
            p.sink()
                .received()
                .into_iter()
                .find(|m| m.rcpt == ["user0@imap.example"])
        },
    )
    .await;
    // A qmail bounce as the mailbox stored it: the VERP address survives
    // only in Delivered-To (there is no envelope over IMAP).
    let bounce = format!(
        "Return-Path: <>\r\n\
Delivered-To: {verp}\r\n\
Date: 23 Nov 2026 07:00:00 -0000\r\n\
From: MAILER-DAEMON@mx.imap.example\r\n\
To: {verp}\r\n\
Subject: failure notice\r\n\
\r\n\
Hi. This is the qmail-send program at mx.imap.example.\r\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\
This is a permanent error; I've given up. Sorry it didn't work out.\r\n\
\r\n\
<user0@imap.example>:\r\n\
Sorry, no mailbox here by that name. (#5.1.1)\r\n\
\r\n\
--- Below this line is a copy of the message.\r\n\
\r\n\
Subject: Hello User 0\r\n\
\r\n\
Your code is 0.\r\n",
        verp = sent.mail_from
    );
    let vacation = format!(
        "Delivered-To: {verp}\r\n\
From: user1@imap.example\r\n\
To: {verp}\r\n\
Subject: Out of office\r\n\
Auto-Submitted: auto-replied\r\n\
\r\n\
I am away until Monday.\r\n",
        verp = sent.mail_from
    );
    imap.deliver("INBOX", bounce.as_bytes());
    imap.deliver("INBOX", vacation.as_bytes());
    p.start_worker("intake");
    let q = wait_for(
        "the bounced address quarantined",
        Duration::from_secs(30),
        || async { p.store.quarantine("user0@imap.example").await.unwrap() },
    )
    .await;
    assert_eq!(q["reason"], "user_unknown", "{q}");
    assert!(p
        .store
        .quarantine("user1@imap.example")
        .await
        .unwrap()
        .is_none());
    wait_for("both mails archived", Duration::from_secs(20), || async {
        (imap.messages("INBOX").is_empty() && imap.messages("Processed").len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        p.metric(
            "intake",
            "mailpipe_intake_mails_total{outcome=\"bounced\",source=\"imap\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        p.metric(
            "intake",
            "mailpipe_intake_mails_total{outcome=\"auto_reply\",source=\"imap\"}"
        )
        .await,
        1.0
    );
    let status = p.status("imap-1").await;
    assert_eq!(status.bounced.get("user_unknown"), Some(&1), "{status:?}");
    p.shutdown().await;
}

/// The returned-message part of a report about `m`, without its Return-Path
/// (so that only the headers' ids can match it).
fn returned_headers_without_return_path(m: &mailpipe_tests::ReceivedMail) -> String {
    returned_headers(m)
        .lines()
        .filter(|l| !l.starts_with("Return-Path"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_recipient_complaints_unsubscribe_mails_and_broken_mime_dsns_reach_the_intake() {
    let mut p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, verp).await;
    p.start_worker("intake");
    let intake = p.settings.bounces.smtp_listen.clone();
    wait_for("the intake to listen", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(&intake).await.ok()
    })
    .await;
    let (_conn, mut consumer) = p.subscribe_events().await;
    let request = serde_json::json!({
        "schema_version": 1,
        "request_id": "hard-1",
        "campaign": "spring",
        "lane": "bulk",
        "from": "ACME News <news@acme.example>",
        "subject": "Hello {{ name }}",
        "text": "Hello {{ name }}.",
        "recipients": [
            {"email": "ann@isp.example", "name": "Ann"},
            {"email": "ben@isp.example", "name": "Ben"},
            {"email": "cat@isp.example", "name": "Cat"},
            {"email": "dan@isp.example", "name": "Dan"},
            {"email": "eve@isp.example", "name": "Eve"},
        ],
    });
    p.publish_json(&request).await;
    let status = p.wait_complete("hard-1", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 5, "{status:?}");
    let mails = wait_for(
        "every message at the sink",
        Duration::from_secs(20),
        || async {
            let r = p.sink().received();
            (r.len() == 5).then_some(r)
        },
    )
    .await;
    let to = |addr: &str| mails.iter().find(|m| m.rcpt == [addr]).unwrap().clone();
    let (ann, dan) = (to("ann@isp.example"), to("dan@isp.example"));

    // One ARF report about two recipients of the campaign (and one address
    // mailpipe never sent to), matched by the returned message's VERP
    // Return-Path: both recipients are denylisted, the stranger is not.
    let arf = format!(
        "From: Mail Abuse Desk <fbl@isp.example>\n\
To: bounces@bounce.test\n\
Subject: FW: Hello Ann\n\
Message-ID: <fbl-two@isp.example>\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\n\
\n\
--arf\n\
Content-Type: text/plain\n\
\n\
Two of our users marked copies of this message as spam.\n\
--arf\n\
Content-Type: message/feedback-report\n\
\n\
Feedback-Type: abuse\n\
User-Agent: ISP-FBL/2.1\n\
Version: 1\n\
Original-Mail-From: <{from}>\n\
Original-Rcpt-To: <ann@isp.example>\n\
Original-Rcpt-To: <Ben@isp.example>\n\
Original-Rcpt-To: <mallory@isp.example>\n\
\n\
--arf\n\
Content-Type: message/rfc822\n\
\n\
{headers}\n\
Hello Ann.\n\
--arf--\n",
        from = ann.mail_from,
        headers = returned_headers(&ann),
    );
    assert_eq!(submit(&intake, "bounces@bounce.test", &arf).await, 250);
    for address in ["ann@isp.example", "ben@isp.example"] {
        wait_for(
            &format!("{address} on the denylist"),
            Duration::from_secs(10),
            || async {
                p.store
                    .list_contains("denylist", address)
                    .await
                    .unwrap()
                    .then_some(())
            },
        )
        .await;
    }
    assert!(!p
        .store
        .list_contains("denylist", "mallory@isp.example")
        .await
        .unwrap());

    // A mail client's one-click unsubscribe mail (a `mailto:` List-Unsubscribe
    // to the plain address, marked Auto-Submitted): its sender is denylisted.
    let unsubscribe = "From: Cat <cat@isp.example>\n\
To: bounces@bounce.test\n\
Subject: Unsubscribe\n\
Message-ID: <unsub-cat@isp.example>\n\
Auto-Submitted: auto-generated\n\
\n\
This message was automatically generated by the mail client.\n";
    assert_eq!(
        submit(&intake, "bounces@bounce.test", unsubscribe).await,
        250
    );
    wait_for("Cat on the denylist", Duration::from_secs(10), || async {
        p.store
            .list_contains("denylist", "cat@isp.example")
            .await
            .unwrap()
            .then_some(())
    })
    .await;

    // A DSN whose MIME structure is broken (no boundary lines: the fields sit
    // inline), sent to Dan's VERP address: Dan is quarantined.
    let broken = format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.isp.example>\n\
To: {verp}\n\
Subject: Undelivered Mail Returned to Sender\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"never-used\"\n\
\n\
This is the mail system at host mx.isp.example.\n\
\n\
Reporting-MTA: dns; mx.isp.example\n\
\n\
Final-Recipient: rfc822; dan@isp.example\n\
Action: failed\n\
Status: 5.1.1\n\
Diagnostic-Code: smtp; 550 5.1.1 <dan@isp.example>: Recipient address rejected: User unknown\n\
\n\
Content-Type: text/rfc822-headers\n\
\n\
{headers}\n",
        verp = dan.mail_from,
        headers = returned_headers_without_return_path(&dan),
    );
    assert_eq!(submit(&intake, &dan.mail_from, &broken).await, 250);
    let q = wait_for("Dan quarantined", Duration::from_secs(10), || async {
        p.store.quarantine("dan@isp.example").await.unwrap()
    })
    .await;
    assert_eq!(q["reason"], "user_unknown", "{q}");

    // Events: `complained` for both complainants, `unsubscribed` (reason
    // `unsubscribed`) for Cat, `bounced` and `quarantined` for Dan.
    let seen = collect_until(&mut consumer, Duration::from_secs(20), |seen| {
        kinds_for(seen, "dan@isp.example").contains(&"quarantined")
            && kinds_for(seen, "cat@isp.example").contains(&"unsubscribed")
            && kinds_for(seen, "ben@isp.example").contains(&"complained")
    })
    .await;
    for address in ["ann@isp.example", "ben@isp.example"] {
        assert_eq!(
            kinds_for(&seen, address)
                .iter()
                .filter(|k| **k == "complained")
                .count(),
            1,
            "{address}: {seen:?}"
        );
    }
    let cat = seen
        .iter()
        .find(|e| e["recipient"] == "cat@isp.example" && e["event"] == "unsubscribed")
        .unwrap_or_else(|| panic!("no unsubscribed event: {seen:?}"));
    assert_eq!(cat["reason"], "unsubscribed", "{cat}");
    assert_eq!(cat["request"], "hard-1", "{cat}");
    let dan_events = kinds_for(&seen, "dan@isp.example");
    assert!(
        dan_events.contains(&"bounced") && dan_events.contains(&"quarantined"),
        "{seen:?}"
    );
    assert_eq!(
        kinds_for(&seen, "eve@isp.example"),
        vec!["sent"],
        "{seen:?}"
    );
    let status = p.status("hard-1").await;
    assert_eq!(status.complained, 2, "{status:?}");
    assert_eq!(status.bounced.get("user_unknown"), Some(&1), "{status:?}");
    for (outcome, n) in [("complained", 1.0), ("unsubscribed", 1.0), ("bounced", 1.0)] {
        let series =
            format!("mailpipe_intake_mails_total{{outcome=\"{outcome}\",source=\"smtp\"}}");
        assert_eq!(p.metric("intake", &series).await, n, "{series}");
    }

    // `mailpipe bounces --parse` shows who complained, and where that was
    // read: here the returned message's To, as the report names no
    // Original-Rcpt-To.
    let no_rcpt = arf
        .lines()
        .filter(|l| !l.starts_with("Original-Rcpt-To"))
        .collect::<Vec<_>>()
        .join("\n");
    let (code, out) = p.cli_with_stdin(&["bounces", "--parse", "-"], &no_rcpt);
    assert_eq!(code, 0, "{out}");
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["report"], "feedback", "{parsed}");
    assert_eq!(parsed["recipients"], serde_json::json!(["ann@isp.example"]));
    assert_eq!(parsed["recipients_from"], "returned_message_to");
    let (_, out) = p.cli_with_stdin(&["bounces", "--parse", "-"], unsubscribe);
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["report"], "unsubscribe", "{parsed}");
    assert_eq!(parsed["address"], "cat@isp.example");

    // The next campaign skips the denylisted and the quarantined.
    let mut again = request.clone();
    again["request_id"] = "hard-2".into();
    p.publish_json(&again).await;
    let status = p.wait_complete("hard-2", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 1, "{status:?}");
    assert_eq!(status.excluded.values().sum::<u64>(), 4, "{status:?}");
    p.shutdown().await;
}

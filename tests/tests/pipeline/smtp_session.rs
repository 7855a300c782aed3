//! The SMTP session to the relay, against a real SMTP server (aiosmtpd):
//! TLS from STARTTLS or from the first byte, verified against a CA the
//! operator names; AUTH; and servers with and without PIPELINING.

use std::time::Duration;

use mailpipe_common::config::TlsMode;
use mailpipe_common::message::message_id;
use mailpipe_tests::certs::TestCa;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{request_for, wait_for, TestPipeline, Workers};
use secrecy::SecretString;

fn locals(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn tls_server(ca: &TestCa, mode: &str, extra: &[&str]) -> ScriptedSmtp {
    let (cert, key) = (ca.cert(), ca.key());
    let mut options = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-mode",
        mode,
    ];
    options.extend_from_slice(extra);
    ScriptedSmtp::start_with_options(&options)
}

/// The failed attempts of a message as the retrier recorded them, once
/// there is at least one.
async fn history(p: &TestPipeline, request: &str, address: &str) -> Vec<serde_json::Value> {
    let id = message_id(request, address);
    wait_for(
        "the failure in the message's history",
        Duration::from_secs(30),
        || async {
            let h = p.store.history(&id).await.unwrap();
            (!h.is_empty()).then_some(h)
        },
    )
    .await
}

/// The `X-Session` line the server wrote for each message it accepted.
fn sessions(smtp: &ScriptedSmtp) -> Vec<String> {
    smtp.received()
        .iter()
        .map(|m| m.header("X-Session").unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_carry_every_message_over_an_encrypted_authenticated_session() {
    let ca = TestCa::new();
    let smtp = tls_server(&ca, "require-starttls", &["--auth", "mailpipe:s3cret"]);
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.sender.smtp.tls = TlsMode::Starttls;
        s.sender.smtp.ca_file = Some(ca.ca());
        s.sender.smtp.username = Some("mailpipe".into());
        s.sender.smtp.password = Some(SecretString::from("s3cret"));
    })
    .await;
    p.publish_json(&request_for("tls-auth", &locals("user", 40)))
        .await;
    let status = p.wait_complete("tls-auth", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 40);
    let seen = sessions(&smtp);
    assert_eq!(seen.len(), 40);
    assert!(
        seen.iter().all(|s| s == "tls=yes auth=mailpipe"),
        "{seen:?}"
    );
    // The body went through DATA intact: the dot-stuffed line came back.
    let mail = smtp.received();
    assert!(
        mail[0].body.contains("\n.a line that starts with a dot"),
        "{}",
        mail[0].body
    );
    p.shutdown().await;
}

/// Sends `n` messages to a server of TLS mode `server` (see
/// `scripted_smtp.py`) with the sender in mode `sender`, trusting the test
/// CA, and checks that every one went over TLS.
async fn delivered_over_tls(server: &str, sender: TlsMode, rid: &str, n: usize) {
    let ca = TestCa::new();
    let smtp = tls_server(&ca, server, &[]);
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.sender.smtp.tls = sender;
        s.sender.smtp.ca_file = Some(ca.ca());
    })
    .await;
    p.publish_json(&request_for(rid, &locals("user", n))).await;
    let status = p.wait_complete(rid, Duration::from_secs(60)).await;
    assert_eq!(status.sent, n as u64);
    assert_eq!(sessions(&smtp), vec!["tls=yes auth=-"; n]);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_speaks_tls_from_the_first_byte() {
    delivered_over_tls("implicit", TlsMode::Implicit, "smtps", 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opportunistic_tls_is_used_when_the_server_offers_it() {
    delivered_over_tls("starttls", TlsMode::Opportunistic, "opportunistic", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_nobody_vouches_for_stops_the_session_before_any_mail_is_sent() {
    let ca = TestCa::new();
    let smtp = tls_server(&ca, "require-starttls", &[]);
    // No `ca_file`: the system's roots do not know the test CA.
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.sender.smtp.tls = TlsMode::Starttls;
    })
    .await;
    p.publish_json(&request_for("untrusted", &locals("user", 5)))
        .await;
    wait_for(
        "every message to fail at least once",
        Duration::from_secs(60),
        || async { (p.status("untrusted").await.failed_attempts >= 5).then_some(()) },
    )
    .await;
    let status = p.status("untrusted").await;
    assert_eq!(status.sent, 0);
    // Nothing reached the server, not even an envelope in clear.
    assert!(smtp.received().is_empty());
    assert!(smtp.attempts().is_empty(), "{:?}", smtp.attempts());
    // The failure says why, for operators.
    let history = history(&p, "untrusted", "user0@example.com").await;
    let reply = history[0]["reply"].as_str().unwrap_or_default().to_string();
    assert!(reply.contains("TLS"), "{history:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_failed_attempt_and_nothing_is_sent() {
    let ca = TestCa::new();
    let smtp = tls_server(&ca, "require-starttls", &["--auth", "mailpipe:s3cret"]);
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.sender.smtp.tls = TlsMode::Starttls;
        s.sender.smtp.ca_file = Some(ca.ca());
        s.sender.smtp.username = Some("mailpipe".into());
        s.sender.smtp.password = Some(SecretString::from("wrong"));
    })
    .await;
    p.publish_json(&request_for("bad-auth", &locals("user", 3)))
        .await;
    wait_for("every message to fail", Duration::from_secs(60), || async {
        (p.status("bad-auth").await.failed_attempts >= 3).then_some(())
    })
    .await;
    assert_eq!(p.status("bad-auth").await.sent, 0);
    assert!(smtp.received().is_empty());
    let history = history(&p, "bad-auth", "user0@example.com").await;
    let reply = history[0]["reply"].as_str().unwrap_or_default().to_string();
    assert!(reply.starts_with("535"), "{history:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_pipelining_gets_one_command_at_a_time_and_the_same_outcomes() {
    for pipelining in [false, true] {
        let smtp = if pipelining {
            ScriptedSmtp::start()
        } else {
            ScriptedSmtp::start_with_options(&["--no-pipelining"])
        };
        let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |_| {}).await;
        let rid = format!("pipelining-{pipelining}");
        let mut who = locals("ok-0-", 6);
        who.extend(["r550-0-a", "r554-0-a", "r552-0-a"].map(String::from));
        p.publish_json(&request_for(&rid, &who)).await;
        let status = p.wait_complete(&rid, Duration::from_secs(60)).await;
        assert_eq!(status.sent, 6, "pipelining {pipelining}");
        for reason in ["user_unknown", "refused", "message_too_large"] {
            assert_eq!(
                status.dead.get(reason),
                Some(&1),
                "pipelining {pipelining}: {:?}",
                status.dead
            );
        }
        assert_eq!(smtp.per_recipient().len(), 6);
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_recipients_and_messages_do_not_cost_a_connection() {
    // Two connections at most; a third of the recipients refused at RCPT
    // (550, 452), one in ten at the end of the data (554). Each refused
    // transaction is reset and its connection reused: before, every refusal
    // closed the connection (and, with TLS, cost a handshake).
    let smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.sender.bulk_concurrency = 2;
        s.sender.transactional_concurrency = 2;
        s.sender.smtp.pool_size = 2;
    })
    .await;
    let mut who = locals("ok-0-", 40);
    who.extend(locals("r550-0-", 15));
    who.extend(locals("r452-1-", 5));
    who.extend(locals("r554-0-", 6));
    p.publish_json(&request_for("reuse", &who)).await;
    let status = p.wait_complete("reuse", Duration::from_secs(60)).await;
    assert_eq!(status.sent, 45, "{status:?}");
    assert_eq!(
        status.dead.get("user_unknown"),
        Some(&15),
        "{:?}",
        status.dead
    );
    assert_eq!(status.dead.get("refused"), Some(&6), "{:?}", status.dead);
    assert_eq!(smtp.per_recipient().len(), 45);
    let connections = smtp.connections();
    eprintln!("{connections} connection(s) for 66 recipients, 26 refused");
    assert!(
        connections <= 4,
        "{connections} connections for 2 pooled slots: refusals closed connections"
    );
    p.shutdown().await;
}

//! Unicode addresses (RFC 6531/6532): recipients whose local part is not
//! ASCII go out with SMTPUTF8 to a server that offers it, and wait (never
//! sent, never counted against anyone) while the server does not.

use std::time::Duration;

use mailpipe_common::message::message_id;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{TestPipeline, Workers};
use serde_json::json;

fn request(id: &str, emails: &[&str], retries: Option<u32>) -> serde_json::Value {
    let recipients: Vec<_> = emails.iter().map(|e| json!({"email": e})).collect();
    let mut r = json!({
        "schema_version": 1,
        "request_id": id,
        "from": "ACME <news@acme.example>",
        "subject": "Hello",
        "text": "Hi.\n",
        "recipients": recipients,
    });
    if let Some(n) = retries {
        r["retries"] = json!(n);
    }
    r
}

/// A server that offers SMTPUTF8 receives the non-ASCII recipients as
/// written (local part in NFC, domain in punycode), in the envelope and in
/// the To header; two spellings of one name (composed and decomposed) are
/// one recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_recipients_go_out_with_smtputf8() {
    let smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |_| {}).await;
    p.publish_json(&request(
        "utf8-offered",
        &[
            "jose\u{0301}@example.com",
            "josé@example.com",
            "用户@例子.测试",
            "plain@example.com",
        ],
        None,
    ))
    .await;
    let status = p
        .wait_complete("utf8-offered", Duration::from_secs(60))
        .await;
    assert_eq!(status.sent, 3, "{status:?}");
    assert_eq!(status.excluded.get("duplicate"), Some(&1), "{status:?}");
    assert_eq!(status.excluded.get("invalid_address"), None, "{status:?}");

    let mut rcpts: Vec<String> = smtp
        .received()
        .iter()
        .flat_map(|m| m.rcpt.clone())
        .collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "josé@example.com",
            "plain@example.com",
            "用户@xn--fsqu00a.xn--0zwm56d"
        ]
    );
    let jose = smtp
        .received()
        .into_iter()
        .find(|m| m.rcpt == ["josé@example.com"])
        .unwrap();
    let to = jose.header("To").unwrap_or_default().to_string();
    assert!(to.contains("josé@example.com"), "To: {to}");
    p.shutdown().await;
}

/// A server without SMTPUTF8 never sees a non-ASCII address: the attempt
/// ends before MAIL FROM with mailpipe's own 4.6.7, which is retried and
/// counts neither against the recipient (quarantine threshold 1 here) nor
/// against the domain, whose other mail is delivered. When the request's
/// retries are spent it ends dead, with that reason in its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_smtputf8_never_sees_a_unicode_address_and_mail_waits() {
    let smtp = ScriptedSmtp::start_with_options(&["--no-smtputf8"]);
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        // The reason is `unreachable`: the routing policy retries it.
        s.retrier.policies.routing.schedule = vec![Duration::from_millis(200)];
        s.quarantine.threshold = 1;
    })
    .await;
    let emails = ["josé@example.com", "plain@example.com", "other@example.com"];
    p.publish_json(&request("utf8-missing", &emails, Some(1)))
        .await;
    let status = p
        .wait_complete("utf8-missing", Duration::from_secs(60))
        .await;
    assert_eq!(status.sent, 2, "{status:?}");
    assert_eq!(status.dead.get("exhausted"), Some(&1), "{status:?}");

    let done = p
        .store
        .done(&message_id("utf8-missing", "josé@example.com"))
        .await
        .unwrap()
        .expect("a terminal record");
    assert!(
        done.detail.contains("4.6.7") && done.detail.contains("SMTPUTF8"),
        "{}",
        done.detail
    );
    // The server never saw it, in any command.
    assert!(
        smtp.attempts().iter().all(|a| a.rcpt.is_ascii()),
        "{:?}",
        smtp.attempts()
    );
    let received: Vec<String> = smtp
        .received()
        .iter()
        .flat_map(|m| m.rcpt.clone())
        .collect();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|r| r.is_ascii()), "{received:?}");
    // Not the recipient's fault, nor the domain's.
    assert_eq!(
        p.store.quarantine("josé@example.com").await.unwrap(),
        None,
        "quarantined for the server's lack"
    );
    let (code, out) = p.cli(&["--json", "domain", "show", "example.com"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("\"paused\":true"), "{out}");
    p.shutdown().await;
}

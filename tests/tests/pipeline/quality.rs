//! Address quality at expansion: domains without a mail host (against the
//! loopback DNS server) and likely typos of large providers' domains.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use mailpipe_common::quality::{QualityCheck, TypoAction};
use mailpipe_tests::dns::Dns;
use mailpipe_tests::{events_in, wait_for, SmtpSink, TestPipeline, Workers};
use serde_json::json;

fn request(id: &str, recipients: &[String]) -> serde_json::Value {
    json!({
        "schema_version": 1,
        "request_id": id,
        "campaign": "quality",
        "lane": "bulk",
        "from": "ACME <news@acme.example>",
        "subject": "Hello",
        "text": "Hello.",
        "recipients": recipients.iter().map(|r| json!({"email": r})).collect::<Vec<_>>(),
    })
}

/// Reads events of `kind` about `request` until there are `want`;
/// recipient → (reason, detail).
async fn events_of(
    consumer: &mut lapin::Consumer,
    kind: &str,
    request: &str,
    want: usize,
) -> BTreeMap<String, (String, Option<String>)> {
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < want {
        let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            break;
        };
        for e in events_in(&d.data) {
            if e["event"] == kind && e["request"] == request {
                seen.insert(
                    e["recipient"].as_str().unwrap().to_string(),
                    (
                        e["reason"].as_str().unwrap().to_string(),
                        e["detail"].as_str().map(str::to_string),
                    ),
                );
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_without_a_mail_host_are_excluded_after_one_lookup_each_while_other_domains_go_on()
{
    // A DNS server that never answers, for slow.test: its recipients wait
    // for their domain's lookup to time out; the others must not.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let dns = Dns::start_logged(&[
        "--mx-host=good.test,mx.good.test,10".into(),
        "--host-record=mx.good.test,127.0.0.2".into(),
        "--host-record=plain.test,127.0.0.3".into(),
        // Exists (a TXT record) but has no MX and no address.
        "--txt-record=nomail.test,v=spf1 -all".into(),
        "--mx-host=nullmx.test,.,0".into(),
        format!("--server=/slow.test/127.0.0.1#{silent_port}"),
    ]);
    // Long enough that the other domains' 40 deliveries finish first even
    // on a busy machine.
    let lookup_timeout = Duration::from_secs(10);
    let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
        s.sender.mx.nameservers = vec![dns.nameserver()];
        s.expander.quality.checks = vec![QualityCheck::NoMailHost];
        s.expander.quality.lookup_timeout = lookup_timeout;
        s.expander.batch_size = 10;
    })
    .await;
    let (_conn, mut consumer) = p.subscribe_events().await;
    // Interleaved, so that every screening batch holds several domains.
    let mut recipients = Vec::new();
    for i in 0..10 {
        for (k, d) in [
            "good.test",
            "plain.test",
            "nomail.test",
            "nx.test",
            "nullmx.test",
            "good.test",
            "good.test",
        ]
        .iter()
        .enumerate()
        {
            recipients.push(format!("user{i}-{k}@{d}"));
        }
        if i < 5 {
            recipients.push(format!("user{i}@slow.test"));
        }
    }
    let started = Instant::now();
    p.publish_json(&request("q-1", &recipients)).await;
    // The recipients of domains that answered are sent while slow.test's
    // lookup still waits: the part is not expanded yet.
    wait_for(
        "good.test and plain.test delivered",
        Duration::from_secs(30),
        || async { (p.sink().count() >= 40).then_some(()) },
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(
        p.status("q-1").await.parts_done,
        0,
        "the other domains waited for slow.test ({waited:?})"
    );
    // slow.test's recipients were published only once its lookup gave up.
    let s = p.wait_complete("q-1", Duration::from_secs(60)).await;
    assert!(
        started.elapsed() >= lookup_timeout,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        s.excluded,
        [("no_mail_host".to_string(), 30)].into(),
        "{s:?}"
    );
    // slow.test did not answer: its recipients are not excluded.
    assert_eq!(s.sent, 45);
    let sent = p.sink().per_recipient();
    assert!(sent.contains_key("user3@slow.test") && sent.contains_key("user9-1@plain.test"));
    let events = events_of(&mut consumer, "excluded", "q-1", 30).await;
    assert_eq!(events.len(), 30, "{events:?}");
    for (r, (reason, _)) in &events {
        assert_eq!(reason, "no_mail_host", "{r}");
        assert!(
            r.ends_with("@nomail.test") || r.ends_with("@nx.test") || r.ends_with("@nullmx.test"),
            "{r} was excluded"
        );
    }
    // One lookup per domain for the whole campaign of 75 recipients: the
    // expander counts 6 (slow.test's unanswered), and the DNS server saw one
    // MX query for each domain the sender never asks about (its
    // recipients were excluded).
    let lookups = |answer: &'static str| {
        let p = &p;
        async move {
            p.metric(
                "expander",
                &format!("mailpipe_mail_host_lookups_total{{answer=\"{answer}\"}}"),
            )
            .await
        }
    };
    assert_eq!(
        (
            lookups("found").await,
            lookups("missing").await,
            lookups("unknown").await
        ),
        (2.0, 3.0, 1.0)
    );
    for d in ["nomail.test", "nx.test", "nullmx.test"] {
        assert_eq!(dns.queries("MX", d), 1, "MX lookups of {d}");
    }

    // Another campaign to the same domains asks nothing again (the
    // expander keeps the answers), and one that turns the checks off
    // excludes nobody.
    let recipients: Vec<String> = recipients
        .into_iter()
        .filter(|r| !r.ends_with("@slow.test"))
        .collect();
    p.publish_json(&request("q-2", &recipients[..14])).await;
    let s = p.wait_complete("q-2", Duration::from_secs(60)).await;
    assert_eq!(s.excluded.get("no_mail_host"), Some(&6), "{s:?}");
    assert_eq!(dns.queries("MX", "nomail.test"), 1);
    assert_eq!(lookups("found").await + lookups("missing").await, 5.0);
    let mut off = request("q-3", &recipients[..7]);
    off["quality"] = json!([]);
    p.publish_json(&off).await;
    let s = p.wait_complete("q-3", Duration::from_secs(60)).await;
    assert!(s.excluded.is_empty(), "{s:?}");
    assert_eq!(s.sent, 7);

    // `submit --dry-run` finds the same exclusions with the same lookups.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailpipe.yaml");
    std::fs::write(
        &config,
        format!(
            "sender:\n  mx:\n    nameservers: [\"{}\"]\nexpander:\n  quality:\n    checks: [no_mail_host]\n",
            dns.nameserver()
        ),
    )
    .unwrap();
    let file = dir.path().join("request.json");
    let mut dry = request("dry", &recipients[..21]);
    dry.as_object_mut().unwrap().remove("request_id");
    std::fs::write(&file, dry.to_string()).unwrap();
    let (code, out) = p.cli(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "submit",
        file.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["excluded"], json!({"no_mail_host": 9}), "{report}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likely_typos_are_flagged_or_excluded_as_configured() {
    let recipients: Vec<String> = [
        "ann@gmial.com",
        "bob@gmail.com",
        "cid@hotmial.com",
        "dan@example.com",
        "eve@mail.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for action in [TypoAction::Flag, TypoAction::Exclude] {
        let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
            s.expander.quality.typo_action = action;
        })
        .await;
        let (_conn, mut consumer) = p.subscribe_events().await;
        // Asked for by the request (the configuration asks for no check).
        let mut r = request("typos", &recipients);
        r["quality"] = json!(["likely_typo"]);
        p.publish_json(&r).await;
        let s = p.wait_complete("typos", Duration::from_secs(60)).await;
        let typos: BTreeMap<String, (String, Option<String>)> = [
            ("ann@gmial.com", "gmail.com"),
            ("cid@hotmial.com", "hotmail.com"),
        ]
        .iter()
        .map(|(r, p)| {
            (
                r.to_string(),
                ("likely_typo".to_string(), Some(p.to_string())),
            )
        })
        .collect();
        match action {
            TypoAction::Flag => {
                assert_eq!(s.sent, 5, "{s:?}");
                assert!(s.excluded.is_empty(), "{s:?}");
                assert_eq!(s.flagged, [("likely_typo".to_string(), 2)].into());
                let flagged = events_of(&mut consumer, "flagged", "typos", 2).await;
                assert_eq!(flagged, typos);
                assert_eq!(p.sink().per_recipient().get("ann@gmial.com"), Some(&1));
            }
            TypoAction::Exclude => {
                assert_eq!(s.sent, 3, "{s:?}");
                assert_eq!(s.excluded, [("likely_typo".to_string(), 2)].into());
                assert!(s.flagged.is_empty(), "{s:?}");
                let excluded = events_of(&mut consumer, "excluded", "typos", 2).await;
                assert_eq!(excluded, typos);
                assert!(!p.sink().per_recipient().contains_key("ann@gmial.com"));
            }
        }
        let (code, text) = p.cli(&["status", "typos"]);
        assert_eq!(code, 0);
        assert!(text.contains("likely_typo"), "{text}");

        // `submit --dry-run`, with the same typo_action, tells the same
        // before anything is published.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mailpipe.yaml");
        let action_name = match action {
            TypoAction::Flag => "flag",
            TypoAction::Exclude => "exclude",
        };
        std::fs::write(
            &config,
            format!("expander:\n  quality:\n    typo_action: {action_name}\n"),
        )
        .unwrap();
        let file = dir.path().join("request.json");
        let mut dry = r.clone();
        dry.as_object_mut().unwrap().remove("request_id");
        std::fs::write(&file, dry.to_string()).unwrap();
        let (code, out) = p.cli(&[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "submit",
            file.to_str().unwrap(),
            "--dry-run",
        ]);
        assert_eq!(code, 0, "{out}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        let (excluded, flagged) = match action {
            TypoAction::Flag => (json!({}), json!({"likely_typo": 2})),
            TypoAction::Exclude => (json!({"likely_typo": 2}), json!({})),
        };
        assert_eq!(report["excluded"], excluded, "{report}");
        assert_eq!(report["flagged"], flagged, "{report}");
        let named: Vec<&str> = report["exclusions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["recipient"].as_str())
            .collect();
        match action {
            TypoAction::Flag => assert!(named.is_empty(), "{report}"),
            TypoAction::Exclude => assert_eq!(named, ["ann@gmial.com", "cid@hotmial.com"]),
        }
        assert_eq!(
            p.queue_depth("requests").await,
            0,
            "the dry run published nothing"
        );
        p.shutdown().await;
    }
}

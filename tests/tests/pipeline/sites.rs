//! Sites: recipient domains are grouped by the mail system their MX hosts
//! belong to, in relay mode as in MX mode.

use std::time::Duration;

use mailpipe_common::sites::SiteRule;
use mailpipe_tests::dns::Dns;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{TestPipeline, Workers};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_domains_at_three_providers_are_three_sites_even_through_a_relay() {
    let relay = ScriptedSmtp::start();
    // Three providers: alpha (two MX host names, no rule: its registered
    // domain), beta (an operator's rule names it), gamma (no rule).
    let providers = [
        ("mx1.alpha-mail.test", "mx2.alpha-mail.test"),
        ("in.eu.beta.test", "in.us.beta.test"),
        ("mx.gamma.test", "mx.gamma.test"),
    ];
    let mut records = vec!["--host-record=plain.test,127.0.0.1".to_string()];
    for (i, (first, second)) in providers.iter().enumerate() {
        for (n, host) in [first, second].into_iter().enumerate() {
            records.push(format!("--host-record={host},127.0.1.{}", 10 * i + n + 1));
        }
    }
    let domains: Vec<String> = (0..200).map(|i| format!("d{i}.test")).collect();
    for (i, d) in domains.iter().enumerate() {
        let (first, second) = providers[i % 3];
        records.push(format!("--mx-host={d},{first},10"));
        records.push(format!("--mx-host={d},{second},20"));
    }
    let dns = Dns::start(&records);
    let nameserver = dns.nameserver();
    let p = TestPipeline::spawn_for_port(relay.port, Workers::ALL, |s| {
        s.sender.mx.nameservers = vec![nameserver];
        s.sites.rules = vec![SiteRule {
            mx: "*.beta.test".into(),
            site: "beta".into(),
        }];
    })
    .await;
    let mut recipients: Vec<serde_json::Value> = domains
        .iter()
        .map(|d| json!({"email": format!("ok-0-x@{d}")}))
        .collect();
    recipients.push(json!({"email": "a@plain.test"}));
    recipients.push(json!({"email": "b@plain.test"}));
    p.publish_json(&json!({
        "schema_version": 1, "request_id": "sites",
        "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
        "recipients": recipients,
    }))
    .await;
    let s = p.wait_complete("sites", Duration::from_secs(120)).await;
    assert_eq!(s.sent, 202, "{s:?}");
    assert_eq!(relay.count(), 202, "everything went through the relay");

    let (code, out) = p.cli(&["--json", "site", "list"]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let mut sites: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["site"].as_str().unwrap().to_string(),
                r["domains"].as_u64().unwrap(),
            )
        })
        .collect();
    sites.sort();
    assert_eq!(
        sites,
        [
            ("alpha-mail.test".to_string(), 67),
            ("beta".to_string(), 67),
            ("gamma.test".to_string(), 66),
            // No MX: its own site.
            ("plain.test".to_string(), 1),
        ]
    );
    let (code, out) = p.cli(&["site", "show", "beta"]);
    assert_eq!(code, 0, "{out}");
    let beta: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed = beta["domain_list"].as_array().unwrap();
    assert_eq!(listed.len(), 67);
    assert!(listed.iter().any(|d| d == "d1.test"), "{beta}");
    let (code, _) = p.cli(&["site", "show", "nowhere"]);
    assert_eq!(code, 3, "an unknown site is not found");
    p.shutdown().await;
}

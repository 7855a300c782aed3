//! Sites: recipient domains are grouped by the mail system their MX hosts
//! belong to, in relay mode as in MX mode.

use std::time::Duration;

use mailpipe_common::sites::SiteRule;
use mailpipe_tests::dns::Dns;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{wait_for, TestPipeline, Workers};
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
    // A sender counts each domain at its site within a quarter of a second
    // of its attempt.
    wait_for(
        "every domain counted at its site",
        Duration::from_secs(5),
        || async {
            let (_, out) = p.cli(&["--json", "site", "list"]);
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
            let domains: u64 = rows.iter().filter_map(|r| r["domains"].as_u64()).sum();
            (domains == 201).then_some(())
        },
    )
    .await;
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

/// Three providers behind dnsmasq MX records: `alpha-mail.test` (its
/// registered domain), `google` (a shipped rule) and `gamma.test`, with
/// `n` domains each (`a{i}.test`, `b{i}.test`, `g{i}.test`).
fn three_providers(n: usize) -> Dns {
    let mut records = Vec::new();
    for (i, host) in ["mx1.alpha-mail.test", "mx.smtp.google.com", "mx.gamma.test"]
        .iter()
        .enumerate()
    {
        records.push(format!("--host-record={host},127.0.2.{}", i + 1));
        let letter = ["a", "b", "g"][i];
        for d in 0..n {
            records.push(format!("--mx-host={letter}{d}.test,{host},10"));
        }
    }
    Dns::start(&records)
}

fn addresses(letter: &str, domains: usize, n: usize, tag: &str) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| json!({"email": format!("ok-0-{tag}{i}@{letter}{}.test", i % domains)}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_pause_with_its_reason_stops_every_domain_of_the_site_resume_restarts_it_and_a_site_limit_applies(
) {
    let relay = ScriptedSmtp::start();
    let dns = three_providers(5);
    let nameserver = dns.nameserver();
    let p = TestPipeline::spawn_for_port(relay.port, Workers::ALL, |s| {
        s.sender.mx.nameservers = vec![nameserver];
    })
    .await;
    let request = |id: &str, recipients: Vec<serde_json::Value>| {
        json!({
            "schema_version": 1, "request_id": id,
            "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
            "recipients": recipients,
        })
    };

    // An unknown site is an error that writes nothing.
    let (code, _) = p.cli(&["site", "pause", "nowhere", "--reason", "typo"]);
    assert_eq!(code, 3);
    let (code, _) = p.cli(&["site", "limit", "nowhere", "--rate", "5/s"]);
    assert_eq!(code, 3);
    let (code, _) = p.cli(&["site", "show", "nowhere"]);
    assert_eq!(code, 3, "nothing was written for it");
    let (code, _) = p.cli(&["site", "pause", "google", "--reason", " "]);
    assert_eq!(code, 2, "a pause needs a reason");

    // The operator pauses google (named by a shipped rule: known before
    // any mail).
    let (code, out) = p.cli(&[
        "--json",
        "site",
        "pause",
        "google",
        "--reason",
        "provider incident",
        "--for",
        "25s",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = p.cli(&["--json", "site", "show", "google"]);
    assert_eq!(code, 0, "{out}");
    let google: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(google["state"], "paused", "{google}");
    assert_eq!(google["pause"]["reason"], "provider incident", "{google}");
    assert_eq!(google["pause"]["by"], "operator", "{google}");

    let mut recipients = addresses("a", 5, 10, "p");
    recipients.extend(addresses("b", 5, 10, "p"));
    p.publish_json(&request("paused", recipients)).await;
    wait_for("alpha's ten", Duration::from_secs(60), || async {
        (relay.count() >= 10).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = relay.per_recipient();
    assert_eq!(received.len(), 10, "{received:?}");
    assert!(
        received.keys().all(|r| r.contains("@a")),
        "no domain of the paused site got mail: {received:?}"
    );
    let (code, out) = p.cli(&["--json", "site", "list"]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let listed = rows
        .iter()
        .find(|r| r["site"] == "google")
        .expect("google listed");
    assert_eq!(listed["state"], "paused", "{listed}");
    assert_eq!(listed["reason"], "provider incident", "{listed}");

    // Resumed: new mail to google goes at once (the pause had 20 s left).
    let (code, out) = p.cli(&["--json", "site", "resume", "google"]);
    assert_eq!(code, 0, "{out}");
    let resumed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resumed["was_paused"], true);
    p.publish_json(&request("resumed", addresses("b", 5, 5, "r")))
        .await;
    let s = p.wait_complete("resumed", Duration::from_secs(15)).await;
    assert_eq!(s.sent, 5, "{s:?}");

    // A run-time MX rule: 5/s, one at once, two messages per connection.
    let (code, out) = p.cli(&[
        "--json",
        "site",
        "limit",
        "gamma.test",
        "--rate",
        "5/s",
        "--burst",
        "1",
        "--messages-per-connection",
        "2",
    ]);
    // gamma.test was never attempted and no rule names it: unknown yet.
    assert_eq!(code, 3, "{out}");
    p.publish_json(&request("first-gamma", addresses("g", 5, 1, "f")))
        .await;
    p.wait_complete("first-gamma", Duration::from_secs(30))
        .await;
    // Its attempt makes it known: a sender counts its attempts at the site
    // within a quarter of a second.
    wait_for("gamma.test known", Duration::from_secs(5), || async {
        let (code, out) = p.cli(&[
            "--json",
            "site",
            "limit",
            "gamma.test",
            "--rate",
            "5/s",
            "--burst",
            "1",
            "--messages-per-connection",
            "2",
        ]);
        assert!(code == 0 || code == 3, "{code}: {out}");
        (code == 0).then_some(())
    })
    .await;
    let (code, out) = p.cli(&["--json", "site", "show", "gamma.test"]);
    assert_eq!(code, 0, "{out}");
    let gamma: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(gamma["rule"]["rate_per_second"], 5.0, "{gamma}");
    assert_eq!(gamma["rule"]["messages_per_connection"], 2, "{gamma}");
    p.publish_json(&request("limited", addresses("g", 5, 12, "l")))
        .await;
    let s = p.wait_complete("limited", Duration::from_secs(60)).await;
    assert_eq!(s.sent, 12, "{s:?}");
    let mut times: Vec<f64> = relay
        .attempts()
        .into_iter()
        .filter(|a| a.stage == "rcpt" && a.code == 250 && a.rcpt.starts_with("ok-0-l"))
        .map(|a| a.time)
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(times.len(), 12);
    // Twelve at 5/s with a burst of one take 2.2 s at least (less a
    // little for the server's own timing of the first and last).
    let span = times[11] - times[0];
    assert!(span >= 1.8, "twelve messages in {span:.2} s at 5/s");

    // The paused request's google mail went once its delay was over.
    let s = p.wait_complete("paused", Duration::from_secs(90)).await;
    assert_eq!(s.sent, 20, "{s:?}");
    assert!(relay.per_recipient().values().all(|n| *n == 1));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_site_is_cut_by_throttling_and_suspended_by_reputation_blocks_without_failing_its_mail(
) {
    use futures_lite::StreamExt;
    let relay = ScriptedSmtp::start();
    let dns = three_providers(5);
    let nameserver = dns.nameserver();
    let p = TestPipeline::spawn_for_port(relay.port, Workers::ALL, |s| {
        s.sender.mx.nameservers = vec![nameserver];
        s.sites.adaptive.enabled = true;
        s.sites.adaptive.start_rate = "50/s".parse().unwrap();
        s.sites.adaptive.suspend_for = Duration::from_secs(6);
    })
    .await;
    let (_events_conn, mut events) = p.subscribe_events().await;
    let request = |id: &str, recipients: Vec<serde_json::Value>| {
        json!({
            "schema_version": 1, "request_id": id,
            "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
            "recipients": recipients,
        })
    };
    // Google blocks the first attempt of three messages as spam (a refusal
    // about the sender), gamma throttles the first attempt of ten, alpha
    // takes everything.
    let mut recipients: Vec<serde_json::Value> = (0..3)
        .map(|i| json!({"email": format!("r554-1-b{i}@b{i}.test")}))
        .collect();
    recipients.extend((0..10).map(|i| json!({"email": format!("r450-1-g{i}@g{}.test", i % 5)})));
    recipients.extend(addresses("a", 5, 20, "a"));
    p.publish_json(&request("adaptive", recipients)).await;

    let google = wait_for("google suspended", Duration::from_secs(60), || async {
        let (code, out) = p.cli(&["--json", "site", "show", "google"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (code == 0 && v["state"] == "suspended").then_some(v)
    })
    .await;
    let reason = google["pause"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("554 5.7.1 Message rejected as spam"),
        "the reply is the reason: {google}"
    );
    assert_eq!(google["pause"]["by"], "adaptive", "{google}");
    let changes = google["changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|l| l
            .as_str()
            .unwrap_or_default()
            .contains(" suspended suspended ")),
        "{google}"
    );
    // The blocked mail is deferred, not failed; the other sites flow. The
    // block that suspends the site is counted once its outcome is settled,
    // a moment after the site's state changed: wait for it.
    let suspended = || async {
        let mut n = 0.0;
        for lane in ["transactional", "bulk"] {
            n += p
                .metric(
                    "sender",
                    &format!("mailpipe_deliveries_total{{lane=\"{lane}\",outcome=\"suspended\"}}"),
                )
                .await;
        }
        n
    };
    let counted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = suspended().await;
            if n >= 3.0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let all = p.metric("sender", "mailpipe_deliveries_total").await;
    assert!(
        counted.is_ok(),
        "{} deferred as suspended ({all} in all)",
        suspended().await
    );
    let s = p.status("adaptive").await;
    assert!(s.dead.is_empty() && s.bounced.is_empty(), "{s:?}");
    wait_for("alpha and gamma", Duration::from_secs(60), || async {
        let got = relay.per_recipient();
        let others = got.keys().filter(|r| !r.contains("@b")).count();
        (others == 30).then_some(())
    })
    .await;

    // Gamma's throttling cut its rate.
    let gamma = wait_for("gamma cut", Duration::from_secs(30), || async {
        let (_, out) = p.cli(&["--json", "site", "show", "gamma.test"]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let cut = v["changes"]
            .as_array()?
            .iter()
            .any(|l| l.as_str().unwrap_or_default().contains(" cut "));
        cut.then_some(v)
    })
    .await;
    assert!(
        gamma["adaptive"]["rate"].as_f64().unwrap() < 50.0,
        "cut below its start: {gamma}"
    );
    let cuts = p
        .metric(
            "sender",
            "mailpipe_site_changes_total{action=\"cut\",site=\"gamma.test\"}",
        )
        .await;
    assert!(cuts >= 1.0, "{cuts}");

    // After the suspension, google's messages go, once each; nobody was
    // quarantined or bounced for the sender's reputation.
    let s = p.wait_complete("adaptive", Duration::from_secs(90)).await;
    assert_eq!(s.sent, 33, "{s:?}");
    assert!(s.dead.is_empty() && s.bounced.is_empty(), "{s:?}");
    assert!(relay.per_recipient().values().all(|n| *n == 1));

    // Each throttled message went again at once, at gamma's cut rate, from
    // the sender itself: none waited for the retrier's throttled schedule
    // (a minute), and the retrier saw none of them.
    let retried = p
        .metric(
            "sender",
            "mailpipe_site_throttled_retries_total{site=\"gamma.test\"}",
        )
        .await;
    assert_eq!(
        retried, 10.0,
        "throttled messages tried again by the sender"
    );
    let to_retrier = p
        .metric(
            "retrier",
            "mailpipe_retrier_decisions_total{decision=\"retry\",reason=\"rate_limited\"}",
        )
        .await;
    assert_eq!(
        to_retrier, 0.0,
        "throttled messages that went to the retrier"
    );
    for i in 0..10 {
        let rcpt = format!("r450-1-g{i}@g{}.test", i % 5);
        let attempts = relay.attempts_for(&rcpt);
        let refused = attempts.iter().find(|a| a.code == 450).expect("the 450");
        let accepted = attempts
            .iter()
            .find(|a| a.stage == "data" && a.code == 250)
            .expect("the delivery");
        let waited = accepted.time - refused.time;
        assert!(
            waited < 10.0,
            "{rcpt} was delivered {waited:.1} s after its throttling reply"
        );
    }

    // Site events: the suspension with its reason, the cut.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        if d.routing_key.as_str().starts_with("site.") {
            for e in mailpipe_tests::events_in(&d.data) {
                seen.push((
                    e["site"].as_str().unwrap_or_default().to_string(),
                    e["action"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    assert!(
        seen.iter()
            .any(|(s, a, r)| s == "google" && a == "suspended" && r.contains("554 5.7.1")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(s, a, _)| s == "gamma.test" && a == "cut"),
        "{seen:?}"
    );
    p.shutdown().await;
}

//! Exclusion rules: stored and edited with `mailpipe rules`, applied by the
//! expander while it screens, named in `status` and in `excluded` events.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_lite::StreamExt;
use mailpipe_tests::{events_in, TestPipeline};
use serde_json::json;

/// A request of `tenant` in `lane` to these recipients.
fn request(id: &str, tenant: &str, lane: &str, recipients: &[&str]) -> serde_json::Value {
    json!({
        "schema_version": 1,
        "request_id": id,
        "tenant": tenant,
        "campaign": "rules",
        "lane": lane,
        "from": "ACME <news@acme.example>",
        "subject": "Hello",
        "text": "Hello.",
        "recipients": recipients.iter().map(|r| json!({"email": r})).collect::<Vec<_>>(),
    })
}

/// Reads events until `request` has `want` `excluded` events; answers
/// recipient → (reason, rule) of each.
async fn excluded_events(
    consumer: &mut lapin::Consumer,
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
            if e["event"] == "excluded" && e["request"] == request {
                seen.insert(
                    e["recipient"].as_str().unwrap().to_string(),
                    (
                        e["reason"].as_str().unwrap().to_string(),
                        e["rule"].as_str().map(str::to_string),
                    ),
                );
            }
        }
    }
    seen
}

fn by_rule(pairs: &[(&str, &str)]) -> BTreeMap<String, (String, Option<String>)> {
    pairs
        .iter()
        .map(|(r, rule)| {
            (
                r.to_string(),
                ("excluded_by_rule".to_string(), Some(rule.to_string())),
            )
        })
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_exclude_exactly_the_recipients_they_name_in_their_scope() {
    let p = TestPipeline::spawn().await;
    // A domain-suffix rule for all mail, the shipped role-account rule
    // (bulk only, disabled until enabled), and a list for one tenant.
    let (code, out) = p.cli(&[
        "rules",
        "add",
        "competitors",
        "--domain-suffix",
        "competitor.example",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = p.cli(&["--json", "rules", "list"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let admin = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "role-admin")
        .expect("the built-in role-account rule is listed");
    assert_eq!(admin["state"], "disabled", "{admin}");
    assert_eq!(admin["scope"], "bulk", "{admin}");
    let (code, out) = p.cli(&["rules", "enable", "role-admin"]);
    assert_eq!(code, 0, "{out}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partners.csv");
    std::fs::write(
        &file,
        "domain\npartner.example\nAnn@Friend.example\nnot an entry\n",
    )
    .unwrap();
    let (code, out) = p.cli(&["rules", "import", "partners", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 entries, 1 skipped"), "{out}");
    let (code, out) = p.cli(&[
        "rules",
        "add",
        "acme-partners",
        "--list",
        "partners",
        "--scope",
        "tenant:acme",
    ]);
    assert_eq!(code, 0, "{out}");
    // Unknown names are errors that change nothing.
    assert_eq!(p.cli(&["rules", "remove", "no-such-rule"]).0, 3);
    assert_eq!(p.cli(&["rules", "show", "no-such-rule"]).0, 3);
    assert_eq!(p.cli(&["rules", "disable", "role-noreply"]).0, 3);
    assert_eq!(
        p.cli(&["rules", "add", "competitors", "--domain", "x.example"])
            .0,
        2
    );

    let recipients = [
        "ann@example.com",
        "x@competitor.example",
        "y@mail.competitor.example",
        "z@competitor.example.org",
        "postmaster@example.com",
        "Abuse@shop.example",
        "postmaster2@example.com",
        "bob@partner.example",
        "ann@friend.example",
        "bob@friend.example",
    ];
    // `submit --dry-run` tells which rules would exclude whom, and publishes nothing.
    let file = dir.path().join("request.json");
    let mut dry = request("dry", "acme", "bulk", &recipients);
    dry.as_object_mut().unwrap().remove("request_id");
    std::fs::write(&file, dry.to_string()).unwrap();
    let (code, out) = p.cli(&["--json", "submit", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["excluded"],
        json!({"excluded_by_rule": 6}),
        "{report}"
    );
    assert_eq!(
        report["rules"],
        json!({"acme-partners": 2, "competitors": 2, "role-admin": 2}),
        "{report}"
    );
    let (code, out) = p.cli(&["submit", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("excluded as excluded_by_rule: y@mail.competitor.example (rule competitors)"),
        "{out}"
    );
    assert_eq!(p.queue_depth("requests").await, 0);
    let (_conn, mut consumer) = p.subscribe_events().await;
    p.publish_json(&request("bulk-acme", "acme", "bulk", &recipients))
        .await;
    let s = p.wait_complete("bulk-acme", Duration::from_secs(60)).await;
    assert_eq!(s.excluded, counts(&[("excluded_by_rule", 6)]), "{s:?}");
    assert_eq!(
        s.rules,
        counts(&[("acme-partners", 2), ("competitors", 2), ("role-admin", 2)])
    );
    assert_eq!(s.sent, 4);
    let events = excluded_events(&mut consumer, "bulk-acme", 6).await;
    assert_eq!(
        events,
        by_rule(&[
            ("x@competitor.example", "competitors"),
            ("y@mail.competitor.example", "competitors"),
            ("postmaster@example.com", "role-admin"),
            ("Abuse@shop.example", "role-admin"),
            ("bob@partner.example", "acme-partners"),
            ("ann@friend.example", "acme-partners"),
        ])
    );
    let sent = p.sink().per_recipient();
    for r in [
        "ann@example.com",
        "z@competitor.example.org",
        "postmaster2@example.com",
        "bob@friend.example",
    ] {
        assert_eq!(sent.get(r), Some(&1), "{r} was sent: {sent:?}");
    }
    assert_eq!(sent.len(), 4, "{sent:?}");

    // The same request, transactional: the bulk-only rule does not apply.
    p.publish_json(&request("txn-acme", "acme", "transactional", &recipients))
        .await;
    let s = p.wait_complete("txn-acme", Duration::from_secs(60)).await;
    assert_eq!(
        s.rules,
        counts(&[("acme-partners", 2), ("competitors", 2)]),
        "{s:?}"
    );
    assert_eq!(s.sent, 6);
    let events = excluded_events(&mut consumer, "txn-acme", 4).await;
    assert!(
        !events.contains_key("postmaster@example.com") && events.len() == 4,
        "{events:?}"
    );

    // Another tenant's bulk request: the tenant's list does not apply.
    p.publish_json(&request("bulk-other", "other", "bulk", &recipients))
        .await;
    let s = p.wait_complete("bulk-other", Duration::from_secs(60)).await;
    assert_eq!(
        s.rules,
        counts(&[("competitors", 2), ("role-admin", 2)]),
        "{s:?}"
    );

    // `status` names the rules, in text and in JSON.
    let (code, text) = p.cli(&["status", "bulk-acme"]);
    assert_eq!(code, 0);
    assert!(text.contains("excluded_by_rule       6"), "{text}");
    assert!(text.contains("rule competitors"), "{text}");
    let (_, json_out) = p.cli(&["--json", "status", "bulk-acme"]);
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["rules"]["role-admin"], 2, "{v}");

    // A change applies to the next request without a restart.
    assert_eq!(p.cli(&["rules", "disable", "competitors"]).0, 0);
    p.publish_json(&request("bulk-after", "acme", "bulk", &recipients))
        .await;
    let s = p.wait_complete("bulk-after", Duration::from_secs(60)).await;
    assert_eq!(
        s.rules,
        counts(&[("acme-partners", 2), ("role-admin", 2)]),
        "{s:?}"
    );
    let (code, out) = p.cli(&["rules", "check", "x@eu.partner.example", "--tenant", "acme"]);
    assert_eq!(
        (code, out.trim()),
        (0, "x@eu.partner.example is excluded by rule acme-partners")
    );
    assert_eq!(p.cli(&["rules", "check", "x@competitor.example"]).0, 3);
    // Under --json every rules command answers one JSON document.
    for c in [
        &["rules", "show", "role-admin"][..],
        &["rules", "lists"],
        &["rules", "check", "ann@friend.example", "--tenant", "acme"],
        &["rules", "enable", "competitors"],
    ] {
        let mut args = vec!["--json"];
        args.extend_from_slice(c);
        let (code, out) = p.cli(&args);
        assert_eq!(code, 0, "{c:?}: {out}");
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("{c:?} printed no JSON ({e}):\n{out}"));
    }
    p.shutdown().await;
}

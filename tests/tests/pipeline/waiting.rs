//! Where waiting recipients are, as operators see them: held back by a
//! paused domain (with the pause's end and reason) or deferred until their
//! next attempt, in `status`, `status --watch`, `queue list`, `queue
//! summary` and `top`, counted in recipients; the counts follow the mail
//! when it is flushed, delivered or purged.

use std::time::Duration;

use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{wait_for, TestPipeline, Workers};
use serde_json::json;

fn status_json(p: &TestPipeline, rid: &str) -> serde_json::Value {
    let (code, out) = p.cli(&["--json", "status", rid]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

fn cli_json(p: &TestPipeline, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = p.cli_full(&all);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The first lines `mailpipe status --watch` prints (not on a terminal),
/// within `for_`.
fn watch_lines(p: &TestPipeline, rid: &str, for_: Duration) -> String {
    let mut child = std::process::Command::new(mailpipe_tests::binary("mailpipe"))
        .args(["status", "--watch", rid])
        .envs(p.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(for_);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_and_deferred_recipients_are_shown_with_why_and_until_when() {
    let smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.retrier.tiers = vec![Duration::from_millis(200), Duration::from_secs(3600)];
        s.retrier.policies.routing.schedule = vec![Duration::from_secs(3600)];
        s.retrier.policies.routing.max_attempts = 5;
    })
    .await;
    let (code, out) = p.cli(&[
        "domain",
        "pause",
        "paused.example",
        "--for",
        "1h",
        "--reason",
        "provider migration",
    ]);
    assert_eq!(code, 0, "{out}");
    let rid = "waiting-1";
    let mut recipients = Vec::new();
    for i in 0..50 {
        recipients.push(json!({"email": format!("ok-0-p{i}@paused.example")}));
    }
    for i in 0..5 {
        // Unreachable once: retried in an hour.
        recipients.push(json!({"email": format!("r443-1-d{i}@example.com")}));
        recipients.push(json!({"email": format!("ok-0-s{i}@example.com")}));
    }
    p.publish_json(&json!({
        "schema_version": 1, "request_id": rid, "campaign": "spring",
        "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
        "recipients": recipients,
    }))
    .await;
    let started = mailpipe_common::unix_now();
    let status = wait_for(
        "50 paused and 5 deferred recipients",
        Duration::from_secs(60),
        || async {
            // Unknown (exit 3) until the expander has recorded it.
            let (code, out) = p.cli(&["--json", "status", rid]);
            let v: serde_json::Value = serde_json::from_str(&out).ok().filter(|_| code == 0)?;
            let w = &v["whereabouts"];
            let paused = w["paused"].as_array()?.first()?.clone();
            (paused["recipients"] == 50 && w["deferred"]["retry"] == 5 && v["sent"] == 5)
                .then_some(v)
        },
    )
    .await;
    // status: counts in recipients, the pause's end and reason, the next attempt.
    let w = &status["whereabouts"];
    assert_eq!(w["in_lanes"], 0, "{w}");
    let paused = &w["paused"][0];
    assert_eq!(paused["domain"], "paused.example");
    assert_eq!(paused["reason"], "provider migration");
    assert_eq!(paused["by"], "operator");
    let until = paused["until"].as_i64().unwrap();
    assert!((until - started - 3600).abs() < 60, "pause until {until}");
    let next = w["next_attempt"].as_i64().unwrap();
    assert!(
        (next - started - 3600).abs() < 120,
        "next attempt {next}, accepted at {started}"
    );
    assert_eq!(status["waiting"]["paused"]["paused.example"], 50);
    assert_eq!(status["waiting"]["retry"]["example.com"], 5);
    let (code, text) = p.cli(&["status", rid]);
    assert_eq!(code, 0);
    for expected in [
        "paused.example",
        "provider migration",
        "deferred",
        "retry 5",
        "by operator",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // status --watch: what it waits for and until when, and no eta.
    let watched = watch_lines(&p, rid, Duration::from_millis(2500));
    let line = watched.lines().next().unwrap_or_default();
    assert!(line.contains("eta -"), "{watched}");
    assert!(
        line.contains("waiting: 5 recipients deferred until")
            && line.contains("(retry tier 1h)")
            && line.contains("50 paused (domain paused.example until")
            && line.contains("provider migration"),
        "{watched}"
    );

    // queue list: the same, in recipients, over every request.
    let listed = cli_json(&p, &["queue", "list"]);
    let r = &listed["recipients"];
    assert_eq!(r["deferred"]["retry"], 5, "{r}");
    assert_eq!(r["paused"][0]["domain"], "paused.example", "{r}");
    assert_eq!(r["paused"][0]["recipients"], 50, "{r}");
    assert_eq!(r["paused"][0]["reason"], "provider migration", "{r}");
    assert!(
        r["paused_domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["domain"] == "paused.example" && d["reason"] == "provider migration"),
        "{r}"
    );
    let (_, text) = p.cli(&["queue", "list"]);
    assert!(
        text.contains("provider migration") && text.contains("paused"),
        "{text}"
    );
    // Each deferred and paused recipient in the deferred list.
    let rows = cli_json(&p, &["queue", "list", "--deferred"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 55, "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r["info"]["why"] == "paused").count(),
        50
    );

    // queue summary: by domain and by campaign, all younger than 5 minutes.
    let by_domain = cli_json(&p, &["queue", "summary"]);
    let row = |v: &serde_json::Value, key: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no row {key}: {v}"))
    };
    assert_eq!(row(&by_domain, "paused.example")["total"], 50);
    assert_eq!(row(&by_domain, "paused.example")["buckets"][0], 50);
    assert_eq!(row(&by_domain, "example.com")["total"], 5);
    assert_eq!(by_domain["total"]["total"], 55, "{by_domain}");
    let by_campaign = cli_json(&p, &["queue", "summary", "--by", "campaign"]);
    assert_eq!(row(&by_campaign, "spring")["total"], 55);
    let (_, text) = p.cli(&["queue", "summary"]);
    assert!(
        text.contains("0-5m") && text.contains("paused.example"),
        "{text}"
    );

    // top: one frame, with the lanes' pending recipients and the oldest.
    let frame = cli_json(&p, &["top", "--once", "--interval", "0.5"]);
    let lanes = frame["lanes"].as_array().unwrap();
    let pending: u64 = lanes.iter().map(|l| l["pending"].as_u64().unwrap()).sum();
    assert_eq!(pending, 55, "{frame}");
    assert!(
        lanes
            .iter()
            .any(|l| l["oldest_age_seconds"].as_i64().is_some_and(|a| a >= 0)),
        "{frame}"
    );

    // domain show and list say why.
    let (_, text) = p.cli(&["domain", "show", "paused.example"]);
    assert!(text.contains("provider migration"), "{text}");
    let (_, text) = p.cli(&["domain", "list"]);
    assert!(text.contains("provider migration"), "{text}");

    // Resumed and flushed: the paused recipients are sent and leave the
    // counts; the reason is gone with the pause.
    let (code, _) = p.cli(&["domain", "resume", "paused.example"]);
    assert_eq!(code, 0);
    let shown = cli_json(&p, &["domain", "show", "paused.example"]);
    assert!(shown["pause_note"].is_null(), "{shown}");
    let (code, _) = p.cli(&["queue", "flush", "--domain", "paused.example"]);
    assert_eq!(code, 0);
    wait_for("the paused recipients", Duration::from_secs(60), || async {
        let v = status_json(&p, rid);
        (v["sent"] == 55).then_some(())
    })
    .await;
    let v = status_json(&p, rid);
    assert!(v["waiting"].get("paused").is_none(), "{v}");
    assert!(v["whereabouts"]["paused"].as_array().unwrap().is_empty());
    assert_eq!(v["whereabouts"]["deferred"]["retry"], 5);
    // Purged: the deferred ones end as removed and leave the counts too.
    let (code, _) = p.cli(&["queue", "purge", "--campaign", rid, "--yes"]);
    assert_eq!(code, 0);
    let v = status_json(&p, rid);
    assert_eq!(v["removed"], 5, "{v}");
    assert_eq!(v["waiting"], json!({}), "{v}");
    assert_eq!(v["whereabouts"]["in_lanes"], 0);
    p.shutdown().await;
}

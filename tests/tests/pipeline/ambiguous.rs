//! Ambiguous transactions: a sender killed with `kill -9` while servers
//! hold their final replies. The SMTP peer commits each message and only
//! then, 200 ms later, answers 250 (as an MTA writes its queue file and then
//! replies), so every kill leaves transactions whose data the server has and
//! whose answer mailpipe never read: the window of RFC 1047, made wide.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::StreamExt;
use mailpipe_common::config::OnAmbiguous;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{events_in, sample_request, wait_for, TestPipeline, Workers};

const KILLS: usize = 3;

/// A campaign of `n` through sender processes, `KILLS` of which are killed
/// mid-run (each replaced at once). Returns the pipeline, the peer and the
/// recipients mailpipe reported ambiguous (from its `ambiguous` events).
async fn campaign_with_kills(
    rid: &str,
    n: usize,
    on: OnAmbiguous,
) -> (
    TestPipeline,
    ScriptedSmtp,
    Arc<Mutex<BTreeSet<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let smtp = ScriptedSmtp::start_with_options(&["--commit-delay", "0.2"]);
    let mut p = TestPipeline::spawn_for_port(
        smtp.port,
        Workers {
            expander: true,
            sender: false,
            retrier: true,
        },
        |s| {
            s.sender.on_ambiguous = on;
            s.sender.bulk_concurrency = 16;
            // A killed sender's leases free its messages this soon.
            s.sender.lease = Duration::from_secs(6);
        },
    )
    .await;
    let (events_conn, mut events) = p.subscribe_events().await;
    let reported = Arc::new(Mutex::new(BTreeSet::new()));
    let collector = {
        let reported = reported.clone();
        tokio::spawn(async move {
            let _conn = events_conn;
            while let Some(Ok(d)) = events.next().await {
                for e in events_in(&d.data) {
                    if e["event"] == "ambiguous" {
                        let to = e["recipient"].as_str().unwrap_or_default();
                        reported.lock().unwrap().insert(to.to_ascii_lowercase());
                    }
                }
            }
        })
    };
    p.publish_json(&sample_request(rid, n, "example.com")).await;
    let mut sender = p.spawn_process("mailpipe-sender");
    for k in 1..=KILLS {
        let target = n * k / (KILLS + 2);
        wait_for(
            "the campaign to be mid-run",
            Duration::from_secs(120),
            || async { (smtp.count() >= target).then_some(()) },
        )
        .await;
        p.kill_process(sender);
        sender = p.spawn_process("mailpipe-sender");
    }
    assert!(
        smtp.count() < n,
        "the campaign finished before the last kill; nothing was tested"
    );
    (p, smtp, reported, collector)
}

/// Recipients the peer received more than once.
fn duplicates(per: &BTreeMap<String, usize>) -> BTreeSet<String> {
    per.iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, _)| r.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resend_every_duplicate_after_kill_9_is_a_recipient_mailpipe_reported_ambiguous() {
    let n = 1_200;
    let rid = "ambiguous-resend";
    let (p, smtp, reported, collector) = campaign_with_kills(rid, n, OnAmbiguous::Resend).await;
    let status = p.wait_complete(rid, Duration::from_secs(240)).await;
    // The last events reach the collector.
    tokio::time::sleep(Duration::from_millis(500)).await;
    collector.abort();
    let per = smtp.per_recipient();
    let dups = duplicates(&per);
    let reported = reported.lock().unwrap().clone();
    eprintln!(
        "{KILLS} kills: {} duplicate(s) at the server, {} recipient(s) reported ambiguous, {} unreported duplicate(s)",
        dups.len(),
        reported.len(),
        dups.difference(&reported).count()
    );
    // Nothing lost.
    assert_eq!(per.len(), n);
    assert_eq!(status.sent, n as u64);
    // Every duplicate was reported; the kills did open the window.
    let unreported: Vec<_> = dups.difference(&reported).collect();
    assert!(
        unreported.is_empty(),
        "unreported duplicates: {unreported:?}"
    );
    assert!(
        !reported.is_empty(),
        "no ambiguous recipient in {KILLS} kills: nothing was tested"
    );
    // Counted once each, in status as in the events.
    assert_eq!(status.ambiguous as usize, reported.len());
    // Each is marked in its history.
    let (code, out) = p.cli(&[
        "--json",
        "queue",
        "show",
        &mailpipe_common::message::message_id(rid, reported.iter().next().unwrap()),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"decision\": \"ambiguous\""), "{out}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hold_kill_9_sends_nobody_twice_and_the_operator_lists_and_releases_the_held() {
    let n = 1_200;
    let rid = "ambiguous-hold";
    let (p, smtp, reported, collector) = campaign_with_kills(rid, n, OnAmbiguous::Hold).await;
    // Everything ends but the held: they wait for the operator.
    let status = wait_for(
        "all but the held to end",
        Duration::from_secs(240),
        || async {
            let s = p.status(rid).await;
            (s.parts_done == 1 && s.pending == s.ambiguous).then_some(s)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per = smtp.per_recipient();
    let held: BTreeSet<String> = reported.lock().unwrap().clone();
    eprintln!(
        "{KILLS} kills: {} recipient(s) held as ambiguous, {} of them already at the server, {} duplicate(s)",
        held.len(),
        held.iter().filter(|r| per.contains_key(*r)).count(),
        duplicates(&per).len()
    );
    assert!(
        !held.is_empty(),
        "no ambiguous recipient in {KILLS} kills: nothing was tested"
    );
    // Nobody twice; nobody lost: each recipient is at the server or held.
    assert!(duplicates(&per).is_empty(), "{:?}", duplicates(&per));
    for i in 0..n {
        let r = format!("user{i}@example.com");
        assert!(
            per.contains_key(&r) || held.contains(&r),
            "{r} neither sent nor held"
        );
    }
    assert_eq!(status.ambiguous as usize, held.len());
    // The operator sees exactly the held ones.
    let (code, out) = p.cli(&["--json", "queue", "list", "--ambiguous"]);
    assert_eq!(code, 0, "{out}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let listed: BTreeSet<String> = listed
        .iter()
        .map(|r| r["recipient"].as_str().unwrap().to_ascii_lowercase())
        .collect();
    assert_eq!(listed, held);
    let (code, out) = p.cli(&["queue", "list", "--ambiguous"]);
    assert_eq!(code, 0);
    assert!(out.contains("no answer"), "{out}");
    // An unknown id is an error that releases nothing.
    let (code, _) = p.cli(&["queue", "release", "no-such-message", "--yes"]);
    assert_eq!(code, 3);
    // One is removed (state removed), the rest released and sent.
    let first = held.iter().next().unwrap().clone();
    let first_id = mailpipe_common::message::message_id(rid, &first);
    let (code, out) = p.cli(&["queue", "remove", &first_id, "--yes"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = p.cli(&["--json", "queue", "release", "--all", "--yes"]);
    assert_eq!(code, 0, "{out}");
    let released: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        released["released"].as_array().unwrap().len(),
        held.len() - 1
    );
    let status = p.wait_complete(rid, Duration::from_secs(120)).await;
    collector.abort();
    assert_eq!(status.removed, 1);
    assert_eq!(status.sent as usize, n - 1);
    let per = smtp.per_recipient();
    // Only released recipients can have it twice, and the operator chose so.
    for d in duplicates(&per) {
        assert!(
            held.contains(&d) && d != first,
            "{d} sent twice, not released"
        );
    }
    for r in held.iter().filter(|r| **r != first) {
        assert!(per.contains_key(r), "{r} released but not sent");
    }
    let (code, out) = p.cli(&["--json", "queue", "list", "--ambiguous"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "[]");
    p.shutdown().await;
}

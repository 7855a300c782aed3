//! The qualification workflow: a failure text no rule knows waits in the
//! table as `to_qualify`; an operator qualifies it, and the running sender
//! and retrier classify the next failure with that text accordingly,
//! without a restart; the kept rows, exported as a rules file and imported
//! with a restart, classify the same.

use std::time::Duration;

use mailpipe_common::message::message_id;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{request_for, wait_for, TestPipeline, Workers};
use serde_json::Value;

/// The text the scripted peer's `odd` recipients get, normalized.
const GUEST_TEXT: &str = "550 5.0.0 <*>: not on the guest list of this party";

/// The rows `mailpipe bounces` prints (`--to-qualify` with `waiting`).
fn rows(p: &TestPipeline, waiting: bool) -> Vec<Value> {
    let mut args = vec!["--json", "bounces"];
    if waiting {
        args.push("--to-qualify");
    }
    let (code, out) = p.cli(&args);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// Sends one request to `local@example.com` (which fails for ever) and
/// returns how it ended: the terminal record's detail, the quarantine
/// record of the address, and the rule of its last failed attempt.
async fn fail_once(p: &TestPipeline, rid: &str, local: &str) -> (String, Option<Value>, Value) {
    p.publish_json(&request_for(rid, &[local])).await;
    let status = p.wait_complete(rid, Duration::from_secs(60)).await;
    assert_eq!(status.dead.values().sum::<u64>(), 1, "{rid}: {status:?}");
    let address = format!("{local}@example.com");
    let id = message_id(rid, &address);
    let done = p.store.done(&id).await.unwrap().expect("terminal record");
    let history = p.store.history(&id).await.unwrap();
    let rule = history
        .last()
        .map(|h| h["rule"].clone())
        .unwrap_or_default();
    let quarantine = p.store.quarantine(&address).await.unwrap();
    (done.detail, quarantine, rule)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qualified_text_is_applied_by_running_workers_and_its_export_classifies_the_same() {
    let smtp = ScriptedSmtp::start();
    let mut p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.quarantine.threshold = 5;
    })
    .await;

    // 1. An unknown reply: the fallback decides (no retry, counted against
    //    the address but not quarantining it), and the text waits.
    let (detail, quarantine, rule) = fail_once(&p, "guests-1", "odd-0-a").await;
    assert!(detail.starts_with("undefined:"), "{detail}");
    assert!(quarantine.is_none(), "{quarantine:?}");
    assert_eq!(rule, Value::Null);
    let waiting = rows(&p, true);
    let row = waiting
        .iter()
        .find(|r| r["text"] == GUEST_TEXT)
        .unwrap_or_else(|| panic!("{GUEST_TEXT} is not to qualify: {waiting:?}"));
    assert_eq!(row["qualification"], "to_qualify");
    assert_eq!(row["count"], 1);
    let id = row["id"].as_str().unwrap().to_string();
    // The table printed for people shows the id too.
    let (_, table) = p.cli(&["bounces"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains(GUEST_TEXT)),
        "{table}"
    );

    // 2. The operator qualifies it. An unknown id is refused, writing nothing.
    let (code, _) = p.cli(&[
        "bounces",
        "qualify",
        "ffffffffffffffff",
        "--type",
        "hard",
        "--reason",
        "user_unknown",
    ]);
    assert_eq!(code, 3);
    // A decision the classifier refuses (a block aimed at the sender that
    // would quarantine the recipient) is bad usage, and writes nothing.
    let (code, _) = p.cli(&[
        "bounces",
        "qualify",
        &id,
        "--type",
        "hard",
        "--reason",
        "refused",
        "--quarantine",
        "immediate",
    ]);
    assert_eq!(code, 2);
    assert_eq!(p.store.kept_rules_version().await.unwrap(), 0);
    let (code, out) = p.cli(&[
        "bounces",
        "qualify",
        &id,
        "--type",
        "hard",
        "--reason",
        "user_unknown",
        "--by",
        "ann",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(rows(&p, true).iter().all(|r| r["id"] != id.as_str()));
    let line = "550 5.0.0 <odd-0-z@example.com>: not on the guest list of this party";
    let (code, classified) = p.cli(&["classify", line]);
    assert_eq!(code, 0);
    let classified: Value = serde_json::from_str(&classified).unwrap();
    assert_eq!(classified["rule"], format!("kept:{id}"));
    assert_eq!(classified["row"], id.as_str());
    assert_eq!(classified["reason"], "user_unknown");

    // 3. The running sender and retrier take it up within the poll interval
    //    (their metric says which version they classify with) ...
    for worker in ["sender", "retrier"] {
        wait_for(
            &format!("the {worker} to apply the kept row"),
            Duration::from_secs(10),
            || async {
                (p.metric(worker, "mailpipe_kept_rules_version").await == 1.0).then_some(())
            },
        )
        .await;
    }
    // ... and the next failure with that text is user_unknown, hard, and
    // quarantines the address at once.
    let (detail, quarantine, rule) = fail_once(&p, "guests-2", "odd-0-b").await;
    assert!(detail.starts_with("user_unknown:"), "{detail}");
    assert_eq!(
        quarantine.as_ref().and_then(|q| q["reason"].as_str()),
        Some("user_unknown"),
        "{quarantine:?}"
    );
    assert_eq!(rule, format!("kept:{id}"));
    let (code, shown) = p.cli(&["--json", "bounces", "show", &id]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["qualification"], "keep");
    assert_eq!(shown["count"], 2);
    assert_eq!(shown["qualified_by"], "ann");
    assert!(shown["qualified_at"].as_i64().unwrap() > 0);
    assert!(shown["first"]
        .as_str()
        .unwrap()
        .contains("odd-0-a@example.com"));
    let (code, _) = p.cli(&["bounces", "show", "ffffffffffffffff"]);
    assert_eq!(code, 3);
    // The count can be reset.
    assert_eq!(p.cli(&["bounces", "reset", &id]).0, 0);
    assert_eq!(p.store.bounce(&id).await.unwrap().unwrap().count, 0);

    // 4. Export; then stop the workers, set the row aside (so only the file
    //    can classify the text: ignored rows are no rules), import the file
    //    and start them again.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kept.yaml");
    let file_arg = file.to_str().unwrap();
    assert_eq!(
        p.cli(&["bounces", "export-rules", "--output", file_arg]).0,
        0
    );
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(exported.contains(&format!("kept:{id}")), "{exported}");
    p.stop_worker("sender").await;
    p.stop_worker("retrier").await;
    assert_eq!(p.cli(&["bounces", "ignore", &id]).0, 0);
    assert!(rows(&p, true).iter().all(|r| r["id"] != id.as_str()));
    let (_, without) = p.cli(&["classify", line]);
    let without: Value = serde_json::from_str(&without).unwrap();
    assert_eq!(without["rule"], Value::Null, "ignored: no rule");
    let (_, imported) = p.cli(&["classify", "--rules", file_arg, line]);
    let imported: Value = serde_json::from_str(&imported).unwrap();
    assert_eq!(
        imported, classified,
        "the file classifies as the kept row did"
    );

    p.settings.classifier.rules_files = vec![file.clone()];
    p.start_worker("sender");
    p.start_worker("retrier");
    let (detail, quarantine, rule) = fail_once(&p, "guests-3", "odd-0-c").await;
    assert!(detail.starts_with("user_unknown:"), "{detail}");
    assert_eq!(
        quarantine.as_ref().and_then(|q| q["reason"].as_str()),
        Some("user_unknown")
    );
    assert_eq!(rule, format!("kept:{id}"));
    // Still counted while ignored.
    assert_eq!(p.store.bounce(&id).await.unwrap().unwrap().count, 1);
    p.shutdown().await;
}

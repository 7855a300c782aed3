//! Destinations that push back: an MX host that answers 421 at connect, or
//! accepts only so many connections, is not dialled again at once (its
//! dials are held back, the connections it accepted carry the mail), and
//! its domain slows down.

use std::time::{Duration, Instant};

use mailpipe_common::config::{DeliveryMode, TlsMode};
use mailpipe_tests::dns::Dns;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{free_port, wait_for, TestPipeline, Workers};
use serde_json::json;

/// How long a refused MX address is held in these scenarios.
const HOLD: Duration = Duration::from_secs(2);

fn request(id: &str, addresses: &[String]) -> serde_json::Value {
    let recipients: Vec<_> = addresses.iter().map(|a| json!({"email": a})).collect();
    json!({
        "schema_version": 1, "request_id": id,
        "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
        "recipients": recipients,
    })
}

/// A pipeline in MX mode against `dns`, MX hosts on `port`.
async fn mx_pipeline(port: u16, dns: &Dns) -> TestPipeline {
    let nameserver = dns.nameserver();
    TestPipeline::spawn_for_port(port, Workers::ALL, |s| {
        s.sender.mode = DeliveryMode::Mx;
        s.sender.mx.port = port;
        s.sender.mx.nameservers = vec![nameserver];
        s.sender.mx.tls = TlsMode::None;
        s.sender.mx.timeout = Duration::from_secs(5);
        s.sender.mx.pool_size = 4;
        s.sender.route_retry_after = HOLD;
        // A message that happens to probe the held host several times must
        // not run out of attempts in these scenarios.
        s.retrier.policies.throttled.max_attempts = 50;
    })
    .await
}

fn domain_show(p: &TestPipeline, domain: &str) -> serde_json::Value {
    let (code, out) = p.cli(&["--json", "domain", "show", domain]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_host_answering_421_at_connect_is_held_back_then_takes_everything() {
    let port = free_port();
    let mx = ScriptedSmtp::start_at_with("127.0.0.5", port, &["--max-connections", "0"]);
    let dns = Dns::start(&[
        "--mx-host=busy.test,mx.busy.test,10".into(),
        "--host-record=mx.busy.test,127.0.0.5".into(),
    ]);
    let p = mx_pipeline(port, &dns).await;
    let n = 100;
    let addresses: Vec<String> = (0..n).map(|i| format!("ok-0-{i}@busy.test")).collect();
    let started = Instant::now();
    p.publish_json(&request("held", &addresses)).await;

    // The messages meet a held host: they wait in the delay tiers, without
    // dialling it and without counting an attempt.
    wait_for(
        "the deferrals to outnumber the messages",
        Duration::from_secs(60),
        || async {
            let deferred = p
                .metric(
                    "sender",
                    "mailpipe_deliveries_total{lane=\"bulk\",outcome=\"throttled\"}",
                )
                .await;
            (deferred >= n as f64).then_some(())
        },
    )
    .await;
    // A window of more than one hold: the host is probed once per hold.
    tokio::time::sleep(HOLD + Duration::from_secs(1)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let connects = mx.connections();
    // The first messages dial at once, up to the pool's 4 connections,
    // before the first 421 is read; then one probe per hold. Redialling per
    // message would be some 100.
    let most = 4 + (elapsed / HOLD.as_secs_f64()).ceil() as usize;
    eprintln!("{connects} connections in {elapsed:.1} s for {n} messages");
    assert!(
        connects <= most,
        "{connects} connections in {elapsed:.1} s (at most {most}): the refusing host was redialled"
    );
    assert_eq!(mx.refused_connections(), connects);
    assert_eq!(mx.count(), 0);

    // The domain's policy saw the refusals: its breaker counted them, and
    // the 421 slowed it down.
    let show = domain_show(&p, "busy.test");
    assert!(show["failures"].as_u64() >= Some(1), "{show}");
    assert!(show["slowdown"].as_f64().is_some(), "{show}");

    // The host takes connections again: everything is delivered, once.
    mx.set_max_connections(None);
    let s = p.wait_complete("held", Duration::from_secs(90)).await;
    assert_eq!(s.sent, n as u64, "{s:?}");
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    let per = mx.per_recipient();
    assert_eq!(per.len(), n);
    assert!(
        per.values().all(|c| *c == 1),
        "a message was delivered twice"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cap_is_learned_and_a_421_halves_the_rate() {
    let port = free_port();
    let mx = ScriptedSmtp::start_at_with("127.0.0.6", port, &["--max-connections", "1"]);
    let dns = Dns::start(&[
        "--mx-host=capped.test,mx.capped.test,10".into(),
        "--host-record=mx.capped.test,127.0.0.6".into(),
    ]);
    let p = mx_pipeline(port, &dns).await;
    let n = 300;
    let addresses: Vec<String> = (0..n).map(|i| format!("ok-0-a{i}@capped.test")).collect();
    let started = Instant::now();
    p.publish_json(&request("capped-1", &addresses)).await;
    let s = p.wait_complete("capped-1", Duration::from_secs(120)).await;
    assert_eq!(s.sent, n as u64, "{s:?}");
    let elapsed = started.elapsed().as_secs_f64();

    // The pool of 4 learned that one connection is what the host takes:
    // the first dials past it were refused, then one growth probe per
    // hold at most, not a refused dial per message.
    let refused = mx.refused_connections();
    let most = 3 + (elapsed / HOLD.as_secs_f64()).ceil() as usize;
    eprintln!(
        "{n} messages in {elapsed:.1} s over {} connections, {refused} refused at connect",
        mx.connections()
    );
    assert!(
        refused >= 1,
        "the host never refused: the scenario tested nothing"
    );
    assert!(
        refused <= most,
        "{refused} connections refused in {elapsed:.1} s (at most {most})"
    );
    // Those refusals were about connections, one being open: the rate was
    // not cut for them.
    let show = domain_show(&p, "capped.test");
    assert!(show["slowdown"].is_null(), "{show}");
    assert!(show["failures"].as_u64() >= Some(1), "{show}");

    // A 421 in a transaction (the host closes it) halves the rate the
    // domain was sent at.
    p.publish_json(&request(
        "capped-421",
        &["r421-1-x@capped.test".to_string()],
    ))
    .await;
    p.wait_complete("capped-421", Duration::from_secs(30)).await;
    let show = domain_show(&p, "capped.test");
    let factor = show["slowdown"]
        .as_f64()
        .unwrap_or_else(|| panic!("{show}"));
    assert!(factor < 0.6, "{show}");
    let slowed = show["slowed_rate_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no measured rate was slowed: {show}"));

    // And it applies: the next messages go no faster than it allows.
    let m = 60;
    let second: Vec<String> = (0..m).map(|i| format!("ok-0-b{i}@capped.test")).collect();
    p.publish_json(&request("capped-2", &second)).await;
    let s = p.wait_complete("capped-2", Duration::from_secs(120)).await;
    assert_eq!(s.sent, m as u64, "{s:?}");
    let mut times: Vec<f64> = mx
        .attempts()
        .into_iter()
        .filter(|a| a.stage == "data" && a.code == 250 && a.rcpt.starts_with("ok-0-b"))
        .map(|a| a.time)
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(times.len(), m);
    let span = times[m - 1] - times[0];
    let least = 0.8 * (m - 1) as f64 / slowed;
    eprintln!("slowed to {slowed:.1}/s: {m} messages in {span:.2} s (at least {least:.2} s)");
    assert!(
        span >= least,
        "{m} messages in {span:.2} s: faster than the slow-down's {slowed:.1}/s"
    );
    let per = mx.per_recipient();
    assert_eq!(per.len(), n + m + 1);
    assert!(
        per.values().all(|c| *c == 1),
        "a message was delivered twice"
    );
    p.shutdown().await;
}

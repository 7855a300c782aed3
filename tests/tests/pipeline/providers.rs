//! Mailbox providers that push back, played by the provider simulator
//! (`mailpipe_tests::providers`): many domains behind a few providers, each
//! with its own connection and rate limits, in MX mode through a loopback
//! DNS server.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use mailpipe_common::config::{DeliveryMode, Settings, TlsMode};
use mailpipe_tests::dns::Dns;
use mailpipe_tests::providers::{self, ProviderSpec, Simulator};
use mailpipe_tests::{wait_for, TestPipeline, Workers};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Simulated providers, their MX records and their domains.
pub struct Fleet {
    pub sim: Simulator,
    pub dns: Dns,
    /// Each domain with the name of its provider.
    pub domains: Vec<(String, String)>,
}

impl Fleet {
    /// Starts the providers and a DNS server in which `domains` domains
    /// (`{tag}-d{i}.test`) are spread over them in turn, each provider
    /// being the MX host `mx.{name}-mail.test` (so its site, by registered
    /// domain, is `{name}-mail.test`).
    pub async fn start(tag: &str, specs: &[ProviderSpec], domains: usize) -> Self {
        let sim = Simulator::start(specs)
            .await
            .expect("the provider simulator");
        let mut records = Vec::new();
        for s in specs {
            records.push(format!("--host-record=mx.{}-mail.test,{}", s.name, s.ip));
        }
        let domains: Vec<(String, String)> = (0..domains)
            .map(|i| {
                let spec = &specs[i % specs.len()];
                (format!("{tag}-d{i}.test"), spec.name.clone())
            })
            .collect();
        for (d, provider) in &domains {
            records.push(format!("--mx-host={d},mx.{provider}-mail.test,10"));
        }
        let dns = Dns::start(&records);
        Self { sim, dns, domains }
    }

    /// A pipeline delivering in MX mode to these providers.
    pub async fn pipeline(&self, tweak: impl FnOnce(&mut Settings)) -> TestPipeline {
        let port = self.sim.port;
        let nameserver = self.dns.nameserver();
        TestPipeline::spawn_for_port(port, Workers::ALL, |s| {
            s.sender.mode = DeliveryMode::Mx;
            s.sender.mx.port = port;
            s.sender.mx.nameservers = vec![nameserver];
            s.sender.mx.tls = TlsMode::None;
            s.sender.mx.timeout = Duration::from_secs(5);
            tweak(s);
        })
        .await
    }

    /// `per_domain` recipients at every domain (`{prefix}{j}@domain`).
    pub fn recipients(&self, prefix: &str, per_domain: usize) -> Vec<String> {
        (0..per_domain)
            .flat_map(|j| {
                self.domains
                    .iter()
                    .map(move |(d, _)| format!("{prefix}{j}@{d}"))
            })
            .collect()
    }

    /// Checks that every address was delivered exactly once, at its own
    /// provider, and nothing else was.
    pub fn assert_delivered_once(&self, addresses: &[String]) {
        let provider_of: HashMap<&str, &str> = self
            .domains
            .iter()
            .map(|(d, p)| (d.as_str(), p.as_str()))
            .collect();
        let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
        for a in addresses {
            let domain = a.rsplit_once('@').expect("an address").1;
            expected
                .entry(provider_of[domain])
                .or_default()
                .push(a.to_ascii_lowercase());
        }
        for stats in self.sim.stats() {
            let dups = stats.duplicates();
            assert!(dups.is_empty(), "{}: delivered twice: {dups:?}", stats.name);
            let mut got: Vec<&String> = stats.per_recipient.keys().collect();
            got.sort();
            let mut want: Vec<&String> = expected
                .get(stats.name.as_str())
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            want.sort();
            assert_eq!(
                got.len(),
                want.len(),
                "{}: {} recipients delivered, {} expected",
                stats.name,
                got.len(),
                want.len()
            );
            assert_eq!(got, want, "{}: not the recipients it hosts", stats.name);
        }
    }
}

pub fn request(id: &str, addresses: &[String]) -> serde_json::Value {
    let recipients: Vec<_> = addresses.iter().map(|a| json!({"email": a})).collect();
    json!({
        "schema_version": 1, "request_id": id,
        "from": "ACME <news@acme.example>", "subject": "Hi", "text": "Hello.",
        "recipients": recipients,
    })
}

/// `mailpipe site list` as (site, domains), sorted.
pub fn site_list(p: &TestPipeline) -> Vec<(String, u64)> {
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
    sites
}

/// Addresses in quarantine (`mailpipe quarantine list`).
pub fn quarantined(p: &TestPipeline) -> Vec<serde_json::Value> {
    let (code, out) = p.cli(&["--json", "quarantine", "list"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 3, last)
}

/// Reads one (possibly multi-line) SMTP reply; returns its last line.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).await.unwrap() > 0,
            "connection closed"
        );
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_enforces_connections_rate_and_blocks_and_counts_them() {
    let mut spec = ProviderSpec::new("solo", ip(9), 2, 5.0);
    spec.burst = 3.0;
    let sim = Simulator::start(&[spec]).await.unwrap();
    let addr = (ip(9), sim.port);
    let connect = || async {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        let mut r = BufReader::new(r);
        let greeting = reply(&mut r).await;
        (r, w, greeting)
    };
    let (mut r1, mut w1, g1) = connect().await;
    let (_r2, _w2, g2) = connect().await;
    let (_r3, _w3, g3) = connect().await;
    assert!(g1.starts_with("220") && g2.starts_with("220"), "{g1} {g2}");
    assert_eq!(
        g3,
        providers::TOO_MANY_CONNECTIONS,
        "the third is over the limit"
    );

    // Pipelined: the burst of 3 is accepted, the 4th recipient is throttled.
    w1.write_all(
        b"EHLO t\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<One@y.test>\r\nRCPT TO:<two@y.test>\r\nRCPT TO:<three@y.test>\r\nRCPT TO:<four@y.test>\r\nDATA\r\n",
    )
    .await
    .unwrap();
    let replies: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..7 {
            v.push(reply(&mut r1).await);
        }
        v
    };
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    assert!(
        replies[2..5].iter().all(|l| l.starts_with("250 2.1.5")),
        "{replies:?}"
    );
    assert_eq!(replies[5], providers::RATE_LIMITED_451);
    assert!(replies[6].starts_with("354"), "{replies:?}");
    w1.write_all(b"Subject: x\r\n\r\nhello\r\n.\r\n")
        .await
        .unwrap();
    assert!(reply(&mut r1).await.starts_with("250 2.0.0"));

    // Blocked: every RCPT gets the reputation block, and DATA finds no recipient.
    sim.provider("solo").block_for(Duration::from_secs(60));
    w1.write_all(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<five@y.test>\r\nDATA\r\n")
        .await
        .unwrap();
    assert!(reply(&mut r1).await.starts_with("250"));
    assert_eq!(reply(&mut r1).await, providers::REPUTATION_BLOCK);
    assert!(reply(&mut r1).await.starts_with("554"));
    sim.provider("solo").unblock();
    w1.write_all(b"QUIT\r\n").await.unwrap();
    assert!(reply(&mut r1).await.starts_with("221"));

    let s = sim.provider("solo").stats();
    assert_eq!(s.counts.connections_accepted, 2);
    assert_eq!(s.counts.connections_refused, 1);
    assert_eq!(s.counts.peak_connections, 2);
    assert_eq!(s.counts.transactions, 2);
    assert_eq!(s.counts.transactions_delivered, 1);
    assert_eq!(s.counts.transactions_throttled, 1);
    assert_eq!(s.counts.transactions_blocked, 1);
    assert_eq!(s.counts.delivered, 3);
    assert_eq!(s.counts.recipients_throttled, 1);
    assert_eq!(s.counts.recipients_blocked, 1);
    assert_eq!(s.per_recipient.get("one@y.test"), Some(&1));
    assert!(s.duplicates().is_empty());
    let timeline_delivered: u64 = s.timeline.iter().map(|t| t.delivered as u64).sum();
    assert_eq!(timeline_delivered, 3);

    // Its replies mean to mailpipe what they mean from a real provider.
    let classifier = mailpipe_common::classify::Classifier::builder()
        .build()
        .unwrap();
    for (text, reason, scope) in [
        (providers::TOO_MANY_CONNECTIONS, "rate_limited", "domain"),
        (providers::RATE_LIMITED_451, "rate_limited", "domain"),
        (providers::RATE_LIMITED_421, "rate_limited", "domain"),
        (providers::REPUTATION_BLOCK, "refused", "sender"),
    ] {
        let c = classifier.classify(&mailpipe_common::classify::Failure::from_reply_text(text));
        assert_eq!(
            (c.reason.as_str(), c.scope.as_str()),
            (reason, scope),
            "{text}: {c:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_domains_at_three_providers_are_three_sites_and_each_recipient_gets_one_message(
) {
    let specs = [
        ProviderSpec::new("alpha", ip(1), 8, 1000.0),
        ProviderSpec::new("beta", ip(2), 8, 1000.0),
        ProviderSpec::new("gamma", ip(3), 8, 1000.0),
    ];
    let fleet = Fleet::start("three", &specs, 200).await;
    let p = fleet.pipeline(|_| {}).await;
    let addresses = fleet.recipients("u", 3);
    p.publish_json(&request("three-sites", &addresses)).await;
    let s = p
        .wait_complete("three-sites", Duration::from_secs(180))
        .await;
    assert_eq!(s.sent, 600, "{s:?}");
    assert!(s.dead.is_empty(), "{:?}", s.dead);
    fleet.assert_delivered_once(&addresses);
    // A sender counts each domain at its site within a quarter of a second
    // of its attempt.
    wait_for(
        "every domain counted at its site",
        Duration::from_secs(5),
        || async {
            let (_, out) = p.cli(&["--json", "site", "list"]);
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
            let domains: u64 = rows.iter().filter_map(|r| r["domains"].as_u64()).sum();
            (domains == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        site_list(&p),
        [
            ("alpha-mail.test".to_string(), 67),
            ("beta-mail.test".to_string(), 67),
            ("gamma-mail.test".to_string(), 66),
        ]
    );
    assert!(quarantined(&p).is_empty());
    p.shutdown().await;
}

//! `mailpipe-bench`: the measuring half of `scripts/bench`.
//!
//! Subcommands (each prints one JSON object on stdout, diagnostics on stderr):
//! * `broker`   — the broker ceiling: publish N messages with a window of
//!   outstanding confirms into a fresh durable quorum queue, then consume them
//!   with acks (one by one, or `multiple` every K), then delete the queue.
//! * `publish`  — one bulk request (optionally split in parts) of N recipients
//!   at one domain (or spread over many, with role local parts and typo
//!   domains among them: `--domains`, `--role-every`, `--extra-every`),
//!   templates padded so that the rendered message is ~SIZE bytes.
//! * `trickle`  — T transactional requests (one recipient each) spread evenly
//!   over D seconds, each carrying its publish time in `X-Bench-Published-Ms`.
//! * `sink`     — an SMTP sink that records the arrival time of every message
//!   (at the final "."), its size and its `X-Mailpipe-Id` / `X-Bench-Published-Ms`
//!   headers; writes them as TSV and exits once it has received `--expect`.
//! * `ready`    — waits until queues exist and have consumers.
//! * `wait`     — polls a Redis hash field (or hash length) until it reaches a target.
//! * `cleanup`  — deletes the queues named on stdin, a prefix's exchanges and
//!   every Redis key under a prefix.
//! * `stream`   — reads a stream (the archive) from its first message: how
//!   many messages and bytes it holds, how fast they read back (`stream.rs`).
//! * `providers` — the provider simulator of the test harness
//!   (tests/src/providers.rs, compiled in here): several mailbox providers
//!   on loopback addresses, each with its connection and rate limits; exits
//!   once `--expect` recipients were delivered and writes its counts.
//! * `sign`     — DKIM signing rates (RSA-2048, Ed25519) of *ring*, aws-lc-rs
//!   and OpenSSL on 1 and 2 threads, interleaved in rounds (see `sign.rs`).

// The test harness's simulator, shared as a source file so that this tool
// stays independent of mailpipe's crates. The tests steer providers at run
// time; this tool only runs them and reads their counts.
#[allow(dead_code)]
#[path = "../../tests/src/providers.rs"]
mod providers;
mod sign;
mod stream;

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS: &str = "redis://127.0.0.1:6379";

#[derive(Parser)]
#[command(name = "mailpipe-bench")]
struct Cli {
    #[arg(long, global = true, default_value = AMQP)]
    amqp: String,
    #[arg(long, global = true, default_value = REDIS)]
    redis: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Broker {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        size: usize,
        /// Publishes awaiting their confirm at most.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        #[arg(long, default_value_t = 256)]
        prefetch: u16,
        /// Ack with `multiple` every this many deliveries (1 = one by one).
        #[arg(long, default_value_t = 1)]
        ack_every: u64,
    },
    Publish {
        /// The installation's prefix (exchange name).
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        request_id: String,
        #[arg(long)]
        recipients: u64,
        #[arg(long, default_value_t = 1)]
        parts: u64,
        #[arg(long, default_value_t = 5000)]
        size: usize,
        #[arg(long, default_value = "bench.example")]
        domain: String,
        #[command(flatten)]
        mix: Mix,
        /// The request's tenant (tenant-scoped exclusion rules apply to it).
        #[arg(long)]
        tenant: Option<String>,
        /// Write the request(s) to this file instead of publishing (one JSON per line).
        #[arg(long)]
        dry_run: Option<String>,
    },
    Trickle {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        request_prefix: String,
        #[arg(long)]
        count: u64,
        /// Spread the requests over this many seconds.
        #[arg(long)]
        over: f64,
        #[arg(long, default_value_t = 5000)]
        size: usize,
        #[arg(long, default_value = "bench.example")]
        domain: String,
    },
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The chosen port is written here once listening.
        #[arg(long)]
        port_file: String,
        /// Records (TSV: arrival_ms, bytes, mailpipe id, published ms) go here.
        #[arg(long)]
        out: String,
        /// Write the records and exit after this many messages.
        #[arg(long)]
        expect: u64,
        /// ...or after this many seconds, with what was received.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    Ready {
        /// Queue names that must exist with at least one consumer.
        queues: Vec<String>,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    Wait {
        /// Redis hash key.
        #[arg(long)]
        key: String,
        /// Field whose integer value is compared; without it, the hash's length.
        #[arg(long)]
        field: Option<String>,
        #[arg(long)]
        target: u64,
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
    Cleanup {
        #[arg(long)]
        prefix: String,
    },
    /// Reads smtp-sink's `-c` counters ("sess=.. quit=.. mesg=N\r") from
    /// stdin; when mesg reaches the target, writes the time to `--out`; keeps
    /// reading until EOF so that smtp-sink never blocks on the pipe.
    Count {
        #[arg(long)]
        target: u64,
        #[arg(long)]
        out: String,
    },
    /// Reads a stream queue from its first message.
    Stream {
        #[arg(long)]
        queue: String,
        /// Stop after this many messages...
        #[arg(long)]
        expect: u64,
        /// ...or after this many seconds without one.
        #[arg(long, default_value_t = 5.0)]
        idle: f64,
    },
    /// Submits one message per recipient `user{i}@d{i % domains}.{domain}`
    /// to an SMTP server (a Postfix) over several pipelined sessions.
    Inject {
        /// host:port of the server.
        #[arg(long)]
        to: String,
        #[arg(long)]
        recipients: u64,
        #[arg(long, default_value_t = 0)]
        domains: u64,
        #[arg(long, default_value = "bench.example")]
        domain: String,
        /// The message (headers and body, LF or CRLF line ends).
        #[arg(long)]
        message: String,
        #[arg(long, default_value_t = 16)]
        sessions: u64,
    },
    /// Runs simulated providers until `--expect` recipients were delivered.
    Providers {
        /// A provider: name=a,ip=127.0.0.21,conns=3,rate=1500[,burst=N][,over=421]
        #[arg(long = "provider", required = true)]
        providers: Vec<String>,
        /// The port of every provider (0: a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The chosen port is written here once listening.
        #[arg(long)]
        port_file: String,
        /// The counts (JSON) go here at the end.
        #[arg(long)]
        out: String,
        /// Stop once this many recipients were delivered...
        #[arg(long)]
        expect: u64,
        /// ...and this many seconds more passed (to see late duplicates);
        #[arg(long, default_value_t = 1.0)]
        settle: f64,
        /// ...or after this many seconds, or on SIGTERM.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// DKIM signing rates per library (no broker or Redis needed).
    Sign {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Rounds; each measures every library once, in turn.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Thread counts to measure (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Size of the signed data (DKIM signs the canonical header fields).
        #[arg(long, default_value_t = 1000)]
        bytes: usize,
    },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Broker {
            queue,
            count,
            size,
            window,
            prefetch,
            ack_every,
        } => broker(&cli.amqp, &queue, count, size, window, prefetch, ack_every).await?,
        Cmd::Publish {
            prefix,
            request_id,
            recipients,
            parts,
            size,
            domain,
            mix,
            tenant,
            dry_run,
        } => {
            publish(
                &cli.amqp,
                &prefix,
                &request_id,
                recipients,
                parts,
                size,
                &Recipients { domain, mix },
                tenant.as_deref(),
                dry_run.as_deref(),
            )
            .await?
        }
        Cmd::Trickle {
            prefix,
            request_prefix,
            count,
            over,
            size,
            domain,
        } => {
            trickle(
                &cli.amqp,
                &prefix,
                &request_prefix,
                count,
                over,
                size,
                &domain,
            )
            .await?
        }
        Cmd::Sink {
            listen,
            port_file,
            out,
            expect,
            timeout,
        } => sink(&listen, &port_file, &out, expect, timeout).await?,
        Cmd::Ready { queues, timeout } => ready(&cli.amqp, &queues, timeout).await?,
        Cmd::Wait {
            key,
            field,
            target,
            timeout,
            interval_ms,
        } => {
            wait(
                &cli.redis,
                &key,
                field.as_deref(),
                target,
                timeout,
                interval_ms,
            )
            .await?
        }
        Cmd::Cleanup { prefix } => cleanup(&cli.amqp, &cli.redis, &prefix).await?,
        Cmd::Count { target, out } => count(target, &out)?,
        Cmd::Stream {
            queue,
            expect,
            idle,
        } => stream::stream(&cli.amqp, &queue, expect, idle).await?,
        Cmd::Inject {
            to,
            recipients,
            domains,
            domain,
            message,
            sessions,
        } => inject(&to, recipients, domains, &domain, &message, sessions).await?,
        Cmd::Providers {
            providers,
            port,
            port_file,
            out,
            expect,
            settle,
            timeout,
        } => run_providers(&providers, port, &port_file, &out, expect, settle, timeout).await?,
        Cmd::Sign {
            seconds,
            rounds,
            threads,
            bytes,
        } => sign::sign(seconds, rounds, &threads, bytes)?,
    };
    println!("{out}");
    Ok(())
}

async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .context("connecting to RabbitMQ")
}

async fn confirm_channel(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Publishes with a window of outstanding confirms, like mailpipe's
/// `ConfirmWindow`.
struct Window {
    pending: VecDeque<lapin::PublisherConfirm>,
    max: usize,
}

impl Window {
    fn new(max: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            max: max.max(1),
        }
    }
    async fn push(&mut self, pc: lapin::PublisherConfirm) -> anyhow::Result<()> {
        self.pending.push_back(pc);
        while self.pending.len() >= self.max {
            let p = self.pending.pop_front().expect("non-empty");
            check(p.await?)?;
        }
        Ok(())
    }
    async fn drain(&mut self) -> anyhow::Result<()> {
        while let Some(p) = self.pending.pop_front() {
            check(p.await?)?;
        }
        Ok(())
    }
}

fn check(c: Confirmation) -> anyhow::Result<()> {
    match c {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => {
            bail!("message returned: {} {}", r.reply_code, r.reply_text)
        }
        Confirmation::Nack(None) => bail!("broker nacked a publish"),
        Confirmation::NotRequested => bail!("confirms not enabled"),
    }
}

fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    t
}

async fn broker(
    url: &str,
    queue: &str,
    count: u64,
    size: usize,
    window: usize,
    prefetch: u16,
    ack_every: u64,
) -> anyhow::Result<Value> {
    let conn = connect(url, "mailpipe-bench-broker").await?;
    let ch = confirm_channel(&conn).await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum_args(),
    )
    .await?;
    // A JSON-looking payload of the requested size.
    let mut payload = br#"{"v":1,"pad":""#.to_vec();
    payload.resize(size.saturating_sub(2).max(payload.len()), b'x');
    payload.extend_from_slice(br#""}"#);

    let started = Instant::now();
    let mut w = Window::new(window);
    for _ in 0..count {
        let pc = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &payload,
                persistent(),
            )
            .await?;
        w.push(pc).await?;
    }
    w.drain().await?;
    let publish_s = started.elapsed().as_secs_f64();

    let cch = conn.create_channel().await?;
    cch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut got = 0u64;
    while got < count {
        let d = match tokio::time::timeout(Duration::from_secs(60), consumer.next()).await {
            Ok(Some(d)) => d?,
            Ok(None) => bail!("consumer ended after {got}"),
            Err(_) => bail!("no delivery for 60 s after {got}"),
        };
        got += 1;
        if ack_every <= 1 {
            d.ack(BasicAckOptions::default()).await?;
        } else if got.is_multiple_of(ack_every) || got == count {
            d.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let consume_s = started.elapsed().as_secs_f64();
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({
        "count": count, "size": payload.len(), "window": window, "prefetch": prefetch,
        "ack_every": ack_every,
        "publish_s": publish_s, "publish_per_s": count as f64 / publish_s,
        "consume_s": consume_s, "consume_per_s": count as f64 / consume_s,
    }))
}

const LOREM: &str =
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor";

/// Templates whose rendered message is about `size` bytes: a multipart
/// text + html message with the usual personalization; the bodies are padded
/// with ordinary 78-character lines (7bit, no re-encoding).
fn templates(size: usize) -> Value {
    // Headers, MIME boundaries and part headers of a rendered message come to
    // about 1,150 bytes (measured with the bench sink); the rest is split
    // between the two bodies.
    let body = size.saturating_sub(1150);
    let pad = |n: usize, html: bool| {
        let mut s = String::new();
        while s.len() + LOREM.len() + 10 < n {
            if html {
                s.push_str("<p>");
                s.push_str(LOREM);
                s.push_str("</p>\n");
            } else {
                s.push_str(LOREM);
                s.push('\n');
            }
        }
        s
    };
    let text = format!(
        "Hello {{{{ name }}}},\n\nyour {{{{ plan }}}} plan renews soon. Your personal code: {{{{ code }}}}.\n\n{}",
        pad(body * 45 / 100, false)
    );
    let html = format!(
        "<p>Hello {{{{ name }}}},</p><p>your <b>{{{{ plan }}}}</b> plan renews soon. Your personal code: <code>{{{{ code }}}}</code>.</p>\n{}",
        pad(body * 55 / 100, true)
    );
    json!({
        "schema_version": 1,
        "from": "ACME <news@acme.example>",
        "reply_to": "support@acme.example",
        "subject": "{{ name }}, your {{ plan }} plan renews soon",
        "text": text,
        "html": html,
        "headers": {"X-Campaign": "bench-{{ plan }}"},
        "unsubscribe_url": "https://acme.example/unsubscribe?u={{ email | urlencode }}",
    })
}

/// Recipient i's domain: `d{i % domains}.{domain}`, or `domain` itself.
fn spread_domain(i: u64, domains: u64, domain: &str) -> String {
    if domains == 0 {
        domain.to_string()
    } else {
        format!("d{}.{domain}", i % domains)
    }
}

/// How a request's recipients spread over domains and local parts (the
/// default: all `user{i}@DOMAIN`). The exclusion-rules benchmark spreads
/// them so that rules and address checks have domains to look up.
#[derive(clap::Args, Clone, Default)]
struct Mix {
    /// Spread the recipients over this many domains, recipient i at
    /// `d{i % domains}.{domain}` (0: all at `domain`).
    #[arg(long, default_value_t = 0)]
    domains: u64,
    /// Every this many-th recipient is at one of `--extra-domains` instead.
    #[arg(long, default_value_t = 0)]
    extra_every: u64,
    /// Domains taken in turn by every `--extra-every`-th recipient.
    #[arg(long, value_delimiter = ',')]
    extra_domains: Vec<String>,
    /// Every this many-th recipient has a role local part (`noreply-{i}`).
    #[arg(long, default_value_t = 0)]
    role_every: u64,
}

struct Recipients {
    domain: String,
    mix: Mix,
}

impl Recipients {
    fn email(&self, i: u64) -> String {
        let m = &self.mix;
        let local = if m.role_every > 0 && i % m.role_every == m.role_every / 2 {
            format!("noreply-{i}")
        } else {
            format!("user{i}")
        };
        if m.extra_every > 0
            && !m.extra_domains.is_empty()
            && i % m.extra_every == m.extra_every - 1
        {
            let d = &m.extra_domains[(i / m.extra_every) as usize % m.extra_domains.len()];
            return format!("{local}@{d}");
        }
        format!("{local}@{}", spread_domain(i, m.domains, &self.domain))
    }
}

fn recipient_at(i: u64, email: String) -> Value {
    json!({
        "email": email,
        "name": format!("User {i}"),
        "vars": {"plan": if i.is_multiple_of(3) { "pro" } else { "free" }, "code": format!("C{i:07}")},
    })
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    url: &str,
    prefix: &str,
    request_id: &str,
    recipients: u64,
    parts: u64,
    size: usize,
    spread: &Recipients,
    tenant: Option<&str>,
    dry_run: Option<&str>,
) -> anyhow::Result<Value> {
    let parts = parts.max(1);
    let per_part = recipients.div_ceil(parts);
    let base = templates(size);
    let mut bodies = Vec::new();
    for p in 0..parts {
        let mut req = base.clone();
        let obj = req.as_object_mut().expect("object");
        obj.insert("request_id".into(), json!(request_id));
        obj.insert("campaign".into(), json!("bench"));
        obj.insert("lane".into(), json!("bulk"));
        if let Some(t) = tenant {
            obj.insert("tenant".into(), json!(t));
        }
        if parts > 1 {
            obj.insert("part".into(), json!({"index": p + 1, "total": parts}));
        }
        let from = p * per_part;
        let to = ((p + 1) * per_part).min(recipients);
        obj.insert(
            "recipients".into(),
            Value::Array(
                (from..to)
                    .map(|i| recipient_at(i, spread.email(i)))
                    .collect(),
            ),
        );
        bodies.push(serde_json::to_vec(&req)?);
    }
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    if let Some(path) = dry_run {
        let mut f = std::fs::File::create(path)?;
        for b in &bodies {
            f.write_all(b)?;
            f.write_all(b"\n")?;
        }
        return Ok(json!({"parts": parts, "bytes": bytes}));
    }
    let conn = connect(url, "mailpipe-bench-publish").await?;
    let ch = confirm_channel(&conn).await?;
    let t0 = now_ms();
    let mut w = Window::new(8);
    for (i, b) in bodies.iter().enumerate() {
        let props = persistent().with_message_id(format!("{request_id}:{}", i + 1).into());
        let pc = ch
            .basic_publish(
                prefix.into(),
                "requests".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b,
                props,
            )
            .await?;
        w.push(pc).await?;
    }
    w.drain().await?;
    let confirmed = now_ms();
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({"t0_ms": t0, "confirmed_ms": confirmed, "parts": parts, "bytes": bytes}))
}

#[allow(clippy::too_many_arguments)]
async fn trickle(
    url: &str,
    prefix: &str,
    request_prefix: &str,
    count: u64,
    over: f64,
    size: usize,
    domain: &str,
) -> anyhow::Result<Value> {
    let conn = connect(url, "mailpipe-bench-trickle").await?;
    let ch = confirm_channel(&conn).await?;
    let base = templates(size);
    let started = Instant::now();
    let step = over / count.max(1) as f64;
    let mut worst_confirm_ms = 0u64;
    for i in 0..count {
        let due = started + Duration::from_secs_f64(step * i as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut req = base.clone();
        let obj = req.as_object_mut().expect("object");
        let published = now_ms();
        obj.insert("request_id".into(), json!(format!("{request_prefix}-{i}")));
        obj.insert("lane".into(), json!("transactional"));
        obj.insert("campaign".into(), json!("bench-transactional"));
        let mut headers = obj["headers"].clone();
        headers["X-Bench-Published-Ms"] = json!(published.to_string());
        obj.insert("headers".into(), headers);
        obj.insert(
            "recipients".into(),
            json!([{"email": format!("txn{i}@{domain}"), "name": format!("Txn {i}"),
                    "vars": {"plan": "pro", "code": format!("T{i:07}")}}]),
        );
        let body = serde_json::to_vec(&req)?;
        let pc = ch
            .basic_publish(
                prefix.into(),
                "requests".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                persistent(),
            )
            .await?;
        check(pc.await?)?;
        worst_confirm_ms = worst_confirm_ms.max(now_ms() - published);
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({"count": count, "over_s": over, "worst_publish_confirm_ms": worst_confirm_ms}))
}

/// One message received by the sink.
struct Record {
    at_ms: u64,
    bytes: usize,
    id: String,
    published: String,
}

async fn sink(
    listen: &str,
    port_file: &str,
    out: &str,
    expect: u64,
    timeout: u64,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    tokio::pin!(deadline);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let port = listener.local_addr()?.port();
    std::fs::write(port_file, format!("{port}\n"))?;
    let records = Arc::new(Mutex::new(Vec::<Record>::with_capacity(expect as usize)));
    let count = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    loop {
        let (sock, _) = tokio::select! {
            a = listener.accept() => a?,
            _ = done.notified() => break,
            _ = &mut deadline => {
                eprintln!("sink: timed out with {} of {expect} messages", count.load(Ordering::SeqCst));
                break;
            }
        };
        let _ = sock.set_nodelay(true);
        let records = records.clone();
        let count = count.clone();
        let done = done.clone();
        tokio::spawn(async move {
            if let Err(e) = session(sock, records, count, expect, done).await {
                eprintln!("sink: session ended: {e}");
            }
        });
    }
    let recs = std::mem::take(&mut *records.lock().expect("lock"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    for r in &recs {
        writeln!(f, "{}\t{}\t{}\t{}", r.at_ms, r.bytes, r.id, r.published)?;
    }
    f.flush()?;
    let first = recs.iter().map(|r| r.at_ms).min().unwrap_or(0);
    let last = recs.iter().map(|r| r.at_ms).max().unwrap_or(0);
    let bytes: usize = recs.iter().map(|r| r.bytes).sum();
    Ok(
        json!({"received": recs.len(), "first_ms": first, "last_ms": last,
              "mean_bytes": bytes as f64 / recs.len().max(1) as f64}),
    )
}

async fn session(
    sock: tokio::net::TcpStream,
    records: Arc<Mutex<Vec<Record>>>,
    count: Arc<AtomicU64>,
    expect: u64,
    done: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    w.write_all(b"220 bench-sink ESMTP\r\n").await?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb: String = line
            .iter()
            .take(4)
            .map(|b| b.to_ascii_uppercase() as char)
            .collect();
        match verb.as_str() {
            "EHLO" => {
                w.write_all(b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 52428800\r\n").await?
            }
            "HELO" => w.write_all(b"250 bench-sink\r\n").await?,
            "MAIL" => w.write_all(b"250 2.1.0 Ok\r\n").await?,
            "RCPT" => w.write_all(b"250 2.1.5 Ok\r\n").await?,
            "RSET" | "NOOP" => w.write_all(b"250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut bytes = 0usize;
                let mut in_headers = true;
                let mut id = String::new();
                let mut published = String::new();
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    bytes += line.len();
                    if in_headers {
                        if line == b"\r\n" || line == b"\n" {
                            in_headers = false;
                        } else if let Some(v) = header(&line, "x-mailpipe-id:") {
                            id = v;
                        } else if let Some(v) = header(&line, "x-bench-published-ms:") {
                            published = v;
                        }
                    }
                }
                let at_ms = now_ms();
                records.lock().expect("lock").push(Record {
                    at_ms,
                    bytes,
                    id,
                    published,
                });
                w.write_all(b"250 2.0.0 Ok: queued\r\n").await?;
                if count.fetch_add(1, Ordering::SeqCst) + 1 == expect {
                    done.notify_one();
                }
            }
            _ => w.write_all(b"502 5.5.2 Error: command not recognized\r\n").await?,
        }
    }
}

fn header(line: &[u8], name: &str) -> Option<String> {
    if line.len() < name.len() || !line[..name.len()].eq_ignore_ascii_case(name.as_bytes()) {
        return None;
    }
    Some(
        String::from_utf8_lossy(&line[name.len()..])
            .trim()
            .to_string(),
    )
}

async fn ready(url: &str, queues: &[String], timeout: u64) -> anyhow::Result<Value> {
    let conn = connect(url, "mailpipe-bench-ready").await?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    for q in queues {
        loop {
            let ch = conn.create_channel().await?;
            let r = ch
                .queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if let Ok(info) = r {
                let _ = ch.close(200, "ok".into()).await;
                if info.consumer_count() > 0 {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("queue {q} has no consumer after {timeout} s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(json!({"ready_ms": now_ms()}))
}

async fn wait(
    url: &str,
    key: &str,
    field: Option<&str>,
    target: u64,
    timeout: u64,
    interval_ms: u64,
) -> anyhow::Result<Value> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let v: u64 = match field {
            Some(f) => {
                let v: Option<u64> = redis::cmd("HGET")
                    .arg(key)
                    .arg(f)
                    .query_async(&mut c)
                    .await?;
                v.unwrap_or(0)
            }
            None => redis::cmd("HLEN").arg(key).query_async(&mut c).await?,
        };
        if v >= target {
            return Ok(json!({"done_ms": now_ms(), "value": v}));
        }
        if started.elapsed() > Duration::from_secs(timeout) {
            bail!("{key} {field:?} is {v} after {timeout} s, expected {target}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  ... {v}/{target} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
}

async fn cleanup(url: &str, redis_url: &str, prefix: &str) -> anyhow::Result<Value> {
    if prefix.len() < 6 || !prefix.starts_with("bench-") {
        bail!("refusing to clean up prefix {prefix:?}: only bench-* prefixes");
    }
    let mut names = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut names)?;
    let conn = connect(url, "mailpipe-bench-cleanup").await?;
    let mut queues = 0;
    for q in names.lines().map(str::trim).filter(|q| !q.is_empty()) {
        if !q.starts_with(&format!("{prefix}.")) {
            continue;
        }
        let ch = conn.create_channel().await?;
        if ch
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await
            .is_ok()
        {
            queues += 1;
        }
    }
    for ex in [prefix.to_string(), format!("{prefix}.events")] {
        let ch = conn.create_channel().await?;
        let _ = ch
            .exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = conn.close(200, "done".into()).await;

    let client = redis::Client::open(redis_url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut keys_deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut c)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await?;
            keys_deleted += n;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(json!({"queues_deleted": queues, "redis_keys_deleted": keys_deleted}))
}

fn count(target: u64, out: &str) -> anyhow::Result<Value> {
    use std::io::BufRead as _;
    let stdin = std::io::stdin();
    let mut r = stdin.lock();
    let mut buf = Vec::new();
    let mut first_ms = 0u64;
    let mut reached: Option<u64> = None;
    let mut last = 0u64;
    loop {
        buf.clear();
        if r.read_until(b'\r', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let Some(n) = line
            .split_whitespace()
            .find_map(|w| w.trim_end_matches('\r').strip_prefix("mesg="))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if n > last {
            last = n;
            if first_ms == 0 {
                first_ms = now_ms();
            }
        }
        if reached.is_none() && n >= target {
            let t = now_ms();
            reached = Some(t);
            std::fs::write(
                out,
                format!(
                    "{}\n",
                    json!({"done_ms": t, "first_ms": first_ms, "messages": n})
                ),
            )?;
        }
    }
    Ok(json!({"done_ms": reached, "first_ms": first_ms, "messages": last}))
}

async fn run_providers(
    specs: &[String],
    port: u16,
    port_file: &str,
    out: &str,
    expect: u64,
    settle: f64,
    timeout: u64,
) -> anyhow::Result<Value> {
    let specs = specs
        .iter()
        .map(|s| {
            providers::ProviderSpec::parse(s).map_err(|e| anyhow::anyhow!("--provider {s}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sim = if port == 0 {
        providers::Simulator::start(&specs).await?
    } else {
        providers::Simulator::start_on(port, &specs).await?
    };
    std::fs::write(port_file, format!("{}\n", sim.port))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut reached: Option<Instant> = None;
    let why = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = term.recv() => break "terminated",
            _ = tokio::signal::ctrl_c() => break "interrupted",
        }
        if reached.is_none() && sim.delivered() >= expect {
            reached = Some(Instant::now());
        }
        if reached.is_some_and(|t| t.elapsed().as_secs_f64() >= settle) {
            break "delivered";
        }
        if Instant::now() > deadline {
            break "timed out";
        }
    };
    let stats: Vec<Value> = sim.stats().iter().map(|s| s.to_json()).collect();
    let delivered = sim.delivered();
    let done_ms = sim.stats().iter().filter_map(|s| s.last_delivery_ms).max();
    let all = json!({"end": why, "end_ms": now_ms(), "epoch_ms": sim.epoch_ms, "done_ms": done_ms,
                     "delivered": delivered, "expect": expect, "providers": stats});
    std::fs::write(out, serde_json::to_vec(&all)?)?;
    Ok(json!({"end": why, "delivered": delivered, "done_ms": done_ms}))
}

async fn inject(
    to: &str,
    recipients: u64,
    domains: u64,
    domain: &str,
    message: &str,
    sessions: u64,
) -> anyhow::Result<Value> {
    // CRLF line ends, dot-stuffed once.
    let raw = std::fs::read_to_string(message).with_context(|| message.to_string())?;
    let mut body = String::with_capacity(raw.len() + raw.len() / 40);
    for line in raw.lines() {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    let body = Arc::new(body);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = now_ms();
    let mut tasks = Vec::new();
    for _ in 0..sessions.max(1) {
        let (to, domain, body, next, failed) = (
            to.to_string(),
            domain.to_string(),
            body.clone(),
            next.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::TcpStream::connect(&to).await?;
            let _ = sock.set_nodelay(true);
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            reply(&mut r, &mut line).await?;
            w.write_all(b"EHLO bench.example\r\n").await?;
            reply(&mut r, &mut line).await?;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= recipients {
                    break;
                }
                let rcpt = format!("user{i}@{}", spread_domain(i, domains, &domain));
                w.write_all(
                    format!("MAIL FROM:<news@acme.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
                        .as_bytes(),
                )
                .await?;
                let (m, rc, d) = (
                    reply(&mut r, &mut line).await?,
                    reply(&mut r, &mut line).await?,
                    reply(&mut r, &mut line).await?,
                );
                if d != 354 {
                    failed.fetch_add(1, Ordering::SeqCst);
                    eprintln!("inject: {rcpt}: MAIL {m} RCPT {rc} DATA {d}");
                    continue;
                }
                w.write_all(body.as_bytes()).await?;
                if reply(&mut r, &mut line).await? != 250 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
            w.write_all(b"QUIT\r\n").await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let f = failed.load(Ordering::SeqCst);
    Ok(json!({"t0_ms": t0, "injected_ms": now_ms(), "recipients": recipients, "failed": f}))
}

/// Reads one SMTP reply (all its lines); returns its code.
async fn reply(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut String,
) -> anyhow::Result<u16> {
    loop {
        line.clear();
        if r.read_line(line).await? == 0 {
            bail!("connection closed");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

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
//!   headers; writes them as TSV and exits once it has received `--expect`;
//!   optionally with STARTTLS and per-recipient 451 / 550 answers (`sink.rs`).
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
//! * `client`   — the TLS + pipelining ceiling: STARTTLS sessions that send
//!   every recipient's personalized message once to the sink (`client.rs`).
//! * `sign`     — DKIM signing rates (RSA-2048, Ed25519) of *ring*, aws-lc-rs
//!   and OpenSSL on 1 and 2 threads, interleaved in rounds (see `sign.rs`).
//!
//! Each subcommand is in a file of its own, named after it (`providers` in
//! `simulate.rs`); the broker plumbing they share is in `amqp.rs`.

// The test harness's simulator, shared as a source file so that this tool
// stays independent of mailpipe's crates. The tests steer providers at run
// time; this tool only runs them and reads their counts.
#[allow(dead_code)]
#[path = "../../tests/src/providers.rs"]
mod providers;

mod amqp;
mod broker;
mod cleanup;
mod client;
mod count;
mod inject;
mod message;
mod publish;
mod ready;
mod sign;
mod simulate;
mod sink;
mod stream;
mod trickle;
mod wait;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use publish::{Mix, Recipients};

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
        #[command(flatten)]
        options: sink::SinkOptions,
    },
    /// The TLS + pipelining ceiling against the sink.
    Client(client::ClientArgs),
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
        /// Zipf exponent of the domain spread (as `publish --zipf`).
        #[arg(long)]
        zipf: Option<f64>,
        #[arg(long, default_value = "bench.example")]
        domain: String,
        /// The message (headers and body, LF or CRLF line ends)...
        #[arg(long)]
        message: Option<String>,
        /// ...or each recipient's personalized message of about this size.
        #[arg(long)]
        render: Option<usize>,
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

/// A free loopback port, asked of the crate root by the provider simulator
/// (`providers.rs`; the test harness hands out claimed ports instead). The
/// kernel's choice is enough here: the simulator tries another port when
/// one was taken meanwhile.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
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
        } => broker::broker(&cli.amqp, &queue, count, size, window, prefetch, ack_every).await?,
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
            publish::publish(
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
            trickle::trickle(
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
            options,
        } => sink::sink(&listen, &port_file, &out, options).await?,
        Cmd::Client(args) => client::client(args).await?,
        Cmd::Ready { queues, timeout } => ready::ready(&cli.amqp, &queues, timeout).await?,
        Cmd::Wait {
            key,
            field,
            target,
            timeout,
            interval_ms,
        } => {
            wait::wait(
                &cli.redis,
                &key,
                field.as_deref(),
                target,
                timeout,
                interval_ms,
            )
            .await?
        }
        Cmd::Cleanup { prefix } => cleanup::cleanup(&cli.amqp, &cli.redis, &prefix).await?,
        Cmd::Count { target, out } => count::count(target, &out)?,
        Cmd::Stream {
            queue,
            expect,
            idle,
        } => stream::stream(&cli.amqp, &queue, expect, idle).await?,
        Cmd::Inject {
            to,
            recipients,
            domains,
            zipf,
            domain,
            message,
            render,
            sessions,
        } => {
            inject::inject(
                &to,
                recipients,
                domains,
                zipf,
                &domain,
                message.as_deref(),
                render,
                sessions,
            )
            .await?
        }
        Cmd::Providers {
            providers,
            port,
            port_file,
            out,
            expect,
            settle,
            timeout,
        } => {
            simulate::run_providers(&providers, port, &port_file, &out, expect, settle, timeout)
                .await?
        }
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

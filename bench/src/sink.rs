//! `mailpipe-bench sink`: an SMTP sink that records the arrival time of
//! every message (at the final "."), its size and its `X-Mailpipe-Id` /
//! `X-Bench-Published-Ms` headers; writes them as TSV and exits once it has
//! received `--expect`.
//!
//! For the realistic profile (`scripts/bench-real`) it also:
//! * offers STARTTLS with a certificate of the run's private CA
//!   (`--tls-cert`, `--tls-key`) and with `--require-tls` refuses mail
//!   before it, counting TLS handshakes and connections;
//! * with `--recipients N`, gives each recipient `user{i}@...` a fate drawn
//!   from a hash of i: `550 5.1.1` for `--reject-permille` of them,
//!   `451 4.7.1` (greylisting) once for `--greylist-permille`, 250 for the
//!   rest. It then counts recipients instead of messages: it exits once
//!   every deliverable recipient (those without a 550) was accepted, and
//!   reports when every recipient had its first answer (the first pass),
//!   duplicates, and how long after its 451 each greylisted recipient came
//!   back (its first retry's delay).
//!
//! It writes what it has on SIGTERM too (`end: terminated`).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

use crate::now_ms;
use crate::publish::splitmix64;

/// The sink's options beyond where it listens and writes.
#[derive(clap::Args, Clone, Default)]
pub struct SinkOptions {
    /// Write the records and exit after this many messages (with
    /// `--recipients`: accepted recipients; default: every deliverable one).
    #[arg(long)]
    pub expect: Option<u64>,
    /// ...or after this many seconds, with what was received.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// PEM certificate chain: offer STARTTLS with it.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// PEM private key of `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<String>,
    /// Refuse MAIL before STARTTLS (`530 5.7.0`).
    #[arg(long)]
    pub require_tls: bool,
    /// Recipients `user0` .. `user{N-1}`: give each a fate (see the header).
    #[arg(long)]
    pub recipients: Option<u64>,
    /// Recipients answered `451 4.7.1` once, per thousand.
    #[arg(long, default_value_t = 30)]
    pub greylist_permille: u64,
    /// Recipients answered `550 5.1.1`, per thousand.
    #[arg(long, default_value_t = 10)]
    pub reject_permille: u64,
}

/// What the sink answers recipient i.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Accept,
    GreylistOnce,
    Reject,
}

/// Recipient i's fate (the same in every tool of one run).
pub fn fate(i: u64, greylist_permille: u64, reject_permille: u64) -> Fate {
    let h = splitmix64(i ^ 0xfa7e_0018) % 1000;
    if h < reject_permille {
        Fate::Reject
    } else if h < reject_permille + greylist_permille {
        Fate::GreylistOnce
    } else {
        Fate::Accept
    }
}

/// One message received by the sink.
struct Record {
    at_ms: u64,
    bytes: usize,
    id: String,
    published: String,
}

/// What the sessions share; a std Mutex: held for a few map updates, never
/// across an await.
#[derive(Default)]
struct State {
    records: Vec<Record>,
    /// Counted toward `expect`: messages, or with fates unique accepted recipients.
    counted: u64,
    done_ms: Option<u64>,
    /// With fates: per recipient, whether it was answered once and accepted.
    seen: Vec<bool>,
    seen_count: u64,
    first_pass_ms: Option<u64>,
    accepted: Vec<bool>,
    duplicates: u64,
    /// Recipient -> when it was answered 451.
    greylisted_at: HashMap<u64, u64>,
    /// Recipients whose first retry was seen.
    retried: std::collections::HashSet<u64>,
    retry_delays_ms: Vec<u64>,
    replies_451: u64,
    replies_550: u64,
    /// Messages with a DKIM-Signature header field.
    dkim_signed: u64,
}

struct Shared {
    opts: SinkOptions,
    expect: u64,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Mutex<State>,
    handshakes: AtomicU64,
    connections: AtomicU64,
    done: tokio::sync::Notify,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| cert.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| cert.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| key.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub async fn sink(
    listen: &str,
    port_file: &str,
    out: &str,
    opts: SinkOptions,
) -> anyhow::Result<Value> {
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(c), Some(k)) => Some(acceptor(c, k)?),
        _ => None,
    };
    anyhow::ensure!(
        tls.is_some() || !opts.require_tls,
        "--require-tls needs --tls-cert"
    );
    let n = opts.recipients.unwrap_or(0);
    let deliverable = (0..n)
        .filter(|&i| fate(i, opts.greylist_permille, opts.reject_permille) != Fate::Reject)
        .count() as u64;
    let expect = match (opts.expect, opts.recipients) {
        (Some(e), _) => e,
        (None, Some(_)) => deliverable,
        (None, None) => anyhow::bail!("--expect or --recipients is needed"),
    };
    let state = State {
        records: Vec::with_capacity(expect as usize),
        seen: vec![false; n as usize],
        accepted: vec![false; n as usize],
        ..Default::default()
    };
    let shared = Arc::new(Shared {
        expect,
        tls,
        state: Mutex::new(state),
        handshakes: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        done: tokio::sync::Notify::new(),
        opts,
    });
    let deadline = tokio::time::sleep(Duration::from_secs(shared.opts.timeout));
    tokio::pin!(deadline);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let port = listener.local_addr()?.port();
    std::fs::write(port_file, format!("{port}\n"))?;
    let started_ms = now_ms();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let why = loop {
        let (sock, _) = tokio::select! {
            a = listener.accept() => a?,
            _ = shared.done.notified() => break "expected",
            _ = term.recv() => break "terminated",
            _ = &mut deadline => {
                eprintln!("sink: timed out with {} of {expect}", shared.state.lock().expect("lock").counted);
                break "timed out";
            }
        };
        let _ = sock.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = session(Box::new(sock), shared).await {
                eprintln!("sink: session ended: {e}");
            }
        });
    };
    let mut st = std::mem::take(&mut *shared.state.lock().expect("lock"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    for r in &st.records {
        writeln!(f, "{}\t{}\t{}\t{}", r.at_ms, r.bytes, r.id, r.published)?;
    }
    f.flush()?;
    let recs = &st.records;
    let first = recs.iter().map(|r| r.at_ms).min().unwrap_or(0);
    let last = recs.iter().map(|r| r.at_ms).max().unwrap_or(0);
    let bytes: usize = recs.iter().map(|r| r.bytes).sum();
    let mut v = json!({"received": recs.len(), "first_ms": first, "last_ms": last,
              "mean_bytes": bytes as f64 / recs.len().max(1) as f64});
    if shared.tls.is_some() || shared.opts.recipients.is_some() {
        st.retry_delays_ms.sort_unstable();
        let o = v.as_object_mut().expect("object");
        o.insert("end".into(), json!(why));
        o.insert("started_ms".into(), json!(started_ms));
        o.insert("expect".into(), json!(expect));
        o.insert("counted".into(), json!(st.counted));
        o.insert("done_ms".into(), json!(st.done_ms));
        o.insert(
            "connections".into(),
            json!(shared.connections.load(Ordering::Relaxed)),
        );
        o.insert(
            "tls_handshakes".into(),
            json!(shared.handshakes.load(Ordering::Relaxed)),
        );
        o.insert("recipients".into(), json!(n));
        o.insert("deliverable".into(), json!(deliverable));
        o.insert("seen".into(), json!(st.seen_count));
        o.insert("first_pass_ms".into(), json!(st.first_pass_ms));
        o.insert("duplicates".into(), json!(st.duplicates));
        o.insert("dkim_signed".into(), json!(st.dkim_signed));
        o.insert("replies_451".into(), json!(st.replies_451));
        o.insert("replies_550".into(), json!(st.replies_550));
        o.insert("greylisted".into(), json!(st.greylisted_at.len()));
        o.insert("retry_delays_ms".into(), json!(st.retry_delays_ms));
    }
    Ok(v)
}

/// The i of `user{i}@...` in a RCPT TO line.
fn recipient_index(line: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(line).ok()?;
    let start = s.find('<')? + 1;
    let rest = s.get(start..)?;
    let local = &rest[..rest.find('@')?];
    local.strip_prefix("user")?.parse().ok()
}

async fn session(sock: Box<dyn Io>, shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut s = BufReader::with_capacity(64 * 1024, sock);
    let mut tls_on = false;
    // Replies wait here until the client's pipelined commands are read.
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    out.extend_from_slice(b"220 bench-sink ESMTP\r\n");
    let mut line = Vec::with_capacity(1024);
    // The transaction: MAIL given, recipients accepted (their index, if any).
    let mut mail = false;
    let mut rcpts: Vec<Option<u64>> = Vec::new();
    let fates = shared.opts.recipients.is_some();
    loop {
        if s.buffer().is_empty() && !out.is_empty() {
            s.get_mut().write_all(&out).await?;
            s.get_mut().flush().await?;
            out.clear();
        }
        line.clear();
        if s.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb: String = line
            .iter()
            .take(4)
            .map(|b| b.to_ascii_uppercase() as char)
            .collect();
        match verb.as_str() {
            "EHLO" => {
                out.extend_from_slice(b"250-bench-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n");
                if shared.tls.is_some() && !tls_on {
                    out.extend_from_slice(b"250-STARTTLS\r\n");
                }
                out.extend_from_slice(b"250 SIZE 52428800\r\n");
            }
            "HELO" => out.extend_from_slice(b"250 bench-sink\r\n"),
            "STAR" if shared.tls.is_some() && !tls_on => {
                s.get_mut().write_all(&out).await?;
                s.get_mut()
                    .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                    .await?;
                s.get_mut().flush().await?;
                out.clear();
                anyhow::ensure!(s.buffer().is_empty(), "data pipelined after STARTTLS");
                let acceptor = shared.tls.clone().expect("tls");
                let tls = acceptor.accept(s.into_inner()).await?;
                shared.handshakes.fetch_add(1, Ordering::Relaxed);
                s = BufReader::with_capacity(64 * 1024, Box::new(tls) as Box<dyn Io>);
                tls_on = true;
                mail = false;
                rcpts.clear();
            }
            "MAIL" if shared.opts.require_tls && !tls_on => {
                out.extend_from_slice(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
            }
            "MAIL" => {
                mail = true;
                rcpts.clear();
                out.extend_from_slice(b"250 2.1.0 Ok\r\n");
            }
            "RCPT" if !mail => out.extend_from_slice(b"503 5.5.1 Error: need MAIL command\r\n"),
            "RCPT" => {
                let i = if fates { recipient_index(&line) } else { None };
                let reply = match i {
                    None => {
                        rcpts.push(None);
                        "250 2.1.5 Ok\r\n"
                    }
                    Some(i) => {
                        let o = &shared.opts;
                        let now = now_ms();
                        let mut st = shared.state.lock().expect("lock");
                        if let Some(seen) = st.seen.get_mut(i as usize) {
                            if !*seen {
                                *seen = true;
                                st.seen_count += 1;
                                if st.seen_count == o.recipients.unwrap_or(0) {
                                    st.first_pass_ms = Some(now);
                                }
                            }
                        }
                        match fate(i, o.greylist_permille, o.reject_permille) {
                            Fate::Reject => {
                                st.replies_550 += 1;
                                "550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table\r\n"
                            }
                            Fate::GreylistOnce if !st.greylisted_at.contains_key(&i) => {
                                st.greylisted_at.insert(i, now);
                                st.replies_451 += 1;
                                "451 4.7.1 Recipient address rejected: Greylisted, please try again later\r\n"
                            }
                            Fate::GreylistOnce => {
                                if st.retried.insert(i) {
                                    let d = now.saturating_sub(st.greylisted_at[&i]);
                                    st.retry_delays_ms.push(d);
                                }
                                rcpts.push(Some(i));
                                "250 2.1.5 Ok\r\n"
                            }
                            Fate::Accept => {
                                rcpts.push(Some(i));
                                "250 2.1.5 Ok\r\n"
                            }
                        }
                    }
                };
                out.extend_from_slice(reply.as_bytes());
            }
            "RSET" => {
                mail = false;
                rcpts.clear();
                out.extend_from_slice(b"250 2.0.0 Ok\r\n");
            }
            "NOOP" => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
            "QUIT" => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                s.get_mut().write_all(&out).await?;
                s.get_mut().flush().await?;
                let _ = s.get_mut().shutdown().await;
                return Ok(());
            }
            "DATA" if rcpts.is_empty() => out.extend_from_slice(if mail {
                b"554 5.5.1 Error: no valid recipients\r\n"
            } else {
                b"503 5.5.1 Error: need RCPT command\r\n"
            }),
            "DATA" => {
                out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                s.get_mut().write_all(&out).await?;
                s.get_mut().flush().await?;
                out.clear();
                let mut bytes = 0usize;
                let mut in_headers = true;
                let mut id = String::new();
                let mut published = String::new();
                let mut signed = false;
                loop {
                    line.clear();
                    if s.read_until(b'\n', &mut line).await? == 0 {
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
                        } else if header(&line, "dkim-signature:").is_some() {
                            signed = true;
                        }
                    }
                }
                let at_ms = now_ms();
                let reached = {
                    let mut st = shared.state.lock().expect("lock");
                    st.records.push(Record {
                        at_ms,
                        bytes,
                        id,
                        published,
                    });
                    st.dkim_signed += u64::from(signed);
                    let before = st.counted;
                    if fates {
                        for i in rcpts.iter().flatten() {
                            match st.accepted.get_mut(*i as usize) {
                                Some(a) if *a => st.duplicates += 1,
                                Some(a) => {
                                    *a = true;
                                    st.counted += 1;
                                }
                                None => {}
                            }
                        }
                    } else {
                        st.counted += 1;
                    }
                    let reached = before < shared.expect && st.counted >= shared.expect;
                    if reached {
                        st.done_ms = Some(at_ms);
                    }
                    reached
                };
                mail = false;
                rcpts.clear();
                out.extend_from_slice(b"250 2.0.0 Ok: queued\r\n");
                if reached {
                    shared.done.notify_one();
                }
            }
            _ => out.extend_from_slice(b"502 5.5.2 Error: command not recognized\r\n"),
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

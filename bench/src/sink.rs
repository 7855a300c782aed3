//! `mailpipe-bench sink`: an SMTP sink that records the arrival time of
//! every message (at the final "."), its size and its `X-Mailpipe-Id` /
//! `X-Bench-Published-Ms` headers; writes them as TSV and exits once it has
//! received `--expect`.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::now_ms;

/// One message received by the sink.
struct Record {
    at_ms: u64,
    bytes: usize,
    id: String,
    published: String,
}

pub async fn sink(
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

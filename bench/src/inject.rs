//! `mailpipe-bench inject`: submits one message per recipient to an SMTP
//! server (a Postfix) over several pipelined sessions: the same message
//! file for all, or (`--render SIZE`) each recipient's personalized
//! multipart message (`message.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::message::{message_templates, render};
use crate::now_ms;
use crate::publish::recipient_domain;

#[allow(clippy::too_many_arguments)]
pub async fn inject(
    to: &str,
    recipients: u64,
    domains: u64,
    zipf: Option<f64>,
    domain: &str,
    message: Option<&str>,
    render_size: Option<usize>,
    sessions: u64,
) -> anyhow::Result<Value> {
    let tpl = Arc::new(render_size.map(message_templates));
    // CRLF line ends, dot-stuffed once.
    let raw = match (message, render_size) {
        (Some(m), _) => std::fs::read_to_string(m).with_context(|| m.to_string())?,
        (None, Some(_)) => String::new(),
        (None, None) => bail!("--message or --render is needed"),
    };
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
        let (to, domain, body, next, failed, tpl) = (
            to.to_string(),
            domain.to_string(),
            body.clone(),
            next.clone(),
            failed.clone(),
            tpl.clone(),
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
                let rcpt = format!("user{i}@{}", recipient_domain(i, domains, zipf, &domain));
                let rendered = match (tpl.as_ref(), render_size) {
                    (Some(t), Some(size)) => Some(render(i, &rcpt, size, t)),
                    _ => None,
                };
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
                w.write_all(rendered.as_deref().unwrap_or(&body).as_bytes())
                    .await?;
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

//! `mailpipe-bench client`: the TLS + pipelining ceiling of the realistic
//! profile. Several sessions to the sink, each upgraded with STARTTLS
//! (verified against the run's private CA) once, then one transaction per
//! recipient with `MAIL FROM`, `RCPT TO` and `DATA` in one write (RFC 2920),
//! the body after the 354: the same recipients and the same personalized
//! multipart messages (`message.rs`) as the other rows, unsigned. A refused
//! recipient is a finished one (its transaction is reset); the result is
//! one pass over all recipients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

use crate::message::{message_templates, render};
use crate::now_ms;
use crate::publish::recipient_domain;

/// Where the client sends and what.
#[derive(clap::Args, Clone)]
pub struct ClientArgs {
    /// host:port of the sink.
    #[arg(long)]
    pub to: String,
    /// PEM file of the CA that signed the sink's certificate.
    #[arg(long)]
    pub ca: String,
    /// The name the sink's certificate is verified against.
    #[arg(long, default_value = "127.0.0.1")]
    pub server_name: String,
    #[arg(long)]
    pub recipients: u64,
    #[arg(long, default_value_t = 0)]
    pub domains: u64,
    /// Zipf exponent of the domain spread (as `publish --zipf`).
    #[arg(long)]
    pub zipf: Option<f64>,
    #[arg(long, default_value = "bench.example")]
    pub domain: String,
    /// Rendered message size.
    #[arg(long, default_value_t = 10000)]
    pub size: usize,
    #[arg(long, default_value_t = 32)]
    pub sessions: u64,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub async fn client(a: ClientArgs) -> anyhow::Result<Value> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&a.ca).with_context(|| a.ca.clone())? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(a.server_name.clone())?;
    let tpl = Arc::new(message_templates(a.size));
    let a = Arc::new(a);
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let t0 = now_ms();
    let mut tasks = Vec::new();
    for _ in 0..a.sessions.max(1) {
        let (a, tpl, next, accepted, refused, bytes, connector, name) = (
            a.clone(),
            tpl.clone(),
            next.clone(),
            accepted.clone(),
            refused.clone(),
            bytes.clone(),
            connector.clone(),
            name.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::TcpStream::connect(&a.to).await?;
            let _ = sock.set_nodelay(true);
            let mut s = BufReader::new(Box::new(sock) as Box<dyn Io>);
            let mut line = String::new();
            reply(&mut s, &mut line).await?;
            s.get_mut().write_all(b"EHLO bench.example\r\n").await?;
            reply(&mut s, &mut line).await?;
            s.get_mut().write_all(b"STARTTLS\r\n").await?;
            if reply(&mut s, &mut line).await? != 220 {
                bail!("STARTTLS refused: {line}");
            }
            let tls = connector.connect(name, s.into_inner()).await?;
            let mut s = BufReader::new(Box::new(tls) as Box<dyn Io>);
            s.get_mut().write_all(b"EHLO bench.example\r\n").await?;
            s.get_mut().flush().await?;
            reply(&mut s, &mut line).await?;
            let mut reset = false;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= a.recipients {
                    break;
                }
                let rcpt = format!(
                    "user{i}@{}",
                    recipient_domain(i, a.domains, a.zipf, &a.domain)
                );
                let body = render(i, &rcpt, a.size, &tpl);
                let cmds = format!(
                    "{}MAIL FROM:<news@acme.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n",
                    if reset { "RSET\r\n" } else { "" }
                );
                s.get_mut().write_all(cmds.as_bytes()).await?;
                s.get_mut().flush().await?;
                if reset {
                    reply(&mut s, &mut line).await?;
                }
                let (_m, _r, d) = (
                    reply(&mut s, &mut line).await?,
                    reply(&mut s, &mut line).await?,
                    reply(&mut s, &mut line).await?,
                );
                if d != 354 {
                    refused.fetch_add(1, Ordering::Relaxed);
                    reset = true;
                    continue;
                }
                reset = false;
                s.get_mut().write_all(body.as_bytes()).await?;
                s.get_mut().flush().await?;
                if reply(&mut s, &mut line).await? == 250 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            s.get_mut().write_all(b"QUIT\r\n").await?;
            s.get_mut().flush().await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let done = now_ms();
    let acc = accepted.load(Ordering::Relaxed);
    Ok(
        json!({"t0_ms": t0, "done_ms": done, "recipients": a.recipients, "sessions": a.sessions,
              "accepted": acc, "refused": refused.load(Ordering::Relaxed),
              "mean_bytes": bytes.load(Ordering::Relaxed) as f64 / acc.max(1) as f64,
              "per_s": a.recipients as f64 * 1000.0 / (done - t0).max(1) as f64}),
    )
}

/// Reads one SMTP reply (all its lines); returns its code.
async fn reply(s: &mut BufReader<Box<dyn Io>>, line: &mut String) -> anyhow::Result<u16> {
    loop {
        line.clear();
        if s.read_line(line).await? == 0 {
            bail!("connection closed");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

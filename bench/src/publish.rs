//! `mailpipe-bench publish`: one bulk request (optionally split in parts)
//! of N recipients at one domain or spread over many, with templates padded
//! so that the rendered message is about SIZE bytes. The templates serve
//! `trickle` too, the domain spread `inject`.

use std::io::Write as _;

use lapin::options::BasicPublishOptions;
use serde_json::{json, Value};

use crate::amqp::{confirm_channel, connect, persistent, Window};
use crate::now_ms;

const LOREM: &str =
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor";

/// Templates whose rendered message is about `size` bytes: a multipart
/// text + html message with the usual personalization; the bodies are padded
/// with ordinary 78-character lines (7bit, no re-encoding).
pub fn templates(size: usize) -> Value {
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
pub fn spread_domain(i: u64, domains: u64, domain: &str) -> String {
    if domains == 0 {
        domain.to_string()
    } else {
        format!("d{}.{domain}", i % domains)
    }
}

/// Recipient i's domain under a Zipf distribution of exponent `s` over
/// `domains` domains: `d{k}.{domain}`, where d0 is the largest (about 13 %
/// of the recipients at s = 1 over 1,000 domains), d1 half its size, and
/// so on. The draw is a hash of i, so every tool that names recipient i
/// (`publish`, `inject`, `client`) names the same address.
pub fn zipf_domain(i: u64, domains: u64, s: f64, domain: &str) -> String {
    static CDF: std::sync::OnceLock<(u64, u64, Vec<f64>)> = std::sync::OnceLock::new();
    let (d, bits, cdf) = CDF.get_or_init(|| {
        let w: Vec<f64> = (1..=domains.max(1))
            .map(|k| 1.0 / (k as f64).powf(s))
            .collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let cdf = w
            .iter()
            .map(|x| {
                acc += x / total;
                acc
            })
            .collect();
        (domains, s.to_bits(), cdf)
    });
    assert!(
        *d == domains && *bits == s.to_bits(),
        "one Zipf setting per process"
    );
    let u = (splitmix64(i ^ 0x5eed_2026) >> 11) as f64 / (1u64 << 53) as f64;
    let k = cdf.partition_point(|&c| c < u).min(cdf.len() - 1);
    format!("d{k}.{domain}")
}

/// A 64-bit mix of `x` (SplitMix64's finalizer): the benchmark's
/// deterministic "random" draws per recipient.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Recipient i's domain: Zipf-spread when `zipf` is given, else in turn.
pub fn recipient_domain(i: u64, domains: u64, zipf: Option<f64>, domain: &str) -> String {
    match zipf {
        Some(s) if domains > 0 => zipf_domain(i, domains, s, domain),
        _ => spread_domain(i, domains, domain),
    }
}

/// How a request's recipients spread over domains and local parts (the
/// default: all `user{i}@DOMAIN`). The exclusion-rules benchmark spreads
/// them so that rules and address checks have domains to look up.
#[derive(clap::Args, Clone, Default)]
pub struct Mix {
    /// Spread the recipients over this many domains, recipient i at
    /// `d{i % domains}.{domain}` (0: all at `domain`).
    #[arg(long, default_value_t = 0)]
    domains: u64,
    /// Spread the recipients over `--domains` by a Zipf law of this
    /// exponent (1.0: the largest domain has about twice the second's
    /// recipients) instead of in turn.
    #[arg(long)]
    zipf: Option<f64>,
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

pub struct Recipients {
    pub domain: String,
    pub mix: Mix,
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
        format!(
            "{local}@{}",
            recipient_domain(i, m.domains, m.zipf, &self.domain)
        )
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
pub async fn publish(
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

//! `mailpipe submit`: publishes a bulk request, from a JSON request file or
//! from a CSV of recipients plus template files, split into parts so that a
//! campaign of any size can be submitted. Re-running with the same
//! `--request-id` sends nothing twice.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;
use mailpipe_common::address::parse_mailbox;
use mailpipe_common::amqp;
use mailpipe_common::message::{Content, Lane, MAX_REQUEST_RETRIES, REQUEST_SCHEMA_VERSION};
use mailpipe_common::template::Compiled;
use mailpipe_common::topology::Topology;
use mailpipe_ctl::recipients::CsvRecipients;
use serde_json::{json, Map, Value};

/// Submit a campaign. Prints the request id (pass it to `mailpipe status`).
///
/// Either give a JSON request file (see the README for the format), or
/// `--csv` with a header row containing `email`, optionally `name`, and any
/// other columns, which become template variables; the templates come from
/// `--subject`, `--text` and `--html`.
#[derive(Args)]
pub struct SubmitCommand {
    /// A JSON request file ("-" reads standard input).
    #[arg(conflicts_with = "csv")]
    pub request: Option<PathBuf>,
    /// A CSV file of recipients (header row: email[,name][,var...]).
    #[arg(long, requires_all = ["from", "subject"])]
    pub csv: Option<PathBuf>,
    /// Sender mailbox, e.g. "ACME <news@acme.example>".
    #[arg(long)]
    pub from: Option<String>,
    /// Reply-To mailbox.
    #[arg(long)]
    pub reply_to: Option<String>,
    /// Subject template (MiniJinja), e.g. "Hello {{ name }}".
    #[arg(long)]
    pub subject: Option<String>,
    /// File with the text/plain body template.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// File with the text/html body template.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// One-click unsubscribe URL template.
    #[arg(long)]
    pub unsubscribe_url: Option<String>,
    /// Extra header "Name: value template" (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// The request id (idempotency key); generated when absent.
    #[arg(long)]
    pub request_id: Option<String>,
    /// transactional or bulk.
    #[arg(long)]
    pub lane: Option<Lane>,
    /// Campaign label.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Tenant label.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Validity period, e.g. "5d" or "36h".
    #[arg(long)]
    pub validity: Option<String>,
    /// Retries after a failed first attempt for every message of this
    /// request (0-20), in place of the retry policy's: 0 stops a message at
    /// its first failure. Delays still follow the policy's schedule.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=MAX_REQUEST_RETRIES as i64))]
    pub retries: Option<u32>,
    /// Recipients per published part.
    #[arg(long, default_value_t = 10_000)]
    pub part_size: usize,
    /// Check the request and print the messages of its first recipients
    /// (like `postcat`), and the recipients the expander would exclude for
    /// their address: invalid ones, and those the exclusion rules (read
    /// from Redis) name, without publishing anything.
    #[arg(long)]
    pub dry_run: bool,
}

impl SubmitCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if self.part_size == 0 {
            bail!("--part-size must be at least 1");
        }
        let (base, mut recipients, total) = match (&self.request, &self.csv) {
            (Some(path), None) => {
                let (base, list) = self.read_json(path)?;
                let n = list.len();
                (base, Recipients::Json(list.into_iter()), n)
            }
            (None, Some(path)) => self.read_csv(path)?,
            _ => bail!("give a JSON request file or --csv (see mailpipe submit --help)"),
        };
        if total == 0 {
            crate::out::error("the request has no recipients; nothing to submit");
            return Ok(ExitCode::from(2));
        }
        // What the expander would refuse is refused here, before anything
        // is published: a request the expander refuses is acked and only
        // its dead-letter record (and `mailpipe status`) tell of it.
        let compiled = match check_content(&base) {
            Ok(c) => c,
            Err(e) => {
                crate::out::error(&format!("the request would be refused: {e}"));
                return Ok(ExitCode::from(2));
            }
        };
        if self.dry_run {
            return self
                .dry_run(ctx, &base, &compiled, &mut recipients, total)
                .await;
        }
        let request_id = base
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

        let (conn, channel, topology) = crate::ops::broker(ctx).await?;

        let total_parts = total.div_ceil(self.part_size).max(1);
        let bar = (std::io::stderr().is_terminal() && !ctx.json).then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "submitting {wide_bar} {pos}/{len} recipients ({rate})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", whole(state.per_sec()));
                    },
                ),
            );
            b
        });
        let mut window = amqp::ConfirmWindow::new(8);
        // Parts are read and published one at a time: memory stays bounded
        // by the part size, whatever the size of the file.
        for i in 0..total_parts {
            let chunk = recipients.next_chunk(self.part_size)?;
            let count = chunk.len();
            let mut part = base.clone();
            part.insert("request_id".into(), json!(request_id));
            part.insert("recipients".into(), Value::Array(chunk));
            if total_parts > 1 {
                part.insert("part".into(), json!({"index": i + 1, "total": total_parts}));
            }
            let body = serde_json::to_vec(&Value::Object(part))?;
            let props =
                amqp::properties().with_message_id(format!("{request_id}:{}", i + 1).into());
            let pending = amqp::publish(
                &channel,
                &topology.exchange(),
                Topology::REQUESTS,
                &body,
                props,
            )
            .await?;
            window.push(pending).await?;
            if let Some(b) = &bar {
                b.inc(count as u64);
            }
        }
        window
            .drain()
            .await
            .context("waiting for the broker's confirms")?;
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let _ = conn.close(200, "done".into()).await;
        if ctx.json {
            println!(
                "{}",
                json!({"request_id": request_id, "recipients": total, "parts": total_parts})
            );
        } else {
            println!("{request_id}");
            eprintln!(
                "submitted {total} recipients in {total_parts} part(s); follow with: mailpipe status {request_id} --watch"
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Applies command-line overrides to a request object.
    fn apply_flags(&self, base: &mut Map<String, Value>) -> anyhow::Result<()> {
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                base.insert(k.to_string(), v);
            }
        };
        set("request_id", self.request_id.clone().map(Value::from));
        set("lane", self.lane.map(|l| Value::from(l.as_str())));
        set("campaign", self.campaign.clone().map(Value::from));
        set("tenant", self.tenant.clone().map(Value::from));
        set("from", self.from.clone().map(Value::from));
        set("reply_to", self.reply_to.clone().map(Value::from));
        set("subject", self.subject.clone().map(Value::from));
        set(
            "unsubscribe_url",
            self.unsubscribe_url.clone().map(Value::from),
        );
        set("retries", self.retries.map(Value::from));
        if let Some(v) = &self.validity {
            let d = mailpipe_common::config::parse_duration(v).map_err(anyhow::Error::msg)?;
            set("validity_seconds", Some(json!(d.as_secs())));
        }
        for (key, path) in [("text", &self.text), ("html", &self.html)] {
            if let Some(p) = path {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                set(key, Some(Value::from(t)));
            }
        }
        if !self.headers.is_empty() {
            let mut h = base
                .get("headers")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for raw in &self.headers {
                let Some((name, value)) = raw.split_once(':') else {
                    bail!("--header {raw:?} must look like \"Name: value\"");
                };
                h.insert(name.trim().to_string(), Value::from(value.trim()));
            }
            base.insert("headers".into(), Value::Object(h));
        }
        Ok(())
    }

    fn read_json(&self, path: &PathBuf) -> anyhow::Result<(Map<String, Value>, Vec<Value>)> {
        let raw = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let Value::Object(mut base) = serde_json::from_str(&raw).context("parsing the request")?
        else {
            bail!("the request must be a JSON object");
        };
        let recipients = match base.remove("recipients") {
            Some(Value::Array(r)) => r,
            _ => bail!("the request has no \"recipients\" array"),
        };
        if base.contains_key("part") {
            bail!(
                "the request is already a part; submit the whole request and let mailpipe split it"
            );
        }
        self.apply_flags(&mut base)?;
        Ok((base, recipients))
    }

    /// Opens a CSV of recipients: reads it whole in a first pass (counting
    /// its records, and refusing it before anything is published when one
    /// is bad), then hands them out part by part.
    fn read_csv(&self, path: &PathBuf) -> anyhow::Result<(Map<String, Value>, Recipients, usize)> {
        let mut base = Map::new();
        base.insert("schema_version".into(), json!(REQUEST_SCHEMA_VERSION));
        self.apply_flags(&mut base)?;
        if !base.contains_key("text") && !base.contains_key("html") {
            bail!("give --text and/or --html body templates");
        }
        let name = path.display().to_string();
        let open = || -> anyhow::Result<CsvRecipients<std::fs::File>> {
            let file = std::fs::File::open(path).with_context(|| format!("opening {name}"))?;
            CsvRecipients::new(file, &name)
        };
        let total = open()?.count()?;
        Ok((base, Recipients::Csv(open()?), total))
    }
}

/// A rate as a whole number with thousands separators: 386543.27 → "386,543".
fn whole(rate: f64) -> String {
    crate::waiting::thousands(rate.max(0.0).round() as u64)
}

/// Checks what the expander checks of a request's content: the sender
/// address, the reply-to, the headers and that every template compiles;
/// and its number of retries.
fn check_content(base: &Map<String, Value>) -> anyhow::Result<Compiled> {
    let keys = [
        "from",
        "reply_to",
        "subject",
        "text",
        "html",
        "headers",
        "unsubscribe_url",
    ];
    let fields: Map<String, Value> = keys
        .iter()
        .filter_map(|k| base.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let content: Content =
        serde_json::from_value(Value::Object(fields)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(retries) = base.get("retries") {
        if retries
            .as_u64()
            .is_none_or(|r| r > u64::from(MAX_REQUEST_RETRIES))
        {
            anyhow::bail!("retries {retries} must be between 0 and {MAX_REQUEST_RETRIES}");
        }
    }
    parse_mailbox(&content.from).map_err(|e| anyhow::anyhow!("from {:?}: {e}", content.from))?;
    if let Some(r) = &content.reply_to {
        parse_mailbox(r).map_err(|e| anyhow::anyhow!("reply_to {r:?}: {e}"))?;
    }
    Compiled::compile(&content).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Where the recipients of a submission come from.
pub(crate) enum Recipients {
    Json(std::vec::IntoIter<Value>),
    Csv(CsvRecipients<std::fs::File>),
}

impl Recipients {
    /// The next `n` recipients (fewer at the end).
    pub(crate) fn next_chunk(&mut self, n: usize) -> anyhow::Result<Vec<Value>> {
        match self {
            Recipients::Json(it) => Ok(it.by_ref().take(n).collect()),
            Recipients::Csv(csv) => csv.next_chunk(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers_with_thousands_separators() {
        let table = [
            (386_543.268_1, "386,543"),
            (999.6, "1,000"),
            (12.0, "12"),
            (0.2, "0"),
            (-3.0, "0"),
            (1_234_567.0, "1,234,567"),
        ];
        for (rate, expected) in table {
            assert_eq!(whole(rate), expected, "{rate}");
        }
    }

    #[test]
    fn content_the_expander_would_refuse_is_refused_before_publishing() {
        let ok =
            json!({"from": "News <n@example.com>", "subject": "Hi {{ name }}", "text": "Hello"});
        let table = [
            (ok.clone(), None),
            (
                json!({"from": "News <n@example.com>", "subject": "Hi {{ name", "text": "x"}),
                Some("subject"),
            ),
            (
                json!({"from": "not an address", "subject": "s", "text": "x"}),
                Some("from"),
            ),
            (
                json!({"from": "n@example.com", "subject": "s"}),
                Some("body"),
            ),
            (
                json!({"from": "n@example.com", "subject": "s", "text": "x", "reply_to": "bad@"}),
                Some("reply_to"),
            ),
            (
                json!({"from": "n@example.com", "subject": "s", "text": "x", "retries": 21}),
                Some("retries"),
            ),
            (
                json!({"from": "n@example.com", "subject": "s", "text": "x", "retries": -1}),
                Some("retries"),
            ),
            (
                json!({"from": "n@example.com", "subject": "s", "text": "x", "retries": 0}),
                None,
            ),
        ];
        for (content, error) in table {
            let map = content.as_object().unwrap().clone();
            match (check_content(&map), error) {
                (Ok(_), None) => {}
                (Err(e), Some(word)) => {
                    assert!(
                        e.to_string().to_lowercase().contains(word),
                        "{content}: {e}"
                    )
                }
                (r, _) => panic!("{content}: {:?}", r.map(|_| ())),
            }
        }
    }
}

//! `mailpipe bounces`: the qualification table — every failure
//! text seen, normalized so identical failures aggregate, by count, each
//! row with its id (its subcommands, in `qualify.rs`, act on one row).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use mailpipe_state::store::Store;

/// List failure texts by how often they occurred, with their id,
/// classification and qualification: `to_qualify` when no rule matched
/// them, `keep` when a rule did or an operator kept the row as a rule
/// (`bounces qualify`), `ignore` when an operator set it aside.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BouncesCommand {
    #[command(subcommand)]
    pub command: Option<crate::qualify::BouncesSubCommand>,
    /// Rows to show.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only texts no rule matched and nobody qualified or ignored yet.
    #[arg(long)]
    pub to_qualify: bool,
    /// Instead: the latest mails the bounce intake could not use (not a
    /// report, no matching message, forged token), newest first, with why.
    #[arg(long, conflicts_with_all = ["to_qualify", "parse"])]
    pub unprocessed: bool,
    /// Instead: read one mail (a bounce, DSN, feedback report, unsubscribe
    /// request; `-` for standard input) and show what the intake makes of
    /// it: report type, recipients (for a complaint, who complained and
    /// where that was read), status and classification. Touches nothing.
    #[arg(long, value_name = "FILE", conflicts_with = "to_qualify")]
    pub parse: Option<std::path::PathBuf>,
}

impl BouncesCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if let Some(command) = &self.command {
            return command.run(ctx).await;
        }
        if let Some(path) = &self.parse {
            return self.parse(ctx, path);
        }
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        if self.unprocessed {
            let rows = store.unprocessed(self.limit).await?;
            if ctx.json {
                let values: Vec<serde_json::Value> = rows
                    .iter()
                    .filter_map(|r| serde_json::from_str(r).ok())
                    .collect();
                println!("{}", serde_json::to_string_pretty(&values)?);
            } else {
                println!(
                    "{:<21} {:<6} {:<12} {:<32} {:<40} why",
                    "at", "source", "outcome", "from", "subject"
                );
                for r in &rows {
                    let v: serde_json::Value = serde_json::from_str(r).unwrap_or_default();
                    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
                    println!(
                        "{:<21} {:<6} {:<12} {:<32} {:<40} {}",
                        crate::out::utc(v["at"].as_i64().unwrap_or(0)),
                        s("source"),
                        s("outcome"),
                        s("from"),
                        s("subject").chars().take(40).collect::<String>(),
                        s("why")
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = store
            .bounces(if self.to_qualify { 10_000 } else { self.limit })
            .await?;
        if self.to_qualify {
            rows.retain(|r| {
                r.qualification == mailpipe_state::store::QualificationState::ToQualify
            });
            rows.truncate(self.limit);
        }
        if ctx.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<16}  {:>8}  {:<7} {:<18} {:<11} text",
            "id", "count", "type", "reason", "qualified"
        );
        for r in rows {
            println!(
                "{:<16}  {:>8}  {:<7} {:<18} {:<11} {}",
                r.id, r.count, r.kind, r.reason, r.qualification, r.text
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl BouncesCommand {
    fn parse(&self, ctx: &crate::Context, path: &std::path::Path) -> anyhow::Result<ExitCode> {
        use mailpipe_common::bounce::{self, Report};
        use std::io::Read as _;
        let mut raw = Vec::new();
        if path.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut raw)?;
        } else {
            raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        }
        let classifier = mailpipe_common::classify::build_classifier(&ctx.settings.classifier)?;
        let parsed = bounce::parse(&raw);
        let mut out = serde_json::Map::new();
        out.insert(
            "addressed_to".into(),
            serde_json::json!(parsed.addressed_to),
        );
        match &parsed.report {
            Report::Delivery(d) => {
                out.insert("report".into(), "delivery_status".into());
                out.insert("standard".into(), d.standard.into());
                let recipients: Vec<serde_json::Value> = d
                    .recipients
                    .iter()
                    .map(|r| {
                        let failure = r.failure();
                        let class = classifier.classify(&failure);
                        serde_json::json!({
                            "recipient": r.final_recipient,
                            "action": format!("{:?}", r.action).to_lowercase(),
                            "status": r.status,
                            "diagnostic": r.diagnostic,
                            "classification": class,
                        })
                    })
                    .collect();
                out.insert("recipients".into(), recipients.into());
                out.insert(
                    "original_mailpipe_id".into(),
                    serde_json::json!(d.original.mailpipe_id),
                );
                out.insert(
                    "original_message_id".into(),
                    serde_json::json!(d.original.message_id),
                );
            }
            Report::Complaint(c) => {
                out.insert("report".into(), "feedback".into());
                out.insert("feedback_type".into(), c.feedback_type.clone().into());
                out.insert(
                    "original_rcpt_to".into(),
                    serde_json::json!(c.original_rcpt_to),
                );
                // Who complained, and where that was read (the returned
                // message's To when the report names no Original-Rcpt-To).
                out.insert("recipients".into(), serde_json::json!(c.recipients));
                out.insert("recipients_from".into(), c.recipients_from.as_str().into());
                out.insert(
                    "original_mailpipe_id".into(),
                    serde_json::json!(c.original.mailpipe_id),
                );
                out.insert(
                    "original_message_id".into(),
                    serde_json::json!(c.original.message_id),
                );
            }
            Report::Unsubscribe(u) => {
                out.insert("report".into(), "unsubscribe".into());
                out.insert("address".into(), serde_json::json!(u.address));
                out.insert(
                    "original_mailpipe_id".into(),
                    serde_json::json!(u.original.mailpipe_id),
                );
                out.insert(
                    "original_message_id".into(),
                    serde_json::json!(u.original.message_id),
                );
            }
            Report::AutoReply => {
                out.insert("report".into(), "auto_reply".into());
            }
            Report::Unrecognized(why) => {
                out.insert("report".into(), "unrecognized".into());
                out.insert("why".into(), why.clone().into());
            }
        }
        // JSON for scripts (piped, or --json); readable lines on a terminal.
        let out = serde_json::Value::Object(out);
        if crate::out::for_people() {
            print!("{}", crate::out::human(&out));
        } else {
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Ok(ExitCode::SUCCESS)
    }
}

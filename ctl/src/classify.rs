//! `mailpipe classify`: runs SMTP reply lines through the classifier, one
//! JSON object per line (piped, or with `--json`), or a readable block per
//! line on a terminal, so operators and scripts can test rules.

use std::io::BufRead;
use std::process::ExitCode;

use clap::Args;
use mailpipe_common::classify::{
    compile_classifier, qualification_text, read_rules_files, Failure,
};
use mailpipe_state::store::{row_id, Store};
use serde_json::json;

/// Classify SMTP replies: prints exactly one JSON object per input line, in
/// order (on a terminal without --json, a readable block per line instead), with type, reason, retry, quarantine, scope and the rule that
/// matched (null: only the basic-code fallback applied, "to qualify";
/// `kept:ID`: the row ID an operator kept in the qualification table), and
/// the normalized text and row id the line counts under in `mailpipe bounces`.
/// The rules are those the workers apply: the configured rules files, the
/// kept rows (read from Redis), the shipped defaults.
///
/// Examples:
///   mailpipe classify "550 5.1.1 <bob@example.com>: User unknown"
///   grep -h 'said:' /var/log/mail.log | mailpipe classify
#[derive(Args)]
pub struct ClassifyCommand {
    /// Reply lines; standard input (one reply per line) when none are given.
    pub replies: Vec<String>,
    /// Extra rule files, applied before the configured ones and the defaults.
    #[arg(long = "rules")]
    pub rules: Vec<std::path::PathBuf>,
    /// Leave out the rows kept in the qualification table (and do not
    /// connect to Redis).
    #[arg(long)]
    pub no_kept: bool,
}

impl ClassifyCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let mut settings = ctx.settings.classifier.clone();
        let mut files = self.rules.clone();
        files.append(&mut settings.rules_files);
        settings.rules_files = files;
        let kept = if self.no_kept {
            Vec::new()
        } else {
            match Store::connect(&ctx.settings.redis).await {
                Ok(store) => store.kept_rules().await?.1,
                Err(e) => {
                    crate::out::warn(&format!(
                        "kept rows of the qualification table left out: {e}"
                    ));
                    Vec::new()
                }
            }
        };
        let classifier = compile_classifier(&read_rules_files(&settings)?, &kept)?;
        let print = |line: &str| {
            let failure = Failure::from_reply_text(line);
            let c = classifier.classify(&failure);
            let normalized = qualification_text(&failure);
            let (code, enhanced) = match &failure {
                Failure::Reply { code, enhanced, .. } => (Some(*code), enhanced.clone()),
                Failure::Connection { .. } => (None, None),
            };
            let row = json!({
                    "input": line,
                    "code": code.filter(|c| *c != 0),
                    "enhanced": enhanced,
                    "type": c.kind,
                    "reason": c.reason,
                    "retry": c.retry,
                    "quarantine": c.quarantine,
                    "scope": c.scope,
                    "rule": c.rule,
                    "normalized": normalized,
                    "row": row_id(&normalized),
            });
            if crate::out::for_people() {
                println!("{line}\n{}", indent(&crate::out::human(&row)));
            } else {
                println!("{row}");
            }
        };
        if self.replies.is_empty() {
            for line in std::io::stdin().lock().lines() {
                print(line?.trim_end_matches('\r'));
            }
        } else {
            for line in &self.replies {
                print(line);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Each line of `text` indented by two spaces.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

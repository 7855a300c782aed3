//! `mailpipe classify`: runs SMTP reply lines through the classifier, one
//! JSON object per line, so operators and scripts can test rules.

use std::io::BufRead;
use std::process::ExitCode;

use clap::Args;
use mailpipe_common::classify::{build_classifier, Failure};
use serde_json::json;

/// Classify SMTP replies: prints exactly one JSON object per input line, in
/// order, with type, reason, retry, quarantine, scope and the rule that
/// matched (null: only the basic-code fallback applied, "to qualify").
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
}

impl ClassifyCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let mut settings = ctx.settings.classifier.clone();
        let mut files = self.rules.clone();
        files.append(&mut settings.rules_files);
        settings.rules_files = files;
        let classifier = build_classifier(&settings)?;
        let print = |line: &str| {
            let failure = Failure::from_reply_text(line);
            let c = classifier.classify(&failure);
            let (code, enhanced) = match &failure {
                Failure::Reply { code, enhanced, .. } => (Some(*code), enhanced.clone()),
                Failure::Connection { .. } => (None, None),
            };
            println!(
                "{}",
                json!({
                    "input": line,
                    "code": code.filter(|c| *c != 0),
                    "enhanced": enhanced,
                    "type": c.kind,
                    "reason": c.reason,
                    "retry": c.retry,
                    "quarantine": c.quarantine,
                    "scope": c.scope,
                    "rule": c.rule,
                })
            );
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

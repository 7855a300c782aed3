//! `mailpipe bounces qualify|ignore|reset|show|export-rules`: acting on one
//! row of the qualification table, addressed by the id `mailpipe bounces`
//! prints.
//!
//! A row an operator keeps becomes a classification rule that every worker
//! applies within `classifier.kept_rules_poll`, without a restart; an
//! ignored row is no rule and waits for nobody. An unknown id writes
//! nothing and exits 3; a decision that would not compile (a broken
//! pattern, `refused` that quarantines) writes nothing and exits 2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mailpipe_common::classify::{
    compile_classifier, read_rules_files, FailureType, Quarantine, Reason, Scope,
};
use mailpipe_common::unix_now;
use mailpipe_state::store::{BounceEntry, Qualification, Store};
use serde::de::DeserializeOwned;

#[derive(Subcommand)]
pub enum BouncesSubCommand {
    /// Keep a row as a classification rule: failures whose normalized text
    /// is the row's (or matches --pattern) get this classification, in
    /// every worker within seconds. Rules files still decide first.
    Qualify(QualifyCommand),
    /// Set a row aside: it is no rule (a kept row stops being one) and
    /// leaves `--to-qualify`; its failures are still counted and classified
    /// by the other rules.
    Ignore(RowCommand),
    /// Reset a row's count to 0 (it counts on from there).
    Reset(RowCommand),
    /// One row: its first raw text, normalized text, count, state, the
    /// classification, and who qualified it and when.
    Show {
        /// The row's id, as `mailpipe bounces` prints it.
        id: String,
    },
    /// Write the kept rows as a rules file (the format of
    /// `classifier.rules_files`), to keep them under version control; listed
    /// in `classifier.rules_files`, it classifies as the kept rows do.
    ExportRules {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// `mailpipe bounces qualify`.
#[derive(Args)]
pub struct QualifyCommand {
    /// The row's id, as `mailpipe bounces` prints it.
    pub id: String,
    /// hard, soft or ignored.
    #[arg(long = "type", value_parser = enum_arg::<FailureType>)]
    pub kind: FailureType,
    /// user_unknown, invalid_domain, account_disabled, mailbox_full,
    /// unreachable, rate_limited, greylisted, refused, message_too_large,
    /// auto_reply or undefined.
    #[arg(long, value_parser = enum_arg::<Reason>)]
    pub reason: Reason,
    /// Whom the failure is about: recipient, domain or sender.
    #[arg(long, default_value = "recipient", value_parser = enum_arg::<Scope>)]
    pub scope: Scope,
    /// Whether the message is retried (yes or no); by default only a soft
    /// failure is.
    #[arg(long, value_parser = yes_no)]
    pub retry: Option<bool>,
    /// What happens to the address: immediate, count or none. By default a
    /// hard failure about the recipient quarantines at once, a soft one
    /// counts toward the threshold, anything else leaves it alone.
    #[arg(long, value_parser = enum_arg::<Quarantine>)]
    pub quarantine: Option<Quarantine>,
    /// A regex (case-insensitive) over normalized texts, for a rule wider
    /// than the row's own text (which it matches exactly by default).
    #[arg(long)]
    pub pattern: Option<String>,
    /// Who qualifies (shown by `bounces show`); by default $USER.
    #[arg(long)]
    pub by: Option<String>,
}

/// A command on one row.
#[derive(Args)]
pub struct RowCommand {
    /// The row's id, as `mailpipe bounces` prints it.
    pub id: String,
    /// Who does it (shown by `bounces show`); by default $USER.
    #[arg(long)]
    pub by: Option<String>,
}

impl BouncesSubCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        match self {
            BouncesSubCommand::Qualify(c) => c.run(ctx, &store).await,
            BouncesSubCommand::Ignore(c) => {
                let Some(_) = store.ignore_bounce(&c.id, &by(&c.by), unix_now()).await? else {
                    return Ok(unknown_row(&c.id));
                };
                done(ctx, &store, &c.id, "ignored").await
            }
            BouncesSubCommand::Reset(c) => {
                if !store.reset_bounce(&c.id, &by(&c.by), unix_now()).await? {
                    return Ok(unknown_row(&c.id));
                }
                done(ctx, &store, &c.id, "count reset").await
            }
            BouncesSubCommand::Show { id } => {
                let Some(row) = store.bounce(id).await? else {
                    return Ok(unknown_row(id));
                };
                show(ctx, &row)?;
                Ok(ExitCode::SUCCESS)
            }
            BouncesSubCommand::ExportRules { output } => {
                let (version, rules) = store.kept_rules().await?;
                let yaml = mailpipe_common::classify::kept_rules_yaml(&rules);
                match output {
                    Some(path) => {
                        std::fs::write(path, &yaml)
                            .with_context(|| format!("writing {}", path.display()))?;
                        crate::out::warn(&format!(
                            "{} kept row(s) (version {version}) written to {}",
                            rules.len(),
                            path.display()
                        ));
                    }
                    None => print!("{yaml}"),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

impl QualifyCommand {
    async fn run(&self, ctx: &crate::Context, store: &Store) -> anyhow::Result<ExitCode> {
        let Some(row) = store.bounce(&self.id).await? else {
            return Ok(unknown_row(&self.id));
        };
        let q = Qualification {
            kind: self.kind,
            reason: self.reason,
            scope: self.scope,
            retry: self.retry,
            quarantine: self.quarantine,
            pattern: self.pattern.clone(),
        };
        // What the workers will compile, checked before anything is written:
        // the rules files, the other kept rows and this one.
        let rule = q.rule(&row);
        let (_, mut rules) = store.kept_rules().await?;
        rules.retain(|r| r.id != row.id);
        rules.push(rule.clone());
        let files = read_rules_files(&ctx.settings.classifier)?;
        let classifier = match compile_classifier(&files, &rules) {
            Ok(c) => c,
            Err(e) => {
                crate::out::error(&format!("the row cannot be kept so: {e}"));
                return Ok(ExitCode::from(2));
            }
        };
        let Some(version) = store
            .keep_bounce(&row, &q, &by(&self.by), unix_now())
            .await?
        else {
            return Ok(unknown_row(&self.id));
        };
        let own = mailpipe_common::classify::Failure::from_reply_text(&row.first);
        let decided = classifier.classify(&own).rule;
        if decided.as_deref() != Some(rule.name().as_str()) {
            crate::out::warn(&format!(
                "the row's own first text is classified by {} (a rules file decides first, or the pattern does not match it)",
                decided.as_deref().unwrap_or("the fallback")
            ));
        }
        crate::out::warn(&format!(
            "kept as rule {} (version {version}); workers apply it within {}",
            rule.name(),
            mailpipe_common::config::format_duration(ctx.settings.classifier.kept_rules_poll)
        ));
        done(ctx, store, &self.id, "kept").await
    }
}

/// Prints the row after a change (`--json`: the row).
async fn done(
    ctx: &crate::Context,
    store: &Store,
    id: &str,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let row = store.bounce(id).await?.unwrap_or_default();
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&row)?);
    } else {
        println!("{id}: {what}");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &crate::Context, row: &BounceEntry) -> anyhow::Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(row)?);
        return Ok(());
    }
    let utc = crate::out::utc;
    println!("id             {}", row.id);
    println!("state          {}", row.qualification);
    println!("count          {}", row.count);
    println!("text           {}", row.text);
    println!("first text     {}", row.first);
    println!("first seen     {}", utc(row.first_seen));
    println!("last seen      {}", utc(row.last_seen));
    println!("type           {}", row.kind);
    println!("reason         {}", row.reason);
    if let Some(retry) = row.retry {
        println!("retry          {}", if retry { "yes" } else { "no" });
    }
    for (label, value) in [
        ("quarantine", &row.quarantine),
        ("scope", &row.scope),
        ("pattern", &row.pattern),
    ] {
        if !value.is_empty() {
            println!("{label:<15}{value}");
        }
    }
    println!(
        "rule           {}",
        if row.rule.is_empty() { "-" } else { &row.rule }
    );
    if row.qualified_at > 0 {
        println!(
            "qualified      by {} at {}",
            row.qualified_by,
            utc(row.qualified_at)
        );
    }
    if row.reset_at > 0 {
        println!(
            "count reset    by {} at {}",
            row.reset_by,
            utc(row.reset_at)
        );
    }
    Ok(())
}

/// Says that no row `id` exists; exit code 3 (nothing was written).
fn unknown_row(id: &str) -> ExitCode {
    crate::out::error(&format!(
        "no row {id:?} in the qualification table (`mailpipe bounces` prints the ids)"
    ));
    ExitCode::from(3)
}

/// Who acts: `--by`, else $USER, else `operator`.
fn by(given: &Option<String>) -> String {
    given
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "operator".into())
}

/// One of the classifier's names (`hard`, `user_unknown`, `recipient`, ...).
fn enum_arg<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_ascii_lowercase()))
        .map_err(|_| format!("{s:?} is not one of the names listed in --help"))
}

fn yes_no(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("{s:?}: yes or no")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_read_the_classifier_s_names() {
        assert_eq!(enum_arg::<FailureType>("hard"), Ok(FailureType::Hard));
        assert_eq!(enum_arg::<Reason>("User_Unknown"), Ok(Reason::UserUnknown));
        assert_eq!(enum_arg::<Scope>("domain"), Ok(Scope::Domain));
        assert!(enum_arg::<Reason>("nope").is_err());
        assert_eq!(yes_no("yes"), Ok(true));
        assert_eq!(yes_no("No"), Ok(false));
        assert!(yes_no("maybe").is_err());
    }
}

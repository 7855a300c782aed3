//! `mailpipe submit --dry-run`: what the expander would make of a request,
//! without publishing it: the messages of its first recipients, rendered,
//! and every recipient it would exclude for its address (invalid, or named
//! by an exclusion rule), with the reason and the rule.

use std::collections::BTreeMap;
use std::process::ExitCode;

use mailpipe_common::address::EmailAddress;
use mailpipe_common::message::{Lane, Recipient};
use mailpipe_common::rules::{RuleSet, EXCLUDED_BY_RULE};
use mailpipe_common::store::Store;
use mailpipe_common::template::Compiled;
use serde_json::{json, Map, Value};

use crate::submit::{Recipients, SubmitCommand};

/// How many recipients' messages `--dry-run` prints.
const SAMPLES: usize = 3;
/// How many excluded recipients it names per reason (all are counted).
const NAMED: usize = 20;

/// The exclusions a dry run found.
#[derive(Default)]
struct Exclusions {
    /// Reason → count.
    counts: BTreeMap<String, u64>,
    /// Rule → count, of those excluded by a rule.
    rules: BTreeMap<String, u64>,
    /// The first few of each reason: recipient, reason, rule or why.
    named: Vec<Value>,
}

impl Exclusions {
    fn add(&mut self, recipient: &str, reason: &str, rule: Option<&str>, why: Option<String>) {
        let n = self.counts.entry(reason.to_string()).or_default();
        *n += 1;
        if let Some(r) = rule {
            *self.rules.entry(r.to_string()).or_default() += 1;
        }
        if *n as usize <= NAMED {
            self.named
                .push(json!({"recipient": recipient, "reason": reason, "rule": rule, "why": why}));
        }
    }
}

impl SubmitCommand {
    /// Renders the first recipients' messages and finds the recipients the
    /// expander would exclude for their address; publishes nothing.
    pub(crate) async fn dry_run(
        &self,
        ctx: &crate::Context,
        base: &Map<String, Value>,
        compiled: &Compiled,
        recipients: &mut Recipients,
        total: usize,
    ) -> anyhow::Result<ExitCode> {
        let tenant = base.get("tenant").and_then(Value::as_str);
        let lane: Lane = base
            .get("lane")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        // The rules as the expander would apply them now; without Redis the
        // dry run still checks everything else, and says so.
        let rules = match Store::connect(&ctx.settings.redis).await {
            Ok(store) => Some(crate::rules::compile_for(&store, tenant, lane).await?),
            Err(e) => {
                crate::out::warn(&format!("exclusion rules not checked: Redis: {e}"));
                None
            }
        };
        let rules = rules.unwrap_or_else(RuleSet::default);
        let mut samples = Vec::new();
        let mut excluded = Exclusions::default();
        loop {
            let chunk = recipients.next_chunk(self.part_size.min(10_000))?;
            if chunk.is_empty() {
                break;
            }
            for r in chunk {
                let r: Recipient = match serde_json::from_value(r.clone()) {
                    Ok(r) => r,
                    Err(e) => {
                        excluded.add(
                            &r.to_string(),
                            "invalid_recipient",
                            None,
                            Some(e.to_string()),
                        );
                        continue;
                    }
                };
                let address = match EmailAddress::parse(&r.email) {
                    Ok(a) => a,
                    Err(e) => {
                        excluded.add(&r.email, "invalid_address", None, Some(e.to_string()));
                        continue;
                    }
                };
                if let Some(rule) = rules.first_match(&address.key()) {
                    excluded.add(&r.email, EXCLUDED_BY_RULE, Some(rule), None);
                    continue;
                }
                if samples.len() < SAMPLES {
                    let m = compiled
                        .render(&r.email, r.name.as_deref(), &r.vars)
                        .map_err(|e| anyhow::anyhow!("rendering for {}: {e}", r.email))?;
                    samples.push(json!({
                        "to": r.email,
                        "subject": m.subject,
                        "headers": m.headers,
                        "text": m.text,
                        "html": m.html,
                    }));
                }
            }
        }
        let n_excluded: u64 = excluded.counts.values().sum();
        if ctx.json {
            println!(
                "{}",
                json!({
                    "recipients": total,
                    "excluded": excluded.counts,
                    "rules": excluded.rules,
                    "exclusions": excluded.named,
                    "samples": samples,
                })
            );
            return Ok(ExitCode::SUCCESS);
        }
        for m in &samples {
            println!("To: {}", m["to"].as_str().unwrap_or(""));
            println!("Subject: {}", m["subject"].as_str().unwrap_or(""));
            for h in m["headers"].as_array().into_iter().flatten() {
                println!(
                    "{}: {}",
                    h[0].as_str().unwrap_or(""),
                    h[1].as_str().unwrap_or("")
                );
            }
            if let Some(t) = m["text"].as_str() {
                println!("\n{t}");
            }
            if let Some(h) = m["html"].as_str() {
                println!("\n-- html --\n{h}");
            }
            println!("----");
        }
        for e in &excluded.named {
            let mut line = format!(
                "excluded as {}: {}",
                e["reason"].as_str().unwrap_or(""),
                e["recipient"].as_str().unwrap_or("")
            );
            if let Some(rule) = e["rule"].as_str() {
                line.push_str(&format!(" (rule {rule})"));
            }
            if let Some(why) = e["why"].as_str() {
                line.push_str(&format!(" ({why})"));
            }
            println!("{line}");
        }
        for (reason, n) in &excluded.counts {
            println!("{reason:<22} {n}");
            if reason == EXCLUDED_BY_RULE {
                for (rule, n) in &excluded.rules {
                    println!("  rule {rule:<15} {n}");
                }
            }
        }
        println!(
            "{total} recipient(s), {n_excluded} would be excluded; nothing was published (--dry-run)"
        );
        Ok(ExitCode::SUCCESS)
    }
}

//! `mailpipe submit --dry-run`: what the expander would make of a request,
//! without publishing it: the messages of its first recipients, rendered,
//! and every recipient it would exclude for its address (invalid, named by
//! an exclusion rule, failing an address check), with the reason and the
//! rule, and the likely typos it would only flag.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use mailpipe_common::address::EmailAddress;
use mailpipe_common::dns::MailHosts;
use mailpipe_common::message::{Lane, Recipient};
use mailpipe_common::quality::{likely_typo, MailHost, QualityCheck, TypoAction};
use mailpipe_common::rules::{RuleSet, EXCLUDED_BY_RULE};
use mailpipe_common::template::Compiled;
use mailpipe_state::store::Store;
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
    /// Check → count of the recipients only flagged.
    flagged: BTreeMap<String, u64>,
}

/// The recipients of one domain the `no_mail_host` check asks about.
#[derive(Default)]
struct Domain {
    recipients: u64,
    /// The first few of them, named in the report.
    first: Vec<String>,
    /// Whether its recipients were flagged as a likely typo.
    flagged: bool,
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
        let quality = &ctx.settings.expander.quality;
        let asked: Vec<QualityCheck> = match base.get("quality") {
            Some(q) => serde_json::from_value(q.clone())
                .map_err(|e| anyhow::anyhow!("the request's quality field: {e}"))?,
            None => quality.checks.clone(),
        };
        let typos = asked.contains(&QualityCheck::LikelyTypo);
        let hosts = asked.contains(&QualityCheck::NoMailHost);
        // Domain → its recipients, for the DNS lookups after the pass.
        let mut domains: BTreeMap<String, Domain> = BTreeMap::new();
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
                let typo = typos
                    .then(|| {
                        likely_typo(address.domain(), &quality.providers, quality.typo_distance)
                    })
                    .flatten();
                if let Some(provider) = typo {
                    if quality.typo_action == TypoAction::Exclude {
                        let why = format!("looks like {provider}");
                        excluded.add(&r.email, "likely_typo", None, Some(why));
                        continue;
                    }
                    *excluded.flagged.entry("likely_typo".into()).or_default() += 1;
                }
                if hosts {
                    let d = domains.entry(address.domain().to_string()).or_default();
                    d.recipients += 1;
                    d.flagged = typo.is_some();
                    if d.first.len() < NAMED {
                        d.first.push(r.email.clone());
                    }
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
        if !domains.is_empty() {
            self.check_mail_hosts(ctx, domains, &mut excluded).await?;
        }
        let n_excluded: u64 = excluded.counts.values().sum();
        if ctx.json {
            println!(
                "{}",
                json!({
                    "recipients": total,
                    "excluded": excluded.counts,
                    "rules": excluded.rules,
                    "flagged": excluded.flagged,
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
        for (check, n) in &excluded.flagged {
            println!("flagged {check:<14} {n} (sent, but flagged)");
        }
        println!(
            "{total} recipient(s), {n_excluded} would be excluded; nothing was published (--dry-run)"
        );
        Ok(ExitCode::SUCCESS)
    }

    /// Looks up each domain's mail host (as the expander would, with the
    /// sender's DNS servers, `lookups_in_flight` at a time) and excludes the
    /// recipients of those without one.
    async fn check_mail_hosts(
        &self,
        ctx: &crate::Context,
        domains: BTreeMap<String, Domain>,
        excluded: &mut Exclusions,
    ) -> anyhow::Result<()> {
        let q = &ctx.settings.expander.quality;
        let hosts = Arc::new(MailHosts::new(
            &ctx.settings.sender.mx.nameservers,
            q.lookup_timeout,
            q.cache_ttl,
        )?);
        let mut pending = domains.keys().cloned().collect::<Vec<_>>().into_iter();
        let mut lookups = tokio::task::JoinSet::new();
        loop {
            while lookups.len() < q.lookups_in_flight.max(1) {
                let Some(domain) = pending.next() else { break };
                let hosts = hosts.clone();
                lookups.spawn(async move {
                    let answer = hosts.lookup(&domain).await;
                    (domain, answer)
                });
            }
            let Some(done) = lookups.join_next().await else {
                break;
            };
            let (domain, answer) = done?;
            match answer {
                MailHost::Missing(why) => {
                    let d = &domains[&domain];
                    for r in &d.first {
                        excluded.add(r, "no_mail_host", None, Some(why.to_string()));
                    }
                    *excluded.counts.entry("no_mail_host".into()).or_default() +=
                        d.recipients - d.first.len() as u64;
                    if d.flagged {
                        // Not sent, so not flagged either.
                        if let Some(n) = excluded.flagged.get_mut("likely_typo") {
                            *n -= d.recipients;
                        }
                        excluded.flagged.retain(|_, n| *n > 0);
                    }
                }
                MailHost::Unknown(why) => {
                    crate::out::warn(&format!(
                        "{domain}: {why}; its recipients would not be excluded"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

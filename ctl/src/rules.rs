//! `mailpipe rules`: exclusion rules at run time. A rule names recipients
//! never to send to (by address pattern, domain, domain suffix, local part,
//! or a named list imported from a file), for all mail, bulk mail only, or
//! one tenant, until it expires. Every expander applies the change to the
//! next batch it screens; nothing restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mailpipe_common::address::EmailAddress;
use mailpipe_common::message::Lane;
use mailpipe_common::rules::{
    normalize_list_entry, presets, valid_name, Rule, RuleMatch, RuleScope, RuleSet,
};
use mailpipe_common::unix_now;
use mailpipe_state::store::Store;
use serde_json::json;

/// Exclusion rules: list, show, add, remove, enable, disable; named lists.
#[derive(Args)]
pub struct RulesCommand {
    #[command(subcommand)]
    pub command: RulesSubCommand,
}

#[derive(Subcommand)]
pub enum RulesSubCommand {
    /// Every rule: the stored ones and the built-in role-account rules (disabled until enabled).
    List,
    /// One rule (exit 3 if there is none of that name).
    Show { name: String },
    /// Store a rule; it applies from the next batch an expander screens.
    Add(Box<AddRule>),
    /// Remove a stored rule (exit 3 if there is none of that name).
    Remove { name: String },
    /// Switch a rule on (a built-in rule is stored enabled).
    Enable { name: String },
    /// Switch a rule off, keeping it (exit 3 if it is not stored).
    Disable { name: String },
    /// Replace a named list's entries with a file's: one address or domain
    /// per line, or CSV whose first column is one (a domain also names its
    /// subdomains). Rules refer to it with `--list NAME`.
    Import { list: String, file: PathBuf },
    /// The named lists, their sizes and the rules that use them.
    Lists,
    /// Remove a named list (exit 3 if there is none); its rules then match nothing.
    RemoveList { list: String },
    /// Which rule would exclude an address from a request of this tenant and lane.
    Check {
        address: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value = "bulk")]
        lane: Lane,
    },
}

/// What a new rule matches (exactly one kind), its scope and expiry.
#[derive(Args)]
pub struct AddRule {
    /// 1-64 characters of a-z 0-9 . _ -; shown in `status` and in `excluded` events.
    pub name: String,
    #[command(flatten)]
    pub matches: MatchArgs,
    /// all (default), bulk (transactional mail is never excluded), or tenant:NAME.
    #[arg(long, default_value = "all")]
    pub scope: RuleScope,
    /// Expire after this long, e.g. 30d or 12h (default: never).
    #[arg(long)]
    pub r#for: Option<String>,
    /// Why the rule exists, for the next operator.
    #[arg(long)]
    pub note: Option<String>,
    /// Store it switched off.
    #[arg(long)]
    pub disabled: bool,
    /// Replace a rule of the same name instead of refusing.
    #[arg(long)]
    pub replace: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct MatchArgs {
    /// Address patterns (`*` any run, `?` one character), e.g. '*@competitor.example'.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub address: Vec<String>,
    /// Domains, exactly (not their subdomains).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub domain: Vec<String>,
    /// Domains and all their subdomains.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub domain_suffix: Vec<String>,
    /// Local-part patterns, e.g. postmaster,abuse,'noreply*'.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub local: Vec<String>,
    /// A named list (`mailpipe rules import LIST FILE`).
    #[arg(long)]
    pub list: Option<String>,
}

impl MatchArgs {
    fn to_match(&self) -> RuleMatch {
        if let Some(l) = &self.list {
            RuleMatch::List(l.clone())
        } else if !self.address.is_empty() {
            RuleMatch::Address(self.address.clone())
        } else if !self.domain.is_empty() {
            RuleMatch::Domain(self.domain.clone())
        } else if !self.domain_suffix.is_empty() {
            RuleMatch::DomainSuffix(self.domain_suffix.clone())
        } else {
            RuleMatch::Local(self.local.clone())
        }
    }
}

/// The stored rules and the built-in ones not stored, by name; the flag
/// says whether the rule is built in.
async fn all_rules(store: &Store) -> anyhow::Result<BTreeMap<String, (Rule, bool)>> {
    let (_, stored) = store.rules().await?;
    let builtin: Vec<String> = presets().into_iter().map(|r| r.name).collect();
    let mut out: BTreeMap<String, (Rule, bool)> = presets()
        .into_iter()
        .map(|r| (r.name.clone(), (r, true)))
        .collect();
    for r in stored {
        let is_builtin = builtin.contains(&r.name);
        out.insert(r.name.clone(), (r, is_builtin));
    }
    Ok(out)
}

fn state(rule: &Rule, now: i64) -> &'static str {
    if !rule.enabled {
        "disabled"
    } else if rule.expires.is_some_and(|e| now >= e) {
        "expired"
    } else {
        "enabled"
    }
}

fn rule_json(rule: &Rule, builtin: bool, now: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(rule).unwrap_or_default();
    v["state"] = state(rule, now).into();
    v["builtin"] = builtin.into();
    v
}

fn unknown_rule(name: &str) -> ExitCode {
    crate::out::error(&format!(
        "no rule {name:?} (`mailpipe rules list` shows them); nothing changed"
    ));
    ExitCode::from(3)
}

impl RulesCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let now = unix_now();
        match &self.command {
            RulesSubCommand::List => {
                let rules = all_rules(&store).await?;
                if ctx.json {
                    let out: Vec<_> = rules.values().map(|(r, b)| rule_json(r, *b, now)).collect();
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    println!(
                        "{:<24} {:<9} {:<16} {:<21} match",
                        "name", "state", "scope", "expires"
                    );
                    for (r, builtin) in rules.values() {
                        println!(
                            "{:<24} {:<9} {:<16} {:<21} {}{}",
                            r.name,
                            state(r, now),
                            r.scope.to_string(),
                            crate::out::utc(r.expires.unwrap_or(0)),
                            r.matches.describe(),
                            if *builtin { " (built-in)" } else { "" }
                        );
                    }
                }
            }
            RulesSubCommand::Show { name } => {
                let rules = all_rules(&store).await?;
                let Some((r, builtin)) = rules.get(name) else {
                    return Ok(unknown_rule(name));
                };
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&rule_json(r, *builtin, now))?
                    );
                } else {
                    println!("name     {}", r.name);
                    println!(
                        "state    {}{}",
                        state(r, now),
                        if *builtin { " (built-in)" } else { "" }
                    );
                    println!("scope    {}", r.scope);
                    println!("match    {}", r.matches.describe());
                    println!("expires  {}", crate::out::utc(r.expires.unwrap_or(0)));
                    println!("created  {}", crate::out::utc(r.created));
                    if let Some(n) = &r.note {
                        println!("note     {n}");
                    }
                }
            }
            RulesSubCommand::Add(add) => return add.run(ctx, &store, now).await,
            RulesSubCommand::Remove { name } => {
                if !store.remove_rule(name).await? {
                    return Ok(unknown_rule(name));
                }
                print(ctx, json!({"removed": name}), || {
                    format!("rule {name} removed")
                });
            }
            RulesSubCommand::Enable { name } | RulesSubCommand::Disable { name } => {
                let on = matches!(self.command, RulesSubCommand::Enable { .. });
                let stored = store.rule(name).await?;
                let rule = match stored {
                    Some(r) => r,
                    None if on => match presets().into_iter().find(|r| &r.name == name) {
                        Some(r) => Rule { created: now, ..r },
                        None => return Ok(unknown_rule(name)),
                    },
                    None => return Ok(unknown_rule(name)),
                };
                store
                    .put_rule(
                        &Rule {
                            enabled: on,
                            ..rule
                        },
                        true,
                    )
                    .await?;
                let word = if on { "enabled" } else { "disabled" };
                print(ctx, json!({"rule": name, "state": word}), || {
                    format!("rule {name} {word}")
                });
            }
            RulesSubCommand::Import { list, file } => {
                if !valid_name(list) {
                    crate::out::error(&format!(
                        "list name {list:?} must be 1-64 characters of a-z 0-9 . _ -"
                    ));
                    return Ok(ExitCode::from(2));
                }
                let raw = crate::lists::read_file(file)?;
                let mut entries = Vec::with_capacity(raw.len());
                let mut bad = Vec::new();
                for r in raw {
                    match normalize_list_entry(&r) {
                        Some(e) => entries.push(e),
                        None => bad.push(r),
                    }
                }
                for b in bad.iter().take(20) {
                    crate::out::warn(&format!("skipped {b:?}: neither an address nor a domain"));
                }
                entries.sort();
                entries.dedup();
                store.replace_rule_list(list, &entries).await?;
                print(
                    ctx,
                    json!({"list": list, "entries": entries.len(), "skipped": bad.len()}),
                    || {
                        format!(
                            "list {list}: {} entries, {} skipped",
                            entries.len(),
                            bad.len()
                        )
                    },
                );
            }
            RulesSubCommand::Lists => {
                let rules = all_rules(&store).await?;
                let mut out = Vec::new();
                for (name, size) in store.rule_lists().await? {
                    let users: Vec<&str> = rules
                        .values()
                        .filter(|(r, _)| matches!(&r.matches, RuleMatch::List(l) if *l == name))
                        .map(|(r, _)| r.name.as_str())
                        .collect();
                    out.push(json!({"list": name, "entries": size, "rules": users}));
                }
                if ctx.json {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    println!("{:<24} {:>9} rules", "list", "entries");
                    for l in &out {
                        println!(
                            "{:<24} {:>9} {}",
                            l["list"].as_str().unwrap_or(""),
                            l["entries"],
                            l["rules"]
                                .as_array()
                                .map(|a| a
                                    .iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", "))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            RulesSubCommand::RemoveList { list } => {
                if !store.remove_rule_list(list).await? {
                    crate::out::error(&format!("no list {list:?}; nothing changed"));
                    return Ok(ExitCode::from(3));
                }
                print(ctx, json!({"removed": list}), || {
                    format!("list {list} removed")
                });
            }
            RulesSubCommand::Check {
                address,
                tenant,
                lane,
            } => {
                let Ok(a) = EmailAddress::parse(address) else {
                    crate::out::error(&format!("{address:?} is not a valid address"));
                    return Ok(ExitCode::from(2));
                };
                let snap = store.rules_snapshot().await?;
                let set = RuleSet::compile(&snap.rules, &snap.lists, tenant.as_deref(), *lane, now);
                let hit = set.first_match(&a.key());
                print(
                    ctx,
                    json!({"address": a.key(), "rule": hit}),
                    || match hit {
                        Some(r) => format!("{} is excluded by rule {r}", a.key()),
                        None => format!("{} is excluded by no rule", a.key()),
                    },
                );
                if hit.is_none() {
                    return Ok(ExitCode::from(3));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl AddRule {
    async fn run(&self, ctx: &crate::Context, store: &Store, now: i64) -> anyhow::Result<ExitCode> {
        let expires = match &self.r#for {
            Some(d) => {
                let d = mailpipe_common::config::parse_duration(d).map_err(anyhow::Error::msg)?;
                Some(now + d.as_secs() as i64)
            }
            None => None,
        };
        let rule = Rule {
            name: self.name.clone(),
            matches: self.matches.to_match(),
            scope: self.scope.clone(),
            expires,
            enabled: !self.disabled,
            note: self.note.clone(),
            created: now,
        };
        let rule = match rule.normalized() {
            Ok(r) => r,
            Err(e) => {
                crate::out::error(&e);
                return Ok(ExitCode::from(2));
            }
        };
        if let RuleMatch::List(l) = &rule.matches {
            if !store.rule_list_exists(l).await? {
                crate::out::warn(&format!(
                    "list {l} is not imported yet; the rule matches nothing until `mailpipe rules import {l} FILE`"
                ));
            }
        }
        if !store.put_rule(&rule, self.replace).await? {
            crate::out::error(&format!(
                "a rule {} exists; remove it first or add --replace; nothing changed",
                rule.name
            ));
            return Ok(ExitCode::from(2));
        }
        print(ctx, rule_json(&rule, false, now), || {
            format!("rule {} stored: {}", rule.name, rule.matches.describe())
        });
        Ok(ExitCode::SUCCESS)
    }
}

/// Prints a command's result: `value` under `--json`, else `text`.
fn print(ctx: &crate::Context, value: serde_json::Value, text: impl FnOnce() -> String) {
    if ctx.json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

/// The rules compiled for a request of `tenant` in `lane`, now: what
/// `submit --dry-run` applies.
pub async fn compile_for(
    store: &Store,
    tenant: Option<&str>,
    lane: Lane,
) -> anyhow::Result<RuleSet> {
    let snap = store.rules_snapshot().await?;
    Ok(RuleSet::compile(
        &snap.rules,
        &snap.lists,
        tenant,
        lane,
        unix_now(),
    ))
}

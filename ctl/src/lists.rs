//! `mailpipe quarantine`, `mailpipe denylist`, `mailpipe allowlist`: the
//! address lists. Quarantined and denylisted addresses are
//! excluded when a request is expanded; allowlisted addresses are never
//! quarantined.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mailpipe_common::address::EmailAddress;
use mailpipe_state::store::Store;
use serde_json::json;

use crate::ops::require_yes;

/// Quarantined addresses: list, inspect, add, lift, import, export.
#[derive(Args)]
pub struct QuarantineCommand {
    #[command(subcommand)]
    pub command: QuarantineSubCommand,
}

#[derive(Subcommand)]
pub enum QuarantineSubCommand {
    /// Quarantined addresses with reason, count and expiry.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// One address: quarantine record, error counter, list membership. Exit 3 if not quarantined.
    Show { address: String },
    /// Quarantine addresses by hand.
    Add {
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Reason recorded (e.g. user_unknown, complaint).
        #[arg(long, default_value = "operator")]
        reason: String,
        /// How long, e.g. 30d (default: the configured quarantine expiry).
        #[arg(long)]
        expiry: Option<String>,
    },
    /// Lift the quarantine of addresses (and reset their error counters).
    /// Exit 3 if one of them was not quarantined.
    Remove {
        #[arg(required = true)]
        addresses: Vec<String>,
        #[arg(long)]
        yes: bool,
    },
    /// Quarantine every address of a file (one per line, or CSV whose first column is the address).
    Import {
        file: PathBuf,
        #[arg(long, default_value = "imported")]
        reason: String,
        #[arg(long)]
        expiry: Option<String>,
    },
    /// Print every quarantined address as CSV (address,reason,count,first,last,expires,source;
    /// times as Unix seconds), or as JSON with --json.
    Export,
}

/// The denylist: addresses never sent to (opt-outs, complaints, lists
/// imported from elsewhere).
#[derive(Args)]
pub struct DenylistCommand {
    #[command(subcommand)]
    pub command: ListSubCommand,
}

/// The allowlist: addresses never quarantined, whatever their failures.
#[derive(Args)]
pub struct AllowlistCommand {
    #[command(subcommand)]
    pub command: ListSubCommand,
}

#[derive(Subcommand)]
pub enum ListSubCommand {
    /// Add addresses.
    Add {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Remove addresses (exit 3 if one of them was not on the list).
    Remove {
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Add every address of a file (one per line, or CSV whose first column is the address).
    Import { file: PathBuf },
    /// Whether an address is on the list (exit 3 if not).
    Check { address: String },
    /// Every address on the list, one per line (sorted).
    List,
    /// Every address on the list as CSV with a header (`email`), ready for `import`.
    Export,
}

/// Canonical address keys; invalid ones are reported and skipped.
fn keys(raw: &[String]) -> (Vec<String>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for r in raw {
        match EmailAddress::parse(r) {
            Ok(a) => ok.push(a.key()),
            Err(_) => bad.push(r.clone()),
        }
    }
    (ok, bad)
}

/// Entries of an import file: one per line or the first CSV column; a
/// header line (`email`, `address`, `domain`) and comments (#) are skipped.
pub(crate) fn read_file(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        let first = line
            .split([',', ';', '\t'])
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        let header = ["email", "address", "domain"]
            .iter()
            .any(|h| first.eq_ignore_ascii_case(h));
        if first.is_empty() || first.starts_with('#') || header {
            continue;
        }
        out.push(first.to_string());
    }
    Ok(out)
}

async fn store(ctx: &crate::Context) -> anyhow::Result<Store> {
    Store::connect(&ctx.settings.redis)
        .await
        .context("connecting to Redis")
}

fn expiry(ctx: &crate::Context, raw: &Option<String>) -> anyhow::Result<Duration> {
    match raw {
        Some(r) => mailpipe_common::config::parse_duration(r).map_err(anyhow::Error::msg),
        None => Ok(ctx.settings.quarantine.expiry),
    }
}

fn report_invalid(bad: &[String]) {
    for b in bad {
        crate::out::warn(&format!("skipped invalid address {b:?}"));
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

/// Exit 3 when some named addresses were not found (the others were handled).
fn exit_for(not_found: &[String], what: &str) -> ExitCode {
    for a in not_found {
        crate::out::error(&format!("{a}: {what}"));
    }
    if not_found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

impl QuarantineCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = store(ctx).await?;
        match &self.command {
            QuarantineSubCommand::List { limit } => {
                let rows = store.quarantine_list(*limit).await?;
                if ctx.json {
                    let out: Vec<_> = rows
                        .iter()
                        .map(|(a, r)| json!({"address": a, "record": r}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    println!(
                        "{:<40} {:<18} {:>5} {:<10} {:<21} expires",
                        "address", "reason", "count", "source", "since"
                    );
                    for (a, r) in &rows {
                        println!(
                            "{:<40} {:<18} {:>5} {:<10} {:<21} {}",
                            a,
                            r["reason"].as_str().unwrap_or("-"),
                            r["count"].as_u64().unwrap_or(0),
                            r["source"].as_str().unwrap_or("-"),
                            crate::out::utc(r["first"].as_i64().unwrap_or(0)),
                            crate::out::utc(r["expires"].as_i64().unwrap_or(0))
                        );
                    }
                }
            }
            QuarantineSubCommand::Show { address } => {
                let (ok, bad) = keys(std::slice::from_ref(address));
                let Some(key) = ok.first() else {
                    report_invalid(&bad);
                    return Ok(ExitCode::from(2));
                };
                let record = store.quarantine(key).await?;
                let count = store.failure_count(key).await?;
                let denylisted = store.list_contains("denylist", key).await?;
                let allowlisted = store.list_contains("allowlist", key).await?;
                let out = json!({
                    "address": key,
                    "quarantined": record.is_some(),
                    "record": record,
                    "error_count": count,
                    "denylisted": denylisted,
                    "allowlisted": allowlisted,
                });
                if ctx.json {
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    println!("address      {key}");
                    match &record {
                        Some(r) => {
                            println!("quarantined  yes");
                            println!("reason       {}", r["reason"].as_str().unwrap_or("-"));
                            println!("source       {}", r["source"].as_str().unwrap_or("-"));
                            println!("count        {}", r["count"].as_u64().unwrap_or(0));
                            println!(
                                "first        {}",
                                crate::out::utc(r["first"].as_i64().unwrap_or(0))
                            );
                            println!(
                                "last         {}",
                                crate::out::utc(r["last"].as_i64().unwrap_or(0))
                            );
                            println!(
                                "expires      {}",
                                crate::out::utc(r["expires"].as_i64().unwrap_or(0))
                            );
                        }
                        None => println!("quarantined  no"),
                    }
                    println!("errors       {count}");
                    println!("denylisted   {}", if denylisted { "yes" } else { "no" });
                    println!("allowlisted  {}", if allowlisted { "yes" } else { "no" });
                }
                if record.is_none() {
                    return Ok(ExitCode::from(3));
                }
            }
            QuarantineSubCommand::Add {
                addresses,
                reason,
                expiry: e,
            } => {
                let (ok, bad) = keys(addresses);
                report_invalid(&bad);
                let d = expiry(ctx, e)?;
                for a in &ok {
                    store.quarantine_add(a, reason, d).await?;
                }
                print(
                    ctx,
                    json!({"quarantined": ok.len(), "invalid": bad}),
                    || format!("{} address(es) quarantined", ok.len()),
                );
            }
            QuarantineSubCommand::Remove { addresses, yes } => {
                if let Some(code) = require_yes(*yes, "quarantine remove") {
                    return Ok(code);
                }
                let (ok, bad) = keys(addresses);
                report_invalid(&bad);
                let mut lifted = 0;
                let mut not_found = Vec::new();
                for a in &ok {
                    if store.quarantine(a).await?.is_none() {
                        not_found.push(a.clone());
                    } else if store.quarantine_remove(a).await? {
                        lifted += 1;
                    }
                }
                print(
                    ctx,
                    json!({"lifted": lifted, "not_quarantined": not_found, "invalid": bad}),
                    || format!("{lifted} quarantine(s) lifted"),
                );
                return Ok(exit_for(&not_found, "not quarantined; unchanged"));
            }
            QuarantineSubCommand::Import {
                file,
                reason,
                expiry: e,
            } => {
                let (ok, bad) = keys(&read_file(file)?);
                report_invalid(&bad);
                let d = expiry(ctx, e)?;
                for a in &ok {
                    store.quarantine_add(a, reason, d).await?;
                }
                print(
                    ctx,
                    json!({"quarantined": ok.len(), "invalid": bad.len()}),
                    || {
                        format!(
                            "{} address(es) quarantined, {} invalid skipped",
                            ok.len(),
                            bad.len()
                        )
                    },
                );
            }
            QuarantineSubCommand::Export => {
                let rows = store.quarantine_list(usize::MAX / 2).await?;
                if ctx.json {
                    let out: Vec<_> = rows
                        .iter()
                        .map(|(a, r)| json!({"address": a, "record": r}))
                        .collect();
                    println!("{}", serde_json::to_string(&out)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!("address,reason,count,first,last,expires,source");
                for (a, r) in rows {
                    println!(
                        "{a},{},{},{},{},{},{}",
                        r["reason"].as_str().unwrap_or(""),
                        r["count"].as_u64().unwrap_or(0),
                        r["first"].as_i64().unwrap_or(0),
                        r["last"].as_i64().unwrap_or(0),
                        r["expires"].as_i64().unwrap_or(0),
                        r["source"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

async fn run_list(
    ctx: &crate::Context,
    list: &str,
    command: &ListSubCommand,
) -> anyhow::Result<ExitCode> {
    let store = store(ctx).await?;
    match command {
        ListSubCommand::Add { addresses } => {
            let (ok, bad) = keys(addresses);
            report_invalid(&bad);
            let n = store.list_add(list, &ok).await?;
            print(ctx, json!({"added": n, "invalid": bad}), || {
                format!("{n} address(es) added to the {list}")
            });
        }
        ListSubCommand::Remove { addresses } => {
            let (ok, bad) = keys(addresses);
            report_invalid(&bad);
            let mut not_found = Vec::new();
            for a in &ok {
                if !store.list_contains(list, a).await? {
                    not_found.push(a.clone());
                }
            }
            let n = store.list_remove(list, &ok).await?;
            print(
                ctx,
                json!({"removed": n, "not_listed": not_found, "invalid": bad}),
                || format!("{n} address(es) removed from the {list}"),
            );
            return Ok(exit_for(&not_found, &format!("not on the {list}")));
        }
        ListSubCommand::Import { file } => {
            let (ok, bad) = keys(&read_file(file)?);
            report_invalid(&bad);
            let mut n = 0;
            for chunk in ok.chunks(1000) {
                n += store.list_add(list, chunk).await?;
            }
            print(ctx, json!({"added": n, "invalid": bad.len()}), || {
                format!(
                    "{n} new address(es) in the {list}, {} invalid skipped",
                    bad.len()
                )
            });
        }
        ListSubCommand::Check { address } => {
            let (ok, _) = keys(std::slice::from_ref(address));
            let key = ok.first();
            let on = match key {
                Some(k) => store.list_contains(list, k).await?,
                None => false,
            };
            print(
                ctx,
                json!({"address": key.unwrap_or(address), "list": list, "listed": on}),
                || (if on { "listed" } else { "not listed" }).to_string(),
            );
            if !on {
                return Ok(ExitCode::from(3));
            }
        }
        ListSubCommand::List => {
            let members = store.list_members(list).await?;
            if ctx.json {
                println!("{}", serde_json::to_string(&members)?);
            } else {
                for m in &members {
                    println!("{m}");
                }
            }
        }
        ListSubCommand::Export => {
            let members = store.list_members(list).await?;
            if ctx.json {
                println!("{}", serde_json::to_string(&members)?);
            } else {
                println!("email");
                for m in &members {
                    println!("{m}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl DenylistCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        run_list(ctx, "denylist", &self.command).await
    }
}

impl AllowlistCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        run_list(ctx, "allowlist", &self.command).await
    }
}

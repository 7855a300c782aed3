//! `mailpipe`: the operator CLI.
//!
//! Its verbs mirror what operators know from Postfix and Exim, plus what
//! mailpipe knows that an MTA does not (campaigns, reasons, policies).
//! Human-readable output by default, `--json` for scripts. Exit codes: 0 on
//! success, 1 on an operational error (broker or Redis unreachable, request
//! refused), 2 on bad usage.

mod ambiguous;
mod archive;
mod bounces;
mod campaign;
mod campaign_recipients;
mod campaign_recount;
mod classify;
mod dead;
mod domain;
mod dry_run;
mod lists;
mod ops;
mod out;
mod qualify;
mod queue;
mod rules;
mod site;
mod status;
mod submit;
mod summary;
mod top;
mod waiting;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mailpipe_common::config::Settings;

/// Operate a mailpipe installation: submit campaigns and watch them.
#[derive(Parser)]
#[command(name = "mailpipe", version = VERSION.as_str(), about, long_about = None)]
struct Cli {
    /// Configuration file (same format as the workers'); MAILPIPE__* variables apply too.
    #[arg(long, global = true, env = "MAILPIPE_CONFIG")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SubCommand,
}

#[derive(Subcommand)]
enum SubCommand {
    Submit(Box<submit::SubmitCommand>),
    Status(status::StatusCommand),
    Queue(queue::QueueCommand),
    Dead(dead::DeadCommand),
    Campaign(campaign::CampaignCommand),
    Quarantine(lists::QuarantineCommand),
    Denylist(lists::DenylistCommand),
    Allowlist(lists::AllowlistCommand),
    Domain(domain::DomainCommand),
    Site(site::SiteCommand),
    Rules(rules::RulesCommand),
    Classify(classify::ClassifyCommand),
    Bounces(bounces::BouncesCommand),
    Archive(archive::ArchiveCommand),
    Top(top::TopCommand),
}

/// The version `--version` prints (with the commit when the build knew it).
static VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(mailpipe_common::metrics::this_version);

/// What every subcommand receives.
pub struct Context {
    pub settings: Settings,
    pub json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    out::set_json(cli.json);
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            out::error(&e.to_string());
            return ExitCode::from(2);
        }
    };
    let ctx = Context {
        settings,
        json: cli.json,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            out::error(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            SubCommand::Submit(c) => c.run(&ctx).await,
            SubCommand::Status(c) => c.run(&ctx).await,
            SubCommand::Queue(c) => c.run(&ctx).await,
            SubCommand::Dead(c) => c.run(&ctx).await,
            SubCommand::Campaign(c) => c.run(&ctx).await,
            SubCommand::Quarantine(c) => c.run(&ctx).await,
            SubCommand::Denylist(c) => c.run(&ctx).await,
            SubCommand::Allowlist(c) => c.run(&ctx).await,
            SubCommand::Domain(c) => c.run(&ctx).await,
            SubCommand::Site(c) => c.run(&ctx).await,
            SubCommand::Rules(c) => c.run(&ctx).await,
            SubCommand::Classify(c) => c.run(&ctx).await,
            SubCommand::Bounces(c) => c.run(&ctx).await,
            SubCommand::Archive(c) => c.run(&ctx).await,
            SubCommand::Top(c) => c.run(&ctx).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            out::error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

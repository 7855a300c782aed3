//! `mailpipe-expander`: loads the configuration, installs logging and runs the
//! expander until SIGTERM or ctrl-c.

use mailpipe_common::config::{worker_config_arg, Settings};

const ABOUT: &str = "mailpipe-expander: turns bulk-send requests into one job per recipient,\nwith exclusions (invalid, duplicate, denylisted, quarantined, ...).";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(worker_config_arg("mailpipe-expander", ABOUT).as_deref())?;
    mailpipe_common::telemetry::init(&settings.telemetry);
    let shutdown = mailpipe_common::shutdown::signal();
    mailpipe_expander::run_until_stopped(settings, shutdown).await
}

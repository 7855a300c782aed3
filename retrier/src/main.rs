//! `mailpipe-retrier`: loads the configuration, installs logging and runs the
//! retrier until SIGTERM or ctrl-c.

use mailpipe_common::config::{worker_config_arg, Settings};

const ABOUT: &str = "mailpipe-retrier: reads failed deliveries and delays retries in the\ndelay tiers, or dead-letters what must stop.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(worker_config_arg("mailpipe-retrier", ABOUT).as_deref())?;
    mailpipe_common::telemetry::init(&settings.telemetry);
    let shutdown = mailpipe_common::shutdown::signal();
    mailpipe_retrier::run_until_stopped(settings, shutdown).await
}

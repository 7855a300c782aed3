//! `mailpipe-intake`: loads the configuration, installs logging and runs the
//! bounce and complaint intake until SIGTERM or ctrl-c.

use mailpipe_common::config::{config_arg, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(config_arg().as_deref())?;
    mailpipe_common::telemetry::init(&settings.telemetry);
    let shutdown = mailpipe_common::shutdown::signal();
    mailpipe_intake::run_until_stopped(settings, shutdown).await
}

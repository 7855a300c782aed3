//! `mailpipe-intake`: loads the configuration, installs logging and runs the
//! bounce and complaint intake until SIGTERM or ctrl-c.

use mailpipe_common::config::{worker_config_arg, Settings};

const ABOUT: &str = "mailpipe-intake: takes bounces and complaints (over SMTP and IMAP) and\nquarantines, denylists and reports them.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(worker_config_arg("mailpipe-intake", ABOUT).as_deref())?;
    mailpipe_common::telemetry::init(&settings.telemetry);
    let shutdown = mailpipe_common::shutdown::signal();
    mailpipe_intake::run_until_stopped(settings, shutdown).await
}

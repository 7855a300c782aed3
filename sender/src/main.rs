//! `mailpipe-sender`: loads the configuration, installs logging and runs the
//! sender until SIGTERM or ctrl-c.

use mailpipe_common::config::{worker_config_arg, Settings};

const ABOUT: &str = "mailpipe-sender: delivers the jobs of the send lanes over SMTP under the\nshared per-domain policy, and never sends a message twice.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(worker_config_arg("mailpipe-sender", ABOUT).as_deref())?;
    mailpipe_common::telemetry::init(&settings.telemetry);
    let shutdown = mailpipe_common::shutdown::signal_with_deadline(
        settings.sender.shutdown_timeout + mailpipe_common::shutdown::STOP_DEADLINE,
    );
    mailpipe_sender::run_until_stopped(settings, shutdown).await
}

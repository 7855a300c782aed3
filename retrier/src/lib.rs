pub async fn run_until_stopped(_s: mailpipe_common::config::Settings, _t: tokio_util::sync::CancellationToken) -> anyhow::Result<()> { Ok(()) }

//! One shutdown signal per process.
//!
//! [`signal`] returns a [`CancellationToken`] that is cancelled on SIGTERM
//! (what Kubernetes sends) or ctrl-c. Consumer loops `select!` on it: on the
//! signal they stop consuming, finish the messages in flight (ack after the
//! outcome is durable), and return, so `run_until_stopped` can close the
//! connection cleanly. Tests cancel the token themselves.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGTERM or ctrl-c.
pub fn signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        t.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; ctrl-c only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

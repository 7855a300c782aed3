//! One shutdown signal per process.
//!
//! [`signal`] returns a [`CancellationToken`] that is cancelled on SIGTERM
//! (what Kubernetes sends) or ctrl-c. Consumer loops `select!` on it: on the
//! signal they stop consuming, finish the messages in flight (ack after the
//! outcome is durable), and return, so `run_until_stopped` can close the
//! connection cleanly. Tests cancel the token themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a process may take to stop after the signal before the
/// watchdog ends it: past the sender's default wait for its in-flight
/// deliveries (45 s) and its last acks, well before anyone waits for ever.
pub const STOP_DEADLINE: Duration = Duration::from_secs(120);

/// Where the stop is, for the watchdog's message.
static STAGE: Mutex<&'static str> = Mutex::new("the signal was received");

/// Marks a stage of the stop (logged at INFO, and named by the watchdog
/// if the process is still there at its deadline).
pub fn stage(what: &'static str) {
    tracing::info!(stage = what, "stopping");
    *STAGE.lock().unwrap_or_else(|e| e.into_inner()) = what;
}

fn current_stage() -> &'static str {
    *STAGE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A token cancelled when the process receives SIGTERM or ctrl-c. From
/// then on a watchdog gives the process [`STOP_DEADLINE`] to stop; past
/// it, it logs the stage the stop was at and exits with code 1. A stop
/// that hangs (a sender once waited 39 minutes after SIGTERM) would
/// otherwise hold its replica's place until someone kills it; ended, its
/// unacked messages go back to their queues, and the leases and terminal
/// records keep them from being sent twice.
pub fn signal() -> CancellationToken {
    signal_with_deadline(STOP_DEADLINE)
}

/// [`signal`], with a watchdog deadline of `deadline` (a sender's is its
/// wait for in-flight deliveries plus [`STOP_DEADLINE`]).
pub fn signal_with_deadline(deadline: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        t.cancel();
        watchdog(deadline, Arc::new(AtomicBool::new(false)), move |stage| {
            tracing::error!(stage, ?deadline, "the stop did not finish in time; exiting");
            std::process::exit(1);
        });
    });
    token
}

/// Runs `overdue` with the stop's current stage once `deadline` has
/// passed, unless `done` was set by then. On a thread of its own, so that
/// a stuck runtime cannot hold it back.
fn watchdog(
    deadline: Duration,
    done: Arc<AtomicBool>,
    overdue: impl FnOnce(&'static str) + Send + 'static,
) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        if !done.load(Ordering::SeqCst) {
            overdue(current_stage());
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_names_the_stage_of_a_stop_past_its_deadline_and_not_of_one_that_ended() {
        let (tx, rx) = std::sync::mpsc::channel();
        stage("waiting for in-flight deliveries");
        let done = Arc::new(AtomicBool::new(false));
        let late = tx.clone();
        watchdog(Duration::from_millis(20), done, move |stage| {
            late.send(stage).unwrap();
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok("waiting for in-flight deliveries")
        );
        let ended = Arc::new(AtomicBool::new(false));
        watchdog(Duration::from_millis(100), ended.clone(), move |stage| {
            tx.send(stage).unwrap();
        });
        ended.store(true, Ordering::SeqCst);
        assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
    }
}

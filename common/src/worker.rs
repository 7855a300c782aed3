//! The reconnect loop every consumer process runs.
//!
//! A *session* is one broker connection: it declares the topology (again —
//! declarations are idempotent and a restarted broker may have lost nothing
//! or everything), opens its channels, re-applies its prefetch (lapin does
//! not restore it) and consumes until shutdown or until the connection
//! fails. On failure the loop reconnects with backoff; deliveries that were
//! not acked are redelivered by the broker, which every consumer tolerates.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::Connection;
use tokio_util::sync::CancellationToken;

use crate::config::AmqpSettings;
use crate::http::Health;

/// How a session ended.
pub enum SessionEnd {
    /// Shutdown was requested and in-flight work is done.
    Stopped,
}

/// Runs `session` on fresh connections until it ends with
/// [`SessionEnd::Stopped`] or `shutdown` fires while reconnecting.
pub async fn run_sessions<F, Fut>(
    amqp: &AmqpSettings,
    name: &str,
    health: &Health,
    shutdown: &CancellationToken,
    mut session: F,
) where
    F: FnMut(Arc<Connection>) -> Fut,
    Fut: Future<Output = anyhow::Result<SessionEnd>>,
{
    let mut delay = amqp.reconnect_delay;
    loop {
        health.set_ready(false);
        let Some(conn) = crate::amqp::connect(amqp, name, shutdown).await else {
            return;
        };
        let conn = Arc::new(conn);
        health.session_started();
        let began = std::time::Instant::now();
        let result = session(conn.clone()).await;
        health.session_ended();
        if shutdown.is_cancelled() {
            crate::shutdown::stage("closing the broker connection");
        }
        crate::amqp::close(&conn, "mailpipe stopping").await;
        match result {
            Ok(SessionEnd::Stopped) => {
                health.set_ready(false);
                return;
            }
            Err(e) => {
                health.set_ready(false);
                delay = reconnect_wait(delay, amqp.reconnect_delay, began.elapsed());
                tracing::warn!(error.cause_chain = %format!("{e:#}"), error.message = %e, retry_in = ?delay, "session ended; reconnecting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

/// A worker whose work is one session per broker connection (the
/// expander, the retrier, the sender): [`run_worker`] starts it.
pub trait SessionWorker {
    /// Its name in the logs; it connects to the broker as `mailpipe-{NAME}`.
    const NAME: &'static str;

    /// The broker it connects to.
    fn amqp(&self) -> &AmqpSettings;

    /// One broker connection's work, until shutdown (then
    /// [`SessionEnd::Stopped`]) or a broker error.
    fn session(
        self: Arc<Self>,
        conn: Arc<Connection>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<SessionEnd>> + Send;
}

/// Runs `worker`'s sessions on fresh connections ([`run_sessions`]) until
/// it stops, then logs that it stopped.
pub async fn run_worker<W: SessionWorker>(
    worker: Arc<W>,
    health: &Health,
    shutdown: &CancellationToken,
) {
    run_sessions(
        worker.amqp(),
        &format!("mailpipe-{}", W::NAME),
        health,
        shutdown,
        |conn| worker.clone().session(conn, shutdown.clone()),
    )
    .await;
    tracing::info!("{} stopped", W::NAME);
}

/// The wait before reconnecting after a session that lived `lived`: the
/// planned wait (doubled after each failed session, up to
/// [`MAX_RECONNECT_DELAY`]) or, after a session that lived at least
/// [`HEALTHY_SESSION`], the initial delay again, so a few hiccups hours
/// apart do not leave every later reconnect waiting 30 s.
pub fn reconnect_wait(planned: Duration, initial: Duration, lived: Duration) -> Duration {
    if lived >= HEALTHY_SESSION {
        initial
    } else {
        planned
    }
}

/// How long a broker session must have lived to count as healthy.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(60);
/// The longest wait between reconnects.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_wait_doubles_after_short_sessions_and_resets_after_a_healthy_one() {
        let ms = Duration::from_millis;
        let initial = ms(500);
        // (how long each session lived, expected wait after it)
        let table = [
            (ms(10), 500),
            (ms(10), 1000),
            (ms(10), 2000),
            (ms(10), 4000),
            (ms(10), 8000),
            (ms(10), 16000),
            (ms(10), 30000),
            (ms(10), 30000),
            (HEALTHY_SESSION - ms(1), 30000),
            (HEALTHY_SESSION, 500),
            (ms(10), 1000),
        ];
        let mut planned = initial;
        let mut seen = Vec::new();
        for (lived, _) in table {
            let wait = reconnect_wait(planned, initial, lived);
            seen.push(wait.as_millis());
            planned = (wait * 2).min(MAX_RECONNECT_DELAY);
        }
        let expected: Vec<u128> = table.iter().map(|(_, w)| *w).collect();
        assert_eq!(seen, expected);
    }
}

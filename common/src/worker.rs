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
        let result = session(conn.clone()).await;
        let _ = conn.close(200, "mailpipe stopping".into()).await;
        match result {
            Ok(SessionEnd::Stopped) => {
                health.set_ready(false);
                return;
            }
            Err(e) => {
                health.set_ready(false);
                tracing::warn!(error.cause_chain = ?e, error.message = %e, retry_in = ?delay, "session ended; reconnecting");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// What every worker starts with: its metrics, its health endpoint on
/// `listen`, and a Redis connection (retried until Redis answers) whose
/// health feeds readiness. `None` when shutdown came first.
#[cfg(feature = "redis")]
pub async fn start(
    listen: &str,
    redis: &crate::config::RedisSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(crate::metrics::Metrics, Health, crate::store::Store)>> {
    use anyhow::Context as _;
    let metrics = crate::metrics::Metrics::new();
    let health = Health::default();
    crate::http::serve(
        listen,
        health.clone(),
        metrics.registry.clone(),
        shutdown.clone(),
    )
    .await
    .context("binding the health endpoint")?;
    let Some(store) = crate::store::Store::connect_with_retry(redis, shutdown).await else {
        return Ok(None);
    };
    crate::http::watch_redis(store.clone(), health.clone(), shutdown.clone());
    Ok(Some((metrics, health, store)))
}

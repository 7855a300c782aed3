//! The Redis half of a worker's start: the connection (retried until Redis
//! answers), the check that it keeps its writes ([`crate::durability`]),
//! and the watch whose answers feed readiness. The broker half is
//! `mailpipe_common::worker`.

use tokio_util::sync::CancellationToken;

use mailpipe_common::http::Health;

/// What every worker starts with: its metrics (`M`: the binary's own
/// families), its health endpoint on
/// `listen`, and a Redis connection (retried until Redis answers) whose
/// health feeds readiness. `None` when shutdown came first.
///
/// Fails, before the worker writes anything, when Redis keeps nothing
/// across a restart and `redis.allow_volatile` is off
/// ([`crate::durability`]), or when a node of a Redis Cluster is named as a
/// single Redis ([`crate::connection`]); the binary then exits with code 1
/// and the reason on stderr, as on any other start-up error.
pub async fn start<M: mailpipe_common::metrics::WorkerMetrics>(
    listen: &str,
    redis: &crate::config::RedisSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(M, Health, crate::store::Store)>> {
    use anyhow::Context as _;
    let metrics = M::new();
    let health = Health::default();
    health
        .register(metrics.registry())
        .context("registering the connection metrics")?;
    mailpipe_common::http::serve(
        listen,
        health.clone(),
        metrics.registry().clone(),
        shutdown.clone(),
    )
    .await
    .context("binding the health endpoint")?;
    let Some(store) = crate::store::Store::connect_with_retry(redis, shutdown)
        .await
        .with_context(|| format!("refusing to start against Redis at {}", redis.describe()))?
    else {
        return Ok(None);
    };
    check_durability(&store, redis).await?;
    watch_redis(store.clone(), health.clone(), shutdown.clone());
    Ok(Some((metrics, health, store)))
}

/// Refuses a Redis that forgets its writes on restart, unless allowed;
/// logs what it found.
async fn check_durability(
    store: &crate::store::Store,
    redis: &crate::config::RedisSettings,
) -> anyhow::Result<()> {
    use crate::durability::{decide, read, Durability};
    let url = redis.describe();
    let reading = read(store).await;
    match decide(&reading, redis.allow_volatile) {
        Ok(Durability::Persistent { aof, rdb }) => {
            tracing::info!(redis = %url, aof, rdb, "Redis persists its data");
        }
        Ok(Durability::VolatileAllowed) => {
            tracing::warn!(
                redis = %url,
                "Redis keeps no data across a restart (neither AOF nor RDB); starting because redis.allow_volatile is true: after a Redis restart, messages already sent may be sent again"
            );
        }
        Ok(Durability::Unknown { why }) => {
            tracing::warn!(
                redis = %url,
                why,
                "cannot tell whether Redis persists its data; starting anyway. It must (AOF or RDB): a Redis that forgets its writes makes mailpipe send messages twice"
            );
        }
        Err(refusal) => {
            return Err(anyhow::Error::new(refusal)
                .context(format!("refusing to start against Redis at {url}")));
        }
    }
    Ok(())
}

/// Pings Redis twice a second and keeps readiness false while it does not
/// answer, whether or not a message happens to be in flight.
pub fn watch_redis(store: crate::store::Store, health: Health, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let ok = matches!(
                tokio::time::timeout(std::time::Duration::from_secs(1), store.ping()).await,
                Ok(Ok(()))
            );
            if health.set_redis_ok(ok) != ok {
                if ok {
                    tracing::info!("Redis answers again");
                } else {
                    tracing::warn!("Redis does not answer; not ready");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    });
}

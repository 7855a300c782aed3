//! The retrier: consumes the failure queue and decides, per failed attempt,
//! to try again later or to stop.
//!
//! A retry is published to the delay tier that matches its delay (a queue
//! with one fixed TTL whose expired messages dead-letter back into the
//! message's own send lane), with the attempt count raised. A message that
//! must stop gets its terminal `dead` record (counted once), a dead-letter
//! record with the reason, and a `dead` event. Every publish is confirmed
//! before the failure is acked.
//!
//! `lib.rs` runs the consumer (and the sweep of parked messages);
//! `failure.rs` handles one failed attempt; `sampler.rs` samples the
//! backlog for the metrics; `events.rs` holds the retrier's metrics and
//! the events that count and log.

mod events;
mod failure;
mod sampler;

pub use events::RetrierMetrics;
pub use failure::{failure_log_level, failure_text, FailureLog};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use mailpipe_common::amqp;
use mailpipe_common::config::{AmqpSettings, Settings};
use mailpipe_common::http::Health;
use mailpipe_common::topology::Topology;
use mailpipe_common::worker::{run_worker, SessionEnd, SessionWorker};
use mailpipe_state::live_rules::LiveClassifier;
use mailpipe_state::store::Store;
use tokio_util::sync::CancellationToken;

/// How often the retrier looks for parked messages of released campaigns.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Runs the retrier until `shutdown` is cancelled.
pub async fn run_until_stopped(
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some((metrics, health, store)) = mailpipe_state::worker::start::<RetrierMetrics>(
        &settings.retrier.listen,
        &settings.redis,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let classifier = LiveClassifier::start(
        &settings.classifier,
        store.clone(),
        metrics.kept_rules_version().clone(),
        shutdown.clone(),
    )
    .await?;
    let retrier = Arc::new(Retrier {
        classifier,
        topology: Topology::from_settings(&settings),
        settings,
        store,
        metrics,
        health: health.clone(),
    });
    run_worker(retrier, &health, &shutdown).await;
    Ok(())
}

struct Retrier {
    /// Classifies failure records that carry no classification (from a
    /// sender that did not classify yet); follows the kept rows.
    classifier: LiveClassifier,
    settings: Settings,
    topology: Topology,
    store: Store,
    metrics: RetrierMetrics,
    health: Health,
}

impl SessionWorker for Retrier {
    const NAME: &'static str = "retrier";

    fn amqp(&self) -> &AmqpSettings {
        &self.settings.amqp
    }

    async fn session(
        self: Arc<Self>,
        conn: Arc<Connection>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<SessionEnd> {
        let consume = amqp::channel(&conn, Some(self.settings.retrier.prefetch)).await?;
        let publish = amqp::channel(&conn, None).await?;
        self.topology
            .declare(&conn)
            .await
            .context("declaring topology")?;
        let mut consumer = consume
            .basic_consume(
                self.topology.queue(Topology::FAILED).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first sample is taken before the retrier says it is ready, so
        // a ready retrier exports the backlog.
        let mut backlog = tokio::time::interval(self.settings.retrier.backlog_interval);
        backlog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        backlog.tick().await;
        self.sample_backlog(&conn, &publish).await?;
        self.health.set_ready(true);
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return Ok(SessionEnd::Stopped),
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep_parked(&conn, &publish).await {
                        // Only a lost connection or publishing channel ends
                        // the session; anything else (a queue deleted by a
                        // concurrent release, a Redis hiccup) is swept again.
                        if !conn.status().connected() || !publish.status().connected() {
                            return Err(e);
                        }
                        tracing::warn!(error.cause_chain = %format!("{e:#}"), error.message = %e, "sweep of parked messages failed; trying again at the next sweep");
                    }
                    continue;
                }
                _ = backlog.tick() => {
                    self.sample_backlog(&conn, &publish).await?;
                    continue;
                }
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("consumer was cancelled by the broker"),
            };
            if let Err(e) = self.handle(&publish, &delivery).await {
                tracing::warn!(error.cause_chain = %format!("{e:#}"), error.message = %e, "failure not settled; returning it to the queue");
                delivery
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
                // A broker error means the channel is gone: reconnect.
                if e.downcast_ref::<lapin::Error>().is_some()
                    || e.downcast_ref::<amqp::PublishError>().is_some()
                {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl Retrier {
    async fn sample_backlog(&self, conn: &Connection, publish: &Channel) -> anyhow::Result<()> {
        sampler::sample(conn, publish, &self.store, &self.topology, &self.metrics)
            .await
            .context("sampling the backlog")
    }

    /// Moves the parked messages of released (or cancelled) campaigns back
    /// into their lanes: the operator's `campaign release` does it at once,
    /// this catches messages senders parked just after.
    async fn sweep_parked(&self, conn: &Connection, publish: &Channel) -> anyhow::Result<()> {
        let ops = mailpipe_state::queue_ops::QueueOps {
            conn,
            channel: publish,
            store: &self.store,
            topology: &self.topology,
        };
        for request in self.store.parked().await? {
            let moved = ops.sweep_parked(&request).await?;
            if moved.moved + moved.removed > 0 {
                tracing::info!(%request, resumed = moved.moved, removed = moved.removed, "swept parked messages");
            }
        }
        Ok(())
    }
}

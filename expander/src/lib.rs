//! The expander: turns each bulk request into one small job per recipient.
//!
//! For every request (or part of one) it validates the whole request first
//! (a refused request becomes a dead-letter record with its reason, and the
//! expander moves on), stores the templates once under their content id,
//! then streams over the recipients in batches: each recipient is asked
//! about by the compiled exclusion rules and the request's address checks
//! (likely typos; domains without a mail host, looked up once per domain
//! while the other domains' recipients go on), each batch is screened in
//! one Redis round trip (duplicates across the whole campaign, denylist,
//! quarantine, the rule's or check's exclusion, control group, coalescing,
//! audience limit), and every accepted
//! recipient gets a job with a deterministic message id. The jobs go into
//! the request's lane `expander.jobs_per_message` to a broker message
//! ([`JobBatch`]). Publishes are confirmed in a sliding window; the request
//! is acked only after all of them were confirmed and the part's counts
//! stored.
//!
//! A redelivered or republished request replays safely: screening remembers
//! each recipient's first verdict by position, the jobs carry the same ids
//! (the sender sends each id at most once), and the part's counts are
//! overwritten, not added.
//!
//! `lib.rs` runs the consumers and settles each request; `expand.rs`
//! expands one; `request.rs` validates a request at the edge and admits
//! each recipient entry; `rules.rs` holds the exclusion rules compiled per
//! tenant and lane; `quality.rs` runs the address checks of one expansion
//! (typos, DNS lookups of mail hosts); `publish.rs` screens batches and
//! publishes their jobs and events; `events.rs` holds the expander's
//! metrics and the events that log and count.

mod events;
mod expand;
mod publish;
mod quality;
mod request;
mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use mailpipe_common::amqp;
use mailpipe_common::config::{AmqpSettings, Settings};
use mailpipe_common::dns::MailHosts;
use mailpipe_common::http::Health;
use mailpipe_common::message::{DeadRecord, Lane};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_common::worker::{run_worker, SessionEnd, SessionWorker};
use mailpipe_state::store::{PartCounts, Store};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use events::ExpanderMetrics;
pub use request::{validate, Rejection};

/// Transactional requests expanded at once on top of `expander.prefetch`
/// bulk ones: a transactional request never waits for a large campaign's
/// expansion to finish.
const TRANSACTIONAL_RESERVE: usize = 8;

/// The lane a request asks for, read without validating it (validation
/// comes with the expansion); anything unreadable counts as bulk.
fn peek_lane(body: &[u8]) -> Lane {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        lane: Option<Lane>,
    }
    serde_json::from_slice::<Peek>(body)
        .ok()
        .and_then(|p| p.lane)
        .unwrap_or(Lane::Bulk)
}

/// Extra time request keys live in Redis beyond the validity period, so
/// `mailpipe status` still answers after the last retry.
const STATUS_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long `mailpipe status` remembers why a request was refused, when the
/// request has no other state.
const REFUSAL_TTL: Duration = STATUS_GRACE;

/// Runs the expander until `shutdown` is cancelled. Serves the health
/// endpoint on `settings.expander.listen`.
pub async fn run_until_stopped(
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some((metrics, health, store)) = mailpipe_state::worker::start::<ExpanderMetrics>(
        &settings.expander.listen,
        &settings.redis,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let q = &settings.expander.quality;
    // The sender's DNS servers answer the `no_mail_host` check. Without a
    // resolver (no usable system configuration) the check excludes nobody.
    let mail_hosts = match MailHosts::new(
        &settings.sender.mx.nameservers,
        q.lookup_timeout,
        q.cache_ttl,
    ) {
        Ok(h) => Some(Arc::new(h)),
        Err(e) => {
            tracing::error!(error = %e, "no DNS resolver: the no_mail_host check excludes nobody");
            None
        }
    };
    let worker = Arc::new(Expander {
        topology: Topology::from_settings(&settings),
        mail_hosts,
        settings,
        store,
        metrics,
        health: health.clone(),
        rules: rules::Rules::default(),
    });
    run_worker(worker, &health, &shutdown).await;
    Ok(())
}

struct Expander {
    settings: Settings,
    topology: Topology,
    store: Store,
    metrics: ExpanderMetrics,
    health: Health,
    /// The exclusion rules, compiled per tenant and lane.
    rules: rules::Rules,
    /// Answers about domains' mail hosts (the `no_mail_host` check).
    mail_hosts: Option<Arc<MailHosts>>,
}

/// What became of one request delivery.
enum ExpandOutcome {
    /// Every accepted recipient was published and confirmed.
    Expanded(PartCounts),
    /// The part had been expanded before; nothing was published again.
    AlreadyDone,
    /// The request was refused; a dead-letter record was published.
    Rejected(&'static str),
    /// Shutdown interrupted the expansion; the request goes back to the queue.
    Interrupted,
}

impl SessionWorker for Expander {
    const NAME: &'static str = "expander";

    fn amqp(&self) -> &AmqpSettings {
        &self.settings.amqp
    }

    async fn session(
        self: Arc<Self>,
        conn: Arc<Connection>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<SessionEnd> {
        // Bulk requests are expanded one at a time, in queue order: the
        // parts of a campaign are screened in order, so of two spellings of
        // one address the first occurrence is the one sent. Up to
        // `expander.prefetch` of them wait here; transactional requests
        // have their own reserve on top, so they are taken (and expanded at
        // once) while a large campaign expands.
        let held = usize::from(self.settings.expander.prefetch.max(1));
        let prefetch = (held + TRANSACTIONAL_RESERVE) as u16;
        let consume = Arc::new(amqp::channel(&conn, Some(prefetch)).await?);
        let publish = Arc::new(amqp::channel(&conn, None).await?);
        self.topology
            .declare(&conn)
            .await
            .context("declaring topology")?;
        let mut consumer = consume
            .basic_consume(
                self.topology.queue(Topology::REQUESTS).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.health.set_ready(true);
        let transactional = Arc::new(Semaphore::new(TRANSACTIONAL_RESERVE));
        let tasks = TaskTracker::new();
        let failed = CancellationToken::new();
        let error: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Arc::default();
        // Runs one expansion; an error ends the session.
        let run = {
            let this = self.clone();
            let publish = publish.clone();
            let shutdown = shutdown.clone();
            let failed = failed.clone();
            let error = error.clone();
            move |delivery: lapin::message::Delivery| {
                let (this, publish, shutdown, failed, error) = (
                    this.clone(),
                    publish.clone(),
                    shutdown.clone(),
                    failed.clone(),
                    error.clone(),
                );
                async move {
                    if shutdown.is_cancelled() || failed.is_cancelled() {
                        // Not started: the broker redelivers it to the next session.
                        return;
                    }
                    if let Err(e) = this.handle(&publish, &delivery, &shutdown).await {
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                        failed.cancel();
                    }
                }
            }
        };
        // Bulk requests go to one task that expands them in queue order.
        let (bulk_tx, mut bulk_rx) =
            tokio::sync::mpsc::unbounded_channel::<lapin::message::Delivery>();
        {
            let run = run.clone();
            // The task keeps the consuming channel open until it has acked.
            let consume = consume.clone();
            tasks.spawn(async move {
                let _consume = consume;
                while let Some(delivery) = bulk_rx.recv().await {
                    run(delivery).await;
                }
            });
        }
        let end = loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => break Ok(SessionEnd::Stopped),
                _ = failed.cancelled() => break Err(anyhow::anyhow!("an expansion failed")),
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => break Err(e.into()),
                None => break Err(anyhow::anyhow!("consumer was cancelled by the broker")),
            };
            match peek_lane(&delivery.data) {
                Lane::Bulk => {
                    let _ = bulk_tx.send(delivery);
                }
                Lane::Transactional => {
                    let Ok(slot) = transactional.clone().acquire_owned().await else {
                        break Ok(SessionEnd::Stopped);
                    };
                    let run = run.clone();
                    let consume = consume.clone();
                    tasks.spawn(async move {
                        let _consume = consume;
                        let _slot = slot;
                        run(delivery).await;
                    });
                }
            }
        };
        drop(bulk_tx);
        // Expansions in progress finish (or stop at their next batch on
        // shutdown and go back to the queue) before the session ends.
        tasks.close();
        tasks.wait().await;
        match error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(e),
            None => end,
        }
    }
}

impl Expander {
    /// Expands one request delivery and acks it (or hands it back when
    /// shutdown interrupted it). An error ends the session.
    async fn handle(
        &self,
        publish: &Channel,
        delivery: &lapin::message::Delivery,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mid = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_string());
        let poisoned = amqp::poisoned(&delivery.properties, self.settings.amqp.delivery_limit);
        let outcome = if let Some(returned) = poisoned {
            self.reject(publish, &Rejection::Poison(returned), None, &delivery.data)
                .await
                .map_err(|e| match e {
                    ExpandError::Broker(e) => e,
                    ExpandError::Store(e) => e.into(),
                })?
        } else {
            self.expand_with_retry(publish, &delivery.data, mid.as_deref(), shutdown)
                .await?
        };
        events::RequestHandled {
            seconds: started.elapsed().as_secs_f64(),
        }
        .emit(&self.metrics);
        match outcome {
            ExpandOutcome::Expanded(counts) => {
                events::RequestExpanded {
                    accepted: counts.accepted,
                    excluded: &counts.excluded,
                }
                .emit(&self.metrics);
                delivery.ack(BasicAckOptions::default()).await?;
            }
            ExpandOutcome::AlreadyDone => {
                events::RequestReplayed.emit(&self.metrics);
                delivery.ack(BasicAckOptions::default()).await?;
            }
            ExpandOutcome::Rejected(reason) => {
                events::RequestRejected { reason }.emit(&self.metrics);
                delivery.ack(BasicAckOptions::default()).await?;
            }
            ExpandOutcome::Interrupted => {
                delivery
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
            }
        }
        Ok(())
    }

    /// Expands one request, retrying on Redis errors (Redis being away must
    /// not dead-letter a good request) until shutdown. Broker errors end the
    /// session so it reconnects; the request is then redelivered.
    async fn expand_with_retry(
        &self,
        publish: &Channel,
        body: &[u8],
        amqp_message_id: Option<&str>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<ExpandOutcome> {
        let mut delay = Duration::from_millis(200);
        loop {
            match self.expand(publish, body, amqp_message_id, shutdown).await {
                Ok(o) => return Ok(o),
                Err(ExpandError::Broker(e)) => return Err(e),
                Err(ExpandError::Store(e)) => {
                    self.health.set_ready(false);
                    tracing::warn!(error = %e, retry_in = ?delay, "Redis unavailable while expanding; will retry");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(ExpandOutcome::Interrupted),
                _ = tokio::time::sleep(delay) => {}
            }
            self.health.set_ready(true);
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    async fn reject(
        &self,
        publish: &Channel,
        rejection: &Rejection,
        request_id: Option<String>,
        body: &[u8],
    ) -> Result<ExpandOutcome, ExpandError> {
        tracing::warn!(
            request = request_id.as_deref().unwrap_or("-"),
            reason = rejection.reason(),
            detail = %rejection,
            "request refused"
        );
        let record = DeadRecord {
            request: request_id,
            ..DeadRecord::for_input(rejection.reason(), rejection.to_string(), body, unix_now())
        };
        amqp::publish_dead(publish, &self.topology.exchange(), &record)
            .await
            .map_err(|e| ExpandError::Broker(e.into()))?;
        Ok(ExpandOutcome::Rejected(rejection.reason()))
    }
}

/// A failure while expanding that is not the request's fault.
#[derive(Debug)]
enum ExpandError {
    /// The broker failed: end the session, reconnect, get the request again.
    Broker(anyhow::Error),
    /// Redis failed: retry the same request after a pause.
    Store(mailpipe_state::store::StoreError),
}

impl From<mailpipe_state::store::StoreError> for ExpandError {
    fn from(e: mailpipe_state::store::StoreError) -> Self {
        ExpandError::Store(e)
    }
}

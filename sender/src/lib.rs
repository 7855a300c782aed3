//! The sender: consumes jobs from the send lanes and submits them over SMTP.
//!
//! Each lane has its own consumer and its own capacity (a semaphore of
//! permits): transactional mail is never queued behind a bulk campaign. Each
//! delivery is handled by [`Sender::deliver`], which returns a
//! [`DeliveryOutcome`]; the outcome is made durable (Redis record, confirmed
//! publish) before the delivery is acked, in one place ([`Sender::settle`]).
//!
//! Effectively-once submission: a message whose terminal record exists is
//! acked without sending; otherwise the sender takes the message's lease
//! (`SET NX PX`), submits, and writes the sent record on the 2xx reply before
//! the ack. A replica that receives a message whose lease is held waits for
//! the holder to finish or the lease to expire.

mod coalesce;
pub mod dkim;
pub mod mime;
mod mx;
mod smtp;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_lite::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use mailpipe_common::amqp;
use mailpipe_common::calls::{Answer, Call};
use mailpipe_common::classify::Failure;
use mailpipe_common::config::{DeliveryMode, RouteSettings, Settings};
use mailpipe_common::http::Health;
use mailpipe_common::message::{
    Content, DeadRecord, Event, EventKind, FailedJob, Job, JobBatch, Lane, LaneMessage,
};
use mailpipe_common::metrics::Metrics;
use mailpipe_common::policy::{Ask, Policy, RouteLimits, Verdict};
use mailpipe_common::store::{DoneRecord, DoneWrite, Gate, GateRequest, Store, StoreError};
use mailpipe_common::telemetry::scrub;
use mailpipe_common::template::Compiled;
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_common::worker::{run_sessions, SessionEnd};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use coalesce::Coalescer;
pub use smtp::enhanced_code;
#[doc(hidden)]
pub use smtp::fuzzing;

/// One relay and how it is chosen.
struct RouteState {
    route: smtp::Route,
    limits: RouteLimits,
    priority: u32,
    weight: u32,
}

/// Compiled templates of one request, shared by all its recipients.
struct Prepared {
    compiled: Compiled,
    sender: mime::Sender,
}

/// Content entries kept compiled; beyond this the cache starts over (a
/// sender rarely works on more than a few campaigns at once).
const CONTENT_CACHE: usize = 512;

/// What became of one delivery.
#[derive(Debug)]
enum DeliveryOutcome {
    /// The server accepted the message; the sent record is written.
    Delivered,
    /// The message already had a terminal state (sent, dead or removed).
    AlreadyDone,
    /// An operator holds the campaign: park the message until release.
    Held,
    /// An operator cancelled the campaign: the message ends as `removed`.
    Cancelled,
    /// The attempt failed; the job goes to the failure queue.
    Failed(Failure, String),
    /// The sending policy says not now (rate limit, paused domain): back
    /// through a delay tier, without counting an attempt.
    Deferred {
        delay: Duration,
        reason: &'static str,
    },
    /// The message cannot be sent at all: dead-letter it with this reason.
    Dead {
        reason: &'static str,
        detail: String,
    },
    /// Not attempted (shutdown came first): back into its lane.
    Unsent,
}

/// What to do with a delivery once [`Sender::handle`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Its outcome is durable: ack it.
    Ack,
    /// Give it back to the queue (a recipient's handler panicked).
    Requeue,
}

/// Acks one lane channel's deliveries, coalescing them: each round takes
/// every settlement that arrived and acks the longest run of settled
/// deliveries from the oldest one still outstanding with a single
/// `basic.ack multiple`; settled deliveries behind one still in flight are
/// acked on their own, so a slow message never holds the prefetch window.
/// Requeues are sent at once. Deliveries whose acks are lost with a broken
/// channel are redelivered, which the sent records make harmless.
#[derive(Clone)]
struct Acker {
    tx: tokio::sync::mpsc::UnboundedSender<AckEvent>,
}

enum AckEvent {
    Received(u64),
    Settled { tag: u64, ack: bool },
}

impl Acker {
    /// The acker of a channel, and its task, which ends once every clone
    /// is dropped and the last acks are written.
    fn start(channel: Arc<Channel>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AckEvent>();
        let task = tokio::spawn(async move {
            // Outstanding delivery tags; `true` once settled.
            let mut outstanding: std::collections::BTreeMap<u64, bool> = Default::default();
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 1024).await > 0 {
                let mut requeue = Vec::new();
                for ev in batch.drain(..) {
                    match ev {
                        AckEvent::Received(tag) => {
                            outstanding.insert(tag, false);
                        }
                        AckEvent::Settled { tag, ack: true } => {
                            outstanding.insert(tag, true);
                        }
                        AckEvent::Settled { tag, ack: false } => {
                            outstanding.remove(&tag);
                            requeue.push(tag);
                        }
                    }
                }
                for tag in requeue {
                    let _ = channel
                        .basic_reject(tag, BasicRejectOptions { requeue: true })
                        .await;
                }
                let mut upto = None;
                while let Some(entry) = outstanding.first_entry() {
                    if !*entry.get() {
                        break;
                    }
                    upto = Some(*entry.key());
                    entry.remove();
                }
                if let Some(tag) = upto {
                    let _ = channel
                        .basic_ack(tag, BasicAckOptions { multiple: true })
                        .await;
                }
                let behind: Vec<u64> = outstanding
                    .iter()
                    .filter(|(_, settled)| **settled)
                    .map(|(tag, _)| *tag)
                    .collect();
                for tag in behind {
                    outstanding.remove(&tag);
                    let _ = channel.basic_ack(tag, BasicAckOptions::default()).await;
                }
            }
        });
        (Self { tx }, task)
    }

    fn received(&self, tag: u64) {
        let _ = self.tx.send(AckEvent::Received(tag));
    }

    fn settle(&self, tag: u64, ack: bool) {
        let _ = self.tx.send(AckEvent::Settled { tag, ack });
    }
}

/// What a lane's tasks share.
#[derive(Clone)]
struct LaneContext {
    sender: Arc<Sender>,
    lane: Lane,
    publish: Arc<Channel>,
    acks: Acker,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl LaneContext {
    /// Records the outcome of recipient `i` of a delivery (`None`: its
    /// handler panicked); the last recipient to finish settles the delivery.
    fn done(&self, batch: &Arc<Batch>, i: usize, outcome: Option<DeliveryOutcome>) {
        let Some(outcomes) = batch.record(i, outcome) else {
            return;
        };
        let ctx = self.clone();
        let batch = batch.clone();
        self.tracker.spawn(async move {
            let result = match outcomes {
                Some(outcomes) => {
                    ctx.sender
                        .settle(ctx.lane, &ctx.publish, &batch.jobs, outcomes)
                        .await
                }
                // The whole delivery goes back (the recipients already sent
                // are skipped by their records); the delivery limit stops a
                // message that keeps crashing its handler.
                None => Ok(Settled::Requeue),
            };
            ctx.finish(batch.tag, result);
        });
    }

    /// Acks a settled delivery, or returns it to the queue.
    fn finish(&self, tag: u64, result: anyhow::Result<Settled>) {
        match result {
            Ok(Settled::Ack) => self.acks.settle(tag, true),
            Ok(Settled::Requeue) => self.acks.settle(tag, false),
            Err(e) => {
                tracing::warn!(error.cause_chain = ?e, error.message = %e, "delivery not settled; it will be redelivered");
                self.acks.settle(tag, false);
            }
        }
    }
}

/// One delivery of a lane being sent: the jobs of its recipients and
/// their outcomes so far.
struct Batch {
    tag: u64,
    jobs: Vec<Job>,
    /// A std mutex: held only to record an outcome, never across an await.
    state: Mutex<BatchState>,
}

struct BatchState {
    outcomes: Vec<Option<DeliveryOutcome>>,
    /// Recipients without an outcome yet.
    left: usize,
    /// A recipient's handler panicked.
    panicked: bool,
}

impl Batch {
    fn new(tag: u64, jobs: Vec<Job>) -> Self {
        let n = jobs.len();
        Self {
            tag,
            jobs,
            state: Mutex::new(BatchState {
                outcomes: (0..n).map(|_| None).collect(),
                left: n,
                panicked: false,
            }),
        }
    }

    /// Records an outcome. When it was the last one: `Some` of every
    /// outcome, or of `None` if a handler panicked.
    #[allow(clippy::type_complexity)]
    fn record(
        &self,
        i: usize,
        outcome: Option<DeliveryOutcome>,
    ) -> Option<Option<Vec<DeliveryOutcome>>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Some(o) => s.outcomes[i] = Some(o),
            None => s.panicked = true,
        }
        s.left -= 1;
        if s.left > 0 {
            return None;
        }
        if s.panicked {
            return Some(None);
        }
        Some(Some(
            s.outcomes
                .iter_mut()
                .map(|o| o.take().unwrap_or(DeliveryOutcome::Unsent))
                .collect(),
        ))
    }
}

/// What [`Sender::open`] made of a delivery.
enum Opened {
    /// Send these.
    Jobs(Vec<Job>),
    /// Settle it without sending.
    Settle(Unopened),
}

/// A delivery settled without sending.
enum Unopened {
    /// Not a job: dead-lettered with the reason.
    Malformed(String),
    /// A retry not due yet: on through this delay tier.
    NotDue(String),
    /// Returned too often: its recipients end as `poison_message`.
    Poison(Vec<Job>, String),
}

/// A stable 64-bit hash of two strings (FNV-1a), for route ordering.
fn hash(a: &str, b: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain([0]).chain(b.bytes()) {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Why a delivery could not reach an outcome yet.
#[derive(Debug)]
enum DeliverError {
    /// Redis failed; the message is held and tried again.
    Store(StoreError),
    /// Shutdown came while the message waited; it goes back to the queue.
    Shutdown,
}

impl From<StoreError> for DeliverError {
    fn from(e: StoreError) -> Self {
        DeliverError::Store(e)
    }
}

/// Runs the sender until `shutdown` is cancelled.
pub async fn run_until_stopped(
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Key files are read first: one that cannot be used stops start-up.
    let origin = mime::Origin::from_settings(&settings)?;
    let Some((metrics, health, store)) =
        mailpipe_common::worker::start(&settings.sender.listen, &settings.redis, &shutdown).await?
    else {
        return Ok(());
    };
    let mut routes = Vec::new();
    for r in settings.sender.effective_routes() {
        routes.push(Arc::new(RouteState {
            limits: RouteLimits {
                name: r.name.clone(),
                interval: r.rate.map(|rate| rate.interval()),
                concurrency: r.concurrency,
            },
            priority: r.priority,
            weight: r.weight.max(1),
            route: smtp::Route::new(&r, &settings.sender.hostname)
                .with_context(|| format!("building the SMTP pool of route {}", r.name))?,
        }));
    }
    let mx = match settings.sender.mode {
        DeliveryMode::Mx => Some(
            mx::MxResolver::new(&settings.sender.mx.nameservers)
                .context("building the DNS resolver")?,
        ),
        DeliveryMode::Relay => None,
    };
    // Route series start at zero, so dashboards and alerts see every route.
    let labels: Vec<String> = match settings.sender.mode {
        DeliveryMode::Mx => vec!["mx".into()],
        DeliveryMode::Relay => routes.iter().map(|r| r.limits.name.clone()).collect(),
    };
    for name in &labels {
        for outcome in ["sent", "failed", "unavailable"] {
            metrics.routes.with_label_values(&[name.as_str(), outcome]);
        }
    }
    let policy = Policy::new(store.clone());
    let batched = Batched::start(&store, &settings);
    let classifier = mailpipe_common::policy::build_classifier(&settings.classifier)?;
    let sender = Arc::new(Sender {
        topology: Topology::from_settings(&settings),
        instance: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        deliveries: Default::default(),
        settings,
        store,
        routes,
        mx,
        mx_routes: Mutex::new(HashMap::new()),
        policy,
        classifier,
        down: Mutex::new(HashMap::new()),
        metrics,
        health: health.clone(),
        cache: Mutex::new(HashMap::new()),
        origin,
        batched,
    });
    run_sessions(
        &sender.settings.amqp,
        "mailpipe-sender",
        &health,
        &shutdown,
        |conn| {
            let sender = sender.clone();
            let shutdown = shutdown.clone();
            async move { sender.session(conn, shutdown).await }
        },
    )
    .await;
    tracing::info!("sender stopped");
    Ok(())
}

struct Sender {
    settings: Settings,
    topology: Topology,
    /// Identifies this process as a lease holder.
    instance: String,
    /// Deliveries started by this process: numbers each one's lease owner.
    deliveries: std::sync::atomic::AtomicU64,
    store: Store,
    /// The relays, with their limits and order (relay mode).
    routes: Vec<Arc<RouteState>>,
    /// The MX resolver (MX mode).
    mx: Option<mx::MxResolver>,
    /// Connection pools to MX addresses, created as needed (MX mode).
    mx_routes: Mutex<HashMap<std::net::SocketAddr, Arc<RouteState>>>,
    /// The shared sending policy (rate, concurrency, pauses).
    policy: Policy,
    /// Classifies failures at once for the domain's breaker and slow-down
    /// (the retrier classifies them again for retries and quarantine).
    classifier: mailpipe_common::classify::Classifier,
    /// Routes that failed recently, until when they are skipped (this
    /// replica's own view; each replica finds out for itself).
    down: Mutex<HashMap<String, Instant>>,
    metrics: Metrics,
    health: Health,
    /// Compiled templates by content id. A std mutex: held only to look up or
    /// insert, never across an await.
    cache: Mutex<HashMap<String, Arc<Prepared>>>,
    /// Envelope sender (VERP) and DKIM keys, set up at start-up.
    origin: mime::Origin,
    /// The per-message Redis calls, run for all messages in flight together.
    batched: Batched,
}

/// Most calls made in one Redis round trip.
const COALESCE_MAX: usize = 256;

/// The Redis calls every message makes — its gate and lease, the sending
/// policy's verdict, its sent record — gathered across the messages in
/// flight and made together, whatever their kind, as one script call per
/// round trip ([`coalesce`], [`mailpipe_common::calls`]).
struct Batched {
    calls: Coalescer<Call, Answer>,
}

impl Batched {
    fn start(store: &Store, settings: &Settings) -> Self {
        let lease = settings.sender.lease;
        let window = settings.policy.breaker.window;
        let store = store.clone();
        Self {
            calls: Coalescer::start(COALESCE_MAX, move |calls: Vec<Call>| {
                let store = store.clone();
                async move { store.calls(&calls, lease, window).await }
            }),
        }
    }

    async fn gate(&self, request: GateRequest) -> Result<Gate, StoreError> {
        match self.calls.ask(Call::Gate(request)).await? {
            Answer::Gate(g) => Ok(g),
            other => Err(StoreError::Shared(format!("a gate answered {other:?}"))),
        }
    }

    async fn acquire(&self, ask: Ask) -> Result<Verdict, StoreError> {
        match self.calls.ask(Call::Acquire(ask)).await? {
            Answer::Acquire(v) => Ok(v),
            other => Err(StoreError::Shared(format!(
                "a policy ask answered {other:?}"
            ))),
        }
    }

    async fn record(&self, write: DoneWrite) -> Result<bool, StoreError> {
        match self.calls.ask(Call::Done(write)).await? {
            Answer::Done(new) => Ok(new),
            other => Err(StoreError::Shared(format!("a record answered {other:?}"))),
        }
    }
}

impl Sender {
    async fn session(
        self: &Arc<Self>,
        conn: Arc<Connection>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<SessionEnd> {
        let publish = Arc::new(amqp::channel(&conn, None).await?);
        self.topology
            .declare(&conn)
            .await
            .context("declaring topology")?;
        let tracker = TaskTracker::new();
        let failed = CancellationToken::new();
        let mut lanes = Vec::new();
        let mut ack_tasks = Vec::new();
        for lane in [Lane::Transactional, Lane::Bulk] {
            let concurrency = match lane {
                Lane::Transactional => self.settings.sender.transactional_concurrency,
                Lane::Bulk => self.settings.sender.bulk_concurrency,
            };
            let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
            let channel = Arc::new(amqp::channel(&conn, Some(prefetch)).await?);
            let (acks, ack_task) = Acker::start(channel.clone());
            ack_tasks.push(ack_task);
            let this = self.clone();
            let publish = publish.clone();
            let shutdown = shutdown.clone();
            let failed = failed.clone();
            let tracker2 = tracker.clone();
            lanes.push(tokio::spawn(async move {
                let r = this
                    .consume_lane(
                        lane,
                        concurrency,
                        channel,
                        acks,
                        publish,
                        &tracker2,
                        &shutdown,
                        &failed,
                    )
                    .await;
                if r.is_err() {
                    failed.cancel();
                }
                r
            }));
        }
        self.health.set_ready(true);
        let mut result = Ok(SessionEnd::Stopped);
        for l in lanes {
            match l.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(anyhow::anyhow!("lane task failed: {e}")),
            }
        }
        self.health.set_ready(false);
        tracker.close();
        let deadline = self.settings.sender.shutdown_timeout;
        let waited = tokio::time::timeout(deadline, async {
            while !tracker.is_empty() {
                tracing::info!(
                    in_flight = tracker.len(),
                    "still waiting for in-flight deliveries"
                );
                tokio::select! {
                    _ = tracker.wait() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                in_flight = tracker.len(),
                ?deadline,
                "shutdown deadline reached; unfinished deliveries go back to the queue"
            );
        }
        // The last acks are written before the connection closes.
        for task in ack_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn consume_lane(
        self: &Arc<Self>,
        lane: Lane,
        concurrency: usize,
        channel: Arc<Channel>,
        acks: Acker,
        publish: Arc<Channel>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        failed: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut consumer = channel
            .basic_consume(
                self.topology.queue(&Topology::lane_key(lane)).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // One permit per SMTP transaction in flight. The recipients of the
        // lane's messages take them in queue order, so a message's
        // recipients go out together and its ack is not held back by the
        // messages after it.
        let permits = Arc::new(Semaphore::new(concurrency));
        let ctx = LaneContext {
            sender: self.clone(),
            lane,
            publish,
            acks,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        };
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = failed.cancelled() => return Ok(()),
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("consumer of lane {} was cancelled", lane.as_str()),
            };
            ctx.acks.received(delivery.delivery_tag);
            let jobs = match self.open(&delivery) {
                Opened::Jobs(jobs) => jobs,
                Opened::Settle(settle) => {
                    let ctx = ctx.clone();
                    tracker.spawn(async move {
                        let tag = delivery.delivery_tag;
                        let result = ctx.sender.settle_unopened(&ctx, &delivery, settle).await;
                        ctx.finish(tag, result);
                    });
                    continue;
                }
            };
            let batch = Arc::new(Batch::new(delivery.delivery_tag, jobs));
            for i in 0..batch.jobs.len() {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    _ = failed.cancelled() => None,
                    p = permits.clone().acquire_owned() => p.ok(),
                };
                let Some(permit) = permit else {
                    // Not started: these recipients go back to their lane.
                    for rest in i..batch.jobs.len() {
                        ctx.done(&batch, rest, Some(DeliveryOutcome::Unsent));
                    }
                    return Ok(());
                };
                let ctx = ctx.clone();
                let batch = batch.clone();
                tracker.spawn(async move {
                    let _permit = permit;
                    let gauge = ctx.sender.metrics.in_flight.with_label_values(&[lane.as_str()]);
                    gauge.inc();
                    let job = &batch.jobs[i];
                    let result = AssertUnwindSafe(ctx.sender.deliver_with_retry(job, &ctx.shutdown))
                        .catch_unwind()
                        .await;
                    gauge.dec();
                    let outcome = match result {
                        // Shutdown while Redis was unavailable: hand it back.
                        Ok(None) => Some(DeliveryOutcome::Unsent),
                        Ok(Some(o)) => Some(o),
                        Err(_) => {
                            tracing::error!(message = %job.id, "delivery handler panicked; returning the message (the delivery limit stops a poison message)");
                            None
                        }
                    };
                    ctx.done(&batch, i, outcome);
                });
            }
        }
    }

    /// Reads a delivery: its jobs, or what to do with it without sending.
    fn open(&self, delivery: &Delivery) -> Opened {
        let batch = match LaneMessage::decode(&delivery.data) {
            Ok(b) => b,
            Err(detail) => return Opened::Settle(Unopened::Malformed(detail)),
        };
        // A retry not yet due (jittered, or longer than one tier) goes on
        // through the next tier.
        if let Some(due) = amqp::header_str(&delivery.properties, Topology::DUE_HEADER)
            .and_then(|d| d.parse::<i64>().ok())
        {
            let remaining = due - mailpipe_common::unix_now_ms();
            if remaining > 0 {
                if let Some(tier) = self
                    .topology
                    .hop_tier(Duration::from_millis(remaining as u64))
                {
                    return Opened::Settle(Unopened::NotDue(Topology::tier_key(tier, batch.lane)));
                }
            }
        }
        let jobs = batch.into_jobs();
        // The broker dead-letters a message returned `delivery_limit` times
        // (a crash loop); end it here on its last delivery instead, with
        // terminal records, so its campaign's counts still close.
        let returned = amqp::header_str(&delivery.properties, "x-delivery-count")
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(0);
        if returned + 1 >= self.settings.amqp.delivery_limit {
            let detail = format!("returned to the queue {returned} times without an outcome");
            tracing::error!(message = %jobs[0].id, recipients = jobs.len(), %detail, "poison message stopped");
            return Opened::Settle(Unopened::Poison(jobs, detail));
        }
        Opened::Jobs(jobs)
    }

    /// Settles a delivery that was not sent: malformed, not due, or poison.
    async fn settle_unopened(
        &self,
        ctx: &LaneContext,
        delivery: &Delivery,
        what: Unopened,
    ) -> anyhow::Result<Settled> {
        match what {
            Unopened::Malformed(detail) => {
                self.settle_malformed(&ctx.publish, delivery, detail).await
            }
            Unopened::NotDue(key) => {
                amqp::publish_confirmed(
                    &ctx.publish,
                    &self.topology.exchange(),
                    &key,
                    &delivery.data,
                    delivery.properties.clone(),
                )
                .await?;
                self.metrics
                    .deliveries
                    .with_label_values(&[ctx.lane.as_str(), "not_due"])
                    .inc();
                Ok(Settled::Ack)
            }
            Unopened::Poison(jobs, detail) => {
                let outcomes = jobs
                    .iter()
                    .map(|_| DeliveryOutcome::Dead {
                        reason: "poison_message",
                        detail: detail.clone(),
                    })
                    .collect();
                self.settle(ctx.lane, &ctx.publish, &jobs, outcomes).await
            }
        }
    }

    /// Runs [`Self::deliver`], waiting out Redis outages (the sender never
    /// submits without its idempotency check). `None` on shutdown.
    async fn deliver_with_retry(
        &self,
        job: &Job,
        shutdown: &CancellationToken,
    ) -> Option<DeliveryOutcome> {
        // The lease owner of this delivery: unique, so two deliveries of one
        // message in this process exclude each other too, and the same over
        // a Redis outage, so this delivery finds its own lease again.
        let owner = format!(
            "{}:{}",
            self.instance,
            self.deliveries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut delay = Duration::from_millis(100);
        loop {
            match self.deliver(job, &owner, shutdown).await {
                Ok(o) => return Some(o),
                Err(DeliverError::Shutdown) => return None,
                Err(DeliverError::Store(e)) => {
                    self.health.set_ready(false);
                    tracing::warn!(error = %e, retry_in = ?delay, "Redis unavailable; holding the message");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
            if self.store.ping().await.is_ok() {
                self.health.set_ready(true);
            }
        }
    }

    fn prepared(&self, content_id: &str, json: Option<String>) -> Result<Arc<Prepared>, String> {
        if let Some(p) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(content_id).cloned())
        {
            return Ok(p);
        }
        let json = json.ok_or_else(|| "content is missing from Redis (expired?)".to_string())?;
        let content: Content =
            serde_json::from_str(&json).map_err(|e| format!("stored content unreadable: {e}"))?;
        let compiled = Compiled::compile(&content).map_err(|e| e.to_string())?;
        let sender = mime::Sender::parse(&content.from, content.reply_to.as_deref())?;
        let p = Arc::new(Prepared { compiled, sender });
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CONTENT_CACHE {
                cache.clear();
            }
            cache.insert(content_id.to_string(), p.clone());
        }
        Ok(p)
    }

    fn is_cached(&self, content_id: &str) -> bool {
        self.cache
            .lock()
            .map(|c| c.contains_key(content_id))
            .unwrap_or(false)
    }

    /// Delivers one job. Redis errors are returned (the caller waits and
    /// tries again); every other result is an outcome.
    async fn deliver(
        &self,
        job: &Job,
        owner: &str,
        shutdown: &CancellationToken,
    ) -> Result<DeliveryOutcome, DeliverError> {
        // Check the message and take its lease, or wait for whoever holds it.
        let gate = loop {
            let gate = self
                .batched
                .gate(GateRequest {
                    message: job.id.clone(),
                    request: job.request.clone(),
                    retried: job.attempt > 0,
                    owner: owner.to_string(),
                })
                .await?;
            let Some(wait) = gate.lease_wait else {
                break gate;
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Err(DeliverError::Shutdown),
                _ = tokio::time::sleep(wait.min(Duration::from_millis(500))) => {}
            }
        };
        if gate.done.is_some() {
            return Ok(DeliveryOutcome::AlreadyDone);
        }
        if gate.cancelled {
            return Ok(DeliveryOutcome::Cancelled);
        }
        if gate.held {
            return Ok(DeliveryOutcome::Held);
        }
        // This delivery holds the lease from here on.
        let outcome = self.deliver_leased(job, owner).await?;
        if matches!(outcome, DeliveryOutcome::Dead { .. }) {
            self.store.release_lease(&job.id, owner).await.ok();
        }
        Ok(outcome)
    }

    /// Renders and submits a message whose lease `owner` holds.
    async fn deliver_leased(
        &self,
        job: &Job,
        owner: &str,
    ) -> Result<DeliveryOutcome, DeliverError> {
        if unix_now() > job.deadline {
            return Ok(DeliveryOutcome::Dead {
                reason: "expired",
                detail: "the validity period ended before the message could be sent".into(),
            });
        }
        let json = if self.is_cached(&job.content) {
            None
        } else {
            self.store.get_content(&job.content).await?
        };
        let prepared = match self.prepared(&job.content, json) {
            Ok(p) => p,
            Err(detail) => {
                return Ok(DeliveryOutcome::Dead {
                    reason: "content_unavailable",
                    detail,
                })
            }
        };
        let rendered = match prepared
            .compiled
            .render(&job.to, job.name.as_deref(), &job.vars)
        {
            Ok(r) => r,
            Err(e) => {
                return Ok(DeliveryOutcome::Dead {
                    reason: "render_failed",
                    detail: e.to_string(),
                })
            }
        };
        let (envelope, bytes) = match mime::build(
            job,
            &prepared.sender,
            rendered,
            &self.origin,
            std::time::SystemTime::now(),
        ) {
            Ok(m) => m,
            Err(detail) => {
                return Ok(DeliveryOutcome::Dead {
                    reason: "invalid_message",
                    detail,
                })
            }
        };

        let domain = job
            .to
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let limits = self.settings.policy.for_domain(&domain);
        let mut last: Option<(Failure, String)> = None;
        let candidates = match &self.mx {
            Some(resolver) => match resolver.exchangers(&domain).await {
                Ok(exchangers) => self.mx_candidates(&exchangers),
                Err(failure) => {
                    self.store.release_lease(&job.id, owner).await.ok();
                    return Ok(DeliveryOutcome::Failed(failure, format!("mx:{domain}")));
                }
            },
            None => self.candidates(&job.id, limits.route.as_deref()),
        };
        for route in candidates {
            let name = route.limits.name.clone();
            let conn = match route.route.connection().await {
                Ok(c) => c,
                Err(failure) => {
                    self.metrics
                        .routes
                        .with_label_values(&[self.route_label(&name), "unavailable"])
                        .inc();
                    tracing::warn!(route = %name, failure = %scrub(&failure.to_string()), "route unavailable; trying the next one");
                    self.route_down(&name);
                    last = Some((failure, name));
                    continue;
                }
            };
            // Wait for the shared budget, or give the message back.
            let mut waited = Duration::ZERO;
            let policy_lease = loop {
                let verdict = self
                    .batched
                    .acquire(Ask {
                        domain: domain.clone(),
                        limits: limits.clone(),
                        route: route.limits.clone(),
                        lease_id: format!("{}:{}", self.instance, job.id),
                    })
                    .await?;
                match verdict {
                    Verdict::Go { lease } => break lease,
                    Verdict::Wait(d) if waited + d <= self.settings.sender.max_throttle_wait => {
                        waited += d;
                        tokio::time::sleep(d).await;
                    }
                    Verdict::Wait(d) => {
                        self.store.release_lease(&job.id, owner).await?;
                        return Ok(DeliveryOutcome::Deferred {
                            delay: d.max(Duration::from_millis(1)),
                            reason: "throttled",
                        });
                    }
                    Verdict::Paused(d) => {
                        self.store.release_lease(&job.id, owner).await?;
                        return Ok(DeliveryOutcome::Deferred {
                            delay: d,
                            reason: "paused",
                        });
                    }
                }
            };
            let started = Instant::now();
            let result = route.route.send(conn, &envelope, &bytes).await;
            // The concurrency leases are returned off the message's path (they
            // also expire on their own if this fails).
            if let Some(lease) = policy_lease {
                let (policy, domain, route_name) = (
                    self.policy.clone(),
                    domain.clone(),
                    route.limits.name.clone(),
                );
                tokio::spawn(async move {
                    policy.release(&domain, &route_name, &lease).await.ok();
                });
            }
            self.metrics
                .smtp_seconds
                .with_label_values(&[job.lane.as_str()])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(accepted) => {
                    self.metrics
                        .routes
                        .with_label_values(&[self.route_label(&name), "sent"])
                        .inc();
                    self.route_up(&name);
                    let record = DoneRecord {
                        state: "sent".into(),
                        request: job.request.clone(),
                        at: unix_now(),
                        route: name,
                        detail: format!("{} {}", accepted.code, accepted.text),
                        to: Some(job.to.clone()),
                        campaign: job.campaign.clone(),
                        lane: Some(job.lane),
                    };
                    // The message is out: the record must be written, whatever
                    // it takes, or a redelivery would send it again.
                    self.record_sent_persistently(job, &record).await;
                    return Ok(DeliveryOutcome::Delivered);
                }
                Err(failure) => {
                    let failover = matches!(
                        failure,
                        Failure::Connection { .. } | Failure::Reply { code: 421, .. }
                    );
                    self.metrics
                        .routes
                        .with_label_values(&[
                            self.route_label(&name),
                            if failover { "unavailable" } else { "failed" },
                        ])
                        .inc();
                    if !failover {
                        // A reply about the destination (not the relay being
                        // away): the domain's breaker and slow-down see it now.
                        let class = self.classifier.classify(&failure);
                        let reaction = self
                            .policy
                            .react(&domain, &class, &self.settings.policy)
                            .await?;
                        if reaction.paused {
                            self.metrics
                                .breaker_openings
                                .with_label_values(&["breaker"])
                                .inc();
                            tracing::warn!(%domain, pause = ?self.settings.policy.breaker.pause, "failure ratio over the threshold: sending to the domain is paused");
                        }
                        self.store.release_lease(&job.id, owner).await.ok();
                        return Ok(DeliveryOutcome::Failed(failure, name));
                    }
                    tracing::warn!(route = %name, failure = %scrub(&failure.to_string()), "route unavailable; trying the next one");
                    self.route_down(&name);
                    last = Some((failure, name));
                }
            }
        }
        self.store.release_lease(&job.id, owner).await.ok();
        let (failure, route) = last.unwrap_or((
            Failure::Connection {
                error: mailpipe_common::classify::ConnectionError::Other,
                detail: "no route configured for this domain".into(),
            },
            String::new(),
        ));
        Ok(DeliveryOutcome::Failed(failure, route))
    }

    /// The routes to try for a message, in order: the domain's own route if
    /// it has one; else by priority, spread by weight among equal priorities
    /// (a weighted random order, seeded by the message id so a redelivery
    /// tries the same order); routes that failed recently go last.
    fn candidates(&self, message_id: &str, only: Option<&str>) -> Vec<Arc<RouteState>> {
        let mut routes: Vec<Arc<RouteState>> = self
            .routes
            .iter()
            .filter(|r| only.is_none_or(|name| r.limits.name == name))
            .cloned()
            .collect();
        if routes.len() < 2 {
            return routes;
        }
        let now = Instant::now();
        let down: HashMap<String, bool> = {
            let d = self.down.lock().unwrap_or_else(|e| e.into_inner());
            routes
                .iter()
                .map(|r| {
                    let name = &r.limits.name;
                    (name.clone(), d.get(name).is_some_and(|until| *until > now))
                })
                .collect()
        };
        let is_down = |r: &RouteState| down.get(&r.limits.name).copied().unwrap_or(false);
        let key = |r: &RouteState| {
            let u = (hash(message_id, &r.limits.name) as f64 + 1.0) / (u64::MAX as f64 + 2.0);
            -u.ln() / r.weight as f64
        };
        routes.sort_by(|a, b| {
            (is_down(a), a.priority)
                .cmp(&(is_down(b), b.priority))
                .then(key(a).total_cmp(&key(b)))
        });
        routes
    }

    /// MX mode: the exchangers' addresses in preference order, each with its
    /// own connection pool (created on first use); addresses that failed
    /// recently go last.
    fn mx_candidates(&self, exchangers: &[mx::Exchanger]) -> Vec<Arc<RouteState>> {
        let mx = &self.settings.sender.mx;
        let mut out = Vec::new();
        let Ok(mut pools) = self.mx_routes.lock() else {
            return out;
        };
        for (rank, ex) in exchangers.iter().enumerate() {
            for ip in &ex.addresses {
                let addr = std::net::SocketAddr::new(*ip, mx.port);
                if let Some(existing) = pools.get(&addr) {
                    out.push(existing.clone());
                    continue;
                }
                let settings = RouteSettings {
                    name: format!("mx:{}[{}]", ex.host, ip),
                    priority: rank as u32,
                    weight: 1,
                    rate: None,
                    concurrency: None,
                    host: ip.to_string(),
                    port: mx.port,
                    tls: mx.tls,
                    username: None,
                    password: None,
                    timeout: mx.timeout,
                    pool_size: mx.pool_size,
                    pool_idle: mx.pool_idle,
                    tls_name: Some(ex.host.clone()),
                    ca_file: None,
                    accept_invalid_certs: mx.tls == mailpipe_common::config::TlsMode::Opportunistic,
                };
                match smtp::Route::new(&settings, &self.settings.sender.hostname) {
                    Ok(route) => {
                        let state = Arc::new(RouteState {
                            limits: RouteLimits {
                                name: settings.name.clone(),
                                interval: None,
                                concurrency: None,
                            },
                            priority: rank as u32,
                            weight: 1,
                            route,
                        });
                        pools.insert(addr, state.clone());
                        out.push(state);
                    }
                    Err(e) => tracing::warn!(mx = %ex.host, error = %e, "cannot use this MX host"),
                }
            }
        }
        drop(pools);
        let down = self.down.lock().map(|d| d.clone()).unwrap_or_default();
        let now = Instant::now();
        out.sort_by_key(|r| {
            (
                down.get(&r.limits.name).is_some_and(|u| *u > now),
                r.priority,
            )
        });
        out
    }

    /// The route label of metrics: the relay's name, or `mx` for every MX
    /// host (their number is unbounded).
    fn route_label<'a>(&self, name: &'a str) -> &'a str {
        if self.mx.is_some() {
            "mx"
        } else {
            name
        }
    }

    fn route_down(&self, name: &str) {
        if let Ok(mut d) = self.down.lock() {
            d.insert(
                name.to_string(),
                Instant::now() + self.settings.sender.route_retry_after,
            );
        }
    }

    fn route_up(&self, name: &str) {
        if let Ok(mut d) = self.down.lock() {
            d.remove(name);
        }
    }

    fn record_ttl(&self, job: &Job) -> Duration {
        let remaining = (job.deadline - unix_now()).max(0) as u64;
        Duration::from_secs(remaining) + self.settings.sender.sent_record_ttl
    }

    /// Writes the sent record (and resets the address's soft-failure
    /// counter), retrying until Redis takes it.
    async fn record_sent_persistently(&self, job: &Job, record: &DoneRecord) {
        let address = job.to.to_ascii_lowercase();
        let mut delay = Duration::from_millis(50);
        loop {
            let write = DoneWrite::sent(&job.id, record.clone(), &address, self.record_ttl(job));
            match self.batched.record(write).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(message = %job.id, error = %e, "cannot write the sent record; retrying (the lease still protects the message)");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn publish_dead(&self, publish: &Channel, record: &DeadRecord) -> anyhow::Result<()> {
        amqp::publish_dead(publish, &self.topology.exchange(), record).await?;
        self.metrics
            .dead
            .with_label_values(&[record.reason.as_str()])
            .inc();
        Ok(())
    }

    async fn settle_malformed(
        &self,
        publish: &Channel,
        delivery: &Delivery,
        detail: String,
    ) -> anyhow::Result<Settled> {
        tracing::warn!(detail = %scrub(&detail), "malformed job dead-lettered");
        let record = DeadRecord {
            v: 1,
            reason: "malformed_job".into(),
            detail,
            request: None,
            message: None,
            job: None,
            failure: None,
            payload: Some(
                String::from_utf8_lossy(&delivery.data[..delivery.data.len().min(4096)])
                    .into_owned(),
            ),
            at: unix_now(),
        };
        self.publish_dead(publish, &record).await?;
        Ok(Settled::Ack)
    }

    fn event(
        &self,
        job: &Job,
        kind: EventKind,
        reason: Option<String>,
        detail: Option<String>,
    ) -> Event {
        Event {
            v: 1,
            event: kind,
            request: job.request.clone(),
            message: Some(job.id.clone()),
            recipient: job.to.clone(),
            campaign: job.campaign.clone(),
            reason,
            detail,
            at: unix_now(),
        }
    }

    /// Makes the outcomes of one delivery's recipients durable; the
    /// delivery may then be acked. Each recipient's outcome is its own
    /// (a sent event, a failure record, a terminal record); the recipients
    /// that go back through a queue (deferred, held, not started) go as
    /// one message per destination queue, and every publish is confirmed
    /// before this returns.
    async fn settle(
        &self,
        lane: Lane,
        publish: &Channel,
        jobs: &[Job],
        outcomes: Vec<DeliveryOutcome>,
    ) -> anyhow::Result<Settled> {
        let label = |o: &str| {
            self.metrics
                .deliveries
                .with_label_values(&[lane.as_str(), o])
                .inc()
        };
        let events = self.topology.events_exchange();
        let exchange = self.topology.exchange();
        let mut confirms = Vec::new();
        let mut held: Vec<&Job> = Vec::new();
        let mut unsent: Vec<&Job> = Vec::new();
        // Deferred recipients by tier and domain: a deferred message holds
        // one domain, so `mailpipe queue flush --domain` moves it whole.
        let mut deferred: BTreeMap<(Duration, String), Vec<&Job>> = BTreeMap::new();
        let mut failed = 0;
        // Events by kind, published together below.
        let mut sent = Vec::new();
        let mut removed = Vec::new();
        let mut dead_events = Vec::new();
        for (job, outcome) in jobs.iter().zip(outcomes) {
            match outcome {
                DeliveryOutcome::Delivered => {
                    label("sent");
                    sent.push(self.event(job, EventKind::Sent, None, None));
                }
                DeliveryOutcome::AlreadyDone => label("duplicate"),
                DeliveryOutcome::Deferred { delay, reason } => {
                    label(reason);
                    let tier = self.topology.tier_for(delay);
                    deferred
                        .entry((tier, domain_of(&job.to)))
                        .or_default()
                        .push(job);
                }
                DeliveryOutcome::Held => {
                    label("held");
                    held.push(job);
                }
                DeliveryOutcome::Unsent => {
                    label("returned");
                    unsent.push(job);
                }
                DeliveryOutcome::Cancelled => {
                    label("removed");
                    let record = DoneRecord {
                        state: "removed".into(),
                        request: job.request.clone(),
                        at: unix_now(),
                        route: String::new(),
                        detail: "cancelled: the campaign was cancelled by an operator".into(),
                        ..Default::default()
                    };
                    if self
                        .store
                        .record_done(&job.id, &record, &["removed"], self.record_ttl(job))
                        .await?
                    {
                        removed.push(self.event(
                            job,
                            EventKind::Removed,
                            Some("cancelled".into()),
                            None,
                        ));
                    }
                }
                DeliveryOutcome::Failed(failure, route) => {
                    label("failed");
                    match &failure {
                        Failure::Reply { code: 421, .. } => {
                            tracing::warn!(message = %job.id, failure = %scrub(&failure.to_string()), "relay answered 421; deferring")
                        }
                        _ => {
                            tracing::info!(message = %job.id, failure = %scrub(&failure.to_string()), "delivery attempt failed")
                        }
                    }
                    let record = FailedJob {
                        v: 1,
                        job: job.clone(),
                        failure,
                        route,
                        at: unix_now(),
                    };
                    confirms.push(
                        amqp::publish(
                            publish,
                            &exchange,
                            Topology::FAILED,
                            &serde_json::to_vec(&record)?,
                            amqp::properties().with_message_id(job.id.clone().into()),
                        )
                        .await?,
                    );
                    failed += 1;
                }
                DeliveryOutcome::Dead { reason, detail } => {
                    label(reason);
                    let record = DoneRecord {
                        state: "dead".into(),
                        request: job.request.clone(),
                        at: unix_now(),
                        route: String::new(),
                        detail: format!("{reason}: {detail}"),
                        ..Default::default()
                    };
                    let field = format!("dead:{reason}");
                    self.store
                        .record_done(&job.id, &record, &["dead", &field], self.record_ttl(job))
                        .await?;
                    let dead = DeadRecord {
                        v: 1,
                        reason: reason.to_string(),
                        detail: detail.clone(),
                        request: Some(job.request.clone()),
                        message: Some(job.id.clone()),
                        job: Some(job.clone()),
                        failure: None,
                        payload: None,
                        at: unix_now(),
                    };
                    self.publish_dead(publish, &dead).await?;
                    dead_events.push(self.event(
                        job,
                        EventKind::Dead,
                        Some(reason.to_string()),
                        Some(detail),
                    ));
                }
            }
        }
        for group in [sent, removed, dead_events] {
            if !group.is_empty() {
                confirms.push(amqp::publish_events(publish, &events, &group, lane).await?);
            }
        }
        for ((tier, _), group) in deferred {
            let due = mailpipe_common::unix_now_ms() + tier.as_millis() as i64;
            confirms.push(
                self.publish_jobs(
                    publish,
                    &Topology::tier_key(tier, lane),
                    &group,
                    &[(Topology::DUE_HEADER, due.to_string())],
                )
                .await?,
            );
        }
        // Parking is announced first, so the retrier never deletes a parking
        // queue under a publish; turned away (the queue is being deleted
        // because the campaign was released), the jobs go back to the lane.
        let parking = match held.first() {
            Some(first) => self.store.begin_parking(&first.request).await?,
            None => false,
        };
        if parking {
            let request = &held[0].request;
            self.topology.declare_held(publish, request).await?;
            confirms.push(
                self.publish_jobs(publish, &Topology::held_key(request), &held, &[])
                    .await?,
            );
        } else {
            unsent.extend(held.iter().cloned());
        }
        if !unsent.is_empty() {
            confirms.push(
                self.publish_jobs(publish, &Topology::lane_key(lane), &unsent, &[])
                    .await?,
            );
        }
        for pending in confirms {
            amqp::confirm(pending).await?;
        }
        if parking {
            // After the publish, so the sweeper never forgets a parked message.
            self.store.end_parking(&held[0].request).await?;
        }
        if failed > 0 {
            self.store
                .incr_request_by(&jobs[0].request, "failed_attempts", failed)
                .await
                .ok();
        }
        Ok(Settled::Ack)
    }

    /// Publishes some jobs of one request as one message (confirm pending).
    async fn publish_jobs(
        &self,
        publish: &Channel,
        key: &str,
        jobs: &[&Job],
        headers: &[(&str, String)],
    ) -> anyhow::Result<amqp::PendingConfirm> {
        let batch = JobBatch::from_jobs(jobs.iter().copied())
            .context("publishing a message without recipients")?;
        let props = amqp::with_headers(
            amqp::properties().with_message_id(batch.recipients[0].id.clone().into()),
            headers,
        );
        Ok(amqp::publish(
            publish,
            &self.topology.exchange(),
            key,
            &serde_json::to_vec(&batch)?,
            props,
        )
        .await?)
    }
}

/// The domain of an address, lowercased.
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

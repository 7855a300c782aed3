//! One recipient's delivery: its gate and lease, its rendering, the route
//! loop with the shared policy's budget, and the SMTP transaction. Every
//! result is a [`DeliveryOutcome`]; only Redis errors escape, and
//! [`Sender::deliver_with_retry`] waits them out.
//!
//! The decisions on the way are pure functions with table tests:
//! [`after_failure`] (try the next route, or settle the failure) here, and
//! the budget's (go, wait, or defer) in `budget.rs`.
//!
//! Longer than 500 lines on purpose: one delivery, from the gate to its
//! settled outcome, reads in order in one file; what it decides is in the
//! files it calls (`budget.rs`, `routes.rs`, `destination.rs`, `adaptive.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use mailpipe_common::archive::Archived;
use mailpipe_common::classify::{Classification, ConnectionError, Failure};
use mailpipe_common::config::OnAmbiguous;
use mailpipe_common::message::Job;
use mailpipe_common::unix_now;
use mailpipe_state::store::{
    Deferral, DoneRecord, DoneState, DoneWrite, GateRequest, MarkRequest, StoreError,
};
use tokio_util::sync::CancellationToken;

use crate::adaptive::{signal_of, SiteSignal};
use crate::ambiguous::{self, Found};
use crate::capacity::{LaneCapacity, Turn};
use crate::content::Prepared;
use crate::destination::{domain_sees, HeldRoute, Refusal};
use crate::events::{
    DomainPaused, RouteFailed, RouteSent, RouteUnavailable, SiteThrottledRetry,
    SmtpTransactionEnded,
};
use crate::smtp::SendError;
use crate::{mime, smtp, Sender};

/// What became of one delivery.
#[derive(Debug)]
pub(crate) enum DeliveryOutcome {
    /// The server accepted the message; the sent record is written. With
    /// the archive on, the bytes sent, for the archive stream.
    Delivered(Option<Archived>),
    /// The message already had a terminal state (sent, dead or removed).
    AlreadyDone,
    /// An operator holds the campaign: park the message until release.
    Held,
    /// An operator cancelled the campaign: the message ends as `removed`.
    Cancelled,
    /// The attempt failed; the job goes to the failure queue with the
    /// route that answered and the failure's classification.
    Failed(Failure, String, Classification),
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
    /// The recipient had an ambiguous attempt (see `ambiguous.rs`): its
    /// `ambiguous` event is published, then `then` is settled.
    Ambiguous {
        action: OnAmbiguous,
        detail: String,
        then: Box<DeliveryOutcome>,
    },
    /// Ambiguous, and `sender.on_ambiguous: hold`: parked in the
    /// `ambiguous` queue for an operator.
    AmbiguousHeld,
}

impl DeliveryOutcome {
    /// The `outcome` label of the deliveries metric.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered(_) => "sent",
            DeliveryOutcome::AlreadyDone => "duplicate",
            DeliveryOutcome::Held => "held",
            DeliveryOutcome::Cancelled => "removed",
            DeliveryOutcome::Failed(..) => "failed",
            DeliveryOutcome::Deferred { reason, .. } => reason,
            DeliveryOutcome::Dead { reason, .. } => reason,
            DeliveryOutcome::Unsent => "returned",
            DeliveryOutcome::Ambiguous { then, .. } => then.label(),
            DeliveryOutcome::AmbiguousHeld => "ambiguous_held",
        }
    }
}

/// Why a delivery could not reach an outcome yet.
#[derive(Debug)]
pub(crate) enum DeliverError {
    /// Redis failed; the message is held and tried again.
    Store(StoreError),
    /// Shutdown came while the message waited; it goes back to the queue.
    Shutdown,
    /// No turn at its site within `sender.max_throttle_wait`: this outcome
    /// (a deferral), once the caller indexed it.
    Deferred(DeliveryOutcome),
}

/// A turn to ask a site's policy (`capacity.rs`), and how long it was
/// waited for (it counts toward `sender.max_throttle_wait`).
pub(crate) struct TakenTurn {
    _turn: tokio::sync::OwnedSemaphorePermit,
    waited: Duration,
}

impl From<StoreError> for DeliverError {
    fn from(e: StoreError) -> Self {
        DeliverError::Store(e)
    }
}

/// What a failed attempt on one route means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// The route is away (no connection, or a 421: the server is closing
    /// the channel): it goes last for a while and the next route is tried.
    NextRoute,
    /// A reply about the destination: the domain's breaker and slow-down
    /// see it, and the failure goes to the retrier.
    Settle,
}

/// Decides what a failed attempt means: see [`AfterFailure`].
pub(crate) fn after_failure(failure: &Failure) -> AfterFailure {
    match failure {
        Failure::Connection { .. } | Failure::Reply { code: 421, .. } => AfterFailure::NextRoute,
        Failure::Reply { .. } => AfterFailure::Settle,
    }
}

impl Sender {
    /// Runs [`Self::deliver`], waiting out Redis outages (the sender never
    /// submits without its idempotency check). `None` on shutdown. `lane`
    /// is the capacity of the lane it came from (`capacity.rs`).
    pub(crate) async fn deliver_with_retry(
        &self,
        job: &Job,
        lane: &LaneCapacity,
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
            match self.deliver(job, &owner, lane, shutdown).await {
                Ok(o) => return Some(o),
                Err(DeliverError::Shutdown) => return None,
                Err(DeliverError::Deferred(o)) => return Some(o),
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

    /// Delivers one job. Redis errors are returned (the caller waits and
    /// tries again); every other result is an outcome.
    async fn deliver(
        &self,
        job: &Job,
        owner: &str,
        lane: &LaneCapacity,
        shutdown: &CancellationToken,
    ) -> Result<DeliveryOutcome, DeliverError> {
        // The site's turn first (`capacity.rs`): the lease is taken under
        // it, so a sender holds the leases of the few recipients asking or
        // sending, not of every recipient in hand (a killed sender's leases
        // hold back only those for the lease's time).
        let site = self.sites.of(job.to.domain()).await;
        // Check the message and take its lease, or wait for whoever holds it.
        let (gate, turn) = loop {
            let turn = match self.site_turn(&site, lane, shutdown).await {
                Ok(turn) => turn,
                Err(DeliverError::Deferred(deferred)) => {
                    self.release_or_defer(job, owner, job.to.domain(), &deferred)
                        .await?;
                    return Ok(deferred);
                }
                Err(e) => return Err(e),
            };
            let gate = self
                .calls
                .gate(GateRequest {
                    message: job.id.clone(),
                    request: job.request.clone(),
                    retried: job.attempt > 0,
                    owner: owner.to_string(),
                })
                .await?;
            let Some(wait) = gate.lease_wait else {
                break (gate, turn);
            };
            // Not this recipient's turn while another delivery holds it.
            drop(turn);
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
        let mut turn = Some(turn);
        let mut found = None;
        let outcome = match gate.ambiguous {
            Some(earlier) => {
                let f = Found::Mark(earlier);
                let r = self.ambiguous(job, &f).await?;
                let stopped = ambiguous::stopped(&r, &f);
                found = Some(f);
                match stopped {
                    Some(o) => o,
                    None => {
                        self.deliver_leased(
                            job,
                            owner,
                            &mut found,
                            lane,
                            shutdown,
                            (&site, &mut turn),
                        )
                        .await?
                    }
                }
            }
            None => {
                self.deliver_leased(job, owner, &mut found, lane, shutdown, (&site, &mut turn))
                    .await?
            }
        };
        if matches!(
            outcome,
            DeliveryOutcome::Dead { .. } | DeliveryOutcome::AmbiguousHeld
        ) {
            self.store.release_lease(&job.id, owner).await.ok();
        }
        Ok(match found {
            Some(f) => self.after_ambiguous(&f, outcome),
            None => outcome,
        })
    }

    /// Waits for a turn at `site` in the lane: the turn, or the deferral of
    /// a message that waited `sender.max_throttle_wait` for it.
    async fn site_turn(
        &self,
        site: &str,
        lane: &LaneCapacity,
        shutdown: &CancellationToken,
    ) -> Result<TakenTurn, DeliverError> {
        let max_wait = self.settings.sender.max_throttle_wait;
        let asked = Instant::now();
        match lane.ask_turn(site, max_wait, shutdown).await {
            Turn::Got(turn) => Ok(TakenTurn {
                _turn: turn,
                waited: asked.elapsed(),
            }),
            Turn::TimedOut => Err(DeliverError::Deferred(DeliveryOutcome::Deferred {
                delay: max_wait,
                reason: "throttled",
            })),
            Turn::Shutdown => Err(DeliverError::Shutdown),
        }
    }

    /// Renders and submits a message whose lease `owner` holds, trying its
    /// routes in order until one answers about the destination. A
    /// transaction whose outcome is unknown is recorded in `found`.
    async fn deliver_leased(
        &self,
        job: &Job,
        owner: &str,
        found: &mut Option<Found>,
        lane: &LaneCapacity,
        shutdown: &CancellationToken,
        (site, turn): (&str, &mut Option<TakenTurn>),
    ) -> Result<DeliveryOutcome, DeliverError> {
        if unix_now() > job.deadline {
            return Ok(DeliveryOutcome::Dead {
                reason: "expired",
                detail: "the validity period ended before the message could be sent".into(),
            });
        }
        let prepared = match self.prepared(job).await? {
            Ok(p) => p,
            Err(dead) => return Ok(dead),
        };
        let from_domain = prepared.sender.from.email.domain().to_ascii_lowercase();
        let mut message: Option<(Envelope, Vec<u8>)> = None;
        let domain = job.to.domain().to_string();
        let limits = self.settings.policy.for_domain(&domain);
        let candidates = match self
            .routes
            .for_message(&job.id, &domain, limits.route.as_deref())
            .await
        {
            Ok(c) => c,
            Err((failure, route)) => {
                self.store.release_lease(&job.id, owner).await.ok();
                let class = self.classify(job, &failure);
                return Ok(DeliveryOutcome::Failed(failure, route, class));
            }
        };
        let site = site.to_string();
        let mut last: Option<(Failure, String)> = None;
        let mut held: Option<HeldRoute> = None;
        // Throttling replies this delivery answers itself, at the site's cut
        // rate, before the message goes to the retrier.
        let mut throttled_retries = if self.settings.sites.adaptive.enabled {
            self.settings.sites.adaptive.throttled_retries
        } else {
            0
        };
        let mut tried_throttled = 0;
        'attempt: loop {
            for route in candidates.iter().cloned() {
                let name = route.limits.name.clone();
                if let Some((until, refusal)) = route.route.held() {
                    held.get_or_insert(HeldRoute {
                        name,
                        until,
                        refusal,
                    });
                    continue;
                }
                self.site_met(&site).await;
                // The turn taken before the gate; a further attempt (after a
                // throttling reply) waits for a turn again.
                let turn = match turn.take() {
                    Some(t) => t,
                    None => match self.site_turn(&site, lane, shutdown).await {
                        Ok(t) => t,
                        Err(DeliverError::Deferred(deferred)) => {
                            self.release_or_defer(job, owner, &domain, &deferred)
                                .await?;
                            return Ok(deferred);
                        }
                        Err(e) => {
                            self.store.release_lease(&job.id, owner).await.ok();
                            return Err(e);
                        }
                    },
                };
                // Rendered (and signed) under the turn, before a connection
                // is held for it: a waiting recipient holds its job, not its
                // bytes.
                if message.is_none() {
                    match self.render(job, &prepared) {
                        Ok(m) => message = Some(m),
                        Err(dead) => return Ok(dead),
                    }
                }
                // The connection, then one of the lane's transaction slots,
                // then the shared budget: taken right before the transaction,
                // a place in the rate is used at once, so the server sees the
                // rate the policy granted, not grants bunched behind a busy
                // connection. A recipient waiting for its site's connection
                // holds a turn of its site, not a slot of the lane.
                let conn = match route.route.connection().await {
                    Ok(c) => {
                        if let Some(refusal) = &c.refused {
                            let at = Refusal::AtConnectOthersOpen;
                            self.route_refused(job, &domain, &site, &name, refusal, at)
                                .await?;
                        }
                        c.conn
                    }
                    Err(smtp::Unavailable::Held { until, refusal }) => {
                        held.get_or_insert(HeldRoute {
                            name,
                            until,
                            refusal,
                        });
                        continue;
                    }
                    Err(smtp::Unavailable::Failed(failure)) => {
                        let at = Refusal::AtConnectNoneLeft;
                        self.route_refused(job, &domain, &site, &name, &failure, at)
                            .await?;
                        last = Some((failure, name));
                        continue;
                    }
                };
                let Some(slot) = lane.slot(shutdown).await else {
                    self.store.release_lease(&job.id, owner).await.ok();
                    return Err(DeliverError::Shutdown);
                };
                let budget = self
                    .wait_for_budget(
                        job,
                        &domain,
                        &site,
                        &from_domain,
                        &limits,
                        &route,
                        turn.waited,
                    )
                    .await?;
                drop(turn);
                let (policy_lease, per_connection) = match budget {
                    Ok(go) => go,
                    Err(deferred) => {
                        self.release_or_defer(job, owner, &domain, &deferred)
                            .await?;
                        return Ok(deferred);
                    }
                };
                let started = Instant::now();
                // "Data sent, awaiting reply", written while DATA is answered.
                let mark = self.calls.mark(MarkRequest {
                    message: job.id.clone(),
                    owner: owner.to_string(),
                    ttl: self.record_ttl(job),
                });
                let (envelope, bytes) = message.as_ref().expect("rendered above");
                let result = route
                    .route
                    .send(conn, envelope, bytes, mark, per_connection)
                    .await;
                drop(slot);
                if let Some(lease) = policy_lease {
                    self.release_policy_lease(&domain, &site, &name, lease);
                }
                SmtpTransactionEnded {
                    lane: job.lane,
                    seconds: started.elapsed().as_secs_f64(),
                }
                .emit(&self.metrics);
                let failure = match result {
                    Ok(accepted) => {
                        self.site_saw(&site, SiteSignal::Sent).await;
                        let (_, bytes) = message.take().expect("rendered above");
                        return Ok(self.on_accepted(job, name, accepted, bytes).await);
                    }
                    // Abandoned before the dot: nothing was sent; the delivery
                    // waits for Redis like any other Redis failure.
                    Err(SendError::Unmarked(e)) => return Err(DeliverError::Store(e)),
                    Err(SendError::Failed { failure, marked }) => {
                        if marked {
                            // The answer is known: nothing was delivered.
                            self.store.clear_mark(&job.id, owner).await?;
                        }
                        failure
                    }
                    Err(SendError::Unknown(failure)) => {
                        let f = Found::InFlight(failure.clone());
                        let r = self.ambiguous(job, &f).await?;
                        let stopped = ambiguous::stopped(&r, &f);
                        *found = Some(f);
                        if let Some(o) = stopped {
                            return Ok(o);
                        }
                        failure
                    }
                };
                match after_failure(&failure) {
                    AfterFailure::NextRoute => {
                        let at = Refusal::InTransaction;
                        self.route_refused(job, &domain, &site, &name, &failure, at)
                            .await?;
                        last = Some((failure, name));
                    }
                    AfterFailure::Settle => {
                        RouteFailed {
                            route: self.routes.label(&name),
                        }
                        .emit(&self.metrics);
                        let class = self.classify(job, &failure);
                        self.react(&domain, &class).await?;
                        if let Some(signal) = signal_of(&failure, &class) {
                            let blocked = matches!(signal, SiteSignal::Blocked(_));
                            let throttled = matches!(signal, SiteSignal::Throttled(_));
                            // Counted first: a throttling reply cuts the site's
                            // rate at once, before the message asks again.
                            self.site_saw(&site, signal).await;
                            // A block is about the sender's reputation at the
                            // site, not the recipient: the message waits for
                            // the site's suspension to end.
                            if blocked && self.settings.sites.adaptive.enabled {
                                self.store.release_lease(&job.id, owner).await.ok();
                                return Ok(DeliveryOutcome::Deferred {
                                    delay: self.settings.sites.adaptive.suspend_for,
                                    reason: "suspended",
                                });
                            }
                            // The provider asked to slow down, and the site's
                            // rate was cut: the message goes again at that
                            // rate, still under its lease.
                            if throttled && throttled_retries > 0 {
                                throttled_retries -= 1;
                                tried_throttled += 1;
                                SiteThrottledRetry { site: &site }.emit(&self.metrics);
                                let adaptive = &self.settings.sites.adaptive;
                                let wait = adaptive.throttled_retry_delay(tried_throttled);
                                tokio::time::sleep(wait).await;
                                continue 'attempt;
                            }
                        }
                        self.store.release_lease(&job.id, owner).await.ok();
                        return Ok(DeliveryOutcome::Failed(failure, name, class));
                    }
                }
            }
            break;
        }
        if let (None, Some(held)) = (&last, held) {
            let outcome = self.held_outcome(job, held);
            self.release_or_defer(job, owner, &domain, &outcome).await?;
            return Ok(outcome);
        }
        self.store.release_lease(&job.id, owner).await.ok();
        let (failure, route) = last.unwrap_or((
            Failure::Connection {
                error: ConnectionError::Other,
                detail: "no route configured for this domain".into(),
            },
            String::new(),
        ));
        let class = self.classify(job, &failure);
        Ok(DeliveryOutcome::Failed(failure, route, class))
    }

    /// Releases the lease `owner` holds on a message; for a deferred one,
    /// indexes it as deferred in the same call (its request's counts of
    /// recipients waiting, per why and domain, and `queue list --deferred`).
    async fn release_or_defer(
        &self,
        job: &Job,
        owner: &str,
        domain: &str,
        outcome: &DeliveryOutcome,
    ) -> Result<(), StoreError> {
        let DeliveryOutcome::Deferred { delay, reason } = outcome else {
            return self.store.release_lease(&job.id, owner).await;
        };
        // When settle.rs will make it due (a little later, once the whole
        // lane message is settled).
        let (tier, wait) = self.topology.deferral(*delay);
        let due_ms = mailpipe_common::unix_now_ms() + wait.as_millis() as i64;
        let deferral = Deferral {
            message: job.id.clone(),
            request: job.request.clone(),
            why: reason.to_string(),
            domain: domain.to_string(),
            due: (due_ms + 999) / 1000,
            info: serde_json::json!({
                "campaign": job.campaign, "recipient": job.to, "lane": job.lane,
                "attempt": job.attempt, "reason": reason,
                "tier": mailpipe_common::config::format_duration(tier),
            }),
        };
        self.store.defer(&deferral, owner).await
    }

    /// A job's content, compiled, or why the message cannot be sent at all
    /// (a `Dead` outcome).
    async fn prepared(
        &self,
        job: &Job,
    ) -> Result<Result<Arc<Prepared>, DeliveryOutcome>, StoreError> {
        Ok(self
            .content
            .get(&self.store, &job.content)
            .await?
            .map_err(|detail| DeliveryOutcome::Dead {
                reason: "content_unavailable",
                detail,
            }))
    }

    /// The envelope and bytes of a job's message, or why it cannot be
    /// sent at all (a `Dead` outcome). Rendered once the sending policy
    /// said go: the recipients a lane holds while they wait for their sites
    /// do not each hold their message's bytes.
    fn render(
        &self,
        job: &Job,
        prepared: &Prepared,
    ) -> Result<(Envelope, Vec<u8>), DeliveryOutcome> {
        let dead = |reason: &'static str, detail: String| DeliveryOutcome::Dead { reason, detail };
        let rendered = prepared
            .compiled
            .render(&job.to.to_string(), job.name.as_deref(), &job.vars)
            .map_err(|e| dead("render_failed", e.to_string()))?;
        mime::build(
            job,
            &prepared.sender,
            rendered,
            &self.origin,
            std::time::SystemTime::now(),
        )
        .map_err(|detail| dead("invalid_message", detail))
    }

    /// A route did not take the message: counted, logged, and last for a while.
    pub(crate) fn route_unavailable(&self, name: &str, failure: &Failure) {
        RouteUnavailable {
            route: name,
            label: self.routes.label(name),
            failure,
        }
        .emit(&self.metrics);
        self.routes.down(name);
    }

    /// Classifies a failed attempt, once: the domain's policy sees this
    /// verdict here, and the retrier gets it with the failure record.
    fn classify(&self, job: &Job, failure: &Failure) -> Classification {
        self.classifier
            .classify_for(failure, Some(&job.to.to_string()))
    }

    /// A reply about the destination (not the relay being away): the
    /// domain's breaker and slow-down see it now, as [`domain_sees`] says
    /// of an answer in a transaction.
    async fn react(&self, domain: &str, class: &Classification) -> Result<(), StoreError> {
        let sees = domain_sees(Refusal::InTransaction, self.settings.sites.adaptive.enabled);
        // The attempts first: the breaker's ratio never runs ahead.
        self.calls.count_attempts().await?;
        let reaction = self
            .policy
            .react(domain, class, &self.settings.policy, sees.slows_domain)
            .await?;
        if reaction.paused {
            DomainPaused {
                domain,
                pause: self.settings.policy.breaker.pause,
            }
            .emit(&self.metrics);
        }
        Ok(())
    }

    /// The server took the message: its sent record is written before
    /// anything else happens to it. With the archive on, the bytes sent go
    /// with the outcome, to be published before the ack (`settle.rs`).
    async fn on_accepted(
        &self,
        job: &Job,
        route: String,
        accepted: smtp::Accepted,
        bytes: Vec<u8>,
    ) -> DeliveryOutcome {
        RouteSent {
            route: self.routes.label(&route),
        }
        .emit(&self.metrics);
        self.routes.up(&route);
        let record = DoneRecord {
            state: DoneState::Sent,
            request: job.request.clone(),
            at: unix_now(),
            route,
            detail: format!("{} {}", accepted.code, accepted.text),
            to: Some(job.to.to_string()),
            campaign: job.campaign.clone(),
            lane: Some(job.lane),
        };
        // The message is out: the record must be written, whatever it
        // takes, or a redelivery would send it again.
        self.record_sent_persistently(job, &record).await;
        let archived = self.settings.sender.archive.enabled.then(|| Archived {
            message: job.id.clone(),
            request: job.request.clone(),
            recipient: job.to.to_string(),
            at: record.at,
            bytes,
        });
        DeliveryOutcome::Delivered(archived)
    }

    /// How long a message's terminal record is kept: its validity plus the
    /// configured margin.
    pub(crate) fn record_ttl(&self, job: &Job) -> Duration {
        let remaining = (job.deadline - unix_now()).max(0) as u64;
        Duration::from_secs(remaining) + self.settings.sender.sent_record_ttl
    }

    /// Writes the sent record (and resets the address's soft-failure
    /// counter), retrying until Redis takes it.
    async fn record_sent_persistently(&self, job: &Job, record: &DoneRecord) {
        let address = job.to.key();
        let mut delay = Duration::from_millis(50);
        loop {
            let write = DoneWrite::sent(&job.id, record.clone(), &address, self.record_ttl(job));
            match self.calls.record(write).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(message = %job.id, error = %e, "cannot write the sent record; retrying (the lease still protects the message)");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16) -> Failure {
        Failure::Reply {
            code,
            enhanced: None,
            text: "text".into(),
        }
    }

    fn connection(error: ConnectionError) -> Failure {
        Failure::Connection {
            error,
            detail: "detail".into(),
        }
    }

    #[test]
    fn a_route_that_is_away_is_failed_over_and_a_reply_about_the_destination_is_not() {
        use AfterFailure::*;
        let table = [
            (connection(ConnectionError::Refused), NextRoute),
            (connection(ConnectionError::Timeout), NextRoute),
            (connection(ConnectionError::Tls), NextRoute),
            (connection(ConnectionError::Dns), NextRoute),
            (connection(ConnectionError::Disconnected), NextRoute),
            (connection(ConnectionError::Other), NextRoute),
            (reply(421), NextRoute),
            (reply(450), Settle),
            (reply(451), Settle),
            (reply(452), Settle),
            (reply(454), Settle),
            (reply(550), Settle),
            (reply(552), Settle),
            (reply(554), Settle),
        ];
        for (failure, want) in table {
            assert_eq!(after_failure(&failure), want, "{failure:?}");
        }
    }

    #[test]
    fn every_outcome_has_its_metric_label() {
        let table = [
            (DeliveryOutcome::Delivered(None), "sent"),
            (DeliveryOutcome::AlreadyDone, "duplicate"),
            (DeliveryOutcome::Held, "held"),
            (DeliveryOutcome::Cancelled, "removed"),
            (
                DeliveryOutcome::Failed(
                    reply(550),
                    "r".into(),
                    mailpipe_common::classify::Classifier::default().classify(&reply(550)),
                ),
                "failed",
            ),
            (
                DeliveryOutcome::Deferred {
                    delay: Duration::ZERO,
                    reason: "throttled",
                },
                "throttled",
            ),
            (
                DeliveryOutcome::Dead {
                    reason: "expired",
                    detail: String::new(),
                },
                "expired",
            ),
            (DeliveryOutcome::Unsent, "returned"),
        ];
        for (outcome, label) in table {
            assert_eq!(outcome.label(), label);
        }
    }
}

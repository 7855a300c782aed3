//! The sender: consumes jobs from the send lanes and submits them over SMTP.
//!
//! Each lane has its own consumer and its own capacity (`capacity.rs`):
//! transactional mail is never queued behind a bulk campaign, and within a
//! lane a slow site holds back only its own recipients. Each
//! delivery is handled by `Sender::deliver`, which returns a
//! `DeliveryOutcome`; the outcome is made durable (Redis record, confirmed
//! publish) before the delivery is acked, in one place (`Sender::settle`).
//!
//! Effectively-once submission: a message whose terminal record exists is
//! acked without sending; otherwise the sender takes the message's lease
//! (`SET NX PX`), submits, and writes the sent record on the 2xx reply before
//! the ack. A replica that receives a message whose lease is held waits for
//! the holder to finish or the lease to expire.
//!
//! One file per concern, in the order a delivery meets them:
//!
//! | file | what |
//! |---|---|
//! | `lane.rs` | the lane consumers; opening a delivery (pure: send, pass on, or stop) |
//! | `batch.rs` | one delivery's recipients and their outcomes so far |
//! | `deliver.rs` | one recipient: gate, render, routes, budget, SMTP; the failover decision |
//! | `budget.rs` | the shared sending budget: go, wait, or defer |
//! | `routes.rs` | which relays or MX hosts to try, in which order |
//! | `dial.rs` | how many connections a route may use, learned from refused dials (applied by `smtp/gate.rs`) |
//! | `sites.rs` | which site a recipient domain belongs to (MX answers kept for their TTL) |
//! | `adaptive.rs` | what each attempt says about its site; stepping the site's adaptive rate |
//! | `destination.rs` | what a refused connection does to the message and to its destination |
//! | `content.rs` | compiled templates by content id |
//! | `calls.rs` | the per-message Redis calls, coalesced across messages |
//! | `settle.rs` | making the outcomes durable before the ack |
//! | `acker.rs` | coalesced acks per lane channel |
//! | `events.rs` | the sender's metrics, and one struct per event that counts and logs it |
//! | `mime.rs`, `dkim.rs`, `smtp/`, `mx.rs`, `coalesce.rs` | the message, its signature, the SMTP client, MX lookups, the coalescer |

mod acker;
mod adaptive;
mod ambiguous;
mod batch;
mod budget;
mod calls;
mod capacity;
mod coalesce;
mod content;
mod deliver;
mod destination;
mod dial;
pub mod dkim;
mod events;
mod lane;
pub mod mime;
mod mx;
mod routes;
mod settle;
mod sites;
mod smtp;

use std::sync::Arc;

use mailpipe_common::config::Settings;
use mailpipe_common::http::Health;
use mailpipe_common::topology::Topology;
use mailpipe_common::worker::run_worker;
use mailpipe_state::live_rules::LiveClassifier;
use mailpipe_state::policy::Policy;
use mailpipe_state::store::Store;
use tokio_util::sync::CancellationToken;

pub use events::SenderMetrics;
pub use smtp::enhanced_code;
#[doc(hidden)]
pub use smtp::fuzzing;

/// Runs the sender until `shutdown` is cancelled.
pub async fn run_until_stopped(
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Key files are read first: one that cannot be used stops start-up.
    let origin = mime::Origin::from_settings(&settings)?;
    let Some((metrics, health, store)) = mailpipe_state::worker::start::<SenderMetrics>(
        &settings.sender.listen,
        &settings.redis,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    // One resolver, one cache of MX answers: for the routes (MX mode) and
    // for the sites (both modes).
    let resolver = Arc::new(
        mx::MxResolver::new(&settings.sender.mx.nameservers)
            .map_err(|e| anyhow::anyhow!("building the DNS resolver: {e}"))?,
    );
    let site_rules = mailpipe_common::sites::SiteRules::new(&settings.sites.rules)
        .map_err(|e| anyhow::anyhow!("sites.rules: {e}"))?;
    let sites = sites::Sites::new(resolver.clone(), site_rules);
    let routes = routes::Routes::from_settings(&settings.sender, resolver)?;
    // Route series start at zero, so dashboards and alerts see every route.
    metrics.start_routes(routes.labels().iter().map(String::as_str));
    let policy = Policy::new(store.clone());
    let calls = calls::Calls::start(&store, &settings);
    let classifier = LiveClassifier::start(
        &settings.classifier,
        store.clone(),
        metrics.kept_rules_version().clone(),
        shutdown.clone(),
    )
    .await?;
    let sender = Arc::new(Sender {
        topology: Topology::from_settings(&settings),
        instance: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        deliveries: Default::default(),
        settings,
        store,
        routes,
        sites,
        policy,
        classifier,
        metrics,
        health: health.clone(),
        content: content::ContentCache::new(),
        origin,
        calls,
        site_control: Default::default(),
        releases: Default::default(),
        warmup_starts: Default::default(),
    });
    tokio::spawn(sender.clone().step_sites(shutdown.clone()));
    run_worker(sender.clone(), &health, &shutdown).await;
    mailpipe_common::shutdown::stage("counting the last attempts");
    // The attempts of the last moments, before the process ends.
    if let Err(e) = sender.calls.count_attempts().await {
        tracing::warn!(error = %e, "cannot count the last attempts");
    }
    Ok(())
}

/// What every delivery of this process shares. Its methods live with
/// their concern: `lane.rs`, `deliver.rs`, `settle.rs`.
struct Sender {
    settings: Settings,
    topology: Topology,
    /// Identifies this process as a lease holder.
    instance: String,
    /// Deliveries started by this process: numbers each one's lease owner.
    deliveries: std::sync::atomic::AtomicU64,
    store: Store,
    /// The relays or MX hosts, and which of them are down.
    routes: routes::Routes,
    /// The site of each recipient domain (its MX hosts' mail system).
    sites: sites::Sites,
    /// The shared sending policy (rate, concurrency, pauses).
    policy: Policy,
    /// Classifies each failed attempt once: for the domain's breaker and
    /// slow-down here, and for the retrier, which gets the classification
    /// with the failure record. Follows the kept rows of the qualification
    /// table.
    classifier: LiveClassifier,
    metrics: SenderMetrics,
    health: Health,
    /// Compiled templates by content id.
    content: content::ContentCache,
    /// Envelope sender (VERP) and DKIM keys, set up at start-up.
    origin: mime::Origin,
    /// The per-message Redis calls, run for all messages in flight together.
    calls: calls::Calls,
    /// What this sender saw at each site, for the sites' adaptive rates.
    site_control: adaptive::SiteControllers,
    /// Messages waiting for a site's concurrency, woken when this sender
    /// returns a lease there.
    releases: budget::Releases,
    /// Day 1 of each (sending domain, site) warm-up, read once.
    warmup_starts: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// Jobs for the unit tests.
#[cfg(test)]
mod fixtures {
    use mailpipe_common::message::{Job, Lane};

    /// A bulk job of request `r1` to `to`.
    pub(crate) fn job(id: &str, to: &str) -> Job {
        Job {
            v: 1,
            id: id.into(),
            request: "r1".into(),
            tenant: None,
            campaign: None,
            lane: Lane::Bulk,
            content: "c1".into(),
            to: to.parse().unwrap(),
            name: None,
            vars: Default::default(),
            created: 0,
            deadline: i64::MAX,
            attempt: 0,
            last_reason: None,
            retries: None,
        }
    }
}

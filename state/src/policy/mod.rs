//! The sending policy every sender replica shares, kept in Redis and
//! applied by scripts that read the server's clock (`TIME`), so any number
//! of replicas share one budget and no replica's clock matters. The
//! breaker's and the paused index's scripts here, like the slow-down's, take
//! the time as an argument as well (Unix ms, '' for the server's clock), so
//! tests pass it in:
//!
//! * per-domain and per-route rate limits (GCRA: one "theoretical arrival
//!   time" per key; a burst allowance lets `burst` messages through at once);
//! * per-domain and per-route concurrency, as leases in a sorted set that
//!   expire on their own if a replica dies mid-transaction;
//! * domain pauses (the circuit breaker and `mailpipe domain
//!   pause`), and slow-downs after throttling replies that recover linearly
//!   ([`crate::slowdown`]);
//! * run-time overrides of a domain's limits (`mailpipe domain limit`).
//!
//! Keys: `{p}:pause:{domain}`, `{p}:tat:{domain}`, `{p}:limit:{domain}`,
//! `{p}:slow:{domain}`, `{p}:seen:{domain}` (decaying attempt counts, the
//! rate a slow-down lowers when no limit is set), `{p}:conc:{domain}`, `{p}:rtat:{route}`,
//! `{p}:rconc:{route}`, `{p}:brk:{domain}:{minute}` (breaker buckets),
//! `{p}:paused` (index of the paused domains by the end of their pause, so
//! the paused domains are listed without scanning the key space; the pause
//! key decides, the index only points at it and forgets a domain once its
//! pause key is gone or its end has passed), `{p}:pausenote:{domain}` (an
//! operator's pause: when, why and who, JSON, with the pause's time to live).
//!
//! Whether a message may go now ([`Ask`] → [`Verdict`]) is decided by the
//! script of [`crate::calls`], together with the sender's other calls for
//! its messages; this module releases leases and counts failures, and keeps
//! the operators' view and controls.
//!
//! The breaker and the reactions to a classified failure are in
//! `breaker.rs`, pauses and their index in `pauses.rs`, run-time limits and
//! what operators see of a domain in `domains.rs`.

mod breaker;
mod domains;
mod pauses;

use std::time::Duration;

use crate::config::DomainPolicy;
use crate::store::{Store, StoreError};

pub use breaker::{breaker_buckets, BreakerCount, DomainReaction};
pub use domains::DomainState;
pub use pauses::{PauseBy, PauseNote, PausedDomain};

/// The time argument of the policy's scripts: `now_ms` (Unix ms), or ''
/// for the server's clock, which the senders use so that every replica
/// counts on one clock (the calls script counts the attempts on it).
pub(crate) fn now_arg(now_ms: Option<i64>) -> String {
    now_ms.map(|n| n.to_string()).unwrap_or_default()
}

/// What the policy says about sending one message now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go; when `lease` is set, concurrency leases were taken under that
    /// id: [`Policy::release`] them when the transaction is over.
    Go {
        lease: Option<String>,
        /// The site's MX rule: close the connection after this many messages.
        per_connection: Option<u32>,
        /// The message's place under the rates was reserved this far ahead:
        /// wait this long, then send without asking again.
        after: Duration,
    },
    /// A limit is reached: try again after this long.
    Wait(Duration),
    /// The domain is paused for this long.
    Paused(Duration),
}

/// One message to ask the sending policy about: a [`crate::calls::Call::Acquire`].
#[derive(Debug, Clone)]
pub struct Ask {
    pub domain: String,
    /// The domain's site ([`mailpipe_core::sites`]): its attempts are counted there.
    pub site: String,
    /// The domain's configured limits (run-time overrides win).
    pub limits: DomainPolicy,
    /// The site's configured MX rule (run-time overrides win).
    pub site_limits: crate::config::SiteLimits,
    /// Whether the site's adaptive rate applies.
    pub adaptive: bool,
    /// The warm-up ceiling of the message's sending domain at the site.
    pub warmup: Option<WarmupAsk>,
    pub route: RouteLimits,
    /// Names the message's concurrency leases.
    pub lease_id: String,
    /// The longest the message may still wait for a rate: within it, its
    /// place is reserved ([`Verdict::Go`] with `after`); beyond it, the
    /// answer is [`Verdict::Wait`] and nothing is taken.
    pub max_wait: Duration,
}

/// The warm-up count a message joins ([`mailpipe_core::warmup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmupAsk {
    /// `{sending domain}:{site}:{day}`.
    pub key: String,
    /// At most this many messages that day.
    pub cap: u64,
    /// Until the day ends.
    pub day_left: Duration,
}

/// Limits of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub name: String,
    pub interval: Option<Duration>,
    pub concurrency: Option<u32>,
}

/// Handle to the shared policy state.
#[derive(Clone)]
pub struct Policy {
    store: Store,
    breaker: std::sync::Arc<redis::Script>,
}

fn op(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { op, source }
}

impl Policy {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            breaker: std::sync::Arc::new(redis::Script::new(breaker::BREAKER_LUA)),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut k = self.store.prefix().to_string();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Returns the concurrency leases of a finished transaction.
    pub async fn release(
        &self,
        domain: &str,
        site: &str,
        route: &str,
        lease: &str,
    ) -> Result<(), StoreError> {
        let mut c = self.store.connection();
        let _: () = redis::pipe()
            .zrem(self.key(&["conc", domain]), lease)
            .ignore()
            .zrem(self.key(&["site", "conc", site]), lease)
            .ignore()
            .zrem(self.key(&["rconc", route]), lease)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("release"))?;
        Ok(())
    }
}

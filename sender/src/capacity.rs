//! A lane's capacity: the recipients it holds, how many of them ask their
//! site's sending policy at once, and its SMTP transactions in flight.
//!
//! A lane takes its recipients in queue order, up to `concurrency ×
//! IN_HAND_PER_SLOT` (`lane.rs`). Of those, at most `concurrency` per site
//! ask the site's policy at once (and wait for the place in its rate they
//! were given); the others wait in this process, in order, without asking
//! Redis. A recipient takes its lease under its turn (so a sender holds the
//! leases of the few recipients asking or sending, not of all it holds),
//! then its connection, then one of the lane's `concurrency` transaction
//! slots, then asks the policy. So a site that is slower than its share of
//! the queue holds back its own recipients, not the other sites', and its
//! waiters do not poll Redis. The wait for a turn and the policy's wait
//! together stay within `sender.max_throttle_wait`; past it the message is
//! deferred.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

/// Most sites whose askers are tracked; past it the table starts over (the
/// askers of a forgotten site finish under their old semaphore).
const MOST_SITES: usize = 100_000;

/// What waiting for a turn to ask a site's policy came to.
pub(crate) enum Turn {
    /// This message asks now; the turn goes back when it is dropped.
    Got(OwnedSemaphorePermit),
    /// No turn within the wait allowed: the message is deferred.
    TimedOut,
    /// Shutdown came first.
    Shutdown,
}

/// One lane's capacity (see the module's notes).
pub(crate) struct LaneCapacity {
    /// SMTP transactions in flight.
    slots: Semaphore,
    /// Recipients asking their site's policy, per site.
    askers: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Askers per site at most.
    per_site: usize,
}

impl LaneCapacity {
    /// A lane of `concurrency` transactions in flight, and as many askers
    /// per site.
    pub(crate) fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: Semaphore::new(concurrency),
            askers: Mutex::new(HashMap::new()),
            per_site: concurrency,
        }
    }

    /// A turn to ask `site`'s policy, in order, within `within`.
    pub(crate) async fn ask_turn(
        &self,
        site: &str,
        within: Duration,
        shutdown: &CancellationToken,
    ) -> Turn {
        let askers = {
            let mut sites = self.askers.lock().unwrap_or_else(|e| e.into_inner());
            if !sites.contains_key(site) && sites.len() >= MOST_SITES {
                sites.clear();
            }
            sites
                .entry(site.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_site)))
                .clone()
        };
        // Shutdown first: a stopping sender starts nothing new.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Turn::Shutdown,
            turn = askers.acquire_owned() => match turn {
                Ok(t) => Turn::Got(t),
                // The semaphore is never closed.
                Err(_) => Turn::Shutdown,
            },
            _ = tokio::time::sleep(within) => Turn::TimedOut,
        }
    }

    /// A transaction slot, in order; `None` on shutdown.
    pub(crate) async fn slot(&self, shutdown: &CancellationToken) -> Option<SemaphorePermit<'_>> {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            slot = self.slots.acquire() => slot.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_site_s_askers_wait_in_turn_and_other_sites_do_not_wait_for_them() {
        let lane = Arc::new(LaneCapacity::new(2));
        let shutdown = CancellationToken::new();
        let wait = Duration::from_secs(5);
        let got = |t: Turn| match t {
            Turn::Got(p) => p,
            _ => panic!("no turn"),
        };
        let a1 = got(lane.ask_turn("a", wait, &shutdown).await);
        let _a2 = got(lane.ask_turn("a", wait, &shutdown).await);
        // A third asker of site a waits, up to its wait; site b's does not.
        let third = lane
            .ask_turn("a", Duration::from_millis(50), &shutdown)
            .await;
        assert!(matches!(third, Turn::TimedOut), "a third asker of a waits");
        let _b = got(lane
            .ask_turn("b", Duration::from_millis(50), &shutdown)
            .await);
        // A turn given back lets the next asker of a in.
        let next = {
            let lane = lane.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                matches!(lane.ask_turn("a", wait, &shutdown).await, Turn::Got(_))
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a1);
        assert!(next.await.unwrap());
        // Shutdown ends a wait.
        shutdown.cancel();
        assert!(matches!(
            lane.ask_turn("a", wait, &shutdown).await,
            Turn::Shutdown
        ));
    }

    #[tokio::test]
    async fn transaction_slots_are_the_lane_s_concurrency() {
        let lane = LaneCapacity::new(1);
        let shutdown = CancellationToken::new();
        let s = lane.slot(&shutdown).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(50), lane.slot(&shutdown));
        assert!(second.await.is_err(), "one slot");
        drop(s);
        assert!(lane.slot(&shutdown).await.is_some());
    }
}

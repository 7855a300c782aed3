//! The shared sending budget of a domain and a route: a message asks the
//! policy ([`mailpipe_state::policy`]) whether it may go, waits out a short
//! rate limit, and is deferred otherwise. What to do with a verdict is
//! [`after_verdict`], a pure function.
//!
//! A full concurrency is asked again after a short wait; a message of this
//! process waiting for its site is woken as soon as this process returns
//! a lease there ([`Releases`]), so the place does not stay empty for the
//! rest of the wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailpipe_common::config::DomainPolicy;
use mailpipe_common::message::Job;
use mailpipe_common::warmup;
use mailpipe_state::policy::{Ask, Verdict, WarmupAsk};
use mailpipe_state::store::StoreError;
use tokio::sync::Notify;

use crate::deliver::DeliveryOutcome;
use crate::routes::RouteState;
use crate::Sender;

/// What to do with the sending policy's verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BudgetStep {
    /// Send after the reserved wait (zero: now, without asking again);
    /// return these concurrency leases afterwards, and close the
    /// connection after this many messages (the site's MX rule).
    Go(Option<String>, Option<u32>, Duration),
    /// Wait this long and ask again.
    Sleep(Duration),
    /// Give the message back through a delay tier.
    Defer {
        delay: Duration,
        reason: &'static str,
    },
}

/// Decides on a verdict after `waited` of waiting. A rate limit within the
/// message's `max_wait` was reserved by the policy: go after the reserved
/// wait, without asking again. A full concurrency is waited out in short
/// steps while the total wait stays within `max_wait`; past it (or a rate
/// whose next free place is past it) the message is deferred
/// (`throttled`), as it is at once when the domain is paused.
pub(crate) fn after_verdict(verdict: Verdict, waited: Duration, max_wait: Duration) -> BudgetStep {
    match verdict {
        Verdict::Go {
            lease,
            per_connection,
            after,
        } => BudgetStep::Go(lease, per_connection, after),
        Verdict::Wait(d) if waited + d <= max_wait => BudgetStep::Sleep(d),
        Verdict::Wait(d) => BudgetStep::Defer {
            delay: d.max(Duration::from_millis(1)),
            reason: "throttled",
        },
        Verdict::Paused(d) => BudgetStep::Defer {
            delay: d,
            reason: "paused",
        },
    }
}

/// Most sites whose waiters are remembered; past it the list starts over
/// (a waiter of a forgotten site is only woken later, by its wait's end).
const MOST_SITES: usize = 100_000;

/// The messages of this process waiting for a site's concurrency, to be
/// woken one per lease this process returns at the site. Leases returned
/// by other senders are found by asking again after the wait.
#[derive(Default)]
pub(crate) struct Releases {
    sites: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Releases {
    /// What the messages waiting for `site` wait on.
    fn of(&self, site: &str) -> Arc<Notify> {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = sites.get(site) {
            return n.clone();
        }
        if sites.len() >= MOST_SITES {
            sites.clear();
        }
        sites.entry(site.to_string()).or_default().clone()
    }

    /// A lease at `site` was returned: one waiting message asks again now
    /// (or the next one to wait, if none waits).
    fn released(notify: &Notify) {
        notify.notify_one();
    }
}

impl Sender {
    /// Waits for the shared budget of the domain and route ([`after_verdict`]):
    /// the concurrency leases to return after the transaction, or the
    /// deferred outcome. `waited` is how long the message already waited
    /// for its turn to ask (`capacity.rs`).
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    pub(crate) async fn wait_for_budget(
        &self,
        job: &Job,
        domain: &str,
        site: &str,
        from_domain: &str,
        limits: &DomainPolicy,
        route: &RouteState,
        waited: Duration,
    ) -> Result<Result<(Option<String>, Option<u32>), DeliveryOutcome>, StoreError> {
        let mut waited = waited;
        let max_wait = self.settings.sender.max_throttle_wait;
        let warmup = self.warmup_ask(from_domain, site).await?;
        let site_limits = self
            .settings
            .sites
            .limits
            .get(site)
            .cloned()
            .unwrap_or_default();
        let releases = self.releases.of(site);
        loop {
            // Enabled before asking: a lease returned while the answer is
            // on its way wakes this message too.
            let released = releases.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let verdict = self
                .calls
                .acquire(Ask {
                    domain: domain.to_string(),
                    site: site.to_string(),
                    limits: limits.clone(),
                    site_limits: site_limits.clone(),
                    adaptive: self.settings.sites.adaptive.enabled,
                    warmup: warmup.clone(),
                    route: route.limits.clone(),
                    lease_id: format!("{}:{}", self.instance, job.id),
                    max_wait: max_wait.saturating_sub(waited),
                })
                .await?;
            match after_verdict(verdict, waited, max_wait) {
                BudgetStep::Go(lease, per, after) => {
                    // The place is reserved: the wait is not asked again.
                    if !after.is_zero() {
                        tokio::time::sleep(after).await;
                    }
                    return Ok(Ok((lease, per)));
                }
                BudgetStep::Sleep(d) => {
                    let from = Instant::now();
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = &mut released => {}
                    }
                    waited += from.elapsed();
                }
                BudgetStep::Defer { delay, reason } => {
                    return Ok(Err(DeliveryOutcome::Deferred { delay, reason }))
                }
            }
        }
    }

    /// The warm-up count a message from `from_domain` to `site` joins, if
    /// the sending domain warms up and its day has a cap. Day 1 is the
    /// configured start, else the first message of the sending domain to
    /// the site (kept in Redis, read once per process).
    async fn warmup_ask(
        &self,
        from_domain: &str,
        site: &str,
    ) -> Result<Option<WarmupAsk>, StoreError> {
        let w = &self.settings.sites.warmup;
        if !w.applies_to(from_domain) {
            return Ok(None);
        }
        let start = match w.start_ms() {
            Some(s) => s,
            None => self.warmup_start(from_domain, site).await?,
        };
        let now = mailpipe_common::unix_now_ms();
        let day = warmup::warmup_day(start, now);
        Ok(warmup::warmup_cap(&w.schedule, day).map(|cap| WarmupAsk {
            key: format!("{from_domain}:{site}:{day}"),
            cap,
            day_left: Duration::from_millis((warmup::day_ends_ms(start, day) - now).max(1) as u64),
        }))
    }

    /// Day 1 of a sending domain at a site: its first message there.
    async fn warmup_start(&self, from_domain: &str, site: &str) -> Result<i64, StoreError> {
        let key = format!("{from_domain}:{site}");
        if let Some(s) = self
            .warmup_starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(*s);
        }
        let start = self
            .policy
            .warmup_start(&key, mailpipe_common::unix_now_ms())
            .await?;
        let mut starts = self.warmup_starts.lock().unwrap_or_else(|e| e.into_inner());
        if starts.len() >= 100_000 {
            starts.clear();
        }
        starts.insert(key, start);
        Ok(start)
    }

    /// Returns the concurrency leases off the message's path (they also
    /// expire on their own if this fails), then wakes a message of this
    /// process waiting for the site's concurrency.
    pub(crate) fn release_policy_lease(
        &self,
        domain: &str,
        site: &str,
        route: &str,
        lease: String,
    ) {
        let (policy, domain, site_name, route) = (
            self.policy.clone(),
            domain.to_string(),
            site.to_string(),
            route.to_string(),
        );
        let waiting = self.releases.of(site);
        tokio::spawn(async move {
            policy
                .release(&domain, &site_name, &route, &lease)
                .await
                .ok();
            // Returned (or expiring on its own): a waiter may take it.
            Releases::released(&waiting);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_returned_here_wakes_one_waiter_of_its_site_and_no_other() {
        let releases = Releases::default();
        let (a, b) = (releases.of("a.example"), releases.of("b.example"));
        assert!(Arc::ptr_eq(&a, &releases.of("a.example")), "one per site");
        let first = a.notified();
        let second = a.notified();
        let other = b.notified();
        tokio::pin!(first, second, other);
        first.as_mut().enable();
        second.as_mut().enable();
        other.as_mut().enable();
        Releases::released(&a);
        let woken = |f: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>| {
            futures_lite::future::block_on(futures_lite::future::poll_once(f)).is_some()
        };
        assert!(
            woken(first.as_mut()),
            "the first waiter of the site asks again"
        );
        assert!(!woken(second.as_mut()), "one lease, one waiter");
        assert!(
            !woken(other.as_mut()),
            "another site's waiters keep waiting"
        );
    }

    #[test]
    fn a_rate_limit_is_waited_out_within_the_budget_then_deferred() {
        let ms = Duration::from_millis;
        let max = ms(1000);
        let table = [
            (
                Verdict::Go {
                    lease: None,
                    per_connection: None,
                    after: ms(0),
                },
                ms(0),
                BudgetStep::Go(None, None, ms(0)),
            ),
            (
                Verdict::Go {
                    lease: Some("l".into()),
                    per_connection: Some(100),
                    after: ms(100),
                },
                ms(900),
                BudgetStep::Go(Some("l".into()), Some(100), ms(100)),
            ),
            (Verdict::Wait(ms(200)), ms(0), BudgetStep::Sleep(ms(200))),
            (Verdict::Wait(ms(200)), ms(800), BudgetStep::Sleep(ms(200))),
            (
                Verdict::Wait(ms(200)),
                ms(801),
                BudgetStep::Defer {
                    delay: ms(200),
                    reason: "throttled",
                },
            ),
            (
                Verdict::Wait(ms(0)),
                ms(1001),
                BudgetStep::Defer {
                    delay: ms(1),
                    reason: "throttled",
                },
            ),
            (
                Verdict::Paused(ms(60_000)),
                ms(0),
                BudgetStep::Defer {
                    delay: ms(60_000),
                    reason: "paused",
                },
            ),
        ];
        for (verdict, waited, want) in table {
            assert_eq!(
                after_verdict(verdict.clone(), waited, max),
                want,
                "{verdict:?} after {waited:?}"
            );
        }
    }
}

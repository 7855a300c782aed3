//! The shared sending budget of a domain and a route: a message asks the
//! policy ([`mailpipe_common::policy`]) whether it may go, waits out a short
//! rate limit, and is deferred otherwise. What to do with a verdict is
//! [`after_verdict`], a pure function.

use std::time::Duration;

use mailpipe_common::config::DomainPolicy;
use mailpipe_common::message::Job;
use mailpipe_common::policy::{Ask, Verdict};
use mailpipe_common::store::StoreError;

use crate::deliver::DeliveryOutcome;
use crate::routes::RouteState;
use crate::Sender;

/// What to do with the sending policy's verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BudgetStep {
    /// Send now; return these concurrency leases afterwards.
    Go(Option<String>),
    /// Wait this long and ask again.
    Sleep(Duration),
    /// Give the message back through a delay tier.
    Defer {
        delay: Duration,
        reason: &'static str,
    },
}

/// Decides on a verdict after `waited` of waiting: a rate limit is waited
/// out while the total wait stays within `max_wait`, else the message is
/// deferred (`throttled`), as it is at once when the domain is paused.
pub(crate) fn after_verdict(verdict: Verdict, waited: Duration, max_wait: Duration) -> BudgetStep {
    match verdict {
        Verdict::Go { lease } => BudgetStep::Go(lease),
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

impl Sender {
    /// Waits for the shared budget of the domain and route ([`after_verdict`]):
    /// the concurrency leases to return after the transaction, or the
    /// deferred outcome.
    pub(crate) async fn wait_for_budget(
        &self,
        job: &Job,
        domain: &str,
        limits: &DomainPolicy,
        route: &RouteState,
    ) -> Result<Result<Option<String>, DeliveryOutcome>, StoreError> {
        let mut waited = Duration::ZERO;
        let site = self.sites.of(domain).await;
        loop {
            let verdict = self
                .calls
                .acquire(Ask {
                    domain: domain.to_string(),
                    site: site.to_string(),
                    limits: limits.clone(),
                    route: route.limits.clone(),
                    lease_id: format!("{}:{}", self.instance, job.id),
                })
                .await?;
            match after_verdict(verdict, waited, self.settings.sender.max_throttle_wait) {
                BudgetStep::Go(lease) => return Ok(Ok(lease)),
                BudgetStep::Sleep(d) => {
                    waited += d;
                    tokio::time::sleep(d).await;
                }
                BudgetStep::Defer { delay, reason } => {
                    return Ok(Err(DeliveryOutcome::Deferred { delay, reason }))
                }
            }
        }
    }

    /// Returns the concurrency leases off the message's path (they also
    /// expire on their own if this fails).
    pub(crate) fn release_policy_lease(&self, domain: &str, route: &str, lease: String) {
        let (policy, domain, route) = (self.policy.clone(), domain.to_string(), route.to_string());
        tokio::spawn(async move {
            policy.release(&domain, &route, &lease).await.ok();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_waited_out_within_the_budget_then_deferred() {
        let ms = Duration::from_millis;
        let max = ms(1000);
        let table = [
            (Verdict::Go { lease: None }, ms(0), BudgetStep::Go(None)),
            (
                Verdict::Go {
                    lease: Some("l".into()),
                },
                ms(900),
                BudgetStep::Go(Some("l".into())),
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

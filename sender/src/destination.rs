//! What a refused connection does to the message and to its destination.
//!
//! A route that refused a dial, answered 421 at connect, or closed a
//! transaction with 421 is away for now: the message fails over to the
//! next route, the route goes last (`routes.rs`) and its pool holds dials
//! back (`dial.rs`). In MX mode the route is the recipient domain's own
//! server, so the refusal is also the destination's: the domain's policy
//! sees it at once (a throttling reply slows the domain down, or with
//! adaptive sites tells the site's controller, and every such failure
//! counts toward its breaker, as an attempt as well when it came before the
//! policy was asked). In relay mode it is the relay's, and the domain is
//! left alone.
//!
//! A message whose every route is held was not dialled at all; what it
//! does then is [`while_held`], a pure function.

use std::time::{Duration, Instant};

use mailpipe_common::classify::Failure;
use mailpipe_common::message::Job;
use mailpipe_state::store::StoreError;

use crate::deliver::DeliveryOutcome;
use crate::Sender;

/// What a message does when every route it could take is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhileHeld {
    /// The server is there and said "not now" (421 at connect): the message
    /// waits out the hold in a delay tier, and no attempt is counted.
    Defer,
    /// The server could not be reached: the message fails as if it had
    /// dialled, with that failure, and its class's retry schedule applies
    /// (so an unreachable destination still ends after the routing
    /// schedule's attempts).
    Fail,
}

/// Decides [`WhileHeld`] from the refusal that holds the route: a
/// temporary reply at connect defers, anything else fails.
pub(crate) fn while_held(refusal: &Failure) -> WhileHeld {
    match refusal {
        Failure::Reply { code, .. } if (400..500).contains(code) => WhileHeld::Defer,
        Failure::Reply { .. } | Failure::Connection { .. } => WhileHeld::Fail,
    }
}

/// Where a route refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A dial was refused while other connections of the route were open:
    /// the host takes no more connections, and the open ones carry on.
    AtConnectOthersOpen,
    /// A dial was refused and no connection of the route is left.
    AtConnectNoneLeft,
    /// The server closed a transaction (421) or the connection failed in
    /// it; also any other answer in a transaction (`deliver.rs`).
    InTransaction,
}

/// What a refusal in MX mode does to the domain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DomainSees {
    /// The breaker counts it as an attempt too (the sending policy, which
    /// counts attempts, was not asked yet).
    pub(crate) unasked: bool,
    /// A throttling reply is about the destination's rate. Not when the
    /// host only refused a connection past the ones it keeps open: that is
    /// about connections, which the route's cap (`dial.rs`) already follows.
    pub(crate) throttles: bool,
    /// A throttling reply slows the domain's own rate down. Not when the
    /// site has an adaptive rate: its controller cuts the rate of the whole
    /// site, which is what a provider limits, and slowing each domain that
    /// happened to get one of the replies as well (for the slow-down's
    /// recovery, ten minutes) would hold the site far below the rate its
    /// controller settles at.
    pub(crate) slows_domain: bool,
}

/// Decides [`DomainSees`] from where the route refused and whether the
/// site has an adaptive rate (`sites.adaptive.enabled`).
pub(crate) fn domain_sees(refusal: Refusal, site_adapts: bool) -> DomainSees {
    let (unasked, throttles) = match refusal {
        Refusal::AtConnectOthersOpen => (true, false),
        Refusal::AtConnectNoneLeft => (true, true),
        Refusal::InTransaction => (false, true),
    };
    DomainSees {
        unasked,
        throttles,
        slows_domain: throttles && !site_adapts,
    }
}

/// The first held route a message met: when it may be dialled again, and
/// the refusal that holds it.
pub(crate) struct HeldRoute {
    pub(crate) name: String,
    pub(crate) until: Instant,
    pub(crate) refusal: Failure,
}

impl Sender {
    /// A route refused this message's connection, or closed it with 421:
    /// counted, logged, last for a while, and in MX mode seen by the
    /// domain's policy as [`domain_sees`] says.
    pub(crate) async fn route_refused(
        &self,
        job: &Job,
        domain: &str,
        site: &str,
        route: &str,
        failure: &Failure,
        refusal: Refusal,
    ) -> Result<(), StoreError> {
        self.route_unavailable(route, failure);
        if !self.routes.is_mx() {
            return Ok(());
        }
        let class = self
            .classifier
            .classify_for(failure, Some(&job.to.to_string()));
        let sees = domain_sees(refusal, self.settings.sites.adaptive.enabled);
        // The attempts first: the breaker's ratio never runs ahead.
        self.calls.count_attempts().await?;
        let reaction = if sees.unasked {
            self.policy
                .react_unasked(domain, &class, &self.settings.policy, sees.slows_domain)
                .await?
        } else {
            self.policy
                .react(domain, &class, &self.settings.policy, sees.slows_domain)
                .await?
        };
        // The site's controller sees throttling: a throttling reply, or a
        // refused connection that left none open.
        if sees.throttles {
            if let Some(signal) = crate::adaptive::signal_of(failure, &class) {
                self.site_saw(site, signal).await;
            }
        }
        if reaction.slowed {
            tracing::warn!(%domain, %route, "the domain's MX host throttles: sending to the domain slows down");
        }
        if reaction.paused {
            crate::events::DomainPaused {
                domain,
                pause: self.settings.policy.breaker.pause,
            }
            .emit(&self.metrics);
        }
        Ok(())
    }

    /// The outcome of a message that met only held routes ([`while_held`]).
    pub(crate) fn held_outcome(&self, job: &Job, held: HeldRoute) -> DeliveryOutcome {
        match while_held(&held.refusal) {
            WhileHeld::Defer => DeliveryOutcome::Deferred {
                delay: held
                    .until
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
                reason: "throttled",
            },
            WhileHeld::Fail => {
                let class = self
                    .classifier
                    .classify_for(&held.refusal, Some(&job.to.to_string()));
                DeliveryOutcome::Failed(held.refusal, held.name, class)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_common::classify::ConnectionError;

    #[test]
    fn a_refused_connection_past_the_open_ones_does_not_slow_the_domain_down_nor_does_throttling_at_an_adaptive_site(
    ) {
        // (where, adaptive site, unasked, throttles, slows the domain)
        let table = [
            (Refusal::AtConnectOthersOpen, false, true, false, false),
            (Refusal::AtConnectNoneLeft, false, true, true, true),
            (Refusal::InTransaction, false, false, true, true),
            (Refusal::AtConnectOthersOpen, true, true, false, false),
            (Refusal::AtConnectNoneLeft, true, true, true, false),
            (Refusal::InTransaction, true, false, true, false),
        ];
        for (refusal, adaptive, unasked, throttles, slows_domain) in table {
            assert_eq!(
                domain_sees(refusal, adaptive),
                DomainSees {
                    unasked,
                    throttles,
                    slows_domain
                },
                "{refusal:?}, adaptive {adaptive}"
            );
        }
    }

    #[test]
    fn a_held_route_defers_a_throttled_message_and_fails_an_unreachable_one() {
        let table = [
            (
                Failure::Reply {
                    code: 421,
                    enhanced: Some("4.7.0".into()),
                    text: "4.7.0 Too many connections, try again later".into(),
                },
                WhileHeld::Defer,
            ),
            (
                Failure::Reply {
                    code: 554,
                    enhanced: None,
                    text: "No SMTP service here".into(),
                },
                WhileHeld::Fail,
            ),
            (
                Failure::connection(ConnectionError::Refused, "connection refused"),
                WhileHeld::Fail,
            ),
            (
                Failure::connection(ConnectionError::Timeout, "timed out"),
                WhileHeld::Fail,
            ),
        ];
        for (refusal, want) in table {
            assert_eq!(while_held(&refusal), want, "{refusal:?}");
        }
    }
}

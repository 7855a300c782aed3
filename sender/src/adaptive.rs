//! The adaptive rate of each site ([`mailpipe_common::adaptive`]), from
//! this sender's side: what each attempt tells about its site is counted
//! here, and a step of the site's controller runs
//!
//! * every half `start_step` (or `step`, the shorter; at most a second)
//!   for the sites this sender saw something at (a step that raises the
//!   rate waits for its whole window, whichever sender takes it);
//! * at once after a throttling reply or a reputation block (a cut or a
//!   suspension must not wait);
//! * before the first message to a site this process meets, so a new site
//!   starts at its start rate (or its history), not unlimited.
//!
//! A step gathers every sender's counts in Redis, runs the pure
//! [`step`](mailpipe_common::adaptive::step) and stores its result
//! (`Policy::site_step_begin`, `site_step_apply`); the calls script applies
//! the allowed rate to every message, and a suspension as the site's pause.
//! Each change of state is counted and gauged in Prometheus, logged, kept
//! in the site's log for `mailpipe site show` and published as a site event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailpipe_common::adaptive::{step, Action, Counts};
use mailpipe_common::classify::{Classification, ConnectionError, Failure, Reason, Scope};
use mailpipe_common::message::{EventKind, SiteEvent};
use mailpipe_state::sitecontrol::log_line;
use mailpipe_state::store::StoreError;
use tokio_util::sync::CancellationToken;

use crate::events::{SiteChanged, SiteStepped};
use crate::Sender;

/// What one attempt says about its site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SiteSignal {
    Sent,
    /// A throttling reply or a refused connection, with its text.
    Throttled(String),
    /// A sender-reputation block, with its text.
    Blocked(String),
}

/// What a failure says about its site: a throttling reply (`rate_limited`)
/// or a refused connection is throttling; a `refused` reply about the
/// sender is a reputation block; anything else says nothing about the rate.
pub(crate) fn signal_of(failure: &Failure, class: &Classification) -> Option<SiteSignal> {
    let text = failure.to_string();
    match (class.reason, class.scope, failure) {
        (Reason::RateLimited, _, _) => Some(SiteSignal::Throttled(text)),
        (
            _,
            _,
            Failure::Connection {
                error: ConnectionError::Refused,
                ..
            },
        ) => Some(SiteSignal::Throttled(text)),
        (Reason::Refused, Scope::Sender, Failure::Reply { .. }) => Some(SiteSignal::Blocked(text)),
        _ => None,
    }
}

/// Times a message meeting a new site waits 10 ms for another message's
/// first step of it (see `site_met`).
const FIRST_STEP_TRIES: u32 = 100;

/// Most sites remembered as met by this process.
const MOST_KNOWN: usize = 100_000;

/// This sender's side of the site controllers.
#[derive(Default)]
pub(crate) struct SiteControllers {
    /// Counts not yet handed to a step, by site.
    counts: Mutex<HashMap<String, Counts>>,
    /// Sites this process met (stepped once before its first message).
    known: Mutex<HashSet<String>>,
    /// Sites with an immediate step under way.
    stepping: Mutex<HashSet<String>>,
    /// Site events waiting for a session's channel.
    events: Mutex<Vec<SiteEvent>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SiteControllers {
    /// The site events waiting to be published.
    pub(crate) fn take_events(&self) -> Vec<SiteEvent> {
        std::mem::take(&mut *lock(&self.events))
    }
}

impl Sender {
    fn adaptive_on(&self) -> bool {
        self.settings.sites.adaptive.enabled
    }

    /// Before a message to `site`: the first time this process meets the
    /// site, a step starts its controller (or restarts it from history).
    pub(crate) async fn site_met(&self, site: &str) {
        if !self.adaptive_on() || lock(&self.site_control.known).contains(site) {
            return;
        }
        // Until a step stored the site's state, the calls script knows no
        // rate for it and lets everything go. When another message (of this
        // sender or another) is stepping the site, wait for that step:
        // messages meeting a new site together must not go out as one burst
        // before its start rate applies. Bounded: a sender that died holding
        // the lock leaves it for seconds.
        let mut tries = 0;
        loop {
            match self.step_site(site, Counts::default(), true).await {
                Ok(true) => break,
                Ok(false) if tries < FIRST_STEP_TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    // Another message of this sender took the first step.
                    if lock(&self.site_control.known).contains(site) {
                        return;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(%site, error = %e, "cannot start the site's adaptive rate");
                    return;
                }
            }
        }
        let mut known = lock(&self.site_control.known);
        if known.len() >= MOST_KNOWN {
            known.clear();
        }
        known.insert(site.to_string());
    }

    /// Counts what an attempt said about its site; a throttling reply or a
    /// block steps the site's controller at once.
    pub(crate) async fn site_saw(&self, site: &str, signal: SiteSignal) {
        if !self.adaptive_on() {
            return;
        }
        let urgent = signal != SiteSignal::Sent;
        {
            let mut counts = lock(&self.site_control.counts);
            let c = counts.entry(site.to_string()).or_default();
            match signal {
                SiteSignal::Sent => c.sent += 1,
                SiteSignal::Throttled(r) => {
                    c.throttled += 1;
                    c.throttle_reply = Some(r);
                }
                SiteSignal::Blocked(r) => {
                    c.blocked += 1;
                    c.block_reply = Some(r);
                }
            }
        }
        // One immediate step per site at a time in this process: the
        // others' counts wait for the next one.
        if urgent && lock(&self.site_control.stepping).insert(site.to_string()) {
            let counts = lock(&self.site_control.counts)
                .remove(site)
                .unwrap_or_default();
            if let Err(e) = self.step_site(site, counts.clone(), true).await {
                tracing::warn!(%site, error = %e, "cannot step the site's adaptive rate");
                lock(&self.site_control.counts)
                    .entry(site.to_string())
                    .or_default()
                    .add(&counts);
            }
            lock(&self.site_control.stepping).remove(site);
        }
    }

    /// Steps every site with counts, every half of the least step, until
    /// shutdown.
    pub(crate) async fn step_sites(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.adaptive_on() {
            return;
        }
        let every = (self.settings.sites.adaptive.least_step() / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let all: Vec<(String, Counts)> = lock(&self.site_control.counts).drain().collect();
            for (site, counts) in all {
                if let Err(e) = self.step_site(&site, counts.clone(), false).await {
                    tracing::warn!(%site, error = %e, "cannot step the site's adaptive rate");
                    // Counted again at the next tick.
                    lock(&self.site_control.counts)
                        .entry(site)
                        .or_default()
                        .add(&counts);
                }
            }
        }
    }

    /// One step of a site's controller with this sender's `counts` (see the
    /// module header).
    /// One step of a site's controller; `false` when no step was taken
    /// (not due, or another sender is stepping the site).
    async fn step_site(&self, site: &str, counts: Counts, force: bool) -> Result<bool, StoreError> {
        let s = &self.settings.sites.adaptive;
        let now = mailpipe_common::unix_now_ms();
        let Some(due) = self
            .policy
            .site_step_begin(site, &counts, force, s.least_step(), now)
            .await?
        else {
            return Ok(false);
        };
        let configured = self
            .settings
            .sites
            .limits
            .get(site)
            .and_then(|l| l.rate)
            .map(|r| r.per_second());
        // A run-time rule replaces the configured one, as in the calls script.
        let ceiling = due.rule_rate.or(configured);
        let before = due.state.as_ref().map(|st| (st.rate, st.phase));
        let out = step(s, ceiling, due.state.as_ref(), &due.counts, now);
        let changed = out.action != Action::None;
        let line = changed.then(|| log_line(now, out.action, before.map(|b| b.0), &out.state));
        let suspend =
            (out.action == Action::Suspended).then_some((s.suspend_for, out.state.reason.as_str()));
        let stored = self
            .policy
            .site_step_apply(site, &due.lock, &out.state, line.as_deref(), suspend, now)
            .await?;
        if !stored {
            return Ok(false);
        }
        SiteStepped {
            site,
            rate: out.rate,
            phase: out.state.phase,
        }
        .emit(&self.metrics);
        if !changed {
            return Ok(true);
        }
        let reason = matches!(out.action, Action::Cut | Action::Suspended)
            .then(|| out.state.reason.clone())
            .filter(|r| !r.is_empty());
        SiteChanged {
            site,
            action: out.action,
            phase: out.state.phase,
            rate: out.rate,
            reason: reason.as_deref(),
        }
        .emit(&self.metrics);
        lock(&self.site_control.events).push(SiteEvent {
            v: 1,
            event: EventKind::Site,
            site: site.to_string(),
            action: out.action.as_str().to_string(),
            state: out.state.phase.as_str().to_string(),
            previous_rate: before.map(|b| b.0),
            rate: out.rate,
            reason,
            at: now,
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_common::classify::Classifier;

    fn reply(code: u16, enhanced: &str, text: &str) -> Failure {
        Failure::Reply {
            code,
            enhanced: Some(enhanced.into()),
            text: text.into(),
        }
    }

    #[test]
    fn throttling_replies_and_refused_connections_throttle_and_reputation_blocks_block() {
        let c = Classifier::default();
        let table = [
            (
                reply(421, "4.7.0", "Too many connections, try again later"),
                "throttled",
            ),
            (
                reply(451, "4.7.28", "rate limited, try again later"),
                "throttled",
            ),
            (
                Failure::connection(ConnectionError::Refused, "connection refused"),
                "throttled",
            ),
            (
                reply(
                    550,
                    "5.7.1",
                    "Message from 192.0.2.1 blocked due to poor reputation",
                ),
                "blocked",
            ),
            (
                reply(550, "5.1.1", "<bob@example.com>: user unknown"),
                "none",
            ),
            (reply(452, "4.2.2", "mailbox full"), "none"),
        ];
        for (failure, want) in table {
            let class = c.classify_for(&failure, Some("bob@example.com"));
            let got = match signal_of(&failure, &class) {
                Some(SiteSignal::Throttled(_)) => "throttled",
                Some(SiteSignal::Blocked(_)) => "blocked",
                Some(SiteSignal::Sent) => "sent",
                None => "none",
            };
            assert_eq!(got, want, "{failure} classified {class:?}");
        }
    }
}

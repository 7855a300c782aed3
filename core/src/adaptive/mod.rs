//! Adaptive throughput per site: how fast mailpipe may send to a mail
//! system, learned from what it answers.
//!
//! A provider says how much it takes only by pushing back: `421 4.7.0 Too
//! many connections`, `451 4.7.28 rate limited`, refused connections. So
//! each site has an allowed rate that a controller moves:
//!
//! * **probing**: the rate rises by `ramp` each `step` in which the senders
//!   used at least `used_share` of it (a rate nobody used proves nothing),
//!   up to the rate that last held, if there is one. A site's start (no
//!   throttling seen since it (re)started) rises faster, by `start_ramp`
//!   each `start_step`: it has no limit to stay under yet, and at 1.5 × per
//!   2 s a provider taking 1,500/s would take 20 s to find from 20/s;
//! * **steady**: at or above the rate that last held, it rises by the
//!   smaller `probe` per used step, looking for room slowly; once it has
//!   held `reprobe_after` used steps in a row at or above the rate its
//!   last cut came from, that limit is gone (it was a burst, or the
//!   provider raised it) and the site probes again;
//! * **throttled**: a throttling reply (or a refused connection) cut the
//!   rate by `cut` at once (while probing, down to the rate before the
//!   last rise at most: that one held a moment ago, and the rise past the
//!   limit may have been a doubling; while steady, back to `steady_cut` of
//!   the rate before the last probe's rise, when that is higher: that rate
//!   held a step ago and the limit is just above it); replies within
//!   `cut_hold` of a cut answer messages already in flight and do not cut
//!   again; the first window without throttling makes the site steady
//!   again;
//! * **suspended**: `suspend_after` sender-reputation blocks (a `refused`
//!   reply about the sender) in a row suspend the site for `suspend_for`,
//!   with the reply as the reason; then it resumes, probing from a cut rate.
//!
//! The rate never exceeds the site's MX rule (`sites.limits`, or a run-time
//! `mailpipe site limit`) and never falls below `min_rate`. The rate that
//! last held is kept with its time: a site that was idle for `idle_restart`
//! starts again from it, decayed toward `start_rate` by its age
//! (`history_half_life`), so a second campaign starts where the first one
//! ended, not from nothing.
//!
//! [`step`] is the whole decision, a pure function of the state, the counts
//! since the last step and the time. The sender counts, Redis stores the
//! state and the calls script applies its rate (`mailpipe_state::sitecontrol`).
//!
//! The settings are in `settings.rs`, the state kept per site in
//! `state.rs`; the step is here, its scenario tests in `tests.rs`.

mod settings;
mod state;

#[cfg(test)]
mod tests;

pub use settings::AdaptiveSettings;
pub use state::{Phase, SiteControl};

/// What the senders saw at a site since the last step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Messages the site accepted.
    pub sent: u64,
    /// Throttling replies (`rate_limited`) and refused connections.
    pub throttled: u64,
    /// Sender-reputation blocks (`refused`, sender scope).
    pub blocked: u64,
    /// The last throttling reply and the last block, for the reason.
    pub throttle_reply: Option<String>,
    pub block_reply: Option<String>,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        self.sent == 0 && self.throttled == 0 && self.blocked == 0
    }

    /// Adds `other` (the later counts' replies win).
    pub fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.throttled += other.throttled;
        self.blocked += other.blocked;
        if other.throttle_reply.is_some() {
            self.throttle_reply.clone_from(&other.throttle_reply);
        }
        if other.block_reply.is_some() {
            self.block_reply.clone_from(&other.block_reply);
        }
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing an operator needs to see.
    None,
    /// The site (re)started: from the start rate or from its history.
    Started,
    Raised,
    Cut,
    Suspended,
    Resumed,
    /// A throttled site went a whole window without throttling.
    Steadied,
    /// A lower MX rule brought the rate down.
    Capped,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Started => "started",
            Action::Raised => "raised",
            Action::Cut => "cut",
            Action::Suspended => "suspended",
            Action::Resumed => "resumed",
            Action::Steadied => "steadied",
            Action::Capped => "capped",
        }
    }
}

/// The result of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub state: SiteControl,
    /// The allowed rate, messages per second (also `state.rate`).
    pub rate: f64,
    pub action: Action,
}

/// The rate a site starts from: the rate that last held, decayed toward
/// the start rate by its age (half of the difference per half-life).
pub fn starting_rate(s: &AdaptiveSettings, held: f64, held_at_ms: i64, now_ms: i64) -> f64 {
    let start = s.start_rate.per_second();
    if held <= 0.0 {
        return start;
    }
    let age = (now_ms - held_at_ms).max(0) as f64;
    let w = 0.5f64.powf(age / s.history_half_life.as_millis().max(1) as f64);
    start + (held - start) * w
}

fn clamp(s: &AdaptiveSettings, ceiling: Option<f64>, rate: f64) -> f64 {
    let r = rate.max(s.min_rate.per_second());
    match ceiling {
        Some(c) if c > 0.0 => r.min(c),
        _ => r,
    }
}

/// One step of a site's controller: from its state (`None`: never seen),
/// the counts since the last step and the time, the new state, the allowed
/// rate and what changed. `ceiling` is the site's MX rule rate, if any.
pub fn step(
    s: &AdaptiveSettings,
    ceiling: Option<f64>,
    state: Option<&SiteControl>,
    counts: &Counts,
    now_ms: i64,
) -> Step {
    let idle = s.idle_restart.as_millis() as i64;
    let mut action = Action::None;
    let mut st = match state {
        Some(st) if st.phase == Phase::Suspended || now_ms - st.last_step_ms < idle => st.clone(),
        previous => {
            // A new site, or one idle long enough that its allowed rate says
            // nothing: start from its history.
            action = Action::Started;
            let (held, held_at) = previous.map_or((0.0, 0), |p| (p.held_rate, p.held_at_ms));
            let rate = clamp(s, ceiling, starting_rate(s, held, held_at, now_ms));
            let target = if held > rate { held } else { 0.0 };
            SiteControl {
                phase: if held > 0.0 && target == 0.0 {
                    Phase::Steady
                } else {
                    Phase::Probing
                },
                rate,
                held_rate: held,
                held_at_ms: held_at,
                target,
                last_step_ms: now_ms,
                window_ms: now_ms,
                window_sent: 0,
                cut_at_ms: 0,
                cut_from: 0.0,
                calm: 0,
                blocks: 0,
                until_ms: 0,
                reason: String::new(),
            }
        }
    };
    st.last_step_ms = now_ms;
    let done = |st: SiteControl, action| Step {
        rate: st.rate,
        state: st,
        action,
    };
    if st.phase == Phase::Suspended {
        if now_ms < st.until_ms {
            return done(st, Action::None);
        }
        // Back from a suspension: cautiously, below the rate it had.
        st.phase = Phase::Probing;
        st.target = st.rate;
        st.rate = clamp(s, ceiling, st.rate * s.cut);
        st.blocks = 0;
        st.until_ms = 0;
        st.window_ms = now_ms;
        st.window_sent = 0;
        return done(st, Action::Resumed);
    }
    // A lower MX rule applies at once.
    let capped = clamp(s, ceiling, st.rate);
    if capped < st.rate {
        st.rate = capped;
        if action == Action::None {
            action = Action::Capped;
        }
    }
    // The site's start: probing, and nothing throttled it since it
    // (re)started (a cut is remembered until the next restart).
    let fresh = st.phase == Phase::Probing && st.cut_at_ms == 0;
    // The window a rise is judged on: a start's is the shorter.
    let window = if fresh { s.start_step } else { s.step };
    if counts.blocked > 0 {
        st.blocks = st.blocks.saturating_add(counts.blocked as u32);
        if st.blocks >= s.suspend_after {
            st.phase = Phase::Suspended;
            st.until_ms = now_ms + s.suspend_for.as_millis() as i64;
            st.reason = counts.block_reply.clone().unwrap_or_default();
            st.window_ms = now_ms;
            st.window_sent = 0;
            return done(st, Action::Suspended);
        }
    } else if counts.sent > 0 {
        st.blocks = 0;
    }
    if counts.throttled > 0 {
        let hold = s.cut_hold.as_millis() as i64;
        st.window_ms = now_ms;
        st.window_sent = 0;
        if st.cut_at_ms > 0 && now_ms - st.cut_at_ms < hold {
            // Answers to what was in flight when the rate was cut.
            return done(st, action);
        }
        let mut rate = st.rate * s.cut;
        // Probing, the rate before the last rise held a moment ago: a rise
        // past the limit (a start's doubling) is undone, not only cut.
        let recent = now_ms - st.held_at_ms <= 2 * window.as_millis() as i64;
        if st.phase == Phase::Probing && recent && st.held_rate > 0.0 {
            rate = rate.min(st.held_rate);
        }
        // Steady, the rate before the last probe's small rise held a step
        // ago: the limit is just above it, and a cut by `cut` would give
        // away a quarter of the rate for the many steps it takes to come
        // back. Once throttled, a further reply cuts by `cut` (a provider
        // that lowered its limit is followed within a few cut holds).
        if st.phase == Phase::Steady && recent && st.held_rate > 0.0 && st.rate > st.held_rate {
            rate = rate.max(st.held_rate * s.steady_cut);
        }
        st.cut_from = st.rate;
        st.calm = 0;
        st.rate = clamp(s, ceiling, rate);
        st.held_rate = st.rate;
        st.held_at_ms = now_ms;
        st.target = 0.0;
        st.cut_at_ms = now_ms;
        st.phase = Phase::Throttled;
        st.reason = counts.throttle_reply.clone().unwrap_or_default();
        return done(st, Action::Cut);
    }
    st.window_sent += counts.sent;
    let elapsed = now_ms - st.window_ms;
    if elapsed < window.as_millis() as i64 {
        return done(st, action);
    }
    // A whole window without throttling.
    if st.phase == Phase::Throttled {
        st.phase = Phase::Steady;
        if action == Action::None {
            action = Action::Steadied;
        }
    }
    let used = st.window_sent as f64 / (st.rate * elapsed as f64 / 1000.0).max(f64::MIN_POSITIVE);
    st.window_ms = now_ms;
    st.window_sent = 0;
    if used < s.used_share {
        return done(st, action);
    }
    st.held_rate = st.rate;
    st.held_at_ms = now_ms;
    // Steady above the rate the last cut came from, for long enough: that
    // limit no longer holds the site, which probes for room again.
    if st.phase == Phase::Steady && st.cut_from > 0.0 && st.rate >= st.cut_from {
        st.calm = st.calm.saturating_add(1);
        if s.reprobe_after > 0 && st.calm >= s.reprobe_after {
            st.phase = Phase::Probing;
            st.cut_from = 0.0;
            st.calm = 0;
        }
    }
    let factor = match st.phase {
        Phase::Probing if fresh => s.start_ramp,
        Phase::Probing => s.ramp,
        _ => s.probe,
    };
    let mut rate = st.rate * factor;
    if st.phase == Phase::Probing && st.target > 0.0 && rate >= st.target {
        rate = st.target;
        st.target = 0.0;
        st.phase = Phase::Steady;
    }
    let rate = clamp(s, ceiling, rate);
    if rate > st.rate {
        st.rate = rate;
        if action == Action::None || action == Action::Steadied {
            action = Action::Raised;
        }
    }
    done(st, action)
}

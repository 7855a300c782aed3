//! Adaptive throughput per site: how fast mailpipe may send to a mail
//! system, learned from what it answers.
//!
//! A provider says how much it takes only by pushing back: `421 4.7.0 Too
//! many connections`, `451 4.7.28 rate limited`, refused connections. So
//! each site has an allowed rate that a controller moves:
//!
//! * **probing**: no throttling seen since the site (re)started; the rate
//!   rises by `ramp` each `step` in which the senders used at least
//!   `used_share` of it (a rate nobody used proves nothing), up to the rate
//!   that last held, if there is one;
//! * **steady**: at or above the rate that last held, it rises by the
//!   smaller `probe` per used step, looking for room slowly;
//! * **throttled**: a throttling reply (or a refused connection) cut the
//!   rate by `cut` at once; replies within `cut_hold` of a cut answer
//!   messages already in flight and do not cut again; the first window
//!   without throttling makes the site steady again;
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
//! state and the calls script applies its rate (`mailpipe_common::sitecontrol`).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ratelimit::Rate;

/// The controller's settings (`sites.adaptive`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveSettings {
    /// Whether sites get an adaptive rate (and a reputation block suspends
    /// the site and defers its mail instead of failing it).
    pub enabled: bool,
    /// The rate of a site without history.
    pub start_rate: Rate,
    /// The rate is never cut below this.
    pub min_rate: Rate,
    /// How often the rate may rise.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub step: Duration,
    /// Factor per used step while probing (below the rate that last held).
    pub ramp: f64,
    /// Factor per used step while steady (above the rate that last held).
    pub probe: f64,
    /// Factor of a cut on throttling.
    pub cut: f64,
    /// Share of the allowed rate a step must have used for the rate to rise.
    pub used_share: f64,
    /// Throttling replies this soon after a cut do not cut again.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub cut_hold: Duration,
    /// Reputation blocks in a row that suspend the site.
    pub suspend_after: u32,
    /// How long a suspension lasts.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub suspend_for: Duration,
    /// Age at which the rate that last held counts for half at a restart.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub history_half_life: Duration,
    /// A site not stepped for this long starts again from its history.
    #[serde(deserialize_with = "crate::duration::duration")]
    pub idle_restart: Duration,
}

impl Default for AdaptiveSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            start_rate: Rate {
                count: 20.0,
                period: Duration::from_secs(1),
            },
            min_rate: Rate {
                count: 1.0,
                period: Duration::from_secs(1),
            },
            step: Duration::from_secs(2),
            ramp: 1.5,
            probe: 1.05,
            cut: 0.75,
            used_share: 0.5,
            cut_hold: Duration::from_secs(2),
            suspend_after: 3,
            suspend_for: Duration::from_secs(1800),
            history_half_life: Duration::from_secs(86_400),
            idle_restart: Duration::from_secs(600),
        }
    }
}

impl AdaptiveSettings {
    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let ok = self.ramp >= 1.0
            && self.probe >= 1.0
            && self.cut > 0.0
            && self.cut < 1.0
            && (0.0..=1.0).contains(&self.used_share)
            && self.suspend_after >= 1
            && !self.step.is_zero()
            && !self.history_half_life.is_zero()
            && self.min_rate.per_second() <= self.start_rate.per_second();
        if ok {
            Ok(())
        } else {
            Err(
                "sites.adaptive: ramp and probe must be at least 1, cut between 0 and 1 \
                 (exclusive), used_share between 0 and 1, suspend_after at least 1, step and \
                 history_half_life above zero, min_rate at most start_rate"
                    .into(),
            )
        }
    }
}

/// Where a site's controller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Probing,
    Steady,
    Throttled,
    Suspended,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Probing,
        Phase::Steady,
        Phase::Throttled,
        Phase::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Probing => "probing",
            Phase::Steady => "steady",
            Phase::Throttled => "throttled",
            Phase::Suspended => "suspended",
        }
    }

    /// The value of the state gauge.
    pub fn code(self) -> i64 {
        match self {
            Phase::Probing => 0,
            Phase::Steady => 1,
            Phase::Throttled => 2,
            Phase::Suspended => 3,
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A site's controller state (kept in Redis, `{p}:site:ctl:{site}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteControl {
    pub phase: Phase,
    /// The allowed rate, messages per second.
    pub rate: f64,
    /// The rate that last held (a used step without throttling), 0 none.
    pub held_rate: f64,
    /// When it held, Unix ms.
    pub held_at_ms: i64,
    /// Probing rises quickly up to this (the history's rate), 0 none.
    pub target: f64,
    /// The last step, Unix ms.
    pub last_step_ms: i64,
    /// Start of the window the next rise is judged on, and what it sent.
    pub window_ms: i64,
    pub window_sent: u64,
    /// The last cut, Unix ms (0 none).
    pub cut_at_ms: i64,
    /// Reputation blocks in a row.
    pub blocks: u32,
    /// End of a suspension, Unix ms.
    pub until_ms: i64,
    /// The reply behind the last cut or suspension.
    pub reason: String,
}

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
        st.rate = clamp(s, ceiling, st.rate * s.cut);
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
    if elapsed < s.step.as_millis() as i64 {
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
    let factor = if st.phase == Phase::Probing {
        s.ramp
    } else {
        s.probe
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

impl SiteControl {
    /// The fields of its Redis hash.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("phase", self.phase.as_str().to_string()),
            ("rate", self.rate.to_string()),
            ("held_rate", self.held_rate.to_string()),
            ("held_at", self.held_at_ms.to_string()),
            ("target", self.target.to_string()),
            ("last_step", self.last_step_ms.to_string()),
            ("window", self.window_ms.to_string()),
            ("window_sent", self.window_sent.to_string()),
            ("cut_at", self.cut_at_ms.to_string()),
            ("blocks", self.blocks.to_string()),
            ("until", self.until_ms.to_string()),
            ("reason", self.reason.clone()),
        ]
    }

    /// Reads the hash back; `None` when it holds no state.
    pub fn from_fields(f: &HashMap<String, String>) -> Option<SiteControl> {
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<f64>().ok());
        let int = |k: &str| num(k).map(|v| v as i64).unwrap_or(0);
        Some(SiteControl {
            phase: Phase::parse(f.get("phase")?)?,
            rate: num("rate")?,
            held_rate: num("held_rate").unwrap_or(0.0),
            held_at_ms: int("held_at"),
            target: num("target").unwrap_or(0.0),
            last_step_ms: int("last_step"),
            window_ms: int("window"),
            window_sent: int("window_sent").max(0) as u64,
            cut_at_ms: int("cut_at"),
            blocks: int("blocks").clamp(0, u32::MAX as i64) as u32,
            until_ms: int("until"),
            reason: f.get("reason").cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AdaptiveSettings {
        AdaptiveSettings {
            enabled: true,
            ..Default::default()
        }
    }

    fn sent(n: u64) -> Counts {
        Counts {
            sent: n,
            ..Default::default()
        }
    }

    fn throttled(n: u64) -> Counts {
        Counts {
            throttled: n,
            throttle_reply: Some("421 4.7.0 Too many connections".into()),
            ..Default::default()
        }
    }

    fn blocked(n: u64) -> Counts {
        Counts {
            blocked: n,
            block_reply: Some("550 5.7.1 blocked due to poor reputation".into()),
            ..Default::default()
        }
    }

    /// One step of a sequence: (time ms, counts, ceiling, the action,
    /// phase and rate expected after it).
    type Row = (i64, Counts, Option<f64>, Action, Phase, f64);

    /// Runs a whole sequence of [`Row`]s.
    fn run(s: &AdaptiveSettings, start: Option<SiteControl>, rows: &[Row]) -> SiteControl {
        let mut state = start;
        for (i, (now, counts, ceiling, action, phase, rate)) in rows.iter().enumerate() {
            let out = step(s, *ceiling, state.as_ref(), counts, *now);
            assert_eq!(
                (out.action, out.state.phase),
                (*action, *phase),
                "row {i} at {now} ms: {out:?}"
            );
            assert!(
                (out.rate - rate).abs() < 1e-6,
                "row {i} at {now} ms: rate {} expected {rate}",
                out.rate
            );
            assert_eq!(out.rate, out.state.rate);
            state = Some(out.state);
        }
        state.unwrap()
    }

    use Action as A;
    use Phase as P;

    #[test]
    fn a_new_site_ramps_up_while_its_rate_is_used_and_not_past_its_mx_rule() {
        let s = settings();
        let none = Counts::default();
        run(
            &s,
            None,
            &[
                (0, none.clone(), None, A::Started, P::Probing, 20.0),
                // A second later: the window is not over.
                (1_000, sent(20), None, A::None, P::Probing, 20.0),
                // Two seconds, 40 sent at 20/s: used in full, ×1.5.
                (2_000, sent(20), None, A::Raised, P::Probing, 30.0),
                (4_000, sent(60), None, A::Raised, P::Probing, 45.0),
                // Used under half: it proved nothing, the rate stays.
                (6_000, sent(40), None, A::None, P::Probing, 45.0),
                (8_000, sent(90), None, A::Raised, P::Probing, 67.5),
                // The MX rule (80/s) is the ceiling.
                (10_000, sent(135), Some(80.0), A::Raised, P::Probing, 80.0),
                (12_000, sent(160), Some(80.0), A::None, P::Probing, 80.0),
                // An operator lowers the rule: the rate follows at once.
                (
                    13_000,
                    none.clone(),
                    Some(50.0),
                    A::Capped,
                    P::Probing,
                    50.0,
                ),
            ],
        );
    }

    #[test]
    fn a_throttling_reply_cuts_at_once_and_once_per_burst_then_the_rate_probes_slowly() {
        let s = settings();
        let start = SiteControl {
            phase: P::Probing,
            rate: 100.0,
            held_rate: 0.0,
            held_at_ms: 0,
            target: 0.0,
            last_step_ms: 0,
            window_ms: 0,
            window_sent: 0,
            cut_at_ms: 0,
            blocks: 0,
            until_ms: 0,
            reason: String::new(),
        };
        let end = run(
            &s,
            Some(start),
            &[
                (500, throttled(3), None, A::Cut, P::Throttled, 75.0),
                // The rest of the burst (in flight at the cut): no second cut.
                (1_000, throttled(10), None, A::None, P::Throttled, 75.0),
                // Past the hold, throttling again: cut again.
                (2_600, throttled(1), None, A::Cut, P::Throttled, 56.25),
                // A whole window without throttling, used: steady, probing by 5 %.
                (4_600, sent(113), None, A::Raised, P::Steady, 59.0625),
                (6_600, sent(120), None, A::Raised, P::Steady, 62.015625),
            ],
        );
        assert_eq!(end.reason, "421 4.7.0 Too many connections");
        assert_eq!(end.held_rate, 59.0625, "the last rate that held");
        // Cuts never go below the minimum.
        let mut low = end.clone();
        low.rate = 1.2;
        low.cut_at_ms = 0;
        let out = step(&s, None, Some(&low), &throttled(1), 7_000);
        assert_eq!((out.action, out.rate), (A::Cut, 1.0));
    }

    #[test]
    fn reputation_blocks_suspend_the_site_with_the_reply_then_it_resumes_below_its_rate() {
        let s = settings();
        let none = Counts::default();
        let mut start = run(
            &s,
            None,
            &[(0, none.clone(), None, A::Started, P::Probing, 20.0)],
        );
        start.rate = 200.0;
        let thirty_min = 1_800_000;
        let end = run(
            &s,
            Some(start),
            &[
                (1_000, blocked(1), None, A::None, P::Probing, 200.0),
                // A success in between: the blocks were not in a row.
                (1_500, sent(5), None, A::None, P::Probing, 200.0),
                (1_600, blocked(2), None, A::None, P::Probing, 200.0),
                (1_700, blocked(1), None, A::Suspended, P::Suspended, 200.0),
                // While suspended, nothing it sees matters.
                (60_000, throttled(5), None, A::None, P::Suspended, 200.0),
                (thirty_min, none.clone(), None, A::None, P::Suspended, 200.0),
                // Past the suspension: probing again from a cut rate, up to
                // the rate it had.
                (
                    thirty_min + 1_700,
                    none.clone(),
                    None,
                    A::Resumed,
                    P::Probing,
                    150.0,
                ),
                (
                    thirty_min + 3_700,
                    sent(300),
                    None,
                    A::Raised,
                    P::Steady,
                    200.0,
                ),
            ],
        );
        assert_eq!(end.blocks, 0);
        let suspended = step(
            &s,
            None,
            Some(&SiteControl {
                blocks: 2,
                ..end.clone()
            }),
            &blocked(1),
            thirty_min + 4_000,
        );
        assert_eq!(suspended.action, A::Suspended);
        assert_eq!(
            suspended.state.reason,
            "550 5.7.1 blocked due to poor reputation"
        );
        assert_eq!(suspended.state.until_ms, thirty_min + 4_000 + thirty_min);
    }

    #[test]
    fn an_idle_site_starts_again_from_its_last_held_rate_decayed_by_age() {
        let s = settings();
        let day = 86_400_000;
        let learned = SiteControl {
            phase: P::Steady,
            rate: 420.0,
            held_rate: 400.0,
            held_at_ms: 0,
            target: 0.0,
            last_step_ms: 0,
            window_ms: 0,
            window_sent: 0,
            cut_at_ms: 0,
            blocks: 0,
            until_ms: 0,
            reason: String::new(),
        };
        // A day later: half way from 400 back to the start rate, 20.
        run(
            &s,
            Some(learned.clone()),
            &[
                (day, sent(0), None, A::Started, P::Probing, 210.0),
                (day + 2_000, sent(420), None, A::Raised, P::Probing, 315.0),
                // Quickly up to the rate that held, then steady.
                (day + 4_000, sent(630), None, A::Raised, P::Steady, 400.0),
                (day + 6_000, sent(800), None, A::Raised, P::Steady, 420.0),
            ],
        );
        // Ten minutes of idleness: nearly all of it; a week: nearly none.
        let ten_min = step(&s, None, Some(&learned), &sent(0), 600_000);
        assert_eq!(ten_min.action, A::Started);
        assert!((ten_min.rate - (20.0 + 380.0 * 0.5f64.powf(600.0 / 86_400.0))).abs() < 1e-9);
        let week = step(&s, None, Some(&learned), &sent(0), 7 * day);
        assert!((week.rate - (20.0 + 380.0 / 128.0)).abs() < 1e-9);
        // The MX rule caps the start too; the history is kept.
        let capped = step(&s, Some(100.0), Some(&learned), &sent(0), day);
        assert_eq!((capped.rate, capped.state.held_rate), (100.0, 400.0));
        // Less than ten minutes: no restart, the state goes on.
        let on = step(&s, None, Some(&learned), &sent(0), 599_999);
        assert_eq!((on.action, on.rate), (A::None, 420.0));
    }

    #[test]
    fn the_state_reads_back_from_its_fields() {
        let s = settings();
        let out = step(&s, None, None, &Counts::default(), 5);
        let fields: HashMap<String, String> = out
            .state
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(SiteControl::from_fields(&fields), Some(out.state));
        assert_eq!(SiteControl::from_fields(&HashMap::new()), None);
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(AdaptiveSettings::default().check().is_ok());
        for bad in [
            AdaptiveSettings {
                cut: 1.0,
                ..Default::default()
            },
            AdaptiveSettings {
                ramp: 0.9,
                ..Default::default()
            },
            AdaptiveSettings {
                suspend_after: 0,
                ..Default::default()
            },
            AdaptiveSettings {
                min_rate: "50/s".parse().unwrap(),
                ..Default::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}

//! The controller's scenarios, each a whole sequence of steps asserted
//! row by row, and the state's Redis fields read back.

use std::collections::HashMap;

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

/// A site's state in `phase` at `rate`, with the rate that last held,
/// and nothing else remembered.
fn control(phase: Phase, rate: f64, held_rate: f64) -> SiteControl {
    SiteControl {
        phase,
        rate,
        held_rate,
        held_at_ms: 0,
        target: 0.0,
        last_step_ms: 0,
        window_ms: 0,
        window_sent: 0,
        cut_at_ms: 0,
        cut_from: 0.0,
        calm: 0,
        blocks: 0,
        until_ms: 0,
        reason: String::new(),
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
            // Half a second later: the start's window (1 s) is not over.
            (500, sent(10), None, A::None, P::Probing, 20.0),
            // A second, 20 sent at 20/s: used in full, ×2 (the start).
            (1_000, sent(10), None, A::Raised, P::Probing, 40.0),
            (2_000, sent(40), None, A::Raised, P::Probing, 80.0),
            // Used under half: it proved nothing, the rate stays.
            (3_000, sent(30), None, A::None, P::Probing, 80.0),
            (4_000, sent(80), None, A::Raised, P::Probing, 160.0),
            // The MX rule (200/s) is the ceiling.
            (5_000, sent(160), Some(200.0), A::Raised, P::Probing, 200.0),
            (6_000, sent(200), Some(200.0), A::None, P::Probing, 200.0),
            // An operator lowers the rule: the rate follows at once.
            (6_500, none.clone(), Some(50.0), A::Capped, P::Probing, 50.0),
        ],
    );
    // Without the fast start (start_ramp and start_step as ramp and step):
    // ×1.5 per 2 s.
    let slow = AdaptiveSettings {
        start_ramp: 1.5,
        start_step: s.step,
        ..settings()
    };
    run(
        &slow,
        None,
        &[
            (0, none.clone(), None, A::Started, P::Probing, 20.0),
            (1_000, sent(20), None, A::None, P::Probing, 20.0),
            (2_000, sent(20), None, A::Raised, P::Probing, 30.0),
            (4_000, sent(60), None, A::Raised, P::Probing, 45.0),
        ],
    );
}

#[test]
fn a_new_site_finds_a_providers_limit_in_seconds_and_its_first_cut_undoes_the_doubling() {
    // A provider taking 1,500/s, a site stepped every second from its
    // start at 20/s: 40, 80, ... 1,280/s after 6 s; the doubling to
    // 2,560/s is throttled and goes back to 1,280/s, the rate that held,
    // not to 0.75 × 2,560 = 1,920/s, still past the limit.
    let s = settings();
    let start = step(&s, None, None, &Counts::default(), 0).state;
    let (rates, cuts) = against_limit_every(&s, start.clone(), 1_500.0, 0, 60, 1_000);
    assert_eq!(
        &rates[..8],
        &[40.0, 80.0, 160.0, 320.0, 640.0, 1_280.0, 2_560.0, 1_280.0],
        "{rates:?}"
    );
    // Then never again past 1.05 × the limit, and never below 0.75 × it.
    assert!(
        rates[7..].iter().all(|r| (1_125.0..1_575.0).contains(r)),
        "{rates:?}"
    );
    assert!(
        cuts >= 2,
        "{cuts} cuts in 60 s: the steady probe finds the limit again"
    );
    // The old start (×1.5 every 2 s, and a cut of 0.75 × the rate) had
    // not reached 0.75 × the limit after 18 s (768/s; 1,153/s at 20 s).
    let slow = AdaptiveSettings {
        start_ramp: 1.5,
        start_step: s.step,
        ..settings()
    };
    let (slow_rates, _) = against_limit(&slow, start, 1_500.0, 0, 9);
    assert!(slow_rates.iter().all(|r| *r < 1_125.0), "{slow_rates:?}");
}

#[test]
fn a_throttling_reply_cuts_at_once_and_once_per_burst_then_the_rate_probes_slowly() {
    let s = settings();
    let start = control(P::Probing, 100.0, 0.0);
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
    let learned = control(P::Steady, 420.0, 400.0);
    // A day later: half way from 400 back to the start rate, 20.
    run(
        &s,
        Some(learned.clone()),
        &[
            (day, sent(0), None, A::Started, P::Probing, 210.0),
            // Quickly up to the rate that held (the start's doubling,
            // stopped there), then steady.
            (day + 1_000, sent(210), None, A::Raised, P::Steady, 400.0),
            (day + 2_000, sent(400), None, A::None, P::Steady, 400.0),
            (day + 3_000, sent(400), None, A::Raised, P::Steady, 420.0),
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
    let mut out = step(&s, None, None, &Counts::default(), 5);
    out.state.cut_from = 20.5;
    out.state.calm = 2;
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

/// A provider that takes `limit` messages per second, stepped every 2 s
/// from `state` for `steps` steps: each step sends at the allowed rate, or
/// meets a throttling reply when that rate is above the limit. Returns the
/// rates after each step and the number of cuts.
fn against_limit(
    s: &AdaptiveSettings,
    state: SiteControl,
    limit: f64,
    from_ms: i64,
    steps: usize,
) -> (Vec<f64>, usize) {
    against_limit_every(s, state, limit, from_ms, steps, 2_000)
}

/// [`against_limit`], stepped every `every_ms`.
fn against_limit_every(
    s: &AdaptiveSettings,
    mut state: SiteControl,
    limit: f64,
    from_ms: i64,
    steps: usize,
    every_ms: i64,
) -> (Vec<f64>, usize) {
    let mut rates = Vec::new();
    let mut cuts = 0;
    for i in 0..steps {
        let now = from_ms + every_ms * (i as i64 + 1);
        let counts = if state.rate > limit {
            throttled(1)
        } else {
            sent((state.rate * every_ms as f64 / 1000.0).round() as u64)
        };
        let out = step(s, None, Some(&state), &counts, now);
        cuts += usize::from(out.action == A::Cut);
        rates.push(out.rate);
        state = out.state;
    }
    (rates, cuts)
}

#[test]
fn a_site_cut_at_its_start_probes_again_once_it_holds_above_the_rate_of_the_cut() {
    let s = settings();
    // A burst refused at the very start: the site is cut from its start
    // rate, far below the provider's 100/s.
    let start = step(&s, None, None, &Counts::default(), 0).state;
    let cut = run(
        &s,
        Some(start),
        &[(500, throttled(1), None, A::Cut, P::Throttled, 15.0)],
    );
    assert_eq!(cut.cut_from, 20.0);
    // Steady, by 5 % a step, up to the rate of the cut (six steps), then
    // three used steps at or above it, then probing again by half.
    let mut state = cut.clone();
    let mut rate = 15.0;
    for i in 0..9 {
        let out = step(
            &s,
            None,
            Some(&state),
            &sent((rate * 2.0) as u64 + 1),
            2_500 + 2_000 * i,
        );
        rate *= 1.05;
        let reprobed = i == 8;
        assert_eq!(
            (out.state.phase, out.action),
            (if reprobed { P::Probing } else { P::Steady }, A::Raised),
            "step {i}: {out:?}"
        );
        let expected = if reprobed { rate / 1.05 * 1.5 } else { rate };
        assert!((out.rate - expected).abs() < 1e-9, "step {i}: {out:?}");
        assert_eq!(
            out.state.calm,
            if reprobed {
                0
            } else {
                (i as u32).saturating_sub(5)
            }
        );
        state = out.state;
    }
    assert_eq!(state.cut_from, 0.0, "probing again forgets the old cut");

    // Against the provider's 100/s, from the cut: 90/s is reached in 12
    // steps (24 s); without probing again, 5 % a step takes 37 (74 s).
    let reach = |s: &AdaptiveSettings| {
        let (rates, _) = against_limit(s, cut.clone(), 100.0, 500, 60);
        rates.iter().position(|r| *r >= 90.0).map(|i| i + 1)
    };
    let never = AdaptiveSettings {
        reprobe_after: 0,
        ..settings()
    };
    assert_eq!(reach(&s), Some(12));
    assert_eq!(reach(&never), Some(37));
}

#[test]
fn a_site_at_a_limit_that_holds_never_probes_again_and_is_cut_as_often_as_before() {
    // Steady at a provider's real limit: each rise past it is cut, so the
    // rate never holds above the rate of a cut, and probing again never
    // starts: the same sawtooth as without it.
    let s = settings();
    let at_limit = control(P::Steady, 95.0, 95.0);
    let never = AdaptiveSettings {
        reprobe_after: 0,
        ..settings()
    };
    let (rates, cuts) = against_limit(&s, at_limit.clone(), 100.0, 0, 200);
    let (old_rates, old_cuts) = against_limit(&never, at_limit, 100.0, 0, 200);
    assert_eq!(rates, old_rates);
    assert_eq!(cuts, old_cuts);
    assert!(cuts >= 10, "{cuts} cuts in 400 s");
    assert!(rates.iter().all(|r| *r < 100.0 * 1.05), "{rates:?}");
}

#[test]
fn a_steady_site_throttled_after_a_probe_goes_back_near_the_rate_that_held() {
    // Steady at a provider's 100/s: a probe's 5 % rise past it is cut back
    // to 0.9 × the rate before the rise (which held), not to 0.75 × the
    // rate that was throttled. The sawtooth is shallower: more of the
    // limit is used, at the cost of a rise past it a little more often.
    let s = settings();
    let at_limit = control(P::Steady, 95.0, 95.0);
    let deep = AdaptiveSettings {
        steady_cut: 0.01,
        ..settings()
    };
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let (rates, cuts) = against_limit(&s, at_limit.clone(), 100.0, 0, 200);
    let (deep_rates, deep_cuts) = against_limit(&deep, at_limit.clone(), 100.0, 0, 200);
    assert!(mean(&rates) >= 93.0, "{}: {rates:?}", mean(&rates));
    assert!(
        mean(&deep_rates) < 90.0,
        "{}: {deep_rates:?}",
        mean(&deep_rates)
    );
    // A rise past the limit once in four steps (8 s) at most, against once
    // in six before.
    assert!(
        cuts <= 200 / 4 && deep_cuts <= 200 / 6,
        "{cuts} {deep_cuts}"
    );
    assert!(rates.iter().all(|r| *r < 100.0 * 1.05), "{rates:?}");
    // One cut: back to 0.9 × the rate before the rise (95/s), not to
    // 0.75 × the 99.75/s throttled.
    let risen = step(&s, None, Some(&at_limit), &sent(190), 2_000).state;
    assert!((risen.rate - 99.75).abs() < 1e-9);
    let cut = step(&s, None, Some(&risen), &throttled(1), 2_500);
    assert_eq!(cut.action, A::Cut);
    assert!((cut.rate - 0.9 * 95.0).abs() < 1e-9, "{cut:?}");
    // Once throttled, a further reply past the hold cuts by 0.75: a
    // provider that lowered its limit is followed.
    let again = step(&s, None, Some(&cut.state), &throttled(1), 5_000);
    assert!((again.rate - 0.75 * cut.rate).abs() < 1e-9, "{again:?}");
}

//! How many connections a route may have in use at once, learned from how
//! its server answers new connections.
//!
//! A mailbox provider caps the connections it accepts from one sender and
//! answers the one past its cap with `421` at connect (or refuses it). Such
//! a refusal is no reason to dial again at once: the connections already
//! open still work. So a refused dial brings the route's cap down to the
//! connections still open, and, when none is left, holds every further
//! dial back for a while (`sender.route_retry_after`); after the hold one
//! connection probes. The cap grows back by one connection per round of
//! deliveries (as many successes as the cap) once a hold period passed
//! since the last refusal, up to the configured pool size.
//!
//! A connection past a provider's cap is refused every time it is tried, so
//! a cap that grew back and was refused again waits twice as long before
//! the next try (up to 32 hold periods); a grown cap that held for a hold
//! period starts the wait over. A sender that keeps its connections at a provider's cap thus
//! tries one more connection ever more rarely instead of every hold period.
//!
//! Every step is a pure function of a [`DialState`] and the time, with a
//! table test; the connection pool (`smtp/mod.rs`) applies them.

use std::time::{Duration, Instant};

/// One route's dialling state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DialState {
    /// Connections that may be in use at once now.
    pub(crate) cap: u32,
    /// The most, as configured (the pool size).
    pub(crate) max: u32,
    /// No dial before this (a dial was refused and no connection was left).
    pub(crate) held_until: Option<Instant>,
    /// The cap does not grow before this (one hold period after a refusal).
    pub(crate) grow_after: Option<Instant>,
    /// Deliveries since the cap last grew.
    pub(crate) successes: u32,
    /// When the cap last grew back after a refusal: a refusal within a hold
    /// period of it refuses that probe.
    pub(crate) grew_at: Option<Instant>,
    /// Grown caps refused in a row: the wait before the next growth is the
    /// hold period times two to this power.
    pub(crate) refused_probes: u32,
}

/// Most doublings of the wait before a refused cap is tried again: 2^5 =
/// 32 hold periods (16 minutes with the default 30 s).
const MOST_DOUBLINGS: u32 = 5;

/// What a message that wants a connection may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Wait for one of the cap's connections (a pooled one, or a new dial
    /// while fewer than the cap are open).
    Queue,
    /// The route is held: no dial before this; try another route.
    Held(Instant),
}

impl DialState {
    /// A route nobody refused yet: the whole pool may be used.
    pub(crate) fn new(max: u32) -> Self {
        let max = max.max(1);
        Self {
            cap: max,
            max,
            held_until: None,
            grow_after: None,
            successes: 0,
            grew_at: None,
            refused_probes: 0,
        }
    }
}

/// Before taking a connection: held, or queue for one. Once a hold is
/// over, a route without any connection left may open one again (a probe).
pub(crate) fn before_take(s: DialState, now: Instant) -> (DialState, Take) {
    match s.held_until {
        Some(until) if until > now => (s, Take::Held(until)),
        _ => (
            DialState {
                cap: s.cap.max(1),
                held_until: None,
                ..s
            },
            Take::Queue,
        ),
    }
}

/// A dial of this route failed (refused, answered 421 at connect, timed
/// out) while `open` other connections of it were open (in use or idle):
/// the cap drops to those; with none, the route is held for `hold`. The
/// cap grows again after `hold`, or, when this refused a cap that had
/// grown back, after twice the last wait (see the module's notes).
pub(crate) fn after_refused_dial(
    s: DialState,
    open: u32,
    now: Instant,
    hold: Duration,
) -> DialState {
    let cap = s.cap.min(open);
    let refused_probes = match s.grew_at {
        Some(t) if now < t + hold => (s.refused_probes + 1).min(MOST_DOUBLINGS),
        // The last growth held: the cap the server allows changed since.
        Some(_) => 0,
        None => s.refused_probes,
    };
    DialState {
        cap,
        held_until: (cap == 0).then_some(now + hold),
        grow_after: Some(now + hold * (1 << refused_probes)),
        successes: 0,
        grew_at: None,
        refused_probes,
        ..s
    }
}

/// The server closed a connection with 421 during a transaction: one
/// connection fewer (never below one: the server does accept connections).
pub(crate) fn after_closed(s: DialState, now: Instant, hold: Duration) -> DialState {
    DialState {
        cap: s.cap.saturating_sub(1).max(1),
        grow_after: Some(now + hold),
        successes: 0,
        grew_at: None,
        ..s
    }
}

/// A message was delivered on this route: after a round of deliveries (as
/// many as the cap) the cap grows by one, unless a refusal is recent. A
/// growth after a refusal is a probe (see [`after_refused_dial`]).
pub(crate) fn after_delivered(s: DialState, now: Instant) -> DialState {
    let successes = s.successes + 1;
    let may_grow = s.grow_after.is_none_or(|t| t <= now);
    if may_grow && s.cap < s.max && successes >= s.cap {
        DialState {
            cap: s.cap + 1,
            successes: 0,
            grew_at: s.grow_after.map(|_| now),
            ..s
        }
    } else {
        DialState { successes, ..s }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole sequence of events on one route, from a pool of 4, with the
    /// state after each.
    #[test]
    fn a_refused_dial_holds_the_route_back_and_the_cap_grows_back_slowly() {
        #[derive(Debug, Clone, Copy)]
        enum Ev {
            Want,
            /// Refused with this many other connections open.
            Refused(u32),
            Closed,
            Delivered,
        }
        use Ev::*;
        let t0 = Instant::now();
        let hold = Duration::from_secs(30);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (seconds, event, cap, held until (s), take's answer)
        type Row = (u64, Ev, u32, Option<u64>, Option<Take>);
        let table: &[Row] = &[
            (0, Want, 4, None, Some(Take::Queue)),
            // A dial is answered 421 with two connections open: the cap is
            // two, and the refused message queues for them.
            (1, Refused(2), 2, None, None),
            (1, Want, 2, None, Some(Take::Queue)),
            // Deliveries within the hold period do not grow the cap.
            (2, Delivered, 2, None, None),
            (3, Delivered, 2, None, None),
            // After it, a round of deliveries (the cap: two) grows it by one,
            // and the next round is three.
            (40, Delivered, 3, None, None),
            (41, Delivered, 3, None, None),
            // A 421 in a transaction: one fewer, never below one.
            (42, Closed, 2, None, None),
            (42, Closed, 1, None, None),
            (42, Closed, 1, None, None),
            // A refused dial with nothing else open: the route is held.
            (44, Refused(0), 0, Some(74), None),
            (50, Want, 0, Some(74), Some(Take::Held(at(74)))),
            // After the hold, one connection probes.
            (74, Want, 1, None, Some(Take::Queue)),
            (75, Refused(0), 0, Some(105), None),
            (105, Want, 1, None, Some(Take::Queue)),
            // The probe went through once the hold period was over: the cap
            // grows again, a round at a time.
            (106, Delivered, 2, None, None),
            (107, Delivered, 2, None, None),
            (108, Delivered, 3, None, None),
            // More open than the cap allows (connections of before): the
            // cap does not rise with them.
            (109, Refused(5), 3, None, None),
        ];
        let mut s = DialState::new(4);
        for &(secs, ev, cap, held, take) in table {
            let now = at(secs);
            let mut answer = None;
            s = match ev {
                Want => {
                    let (next, t) = before_take(s, now);
                    answer = Some(t);
                    next
                }
                Refused(open) => after_refused_dial(s, open, now, hold),
                Closed => after_closed(s, now, hold),
                Delivered => after_delivered(s, now),
            };
            assert_eq!(
                (s.cap, s.held_until, answer),
                (cap, held.map(at), take),
                "after {ev:?} at {secs} s"
            );
        }
    }

    /// A provider that allows one connection, behind a pool of two: each
    /// grown cap is refused, and the next growth waits twice as long, up
    /// to 32 hold periods; a growth that held starts the wait over.
    #[test]
    fn a_cap_refused_again_and_again_is_tried_ever_more_rarely() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(30);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut s = DialState::new(2);
        // The start: the second dial is refused with one connection open.
        s = after_refused_dial(s, 1, at(0), hold);
        assert_eq!((s.cap, s.grow_after), (1, Some(at(30))));
        // Each probe is refused a second after it grew the cap.
        let mut now = 30;
        for wait in [60, 120, 240, 480, 960, 960, 960] {
            s = after_delivered(s, at(now));
            assert_eq!(s.cap, 2, "grown at {now} s");
            s = after_refused_dial(s, 1, at(now + 1), hold);
            assert_eq!(s.cap, 1);
            assert_eq!(
                s.grow_after,
                Some(at(now + 1 + wait)),
                "refused at {} s",
                now + 1
            );
            now += 1 + wait;
        }
        // Deliveries before the wait is over do not grow it.
        s = after_delivered(s, at(now - 1));
        assert_eq!(s.cap, 1);
        // A grown cap that held for a hold period: a later refusal (the
        // provider lowered its cap) waits one hold period again.
        s = after_delivered(s, at(now));
        assert_eq!(s.cap, 2);
        s = after_refused_dial(s, 1, at(now + 31), hold);
        assert_eq!(s.grow_after, Some(at(now + 31 + 30)));
        // Several dials refused together count as one probe.
        let mut s = after_delivered(s, at(now + 61));
        s = after_refused_dial(s, 1, at(now + 62), hold);
        s = after_refused_dial(s, 1, at(now + 62), hold);
        assert_eq!(s.grow_after, Some(at(now + 62 + 60)));
    }

    #[test]
    fn the_cap_never_grows_past_the_pool() {
        let now = Instant::now();
        let mut s = DialState::new(2);
        for _ in 0..10 {
            s = after_delivered(s, now);
        }
        assert_eq!(s.cap, 2);
        assert_eq!(DialState::new(0).cap, 1, "a pool of at least one");
    }
}

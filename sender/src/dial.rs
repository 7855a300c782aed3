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
}

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
/// the cap drops to those; with none, the route is held for `hold`.
pub(crate) fn after_refused_dial(
    s: DialState,
    open: u32,
    now: Instant,
    hold: Duration,
) -> DialState {
    let cap = s.cap.min(open);
    DialState {
        cap,
        held_until: (cap == 0).then_some(now + hold),
        grow_after: Some(now + hold),
        successes: 0,
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
        ..s
    }
}

/// A message was delivered on this route: after a round of deliveries (as
/// many as the cap) the cap grows by one, unless a refusal is recent.
pub(crate) fn after_delivered(s: DialState, now: Instant) -> DialState {
    let successes = s.successes + 1;
    let may_grow = s.grow_after.is_none_or(|t| t <= now);
    if may_grow && s.cap < s.max && successes >= s.cap {
        DialState {
            cap: s.cap + 1,
            successes: 0,
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

//! The gate in front of a route's connection pool: it applies the route's
//! dialling state ([`crate::dial`]) with a fair semaphore whose permits are
//! the connections that may be in use at once.
//!
//! Lowering the cap cannot take back permits in use, so it forgets the
//! permits that are free and runs a debt for the rest, paid by forgetting
//! permits as they come back. Messages queue for a permit in order; when
//! the route becomes held, they are woken and told so, and go elsewhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailpipe_common::classify::Failure;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::dial::{self, DialState, Take};

/// The gate of one route.
pub(super) struct Gate {
    permits: Arc<Semaphore>,
    state: Mutex<GateState>,
    /// Wakes the messages queued for a permit when the route becomes held.
    held: Notify,
    /// How long a route without connections is held after a refused dial.
    hold: Duration,
}

struct GateState {
    dial: DialState,
    /// Slots taken: connections in use and dials in progress.
    in_use: u32,
    /// Permits in use beyond the cap: forgotten when they come back.
    debt: u32,
    /// The refusal that holds the route (what a held route answers).
    refusal: Option<Failure>,
}

/// A connection slot: its permit goes back (or is forgotten) on drop.
pub(super) struct Slot {
    gate: Arc<Gate>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.in_use = s.in_use.saturating_sub(1);
        if let Some(permit) = self.permit.take() {
            if s.debt > 0 {
                s.debt -= 1;
                permit.forget();
            }
        }
    }
}

impl Gate {
    pub(super) fn new(max: u32, hold: Duration) -> Arc<Self> {
        let dial = DialState::new(max);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(dial.cap as usize)),
            state: Mutex::new(GateState {
                dial,
                in_use: 0,
                debt: 0,
                refusal: None,
            }),
            held: Notify::new(),
            hold,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot to use (or dial) a connection in, in turn; or, when the
    /// route is held, until when and the refusal that holds it.
    pub(super) async fn take(self: &Arc<Self>) -> Result<Slot, (Instant, Option<Failure>)> {
        loop {
            let woken = self.held.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut s = self.lock();
                let (next, take) = dial::before_take(s.dial, Instant::now());
                self.apply(&mut s, next);
                if let Take::Held(until) = take {
                    return Err((until, s.refusal.clone()));
                }
            }
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    let Ok(permit) = permit else {
                        // The semaphore is never closed.
                        continue;
                    };
                    self.lock().in_use += 1;
                    return Ok(Slot { gate: self.clone(), permit: Some(permit) });
                }
                _ = &mut woken => {}
            }
        }
    }

    /// Until when the route is held, and the refusal that holds it; `None`
    /// when a message may queue for a connection now.
    pub(super) fn held(&self) -> Option<(Instant, Option<Failure>)> {
        let s = self.lock();
        match dial::before_take(s.dial, Instant::now()).1 {
            Take::Held(until) => Some((until, s.refusal.clone())),
            Take::Queue => None,
        }
    }

    /// A dial in `slot` failed while `pooled` other connections of the
    /// route were open (in use or idle): the cap drops to the connections
    /// open or being dialled besides it (see [`dial::after_refused_dial`]).
    /// Dials in progress count: at a burst's start every slot dials at
    /// once, and the 421 past the host's cap comes before the greeting of
    /// the connections it takes.
    pub(super) fn refused(&self, slot: Slot, failure: &Failure, pooled: u32) {
        {
            let mut s = self.lock();
            let open = pooled.max(s.in_use.saturating_sub(1));
            let next = dial::after_refused_dial(s.dial, open, Instant::now(), self.hold);
            self.apply(&mut s, next);
            if next.held_until.is_some() {
                s.refusal = Some(failure.clone());
            }
        }
        drop(slot);
        self.held.notify_waiters();
    }

    /// The server closed a connection with 421 in a transaction.
    pub(super) fn closed(&self) {
        let mut s = self.lock();
        let next = dial::after_closed(s.dial, Instant::now(), self.hold);
        self.apply(&mut s, next);
    }

    /// A message was delivered on this route.
    pub(super) fn delivered(&self) {
        let mut s = self.lock();
        let next = dial::after_delivered(s.dial, Instant::now());
        self.apply(&mut s, next);
    }

    /// Takes up a new state: the semaphore follows the cap.
    fn apply(&self, s: &mut GateState, next: DialState) {
        let (old, new) = (s.dial.cap, next.cap);
        s.dial = next;
        if new > old {
            let more = new - old;
            let paid = more.min(s.debt);
            s.debt -= paid;
            self.permits.add_permits((more - paid) as usize);
        } else if new < old {
            s.debt += old - new;
            while s.debt > 0 {
                match self.permits.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        s.debt -= 1;
                    }
                    Err(_) => break,
                }
            }
        }
        if s.dial.held_until.is_none() && s.dial.cap > 0 {
            s.refusal = None;
        }
    }

    /// Connections that may be in use now (for tests and logs).
    #[cfg(test)]
    pub(super) fn cap(&self) -> u32 {
        self.lock().dial.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_common::classify::ConnectionError;

    fn refusal() -> Failure {
        Failure::connection(ConnectionError::Refused, "refused")
    }

    #[tokio::test]
    async fn permits_follow_the_cap_down_and_back_up() {
        let gate = Gate::new(3, Duration::from_secs(60));
        let a = gate.take().await.unwrap();
        let b = gate.take().await.unwrap();
        let c = gate.take().await.unwrap();
        // The third dial is refused, the two others open: two may be in use.
        gate.refused(c, &refusal(), 0);
        assert_eq!(gate.cap(), 2);
        assert_eq!(gate.permits.available_permits(), 0);
        // One comes back: a queued message gets it.
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.take().await.is_ok() })
        };
        drop(a);
        assert!(waiting.await.unwrap());
        drop(b);
        assert_eq!(gate.permits.available_permits(), 2, "as many as the cap");
    }

    #[tokio::test]
    async fn a_route_without_connections_is_held_and_its_queue_is_told() {
        let gate = Gate::new(1, Duration::from_secs(60));
        let only = gate.take().await.unwrap();
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.take().await.err() })
        };
        tokio::task::yield_now().await;
        gate.refused(only, &refusal(), 0);
        let (until, why) = waiting.await.unwrap().expect("told the route is held");
        assert!(until > Instant::now() + Duration::from_secs(59));
        assert_eq!(why, Some(refusal()));
        assert!(gate.take().await.is_err(), "no dial while held");
        assert_eq!(gate.permits.available_permits(), 0);
    }
}

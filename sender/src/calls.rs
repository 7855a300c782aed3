//! The Redis calls every message makes — its gate and lease, the sending
//! policy's verdict, its sent record — gathered across the messages in
//! flight and made together, whatever their kind, as one script call per
//! round trip ([`crate::coalesce`], [`mailpipe_state::calls`]).
//!
//! Two things keep a domain held back by a rate as cheap as one that is
//! not, where its messages, going one place apart, would otherwise each
//! make calls of their own:
//!
//! * Attempts are counted here and added to the shared counts (the
//!   breaker's, the decaying counts of the domain and its site) a few times
//!   a second ([`ATTEMPTS_EVERY`]), and always before a failure is counted
//!   ([`Calls::count_attempts`]), so the breaker never sees a failure
//!   before the attempt that failed.
//! * A message of a domain whose places are already reserved ahead asks
//!   for its own together with the others that ask meanwhile, held a
//!   little ([`gather_for`]): it would wait its place anyway, and one call
//!   reserves the places of all of them, in the order they asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mailpipe_common::config::Settings;
use mailpipe_state::calls::{Answer, AttemptCount, Call};
use mailpipe_state::policy::{Ask, Verdict};
use mailpipe_state::store::{DoneWrite, Gate, GateRequest, MarkRequest, Store, StoreError};
use tokio::sync::oneshot;

use crate::coalesce::Coalescer;

/// Most calls made in one Redis round trip.
const COALESCE_MAX: usize = 256;

/// How often the attempts counted in this process are added to the
/// shared counts: what the breaker and the slow-down see lags by at most
/// this much (a failure never waits: the attempts go before it).
pub(crate) const ATTEMPTS_EVERY: Duration = Duration::from_millis(250);

/// The longest an ask for a domain's place is held to go with others.
const MOST_GATHER: Duration = Duration::from_millis(25);

/// Below this much reserved ahead, an ask goes at once.
const LEAST_AHEAD: Duration = Duration::from_millis(20);

/// Domains remembered (how far ahead their places are reserved) before
/// the memory starts again.
const MOST_DOMAINS: usize = 100_000;

/// How long an ask for a place of a domain whose places are reserved
/// `ahead` of now (as this process last heard) may be held to go with the
/// asks that come meanwhile; `None`: at once. At most half of what is
/// reserved ahead, so the places reserved run out no sooner than the held
/// asks take the next ones: the rate is not slowed, and a message waits no
/// longer than it would have waited for its place.
pub(crate) fn gather_for(ahead: Duration) -> Option<Duration> {
    (ahead >= LEAST_AHEAD).then(|| (ahead / 2).min(MOST_GATHER))
}

/// Whether a verdict is an attempt: the message goes.
pub(crate) fn is_attempt(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Go { .. })
}

type Held = (Ask, Instant, oneshot::Sender<Result<Verdict, StoreError>>);

/// What this process knows of one domain's places.
#[derive(Default)]
struct Places {
    /// The last place it was given (its message goes then).
    reserved_until: Option<Instant>,
    /// Asks held to go together, while one is gathering.
    gathering: Option<Vec<Held>>,
}

struct Inner {
    calls: Coalescer<Call, Answer>,
    /// Attempts not yet counted in Redis, by domain and site.
    attempts: Mutex<HashMap<(String, String), u64>>,
    /// One count of attempts at a time, so that a failure counted after a
    /// count waits for the one already on its way.
    counting: tokio::sync::Mutex<()>,
    places: Mutex<HashMap<String, Places>>,
}

/// The coalesced calls of this process; each method waits for its answer.
pub(crate) struct Calls {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Calls {
    pub(crate) fn start(store: &Store, settings: &Settings) -> Self {
        let lease = settings.sender.lease;
        let window = settings.policy.breaker.window;
        let store = store.clone();
        let inner = Arc::new(Inner {
            calls: Coalescer::start(COALESCE_MAX, move |calls: Vec<Call>| {
                let store = store.clone();
                async move { store.calls(&calls, lease, window).await }
            }),
            attempts: Mutex::default(),
            counting: tokio::sync::Mutex::new(()),
            places: Mutex::default(),
        });
        tokio::spawn(count_attempts_every(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Checks a message and takes its lease.
    pub(crate) async fn gate(&self, request: GateRequest) -> Result<Gate, StoreError> {
        match self.inner.calls.ask(Call::Gate(request)).await? {
            Answer::Gate(g) => Ok(g),
            other => Err(StoreError::Shared(format!("a gate answered {other:?}"))),
        }
    }

    /// Asks the sending policy whether a message may go now; one that goes
    /// is counted as an attempt of its domain and site.
    pub(crate) async fn acquire(&self, ask: Ask) -> Result<Verdict, StoreError> {
        let (domain, site) = (ask.domain.clone(), ask.site.clone());
        let verdict = match self.hold(ask) {
            Ok(held) => held
                .await
                .map_err(|_| StoreError::Shared("a held policy ask was dropped".into()))??,
            Err(ask) => self.inner.ask(*ask).await?,
        };
        if is_attempt(&verdict) {
            *lock(&self.inner.attempts)
                .entry((domain.clone(), site))
                .or_default() += 1;
        }
        if let Verdict::Go { after, .. } = &verdict {
            let at = Instant::now() + *after;
            let mut places = lock(&self.inner.places);
            if places.len() >= MOST_DOMAINS {
                places.retain(|_, p| p.gathering.is_some());
            }
            let p = places.entry(domain).or_default();
            p.reserved_until = Some(p.reserved_until.map_or(at, |u| u.max(at)));
        }
        Ok(verdict)
    }

    /// Holds an ask with the others of its domain when its places are
    /// reserved far enough ahead ([`gather_for`]); gives it back otherwise.
    fn hold(&self, ask: Ask) -> Result<oneshot::Receiver<Result<Verdict, StoreError>>, Box<Ask>> {
        let now = Instant::now();
        let mut places = lock(&self.inner.places);
        let Some(p) = places.get_mut(&ask.domain) else {
            return Err(Box::new(ask));
        };
        let (reply, answer) = oneshot::channel();
        if let Some(held) = &mut p.gathering {
            held.push((ask, now, reply));
            return Ok(answer);
        }
        let ahead = p
            .reserved_until
            .map(|u| u.saturating_duration_since(now))
            .unwrap_or_default();
        let Some(hold) = gather_for(ahead) else {
            return Err(Box::new(ask));
        };
        let domain = ask.domain.clone();
        p.gathering = Some(vec![(ask, now, reply)]);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            inner.ask_held(&domain).await;
        });
        Ok(answer)
    }

    /// Marks a message "data sent, awaiting reply" (before its final dot).
    pub(crate) async fn mark(&self, mark: MarkRequest) -> Result<(), StoreError> {
        match self.inner.calls.ask(Call::Mark(mark)).await? {
            Answer::Mark => Ok(()),
            other => Err(StoreError::Shared(format!("a mark answered {other:?}"))),
        }
    }

    /// Writes a terminal record; `true` if it is new.
    pub(crate) async fn record(&self, write: DoneWrite) -> Result<bool, StoreError> {
        match self.inner.calls.ask(Call::Done(write)).await? {
            Answer::Done(new) => Ok(new),
            other => Err(StoreError::Shared(format!("a record answered {other:?}"))),
        }
    }

    /// Adds the attempts counted so far to the shared counts, after any
    /// count already on its way: call it before counting a failure, so the
    /// breaker sees the attempt before its failure.
    pub(crate) async fn count_attempts(&self) -> Result<(), StoreError> {
        self.inner.count_attempts().await
    }
}

impl Inner {
    async fn ask(&self, ask: Ask) -> Result<Verdict, StoreError> {
        match self.calls.ask(Call::Acquire(ask)).await? {
            Answer::Acquire(v) => Ok(v),
            other => Err(StoreError::Shared(format!(
                "a policy ask answered {other:?}"
            ))),
        }
    }

    /// Sends the asks held for `domain` together, in the order they came;
    /// each may wait for its place what it had left when it was asked.
    async fn ask_held(&self, domain: &str) {
        let held = lock(&self.places)
            .get_mut(domain)
            .and_then(|p| p.gathering.take())
            .unwrap_or_default();
        let mut replies = Vec::with_capacity(held.len());
        let asks = held
            .into_iter()
            .map(|(mut ask, asked, reply)| {
                ask.max_wait = ask.max_wait.saturating_sub(asked.elapsed());
                replies.push(reply);
                Call::Acquire(ask)
            })
            .collect();
        let answers = self.calls.ask_many(asks).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            let verdict = answer.and_then(|a| match a {
                Answer::Acquire(v) => Ok(v),
                other => Err(StoreError::Shared(format!(
                    "a policy ask answered {other:?}"
                ))),
            });
            let _ = reply.send(verdict);
        }
    }

    async fn count_attempts(&self) -> Result<(), StoreError> {
        let _turn = self.counting.lock().await;
        let counted: Vec<((String, String), u64)> = std::mem::take(&mut *lock(&self.attempts))
            .into_iter()
            .collect();
        if counted.is_empty() {
            return Ok(());
        }
        let calls = counted
            .iter()
            .map(|((domain, site), count)| {
                Call::Attempts(AttemptCount {
                    domain: domain.clone(),
                    site: site.clone(),
                    count: *count,
                })
            })
            .collect();
        let answers = self.calls.ask_many(calls).await;
        let mut failed = None;
        for (((domain, site), count), answer) in counted.into_iter().zip(answers) {
            if let Err(e) = answer {
                // Not counted: kept for the next count.
                *lock(&self.attempts).entry((domain, site)).or_default() += count;
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Counts the attempts of this process every [`ATTEMPTS_EVERY`], until
/// its calls are dropped (the sender counts the last ones as it stops).
async fn count_attempts_every(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(ATTEMPTS_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(e) = inner.count_attempts().await {
            tracing::warn!(error = %e, "cannot count the attempts yet; they are kept for the next count");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ask_is_held_at_most_half_of_what_is_reserved_ahead_and_never_long() {
        let ms = Duration::from_millis;
        let table = [
            (ms(0), None),
            (ms(19), None),
            (ms(20), Some(ms(10))),
            (ms(40), Some(ms(20))),
            (ms(50), Some(ms(25))),
            (ms(120), Some(ms(25))),
            (Duration::from_secs(30), Some(ms(25))),
        ];
        for (ahead, want) in table {
            assert_eq!(gather_for(ahead), want, "{ahead:?} ahead");
        }
    }

    #[test]
    fn only_a_message_that_goes_is_an_attempt() {
        let ms = Duration::from_millis;
        let table = [
            (
                Verdict::Go {
                    lease: None,
                    per_connection: None,
                    after: ms(0),
                },
                true,
            ),
            (
                Verdict::Go {
                    lease: Some("l".into()),
                    per_connection: Some(10),
                    after: ms(80),
                },
                true,
            ),
            (Verdict::Wait(ms(20)), false),
            (Verdict::Paused(ms(60_000)), false),
        ];
        for (verdict, want) in table {
            assert_eq!(is_attempt(&verdict), want, "{verdict:?}");
        }
    }
}

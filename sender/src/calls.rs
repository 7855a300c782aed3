//! The Redis calls every message makes — its gate and lease, the sending
//! policy's verdict, its sent record — gathered across the messages in
//! flight and made together, whatever their kind, as one script call per
//! round trip ([`crate::coalesce`], [`mailpipe_state::calls`]).

use mailpipe_common::config::Settings;
use mailpipe_state::calls::{Answer, Call};
use mailpipe_state::policy::{Ask, Verdict};
use mailpipe_state::store::{DoneWrite, Gate, GateRequest, MarkRequest, Store, StoreError};

use crate::coalesce::Coalescer;

/// Most calls made in one Redis round trip.
const COALESCE_MAX: usize = 256;

/// The coalesced calls of this process; each method waits for its answer.
pub(crate) struct Calls {
    calls: Coalescer<Call, Answer>,
}

impl Calls {
    pub(crate) fn start(store: &Store, settings: &Settings) -> Self {
        let lease = settings.sender.lease;
        let window = settings.policy.breaker.window;
        let store = store.clone();
        Self {
            calls: Coalescer::start(COALESCE_MAX, move |calls: Vec<Call>| {
                let store = store.clone();
                async move { store.calls(&calls, lease, window).await }
            }),
        }
    }

    /// Checks a message and takes its lease.
    pub(crate) async fn gate(&self, request: GateRequest) -> Result<Gate, StoreError> {
        match self.calls.ask(Call::Gate(request)).await? {
            Answer::Gate(g) => Ok(g),
            other => Err(StoreError::Shared(format!("a gate answered {other:?}"))),
        }
    }

    /// Asks the sending policy whether a message may go now.
    pub(crate) async fn acquire(&self, ask: Ask) -> Result<Verdict, StoreError> {
        match self.calls.ask(Call::Acquire(ask)).await? {
            Answer::Acquire(v) => Ok(v),
            other => Err(StoreError::Shared(format!(
                "a policy ask answered {other:?}"
            ))),
        }
    }

    /// Marks a message "data sent, awaiting reply" (before its final dot).
    pub(crate) async fn mark(&self, mark: MarkRequest) -> Result<(), StoreError> {
        match self.calls.ask(Call::Mark(mark)).await? {
            Answer::Mark => Ok(()),
            other => Err(StoreError::Shared(format!("a mark answered {other:?}"))),
        }
    }

    /// Writes a terminal record; `true` if it is new.
    pub(crate) async fn record(&self, write: DoneWrite) -> Result<bool, StoreError> {
        match self.calls.ask(Call::Done(write)).await? {
            Answer::Done(new) => Ok(new),
            other => Err(StoreError::Shared(format!("a record answered {other:?}"))),
        }
    }
}

//! One lane delivery being sent: the jobs of its recipients and their
//! outcomes so far. The last recipient to finish hands every outcome over
//! for settlement ([`Batch::record`]).

use std::sync::Mutex;

use mailpipe_common::message::Job;

use crate::deliver::DeliveryOutcome;

/// One delivery of a lane being sent.
pub(crate) struct Batch {
    /// The delivery's tag on its lane channel, for the ack.
    pub(crate) tag: u64,
    /// Its recipients, one job each, in message order.
    pub(crate) jobs: Vec<Job>,
    /// A std mutex: held only to record an outcome, never across an await.
    state: Mutex<BatchState>,
}

struct BatchState {
    outcomes: Vec<Option<DeliveryOutcome>>,
    /// Recipients without an outcome yet.
    left: usize,
    /// A recipient's handler panicked.
    panicked: bool,
}

/// What the last recorded outcome completed: the whole delivery is settled
/// with `Outcomes` (one per job, in order), or returned to the queue.
#[derive(Debug)]
pub(crate) enum Completed {
    Outcomes(Vec<DeliveryOutcome>),
    /// A recipient's handler panicked: the whole delivery goes back (the
    /// recipients already sent are skipped by their records).
    Panicked,
}

impl Batch {
    pub(crate) fn new(tag: u64, jobs: Vec<Job>) -> Self {
        let n = jobs.len();
        Self {
            tag,
            jobs,
            state: Mutex::new(BatchState {
                outcomes: (0..n).map(|_| None).collect(),
                left: n,
                panicked: false,
            }),
        }
    }

    /// Records recipient `i`'s outcome (`None`: its handler panicked).
    /// `Some` once it was the last one.
    pub(crate) fn record(&self, i: usize, outcome: Option<DeliveryOutcome>) -> Option<Completed> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Some(o) => s.outcomes[i] = Some(o),
            None => s.panicked = true,
        }
        s.left -= 1;
        if s.left > 0 {
            return None;
        }
        if s.panicked {
            return Some(Completed::Panicked);
        }
        Some(Completed::Outcomes(
            s.outcomes
                .iter_mut()
                .map(|o| o.take().unwrap_or(DeliveryOutcome::Unsent))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::job;

    fn batch(n: usize) -> Batch {
        Batch::new(
            7,
            (0..n)
                .map(|i| job(&format!("m{i}"), "a@example.com"))
                .collect(),
        )
    }

    #[test]
    fn the_last_outcome_completes_the_batch_in_job_order() {
        let b = batch(3);
        assert!(b.record(2, Some(DeliveryOutcome::Held)).is_none());
        assert!(b
            .record(0, Some(DeliveryOutcome::Delivered(None)))
            .is_none());
        let Some(Completed::Outcomes(all)) = b.record(1, Some(DeliveryOutcome::AlreadyDone)) else {
            panic!("the third outcome completes the batch");
        };
        let labels: Vec<_> = all.iter().map(DeliveryOutcome::label).collect();
        assert_eq!(labels, vec!["sent", "duplicate", "held"]);
    }

    #[test]
    fn a_panicked_handler_returns_the_whole_batch() {
        let b = batch(2);
        assert!(b.record(0, None).is_none());
        assert!(matches!(
            b.record(1, Some(DeliveryOutcome::Delivered(None))),
            Some(Completed::Panicked)
        ));
    }

    #[test]
    fn a_single_recipient_completes_at_once() {
        let b = batch(1);
        assert!(matches!(
            b.record(0, Some(DeliveryOutcome::Unsent)),
            Some(Completed::Outcomes(o)) if o.len() == 1
        ));
    }
}

//! Acks one lane channel's deliveries, coalescing them.
//!
//! Each round takes every settlement that arrived and acks the longest run
//! of settled deliveries from the oldest one still outstanding with a single
//! `basic.ack multiple`; settled deliveries behind one still in flight are
//! acked on their own, so a slow message never holds the prefetch window.
//! Requeues are sent at once. Deliveries whose acks are lost with a broken
//! channel are redelivered, which the sent records make harmless.
//!
//! Which acks a round sends is [`plan_round`], a pure function; the task of
//! [`Acker::start`] only feeds it and writes its answer to the channel.

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Channel;

/// The handle the lane's tasks report to; cheap to clone.
#[derive(Clone)]
pub(crate) struct Acker {
    tx: tokio::sync::mpsc::UnboundedSender<AckEvent>,
}

/// What the acker hears about one delivery.
#[derive(Debug, Clone, Copy)]
enum AckEvent {
    /// The consumer received it: it is outstanding until settled.
    Received(u64),
    /// Its outcome is durable (`ack`) or it goes back to the queue.
    Settled { tag: u64, ack: bool },
}

/// The acks and rejects one round sends, in this order.
#[derive(Debug, Default, PartialEq, Eq)]
struct AckRound {
    /// Deliveries given back to the queue.
    requeue: Vec<u64>,
    /// Every delivery up to this tag is acked with one `basic.ack multiple`.
    upto: Option<u64>,
    /// Settled deliveries behind one still in flight, acked one by one.
    single: Vec<u64>,
}

/// Applies one round of events to the outstanding deliveries (tag →
/// settled) and says which acks and rejects to send; what it answers for is
/// no longer outstanding.
fn plan_round(
    outstanding: &mut BTreeMap<u64, bool>,
    events: impl IntoIterator<Item = AckEvent>,
) -> AckRound {
    let mut round = AckRound::default();
    for ev in events {
        match ev {
            AckEvent::Received(tag) => {
                outstanding.insert(tag, false);
            }
            AckEvent::Settled { tag, ack: true } => {
                outstanding.insert(tag, true);
            }
            AckEvent::Settled { tag, ack: false } => {
                outstanding.remove(&tag);
                round.requeue.push(tag);
            }
        }
    }
    while let Some(entry) = outstanding.first_entry() {
        if !*entry.get() {
            break;
        }
        round.upto = Some(*entry.key());
        entry.remove();
    }
    round.single = outstanding
        .iter()
        .filter(|(_, settled)| **settled)
        .map(|(tag, _)| *tag)
        .collect();
    for tag in &round.single {
        outstanding.remove(tag);
    }
    round
}

impl Acker {
    /// The acker of a channel, and its task, which ends once every clone
    /// is dropped and the last acks are written.
    pub(crate) fn start(channel: Arc<Channel>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<AckEvent>();
        let task = tokio::spawn(async move {
            // Outstanding delivery tags; `true` once settled.
            let mut outstanding: BTreeMap<u64, bool> = BTreeMap::new();
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 1024).await > 0 {
                let round = plan_round(&mut outstanding, batch.drain(..));
                for tag in round.requeue {
                    let _ = channel
                        .basic_reject(tag, BasicRejectOptions { requeue: true })
                        .await;
                }
                if let Some(tag) = round.upto {
                    let _ = channel
                        .basic_ack(tag, BasicAckOptions { multiple: true })
                        .await;
                }
                for tag in round.single {
                    let _ = channel.basic_ack(tag, BasicAckOptions::default()).await;
                }
            }
        });
        (Self { tx }, task)
    }

    /// A delivery arrived.
    pub(crate) fn received(&self, tag: u64) {
        let _ = self.tx.send(AckEvent::Received(tag));
    }

    /// A delivery is settled: ack it (`ack`) or give it back to the queue.
    pub(crate) fn settle(&self, tag: u64, ack: bool) {
        let _ = self.tx.send(AckEvent::Settled { tag, ack });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(tags: &[u64]) -> Vec<AckEvent> {
        tags.iter().map(|t| AckEvent::Received(*t)).collect()
    }

    fn acked(tags: &[u64]) -> Vec<AckEvent> {
        tags.iter()
            .map(|t| AckEvent::Settled { tag: *t, ack: true })
            .collect()
    }

    #[test]
    fn a_settled_run_from_the_oldest_is_acked_with_one_multiple_ack() {
        let mut out = BTreeMap::new();
        let mut events = received(&[1, 2, 3]);
        events.extend(acked(&[1, 2]));
        let round = plan_round(&mut out, events);
        assert_eq!(
            round,
            AckRound {
                requeue: vec![],
                upto: Some(2),
                single: vec![],
            }
        );
        assert_eq!(out, BTreeMap::from([(3, false)]));
    }

    #[test]
    fn settled_deliveries_behind_one_in_flight_are_acked_alone() {
        let mut out = BTreeMap::new();
        let mut events = received(&[1, 2, 3, 4]);
        events.extend(acked(&[2, 4]));
        let round = plan_round(&mut out, events);
        assert_eq!(round.upto, None);
        assert_eq!(round.single, vec![2, 4]);
        // The slow one is still outstanding; once settled it goes alone too.
        assert_eq!(out, BTreeMap::from([(1, false), (3, false)]));
        let round = plan_round(&mut out, acked(&[1]));
        assert_eq!(round.upto, Some(1));
        assert_eq!(out, BTreeMap::from([(3, false)]));
    }

    #[test]
    fn a_requeue_is_sent_at_once_and_no_longer_holds_the_window() {
        let mut out = BTreeMap::new();
        let mut events = received(&[1, 2]);
        events.push(AckEvent::Settled { tag: 1, ack: false });
        events.extend(acked(&[2]));
        let round = plan_round(&mut out, events);
        assert_eq!(
            round,
            AckRound {
                requeue: vec![1],
                upto: Some(2),
                single: vec![],
            }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn nothing_is_acked_while_nothing_is_settled() {
        let mut out = BTreeMap::new();
        let round = plan_round(&mut out, received(&[5, 6]));
        assert_eq!(round, AckRound::default());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_delivery_settled_over_several_rounds_is_acked_once() {
        let mut out = BTreeMap::new();
        let mut sent = Vec::new();
        for events in [received(&[1, 2, 3]), acked(&[3]), acked(&[1]), acked(&[2])] {
            let round = plan_round(&mut out, events);
            sent.extend(round.single);
            if let Some(upto) = round.upto {
                sent.push(upto);
            }
        }
        // 3 alone, then 1 (multiple up to 1), then 2 (multiple up to 2).
        assert_eq!(sent, vec![3, 1, 2]);
        assert!(out.is_empty());
    }
}

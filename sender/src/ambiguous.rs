//! Ambiguous attempts: the data of a transaction was sent and no answer
//! was read, so the server may have accepted the message (RFC 1047's
//! window, which every MTA has). mailpipe narrows the window to the
//! recipients that really are in it: a delivery writes "data sent" in
//! Redis before its final dot (in the same round trip as the DATA
//! command's reply) and clears it when the answer is recorded. A recipient
//! is ambiguous when its own transaction broke after the dot, or when a
//! later delivery finds another delivery's mark (that sender died).
//!
//! What happens then is `sender.on_ambiguous`, decided in [`resolution`];
//! every ambiguous recipient is marked in its history, counted once in the
//! request's `ambiguous` counter and in `mailpipe_ambiguous_total`, and
//! published as an `ambiguous` event.

use mailpipe_common::classify::Failure;
use mailpipe_common::config::OnAmbiguous;
use mailpipe_common::message::Job;
use mailpipe_common::telemetry::scrub;
use mailpipe_common::unix_now;
use mailpipe_state::store::{StoreError, DECISION_AMBIGUOUS};

use crate::deliver::DeliveryOutcome;
use crate::events::AmbiguousAttempt;
use crate::Sender;

/// Where an ambiguous attempt was found.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// At the gate: a delivery named here left its mark and no answer.
    Mark(String),
    /// In this delivery: its transaction failed after the final dot.
    InFlight(Failure),
}

/// What the delivery does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Go on (at the gate: send; in flight: handle the failure as any other,
    /// so it is retried).
    GoOn,
    /// Park the recipient in the `ambiguous` queue for an operator.
    Hold,
    /// Stop: dead with reason `ambiguous`.
    Drop,
}

/// Decides what becomes of an ambiguous recipient. Where it was found does
/// not change the decision: a resend from the gate sends now, a resend in
/// flight goes the way of the failure (the next route, or the retrier).
pub(crate) fn resolution(on: OnAmbiguous) -> Resolution {
    match on {
        OnAmbiguous::Resend => Resolution::GoOn,
        OnAmbiguous::Hold => Resolution::Hold,
        OnAmbiguous::Drop => Resolution::Drop,
    }
}

impl Found {
    /// For people: what was seen.
    pub(crate) fn detail(&self) -> String {
        match self {
            Found::Mark(owner) => format!(
                "an earlier delivery ({owner}) sent the data and recorded no answer (its sender stopped)"
            ),
            Found::InFlight(f) => format!(
                "the data was sent and no answer was read: {}",
                scrub(&f.to_string())
            ),
        }
    }
}

impl Sender {
    /// Records an ambiguous attempt (history, counters, the mark cleared)
    /// and says what the delivery does next.
    pub(crate) async fn ambiguous(
        &self,
        job: &Job,
        found: &Found,
    ) -> Result<Resolution, StoreError> {
        let on = self.settings.sender.on_ambiguous;
        let detail = found.detail();
        let entry = serde_json::json!({
            "at": unix_now(),
            "decision": DECISION_AMBIGUOUS,
            "action": on.as_str(),
            "reason": detail,
        });
        self.store
            .resolve_ambiguous(&job.id, &job.request, &entry, self.record_ttl(job))
            .await?;
        AmbiguousAttempt {
            message: &job.id,
            action: on,
            detail: &detail,
        }
        .emit(&self.metrics);
        Ok(resolution(on))
    }

    /// Wraps what became of an ambiguous recipient, so that settling it
    /// also publishes its `ambiguous` event.
    pub(crate) fn after_ambiguous(&self, found: &Found, then: DeliveryOutcome) -> DeliveryOutcome {
        DeliveryOutcome::Ambiguous {
            action: self.settings.sender.on_ambiguous,
            detail: found.detail(),
            then: Box::new(then),
        }
    }
}

/// The outcome of a recipient that is held or dropped for ambiguity.
pub(crate) fn stopped(r: &Resolution, found: &Found) -> Option<DeliveryOutcome> {
    match r {
        Resolution::GoOn => None,
        Resolution::Hold => Some(DeliveryOutcome::AmbiguousHeld),
        Resolution::Drop => Some(DeliveryOutcome::Dead {
            reason: "ambiguous",
            detail: found.detail(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_ambiguous_decides_alone_wherever_the_ambiguity_was_found() {
        let table = [
            (OnAmbiguous::Resend, Resolution::GoOn),
            (OnAmbiguous::Hold, Resolution::Hold),
            (OnAmbiguous::Drop, Resolution::Drop),
        ];
        for (on, expected) in table {
            assert_eq!(resolution(on), expected, "{on:?}");
        }
        let found = Found::Mark("sender-1:7".into());
        assert!(stopped(&Resolution::GoOn, &found).is_none());
        assert!(matches!(
            stopped(&Resolution::Hold, &found),
            Some(DeliveryOutcome::AmbiguousHeld)
        ));
        assert!(matches!(
            stopped(&Resolution::Drop, &found),
            Some(DeliveryOutcome::Dead {
                reason: "ambiguous",
                ..
            })
        ));
    }
}

//! Acting on a delivery report: a failed recipient counts against its
//! address as a synchronous failure would (quarantine, counters, events,
//! the message's history); delays and successes are only counted.

use mailpipe_common::bounce::{self, Action, DeliveryReport};
use mailpipe_common::classify::{Failure, FailureType};
use mailpipe_common::message::{EventKind, Lane};
use mailpipe_common::unix_now;
use mailpipe_state::store::{AddressState, RecipientFailure};

use super::{Intake, MailOutcome, Matched, Unusable, MARKER_TTL};
use crate::Temporary;

impl Intake {
    /// A delivery report: a failure counts against the recipient as a
    /// synchronous one would; delays and successes are only counted.
    pub(super) async fn apply_bounce(
        &self,
        m: &Matched,
        report: &DeliveryReport,
    ) -> Result<Result<MailOutcome, Unusable>, Temporary> {
        let mine = |r: &&bounce::RecipientStatus| {
            r.final_recipient.as_deref() == Some(m.address.as_str())
                || r.original_recipient.as_deref() == Some(m.address.as_str())
        };
        let status = report
            .recipients
            .iter()
            .find(mine)
            .or_else(|| (report.recipients.len() == 1).then(|| &report.recipients[0]))
            .or_else(|| {
                report
                    .recipients
                    .iter()
                    .find(|r| r.action == Action::Failed)
            });
        let Some(status) = status else {
            return Ok(Err(Unusable {
                outcome: MailOutcome::Unrecognized,
                why: "the report names no recipient".into(),
            }));
        };
        match status.action {
            Action::Failed => {}
            Action::Delayed => {
                tracing::info!(message = %m.message, "delay notice: the receiving side is still trying");
                return Ok(Ok(MailOutcome::Delayed));
            }
            _ => return Ok(Ok(MailOutcome::Ignored)),
        }
        let failure = status.failure();
        let class = self.classifier.classify_for(&failure, Some(&m.address));
        let text = failure.to_string();
        self.store
            .count_failure_text(&failure, &class, unix_now())
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        if class.kind == FailureType::Ignored {
            return Ok(Ok(MailOutcome::Ignored));
        }
        let already = self.marked(&["bounced", &m.message]).await?;
        if already {
            return Ok(Ok(MailOutcome::Duplicate));
        }
        let quarantined = self.count_against_recipient(m, &failure, &class).await?;
        let lane = m.record.lane.unwrap_or(Lane::Bulk);
        let channel = self.channel()?;
        let ev = self.event(m, EventKind::Bounced, class.reason.as_str(), &text);
        self.publish_event(&channel, &ev, lane).await?;
        if quarantined {
            let ev = self.event(m, EventKind::Quarantined, class.reason.as_str(), &text);
            self.publish_event(&channel, &ev, lane).await?;
        }
        // The message's history (`mailpipe queue show`) tells of it too.
        let entry = serde_json::json!({
            "at": unix_now(),
            "route": report.reporting_mta.as_deref().unwrap_or_default(),
            "reply": text,
            "type": class.kind,
            "reason": class.reason,
            "rule": class.rule,
            "decision": "bounced_after_delivery",
            "due": null,
        });
        self.store
            .push_history(&m.message, &m.record.request, &entry, MARKER_TTL)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        // After the events: a crash in between sends them again (at least
        // once), never not at all.
        self.store
            .record_bounce(
                &m.message,
                &m.record.request,
                class.reason.as_str(),
                MARKER_TTL,
            )
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        tracing::info!(message = %m.message, by = m.by, reason = class.reason.as_str(), kind = class.kind.as_str(), quarantined, "bounce received after delivery");
        Ok(Ok(MailOutcome::Bounced))
    }

    /// Counts the bounce against the address the way the retrier counts a
    /// failed attempt ([`RecipientFailure::of`],
    /// [`Store::count_against_recipient`](mailpipe_state::store::Store::count_against_recipient)).
    async fn count_against_recipient(
        &self,
        m: &Matched,
        failure: &Failure,
        class: &mailpipe_common::classify::Classification,
    ) -> Result<bool, Temporary> {
        let detail = failure.to_string();
        // Counted once per message, apart from the synchronous attempts.
        let counted_as = format!("{}:bounce", m.message);
        let counted = RecipientFailure::of(
            &m.address,
            &counted_as,
            0,
            class,
            &self.settings.quarantine,
            &detail,
            unix_now(),
        );
        let state = self
            .store
            .count_against_recipient(counted.as_ref())
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        Ok(state != AddressState::Open)
    }
}

//! Acting on a feedback-loop complaint: each complainant mailpipe sent the
//! request to goes on the denylist and gets a `complained` event.

use mailpipe_common::address::EmailAddress;
use mailpipe_common::bounce::ComplaintReport;
use mailpipe_common::message::{EventKind, Lane};

use super::{Intake, MailOutcome, Matched, Unusable, MARKER_TTL};
use crate::Temporary;

/// Further complainants of one report that are looked up (each costs a
/// Redis read).
const MAX_OTHER_COMPLAINANTS: usize = 100;

impl Intake {
    /// A feedback-loop report about the matched message and, when it names
    /// further complainants, about the messages of the same request to them:
    /// each goes through [`Self::apply_complaint`]. [`MailOutcome::Complained`] when any
    /// was new.
    pub(super) async fn apply_complaints(
        &self,
        m: &Matched,
        report: &ComplaintReport,
    ) -> Result<Result<MailOutcome, Unusable>, Temporary> {
        if report.feedback_type == "not-spam" {
            return Ok(Ok(MailOutcome::Ignored));
        }
        let mut outcome = self.apply_complaint(m, report).await?;
        for other in self.other_complainants(m, report).await? {
            if self.apply_complaint(&other, report).await? == MailOutcome::Complained {
                outcome = MailOutcome::Complained;
            }
        }
        Ok(Ok(outcome))
    }

    /// The report's other complainants that mailpipe sent the same request
    /// to: the sent record of each is the one its address and the request
    /// give, and must name that address. Others are ignored (a report cannot
    /// make mailpipe act on an address it did not send to).
    async fn other_complainants(
        &self,
        m: &Matched,
        report: &ComplaintReport,
    ) -> Result<Vec<Matched>, Temporary> {
        let mut out = Vec::new();
        let others = report
            .recipients
            .iter()
            .filter(|a| **a != m.address)
            .take(MAX_OTHER_COMPLAINANTS);
        for address in others {
            let Ok(parsed) = EmailAddress::parse(address) else {
                continue;
            };
            let id = mailpipe_common::message::message_id(&m.record.request, &parsed.key());
            let Some(record) = self.sent_record(&id).await? else {
                tracing::info!(message = %m.message, complainant = %address, "complainant without a sent message of this request: ignored");
                continue;
            };
            let sent_to = record.to.clone().unwrap_or_default().to_ascii_lowercase();
            if sent_to != *address {
                continue;
            }
            out.push(Matched {
                message: id,
                record,
                address: sent_to,
                by: m.by,
            });
        }
        Ok(out)
    }

    /// One complainant: the recipient goes on the denylist and applications
    /// get a `complained` event (once per message).
    async fn apply_complaint(
        &self,
        m: &Matched,
        report: &ComplaintReport,
    ) -> Result<MailOutcome, Temporary> {
        self.store
            .list_add("denylist", std::slice::from_ref(&m.address))
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        if self.marked(&["complained", &m.message]).await? {
            return Ok(MailOutcome::Duplicate);
        }
        let lane = m.record.lane.unwrap_or(Lane::Bulk);
        let channel = self.channel()?;
        let detail = match &report.user_agent {
            Some(agent) => format!("{} report from {agent}", report.feedback_type),
            None => format!("{} report", report.feedback_type),
        };
        let ev = self.event(m, EventKind::Complained, &report.feedback_type, &detail);
        self.publish_event(&channel, &ev, lane).await?;
        self.store
            .record_complaint(
                &m.message,
                &m.record.request,
                &report.feedback_type,
                MARKER_TTL,
            )
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        tracing::info!(message = %m.message, by = m.by, feedback = %report.feedback_type, "complaint: address denylisted");
        Ok(MailOutcome::Complained)
    }
}

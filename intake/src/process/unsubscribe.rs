//! Acting on an unsubscribe request: the message's recipient goes on the
//! denylist and gets an `unsubscribed` event.

use mailpipe_common::bounce::UnsubscribeRequest;
use mailpipe_common::message::{EventKind, Lane};

use super::{Intake, MailOutcome, Matched, Unusable, MARKER_TTL};
use crate::Temporary;

impl Intake {
    /// An unsubscribe request about a sent message: its recipient goes on
    /// the denylist (reason `unsubscribed`) and applications get an
    /// `unsubscribed` event, once per message. The address acted on is the
    /// message's recipient; the request's sender is only logged (a mail
    /// client may write from another address of the same person).
    pub(super) async fn apply_unsubscribe(
        &self,
        m: &Matched,
        request: &UnsubscribeRequest,
    ) -> Result<Result<MailOutcome, Unusable>, Temporary> {
        self.store
            .list_add("denylist", std::slice::from_ref(&m.address))
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        if self.marked(&["unsubscribed", &m.message]).await? {
            return Ok(Ok(MailOutcome::Duplicate));
        }
        let lane = m.record.lane.unwrap_or(Lane::Bulk);
        let channel = self.channel()?;
        let requester = request.address.as_deref().unwrap_or("an unknown sender");
        let detail = format!("unsubscribe request mailed by {requester}");
        let ev = self.event(m, EventKind::Unsubscribed, "unsubscribed", &detail);
        self.publish_event(&channel, &ev, lane).await?;
        self.store
            .record_unsubscribe(&m.message, &m.record.request, MARKER_TTL)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        tracing::info!(message = %m.message, by = m.by, requester, "unsubscribe request: address denylisted");
        Ok(Ok(MailOutcome::Unsubscribed))
    }
}

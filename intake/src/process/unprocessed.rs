//! Setting an unusable mail aside for operators: kept in
//! `{p}:intake:unprocessed` and published to the dead-letter queue with the
//! reason.

use mailpipe_common::bounce::Parsed;
use mailpipe_common::message::DeadRecord;
use mailpipe_common::metrics::publish_dead;
use mailpipe_common::unix_now;
use serde::Serialize;

use super::{Intake, Unusable};
use crate::{Inbound, Temporary};

/// Unusable mails kept in Redis for operators.
const UNPROCESSED_KEPT: usize = 1000;

/// What operators find in `{p}:intake:unprocessed` for one mail.
#[derive(Serialize)]
struct UnprocessedEntry<'a> {
    at: i64,
    source: &'static str,
    outcome: &'static str,
    why: &'a str,
    mail_from: &'a str,
    rcpt_to: &'a [String],
    from: Option<&'a str>,
    subject: Option<&'a str>,
    message_id: Option<&'a str>,
    size: usize,
}

impl Intake {
    /// Keeps an unusable mail for operators: in Redis (latest first) and as a
    /// dead-letter record with the start of the mail.
    pub(super) async fn set_aside(
        &self,
        mail: &Inbound,
        parsed: &Parsed,
        u: &Unusable,
    ) -> Result<(), Temporary> {
        tracing::warn!(source = mail.source.as_str(), outcome = u.outcome.as_str(), why = %u.why, "mail set aside");
        let entry = UnprocessedEntry {
            at: unix_now(),
            source: mail.source.as_str(),
            outcome: u.outcome.as_str(),
            why: &u.why,
            mail_from: &mail.mail_from,
            rcpt_to: &mail.rcpt_to,
            from: parsed.from.as_deref(),
            subject: parsed.subject.as_deref(),
            message_id: parsed.message_id.as_deref(),
            size: mail.data.len(),
        };
        let json = serde_json::to_string(&entry).unwrap_or_default();
        let channel = self.channel()?;
        let record = DeadRecord::for_input(
            format!("intake_{}", u.outcome.as_str()),
            u.why.clone(),
            &mail.data,
            unix_now(),
        );
        publish_dead(&channel, &self.topology.exchange(), &record, &self.metrics)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        self.store
            .record_unprocessed(&json, UNPROCESSED_KEPT)
            .await
            .map_err(|e| Temporary(e.to_string()))
    }
}

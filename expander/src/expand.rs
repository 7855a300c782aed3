//! Expanding one request (or part of one) into lane messages: register the
//! request, store its content, admit and screen its recipients batch by
//! batch, publish the accepted ones in lane messages and the exclusions as
//! events (confirms in a sliding window), then store the part's counts.

use std::time::Duration;

use lapin::Channel;
use mailpipe_common::amqp::{self, ConfirmWindow};
use mailpipe_common::message::{
    in_control_group, message_id, BatchRecipient, Event, EventKind, JobBatch, BATCH_SCHEMA_VERSION,
};
use mailpipe_common::store::{
    Candidate, PartCounts, Refusal, RequestMeta, ScreenOptions, ScreenVerdict, Screened,
};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use tokio_util::sync::CancellationToken;

use crate::{request, ExpandError, ExpandOutcome, Expander, REFUSAL_TTL, STATUS_GRACE};

impl Expander {
    /// Expands one request body; the outcome says what became of it.
    pub(crate) async fn expand(
        &self,
        publish: &Channel,
        body: &[u8],
        amqp_message_id: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<ExpandOutcome, ExpandError> {
        let cfg = &self.settings.expander;
        let valid = match request::validate(body, amqp_message_id, cfg.max_request_bytes) {
            Ok(v) => v,
            Err(rejection) => {
                let claimed = request::claimed_id(body, cfg.max_request_bytes);
                if let Some((id, part)) = &claimed {
                    // `mailpipe status ID` tells the application why.
                    let refusal = Refusal {
                        reason: rejection.reason().to_string(),
                        detail: rejection.to_string(),
                        at: unix_now(),
                    };
                    self.store
                        .record_refusal(id, *part, &refusal, REFUSAL_TTL)
                        .await
                        .map_err(ExpandError::Store)?;
                }
                let id = claimed.map(|(id, _)| id);
                return self.reject(publish, &rejection, id, body).await;
            }
        };
        let rid = valid.id.clone();
        let part = valid.part;
        let ttl = valid.validity + STATUS_GRACE;
        let now = unix_now();
        let meta = self
            .store
            .register_request(
                &rid,
                &RequestMeta {
                    campaign: valid.request.campaign.clone(),
                    tenant: valid.request.tenant.clone(),
                    lane: Some(valid.lane()),
                    parts_total: part.total,
                    created: now,
                    deadline: now + valid.validity.as_secs() as i64,
                },
                ttl,
            )
            .await?;
        if self.store.part_done(&rid, part.index).await? {
            tracing::info!(request = %rid, part = part.index, "part already expanded; nothing to do");
            return Ok(ExpandOutcome::AlreadyDone);
        }
        let content_id = valid.content.id();
        self.store
            .put_content(
                &content_id,
                &serde_json::to_string(&valid.content).unwrap_or_default(),
                ttl,
            )
            .await?;

        let screen = ScreenOptions {
            max_audience: valid.request.max_audience,
            coalesce: valid.request.coalesce.as_ref().map(|c| {
                (
                    valid.request.tenant.clone().unwrap_or_default(),
                    c.key.clone(),
                    Duration::from_secs(c.window_seconds),
                )
            }),
            ttl,
        };
        let lane = valid.lane();
        let tenant = valid.request.tenant.as_deref();
        // The rules are compiled once for the request and again only when
        // a screening call says they changed (or a rule in them expired).
        let rules_version = self.store.rules_version().await?;
        let mut rules = self
            .rules
            .for_request(&self.store, rules_version, tenant, lane, now)
            .await?;
        let lane_key = Topology::lane_key(lane);
        let exchange = self.topology.exchange();
        let events = self.topology.events_exchange();
        let mut window = ConfirmWindow::new(cfg.publish_window);
        let per_message = cfg.jobs_per_message.max(1);
        // The accepted recipients not yet published, up to `per_message`.
        let mut pending: Option<JobBatch> = None;
        let mut counts = PartCounts::default();
        let exclude = |counts: &mut PartCounts, reason: &str| {
            *counts.excluded.entry(reason.to_string()).or_default() += 1;
        };

        let recipients = &valid.request.recipients;
        for (batch_no, batch) in recipients.chunks(cfg.batch_size.max(1)).enumerate() {
            if shutdown.is_cancelled() {
                window
                    .drain()
                    .await
                    .map_err(|e| ExpandError::Broker(e.into()))?;
                return Ok(ExpandOutcome::Interrupted);
            }
            let mut candidates = Vec::with_capacity(batch.len());
            let mut parsed = Vec::with_capacity(batch.len());
            for (i, raw) in batch.iter().enumerate() {
                counts.recipients += 1;
                let index = batch_no * cfg.batch_size.max(1) + i;
                let (address, recipient) = match request::admit_recipient(raw.get()) {
                    Ok(admitted) => admitted,
                    Err(reason) => {
                        exclude(&mut counts, reason);
                        continue;
                    }
                };
                let key = address.key();
                let mid = message_id(&rid, &key);
                let excluded = rules.first_match(&key).map(Screened::by_rule);
                candidates.push(Candidate {
                    control_group: valid
                        .request
                        .control_group
                        .is_some_and(|share| in_control_group(&rid, &key, share)),
                    address: key,
                    position: format!("{}:{}", part.index, index),
                    message_id: mid,
                    excluded,
                });
                parsed.push((address, recipient));
            }
            let screening = self.store.screen(&rid, &candidates, &screen).await?;
            // The exclusions of this screening batch, published as one message.
            let mut excluded = Vec::new();
            for ((candidate, (address, recipient)), screened) in
                candidates.into_iter().zip(parsed).zip(screening.verdicts)
            {
                let verdict = screened.verdict;
                if verdict != ScreenVerdict::Accepted {
                    exclude(&mut counts, verdict.as_str());
                    if let Some(rule) = &screened.rule {
                        *counts.rules.entry(rule.clone()).or_default() += 1;
                    }
                    if verdict != ScreenVerdict::Duplicate {
                        excluded.push(Event {
                            v: 1,
                            event: EventKind::Excluded,
                            request: rid.clone(),
                            message: Some(candidate.message_id.clone()),
                            recipient: address.to_string(),
                            campaign: valid.request.campaign.clone(),
                            reason: Some(verdict.as_str().to_string()),
                            rule: screened.rule,
                            detail: None,
                            at: now,
                        });
                    }
                    continue;
                }
                counts.accepted += 1;
                let batch = pending.get_or_insert_with(|| JobBatch {
                    v: BATCH_SCHEMA_VERSION,
                    request: rid.clone(),
                    tenant: valid.request.tenant.clone(),
                    campaign: valid.request.campaign.clone(),
                    lane,
                    content: content_id.clone(),
                    created: meta.created,
                    deadline: meta.deadline,
                    attempt: 0,
                    last_reason: None,
                    retries: valid.request.retries,
                    recipients: Vec::with_capacity(per_message),
                });
                batch.recipients.push(BatchRecipient {
                    id: candidate.message_id,
                    to: address.to_string(),
                    name: recipient.name,
                    vars: recipient.vars,
                });
                if batch.recipients.len() >= per_message {
                    if let Some(full) = pending.take() {
                        publish_jobs(publish, &exchange, &lane_key, &full, &mut window).await?;
                    }
                }
            }
            rules = self
                .rules
                .for_request(
                    &self.store,
                    screening.rules_version,
                    tenant,
                    lane,
                    unix_now(),
                )
                .await?;
            if !excluded.is_empty() {
                let pending = amqp::publish_events(publish, &events, &excluded, lane)
                    .await
                    .map_err(|e| ExpandError::Broker(e.into()))?;
                window
                    .push(pending)
                    .await
                    .map_err(|e| ExpandError::Broker(e.into()))?;
            }
        }
        if let Some(last) = pending.take() {
            publish_jobs(publish, &exchange, &lane_key, &last, &mut window).await?;
        }
        window
            .drain()
            .await
            .map_err(|e| ExpandError::Broker(e.into()))?;
        self.store
            .record_part(&rid, part.index, &counts, ttl)
            .await?;
        tracing::info!(
            request = %rid,
            part = part.index,
            parts = part.total,
            recipients = counts.recipients,
            accepted = counts.accepted,
            excluded = ?counts.excluded,
            "request expanded"
        );
        Ok(ExpandOutcome::Expanded(counts))
    }
}

/// Publishes the jobs of some recipients of a request as one lane message
/// (its confirm joins the window).
async fn publish_jobs(
    publish: &Channel,
    exchange: &str,
    lane_key: &str,
    batch: &JobBatch,
    window: &mut ConfirmWindow,
) -> Result<(), ExpandError> {
    let id = batch
        .recipients
        .first()
        .map(|r| r.id.clone())
        .unwrap_or_default();
    let pending = amqp::publish(
        publish,
        exchange,
        lane_key,
        &serde_json::to_vec(batch).unwrap_or_default(),
        amqp::properties().with_message_id(id.into()),
    )
    .await
    .map_err(|e| ExpandError::Broker(e.into()))?;
    window
        .push(pending)
        .await
        .map_err(|e| ExpandError::Broker(e.into()))
}

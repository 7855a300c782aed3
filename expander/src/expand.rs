//! Expanding one request (or part of one) into lane messages: register the
//! request, store its content, admit each recipient, ask the exclusion
//! rules and the address checks about it, screen and publish batch by batch
//! (`publish.rs`), then store the part's counts. A recipient whose domain's
//! DNS answer is awaited joins a later batch (`quality.rs`).

use std::time::Duration;

use lapin::Channel;
use mailpipe_common::amqp::ConfirmWindow;
use mailpipe_common::message::{JobBatch, BATCH_SCHEMA_VERSION, MAX_VALIDITY_SECONDS};
use mailpipe_common::rules::DomainMemo;
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_state::store::{
    rcpt_bucket_count, PartCounts, Refusal, RequestMeta, ScreenOptions, Screened,
};
use tokio_util::sync::CancellationToken;

use crate::publish::Outgoing;
use crate::quality::{Admitted, Checks};
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
                // The longest any request's state lives.
                Duration::from_secs(MAX_VALIDITY_SECONDS) + STATUS_GRACE,
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

        // The request's verdict buckets: a request of one recipient keeps
        // the single hash (one key either way), as does every replay of it.
        let proposed = rcpt_bucket_count(part.total, valid.request.recipients.len());
        let buckets = if part.total <= 1 && proposed <= 1 {
            0
        } else {
            self.store.rcpt_buckets(&rid, proposed).await?
        };
        let screen = ScreenOptions {
            buckets,
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
        let mut rules = DomainMemo::new(
            self.rules
                .for_request(&self.store, rules_version, tenant, lane, now)
                .await?,
        );
        let asked = valid
            .request
            .quality
            .as_deref()
            .unwrap_or(&cfg.quality.checks);
        let mut checks = Checks::new(asked, &cfg.quality, self.mail_hosts.as_ref(), &self.metrics);
        let mut out = Outgoing {
            publish,
            template: JobBatch {
                v: BATCH_SCHEMA_VERSION,
                request: rid.clone(),
                tenant: valid.request.tenant.clone(),
                campaign: valid.request.campaign.clone(),
                lane,
                content: content_id,
                created: meta.created,
                deadline: meta.deadline,
                attempt: 0,
                last_reason: None,
                retries: valid.request.retries,
                recipients: Vec::new(),
            },
            part: part.index,
            control_group: valid.request.control_group,
            screen,
            exchange: self.topology.exchange(),
            events: self.topology.events_exchange(),
            lane_key: Topology::lane_key(lane),
            per_message: cfg.jobs_per_message.max(1),
            window: ConfirmWindow::new(cfg.publish_window),
            now,
            pending: None,
            counts: PartCounts::default(),
        };

        // Batch by batch, pipelined: while a batch's screening call is in
        // Redis, the next batch is admitted and asked about (parsing, the
        // rules, the address checks), so that work costs CPU but not wall
        // time. The calls themselves stay one after the other, in order
        // (of two spellings of one address the first is still the one
        // sent); a change of the rules that a call reveals applies from
        // the batch after the one being admitted meanwhile.
        let batch_size = cfg.batch_size.max(1);
        let mut chunks = valid.request.recipients.chunks(batch_size).enumerate();
        let mut ready = chunks.next().map(|(no, chunk)| {
            admit_batch(
                chunk,
                no * batch_size,
                &mut rules,
                &mut checks,
                &mut out.counts,
            )
        });
        while let Some(batch) = ready.take() {
            if shutdown.is_cancelled() {
                out.drain().await?;
                return Ok(ExpandOutcome::Interrupted);
            }
            let candidates = out.candidates(&batch);
            let next = chunks.next();
            let (screening, admitted) =
                tokio::join!(self.store.screen(&rid, &candidates, &out.screen), async {
                    // Lets the Redis connection's task write the call
                    // before this one takes the thread.
                    tokio::task::yield_now().await;
                    next.map(|(no, chunk)| {
                        admit_batch(
                            chunk,
                            no * batch_size,
                            &mut rules,
                            &mut checks,
                            &mut out.counts,
                        )
                    })
                });
            let version = out.settle(candidates, batch, screening?).await?;
            rules.set_rules(
                self.rules
                    .for_request(&self.store, version, tenant, lane, unix_now())
                    .await?,
            );
            ready = admitted;
        }
        // The recipients still waiting for their domain's answer; the
        // accepted ones do not wait with them (each round's jobs are
        // published at once, not when a lane message is full).
        while checks.waiting() {
            out.flush().await?;
            let released = tokio::select! {
                _ = shutdown.cancelled() => {
                    out.drain().await?;
                    return Ok(ExpandOutcome::Interrupted);
                }
                r = checks.next_released() => r,
            };
            let mut released = released;
            while !released.is_empty() {
                let rest = released.split_off(batch_size.min(released.len()));
                out.screen(&self.store, released).await?;
                released = rest;
            }
        }
        out.finish().await?;
        let counts = out.counts;
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

/// Admits the recipient entries of one batch (`first` is the first one's
/// position in the part) and asks the rules and the address checks about
/// them; the recipients of other domains whose answer came meanwhile join
/// it. Entries that are not admitted are counted in `counts`.
fn admit_batch(
    batch: &[&serde_json::value::RawValue],
    first: usize,
    rules: &mut DomainMemo,
    checks: &mut Checks,
    counts: &mut PartCounts,
) -> Vec<Admitted> {
    let mut ready = Vec::with_capacity(batch.len());
    for (i, raw) in batch.iter().enumerate() {
        counts.recipients += 1;
        let (address, recipient) = match request::admit_recipient(raw.get()) {
            Ok(admitted) => admitted,
            Err(reason) => {
                *counts.excluded.entry(reason.to_string()).or_default() += 1;
                continue;
            }
        };
        let key = address.key();
        let admitted = Admitted {
            index: first + i,
            excluded: rules.first_match(&key).map(Screened::by_rule),
            address,
            recipient,
            key,
            typo_of: None,
        };
        if admitted.excluded.is_some() || !checks.any() {
            ready.push(admitted);
        } else if let Some(r) = checks.check(admitted) {
            ready.push(r);
        }
    }
    ready.extend(checks.released());
    ready
}

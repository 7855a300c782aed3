//! The output side of one expansion: screening a batch of admitted
//! recipients in one Redis call, publishing the accepted ones
//! `expander.jobs_per_message` to a lane message, the exclusions and flags
//! as events (one message per kind and batch), all confirmed in a sliding
//! window, and counting everything for the part's counts.

use lapin::Channel;
use mailpipe_common::amqp::{self, ConfirmWindow};
use mailpipe_common::message::{
    in_control_group, message_id, BatchRecipient, Event, EventKind, JobBatch, Lane,
};
use mailpipe_common::quality::QualityCheck;
use mailpipe_state::store::{
    Candidate, PartCounts, ScreenOptions, ScreenVerdict, Screening, Store,
};

use crate::quality::Admitted;
use crate::ExpandError;

/// Where one expansion's lane messages and events go, and what it counted.
pub(crate) struct Outgoing<'a> {
    pub publish: &'a Channel,
    /// The request's part (the lane messages' fields come from it).
    pub template: JobBatch,
    pub part: u32,
    pub control_group: Option<f64>,
    pub screen: ScreenOptions,
    pub exchange: String,
    pub events: String,
    pub lane_key: String,
    pub per_message: usize,
    pub window: ConfirmWindow,
    /// When the expansion started (the events' time).
    pub now: i64,
    /// The accepted recipients not yet published, up to `per_message`.
    pub pending: Option<JobBatch>,
    pub counts: PartCounts,
}

fn broker(e: impl Into<anyhow::Error>) -> ExpandError {
    ExpandError::Broker(e.into())
}

impl Outgoing<'_> {
    fn lane(&self) -> Lane {
        self.template.lane
    }

    /// Screens `batch` and publishes what it accepted, excluded and
    /// flagged; answers the exclusion rules' version that screening saw.
    pub(crate) async fn screen(
        &mut self,
        store: &Store,
        batch: Vec<Admitted>,
    ) -> Result<u64, ExpandError> {
        let candidates = self.candidates(&batch);
        let screening = store
            .screen(&self.template.request, &candidates, &self.screen)
            .await?;
        self.settle(candidates, batch, screening).await
    }

    /// What the screening call is told about each recipient of `batch`.
    pub(crate) fn candidates(&self, batch: &[Admitted]) -> Vec<Candidate> {
        let rid = &self.template.request;
        batch
            .iter()
            .map(|r| Candidate {
                control_group: self
                    .control_group
                    .is_some_and(|share| in_control_group(rid, &r.key, share)),
                address: r.key.clone(),
                position: format!("{}:{}", self.part, r.index),
                message_id: message_id(rid, &r.key),
                excluded: r.excluded.clone(),
            })
            .collect()
    }

    /// Publishes what `screening` accepted of `batch` (told to it as
    /// `candidates`), and the exclusions and flags as events; answers the
    /// exclusion rules' version that screening saw.
    pub(crate) async fn settle(
        &mut self,
        candidates: Vec<Candidate>,
        batch: Vec<Admitted>,
        screening: Screening,
    ) -> Result<u64, ExpandError> {
        let rid = self.template.request.clone();
        let mut excluded = Vec::new();
        let mut flagged = Vec::new();
        let event = |kind, mid: &str, r: &Admitted, reason: &str| Event {
            v: 1,
            event: kind,
            request: rid.clone(),
            message: Some(mid.to_string()),
            recipient: r.address.to_string(),
            campaign: self.template.campaign.clone(),
            reason: Some(reason.to_string()),
            rule: None,
            detail: None,
            at: self.now,
        };
        let mut accepted = Vec::with_capacity(batch.len());
        for ((candidate, r), screened) in candidates.into_iter().zip(batch).zip(screening.verdicts)
        {
            let verdict = screened.verdict;
            if verdict != ScreenVerdict::Accepted {
                *self
                    .counts
                    .excluded
                    .entry(verdict.as_str().to_string())
                    .or_default() += 1;
                if let Some(rule) = &screened.rule {
                    *self.counts.rules.entry(rule.clone()).or_default() += 1;
                }
                if verdict != ScreenVerdict::Duplicate {
                    let detail = (verdict == ScreenVerdict::LikelyTypo)
                        .then(|| r.typo_of.clone())
                        .flatten();
                    excluded.push(Event {
                        rule: screened.rule,
                        detail,
                        ..event(
                            EventKind::Excluded,
                            &candidate.message_id,
                            &r,
                            verdict.as_str(),
                        )
                    });
                }
                continue;
            }
            self.counts.accepted += 1;
            if let Some(provider) = &r.typo_of {
                let check = QualityCheck::LikelyTypo.as_str();
                *self.counts.flagged.entry(check.to_string()).or_default() += 1;
                flagged.push(Event {
                    detail: Some(provider.clone()),
                    ..event(EventKind::Flagged, &candidate.message_id, &r, check)
                });
            }
            accepted.push((candidate.message_id, r));
        }
        for (id, r) in accepted {
            self.push_job(id, r).await?;
        }
        for events in [excluded, flagged] {
            if !events.is_empty() {
                let pending =
                    amqp::publish_events(self.publish, &self.events, &events, self.lane())
                        .await
                        .map_err(broker)?;
                self.window.push(pending).await.map_err(broker)?;
            }
        }
        Ok(screening.rules_version)
    }

    async fn push_job(&mut self, id: String, r: Admitted) -> Result<(), ExpandError> {
        let per_message = self.per_message;
        let template = &self.template;
        let batch = self.pending.get_or_insert_with(|| JobBatch {
            recipients: Vec::with_capacity(per_message),
            ..template.clone()
        });
        batch.recipients.push(BatchRecipient {
            id,
            to: r.address,
            name: r.recipient.name,
            vars: r.recipient.vars,
        });
        if batch.recipients.len() >= per_message {
            self.flush().await?;
        }
        Ok(())
    }

    /// Publishes the pending lane message, if any (its confirm joins the window).
    pub(crate) async fn flush(&mut self) -> Result<(), ExpandError> {
        let Some(batch) = self.pending.take() else {
            return Ok(());
        };
        let id = batch
            .recipients
            .first()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let pending = amqp::publish(
            self.publish,
            &self.exchange,
            &self.lane_key,
            &serde_json::to_vec(&batch).unwrap_or_default(),
            amqp::properties().with_message_id(id.into()),
        )
        .await
        .map_err(broker)?;
        self.window.push(pending).await.map_err(broker)
    }

    /// Waits for every publish so far to be confirmed.
    pub(crate) async fn drain(&mut self) -> Result<(), ExpandError> {
        self.window.drain().await.map_err(broker)
    }

    /// Publishes what is pending and waits for every confirm: the part's
    /// counts can be stored.
    pub(crate) async fn finish(&mut self) -> Result<(), ExpandError> {
        self.flush().await?;
        self.drain().await
    }
}

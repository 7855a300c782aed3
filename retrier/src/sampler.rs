//! The backlog sampler: every `retrier.backlog_interval`, the retrier reads
//! the depth and consumers of every queue (a passive `queue.declare` each),
//! the parking queues of held campaigns, the deferred index and the paused
//! domains, and exports them ([`BacklogSampled`]). Which
//! queues, and what the numbers mean, is decided in
//! `mailpipe_common::backlog`.
//!
//! A failed Redis read is logged and that part of the sample skipped (the
//! gauges keep their last values); a broker error ends the session like any
//! other, since the connection is then gone.

use lapin::Connection;
use mailpipe_common::backlog::{overdue_seconds, sampled_queues, Backlog, Deferred, Paused};
use mailpipe_common::topology::Topology;
use mailpipe_common::unix_now;
use mailpipe_state::policy::Policy;
use mailpipe_state::queue_ops::QueueOps;
use mailpipe_state::store::Store;

use crate::events::{BacklogSampled, RetrierMetrics, PAUSED_DOMAINS_EXPORTED};

/// Most entries of ended messages dropped from the deferred index per sample.
const DEFERRED_CLEANED: usize = 100;

/// Reads one sample and exports it.
pub async fn sample(
    conn: &Connection,
    publish: &lapin::Channel,
    store: &Store,
    topology: &Topology,
    metrics: &RetrierMetrics,
) -> anyhow::Result<()> {
    let ops = QueueOps {
        conn,
        channel: publish,
        store,
        topology,
    };
    let mut b = Backlog::default();
    for q in sampled_queues(topology) {
        let depth = ops.depth(&q.key).await?;
        b.queues.push((q, depth));
    }
    match store.parked().await {
        Ok(parked) => {
            let mut held = 0;
            for request in parked {
                if let Some((n, _)) = ops.depth(&Topology::held_key(&request)).await? {
                    held += n as u64;
                }
            }
            b.held = Some(held);
        }
        Err(e) => tracing::warn!(error = %e, "backlog: cannot list the held campaigns"),
    }
    match store.deferred_head(DEFERRED_CLEANED).await {
        Ok((count, earliest)) => {
            b.deferred = Some(Deferred {
                count,
                overdue_seconds: overdue_seconds(earliest, unix_now()),
            });
        }
        Err(e) => tracing::warn!(error = %e, "backlog: cannot read the deferred index"),
    }
    match Policy::new(store.clone())
        .paused(PAUSED_DOMAINS_EXPORTED)
        .await
    {
        Ok((total, domains)) => {
            b.paused = Some(Paused {
                total,
                domains: domains
                    .into_iter()
                    .map(|d| (d.domain, d.by, d.until_ms / 1000))
                    .collect(),
            });
        }
        Err(e) => tracing::warn!(error = %e, "backlog: cannot read the paused domains"),
    }
    BacklogSampled { backlog: &b }.emit(metrics);
    Ok(())
}

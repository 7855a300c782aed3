//! What the queue and campaign commands share: one connected session.

use anyhow::Context as _;
use lapin::{Channel, Connection};
use mailpipe_common::amqp;
use mailpipe_common::message::Job;
use mailpipe_common::topology::Topology;
use mailpipe_state::queue_ops::QueueOps;
use mailpipe_state::store::Store;

pub use mailpipe_state::queue_ops::{DrainCounts, Fate};

/// The CLI's broker session (`submit` and the commands that move queued
/// messages): connected as `mailpipe-cli`, one channel, the topology declared.
pub async fn broker(ctx: &crate::Context) -> anyhow::Result<(Connection, Channel, Topology)> {
    let conn = amqp::connect_once(&ctx.settings.amqp, "mailpipe-cli")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = amqp::channel(&conn, None).await?;
    let topology = Topology::from_settings(&ctx.settings);
    topology
        .declare(&conn)
        .await
        .context("declaring topology")?;
    Ok((conn, channel, topology))
}

/// A connected operator session.
pub struct Ops {
    pub conn: Connection,
    pub channel: Channel,
    pub store: Store,
    pub topology: Topology,
}

impl Ops {
    pub async fn connect(ctx: &crate::Context) -> anyhow::Result<Self> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let (conn, channel, topology) = broker(ctx).await?;
        Ok(Self {
            conn,
            channel,
            store,
            topology,
        })
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }

    fn ops(&self) -> QueueOps<'_> {
        QueueOps {
            conn: &self.conn,
            channel: &self.channel,
            store: &self.store,
            topology: &self.topology,
        }
    }

    /// Messages ready in a queue and its consumers, `None` if it does not exist.
    pub async fn depth(&self, key: &str) -> anyhow::Result<Option<(u32, u32)>> {
        self.ops().depth(key).await
    }

    /// See [`QueueOps::drain`].
    pub async fn drain<F>(&self, key: &str, decide: F) -> anyhow::Result<DrainCounts>
    where
        F: FnMut(&lapin::message::BasicGetMessage, &[Job]) -> Fate,
    {
        self.ops().drain(key, decide).await
    }

    /// Whether mailpipe knows a request id (its expander recorded it).
    /// Commands that would write state for a request check this first: an
    /// unknown id is an error that writes nothing, so a mistyped or future
    /// id is never cancelled or given records ahead of time.
    pub async fn known_request(&self, id: &str) -> anyhow::Result<bool> {
        Ok(self.store.request_status(id).await?.meta.is_some())
    }

    /// See [`QueueOps::sweep_parked`].
    pub async fn sweep_parked(&self, request: &str) -> anyhow::Result<DrainCounts> {
        self.ops().sweep_parked(request).await
    }

    /// See [`QueueOps::record_removed`].
    pub async fn record_removed(
        &self,
        job: &mailpipe_state::queue_ops::Removed,
        reason: &str,
    ) -> anyhow::Result<bool> {
        self.ops().record_removed(job, reason).await
    }

    /// Routing keys of the send lanes and every delay tier.
    pub fn work_keys(&self) -> Vec<String> {
        self.topology
            .all_keys()
            .into_iter()
            .filter(|k| k.starts_with("send.") || k.starts_with("retry."))
            .collect()
    }
}

/// Refuses a destructive command without `--yes` (exit code 2).
pub fn require_yes(yes: bool, what: &str) -> Option<std::process::ExitCode> {
    if yes {
        None
    } else {
        crate::out::error(&format!("{what} is destructive: add --yes to confirm"));
        Some(std::process::ExitCode::from(2))
    }
}

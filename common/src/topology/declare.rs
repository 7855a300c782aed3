//! Declaring the topology: every queue's arguments (work queues, delay
//! tiers, the archive stream), [`Topology::declare`] and the held
//! campaigns' queues.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use super::Topology;
use crate::archive::Retention;
use crate::message::Lane;

impl Topology {
    /// Declares the queue of a held campaign (durable quorum queue, created
    /// when the first message of the campaign is parked, deleted on release).
    pub async fn declare_held(&self, channel: &Channel, request: &str) -> Result<(), lapin::Error> {
        let key = Self::held_key(request);
        let name = self.queue(&key);
        channel
            .queue_declare(
                ShortString::from(name.clone()),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                with_leader_locator(quorum()),
            )
            .await?;
        self.bind(channel, name, key).await
    }

    /// Binds queue `name` to the work exchange under routing key `key`.
    async fn bind(&self, channel: &Channel, name: String, key: String) -> Result<(), lapin::Error> {
        channel
            .queue_bind(
                name.into(),
                self.exchange().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
    fn work_queue_args(&self) -> FieldTable {
        let mut t = quorum();
        t.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.delivery_limit as i32),
        );
        t.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.exchange())),
        );
        t.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(Self::DEAD)),
        );
        t
    }

    fn tier_args(&self, tier: Duration, lane: Lane) -> FieldTable {
        let mut t = quorum();
        t.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(tier.as_millis() as i64),
        );
        t.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.exchange())),
        );
        t.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(Self::due_key(lane))),
        );
        t.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString(LongString::from("at-least-once")),
        );
        t.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from("reject-publish")),
        );
        t
    }

    fn archive_args(retention: Retention) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("stream")),
        );
        t.insert(
            "x-max-age".into(),
            AMQPValue::LongString(LongString::from(format!("{}s", retention.max_age_secs))),
        );
        t.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(retention.max_bytes.min(i64::MAX as u64) as i64),
        );
        t.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(retention.segment_bytes.min(i64::MAX as u64) as i64),
        );
        t
    }

    /// Every queue [`Self::declare`] declares, by routing key, with its
    /// arguments.
    pub(super) fn queues(&self) -> Vec<(String, FieldTable)> {
        let mut queues: Vec<(String, FieldTable)> = Vec::new();
        queues.push((Self::REQUESTS.into(), self.work_queue_args()));
        for lane in Lane::ALL {
            queues.push((Self::lane_key(lane), self.work_queue_args()));
        }
        queues.push((Self::RETRY.into(), self.work_queue_args()));
        queues.push((Self::FAILED.into(), self.work_queue_args()));
        queues.push((Self::DEAD.into(), quorum()));
        queues.push((Self::AMBIGUOUS.into(), quorum()));
        for tier in &self.tiers {
            for lane in Lane::ALL {
                queues.push((Self::tier_key(*tier, lane), self.tier_args(*tier, lane)));
            }
        }
        if let Some(retention) = self.archive {
            queues.push((Self::ARCHIVE.into(), Self::archive_args(retention)));
        }
        queues
    }

    /// Declares every exchange, queue and binding, on a channel of its own
    /// (closed afterwards). Idempotent: safe to call from every process at
    /// every start and after every reconnect.
    ///
    /// Queues are created with `x-queue-leader-locator: balanced`, so that in
    /// a RabbitMQ cluster their leaders spread over the nodes instead of all
    /// landing on the node the first process reached. Queues created by an
    /// older mailpipe lack the argument and the broker refuses to redeclare
    /// them with it (PRECONDITION_FAILED, which closes the channel): those
    /// are declared as they are, with a warning (`rabbitmq-queues rebalance
    /// quorum` moves their leaders). The archive stream keeps the retention
    /// it was created with: found with other limits, it is used as it is,
    /// with a warning.
    pub async fn declare(&self, conn: &Connection) -> Result<(), lapin::Error> {
        let mut channel = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.events_exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;

        for (key, args) in self.queues() {
            let name = self.queue(&key);
            let stream = key == Self::ARCHIVE;
            match declare_queue(&channel, &name, with_leader_locator(args.clone())).await {
                Ok(()) => {}
                Err(e) if stream && e.to_string().contains("inequivalent arg") => {
                    tracing::warn!(
                        queue = %name,
                        error = %e,
                        "the archive stream exists with other limits than sender.archive's; used as it is (a RabbitMQ policy can lower them)"
                    );
                    channel = use_as_it_is(conn, &name).await?;
                }
                Err(e) if Self::is_tier_key(&key) && e.to_string().contains("inequivalent arg") => {
                    // A tier an older mailpipe created dead-letters bulk
                    // jobs back to send.bulk: still delivered, but behind
                    // the bulk backlog. Its arguments cannot change in
                    // place; an operator drains and deletes it to have it
                    // declared anew.
                    tracing::warn!(
                        queue = %name,
                        error = %e,
                        "delay tier was created with other arguments (by an older mailpipe); used as it is: its retries go back behind the bulk backlog until it is drained and deleted"
                    );
                    channel = use_as_it_is(conn, &name).await?;
                }
                Err(e) if !stream && e.to_string().contains(LEADER_LOCATOR) => {
                    tracing::warn!(
                        queue = %name,
                        "queue was created without a leader locator (by an older mailpipe); declared as it is"
                    );
                    channel = conn.create_channel().await?;
                    declare_queue(&channel, &name, args).await?;
                }
                Err(e) => return Err(e),
            }
            self.bind(&channel, name, key).await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }
}

/// The quorum-queue argument that places a new queue's leader.
const LEADER_LOCATOR: &str = "x-queue-leader-locator";

fn with_leader_locator(mut args: FieldTable) -> FieldTable {
    args.insert(
        LEADER_LOCATOR.into(),
        AMQPValue::LongString(LongString::from("balanced")),
    );
    args
}

/// A queue found with other arguments than mailpipe's (the refusal closed
/// the channel): on a new channel, checks that it exists and uses it as it
/// is.
async fn use_as_it_is(conn: &Connection, name: &str) -> Result<Channel, lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .queue_declare(
            ShortString::from(name.to_string()),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(channel)
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: FieldTable,
) -> Result<(), lapin::Error> {
    channel
        .queue_declare(
            ShortString::from(name.to_string()),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map(|_| ())
}

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    t
}

//! RabbitMQ plumbing shared by every process: connecting with backoff,
//! channels in confirm mode, and publishing that only counts as done when the
//! broker confirmed it.
//!
//! Every publish is persistent (delivery mode 2) and mandatory: a message that
//! no queue would take comes back as [`PublishError::Returned`] instead of
//! vanishing, and a broker Nack is [`PublishError::Nacked`]. Callers ack their
//! input only after [`confirm`] returned `Ok`.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{redact_url, AmqpSettings};

/// Why a publish did not reach a queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("message to {routing_key:?} was unroutable and returned: {reply_code} {reply_text}")]
    Returned {
        routing_key: String,
        reply_code: u16,
        reply_text: String,
    },
    #[error("publisher confirms are not enabled on this channel")]
    NotConfirmed,
}

/// Connects to RabbitMQ, retrying with exponential backoff (capped at 30 s)
/// until it succeeds or `shutdown` fires. Returns `None` on shutdown.
pub async fn connect(
    settings: &AmqpSettings,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let url = settings.url.expose_secret().to_string();
    let mut delay = settings.reconnect_delay;
    loop {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(&url, props).await {
            Ok(conn) => {
                tracing::info!(url = %redact_url(&url), "connected to RabbitMQ");
                return Some(conn);
            }
            Err(e) => {
                tracing::warn!(url = %redact_url(&url), error = %e, retry_in = ?delay, "cannot connect to RabbitMQ");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Connects once, without retrying: for the CLI and tests.
pub async fn connect_once(settings: &AmqpSettings, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(settings.url.expose_secret(), props).await
}

/// Opens a channel with publisher confirms enabled and, if `prefetch` is
/// given, that consumer prefetch applied (it must be re-applied after every
/// reconnect, which is why it lives here).
pub async fn channel(conn: &Connection, prefetch: Option<u16>) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    if let Some(p) = prefetch {
        ch.basic_qos(p, BasicQosOptions::default()).await?;
    }
    Ok(ch)
}

/// Properties of every mailpipe publish: persistent JSON.
pub fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Adds string headers to publish properties.
pub fn with_headers(props: BasicProperties, headers: &[(&str, String)]) -> BasicProperties {
    let mut t = FieldTable::default();
    for (k, v) in headers {
        t.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(v.as_str())),
        );
    }
    props.with_headers(t)
}

/// Reads a string header from a delivery's properties.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Starts a mandatory publish and returns its pending confirmation.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    props: BasicProperties,
) -> Result<PendingConfirm, PublishError> {
    publish_with(channel, exchange, routing_key, payload, props, true).await
}

/// Publishes a delivery event to the events exchange (see [`publish_events`]).
pub async fn publish_event(
    channel: &Channel,
    exchange: &str,
    event: &crate::message::Event,
    lane: crate::message::Lane,
) -> Result<PendingConfirm, PublishError> {
    publish_events(channel, exchange, std::slice::from_ref(event), lane).await
}

/// Publishes delivery events of one kind as one message to the events
/// exchange, routing key `<kind>.<lane>`; the body is a JSON array of the
/// events (a sender publishes the `sent` events of one job message
/// together). Not mandatory: an installation where no application
/// subscribed to events is normal.
pub async fn publish_events(
    channel: &Channel,
    exchange: &str,
    events: &[crate::message::Event],
    lane: crate::message::Lane,
) -> Result<PendingConfirm, PublishError> {
    let kind = events.first().map_or("none", |e| e.event.as_str());
    debug_assert!(events.iter().all(|e| e.event.as_str() == kind));
    let key = format!("{kind}.{}", lane.as_str());
    let payload = serde_json::to_vec(events).unwrap_or_default();
    publish_with(channel, exchange, &key, &payload, properties(), false).await
}

async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    props: BasicProperties,
    mandatory: bool,
) -> Result<PendingConfirm, PublishError> {
    let pc = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            payload,
            props,
        )
        .await?;
    Ok(PendingConfirm {
        routing_key: routing_key.to_string(),
        inner: pc,
    })
}

/// A publish the broker has not confirmed yet.
pub struct PendingConfirm {
    routing_key: String,
    inner: PublisherConfirm,
}

/// Waits for the broker's confirmation; only `Ok` means the message is safely
/// in a queue.
pub async fn confirm(pending: PendingConfirm) -> Result<(), PublishError> {
    let routing_key = pending.routing_key;
    match pending.inner.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(PublishError::Returned {
                routing_key,
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.as_str().to_string(),
            })
        }
        Confirmation::Nack(None) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::NotConfirmed),
    }
}

/// Publishes and waits for the confirmation.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), PublishError> {
    confirm(publish(channel, exchange, routing_key, payload, props).await?).await
}

/// A window of publishes awaiting confirmation: publishing does not stop for
/// each confirm, but never more than `max` are outstanding, and
/// [`drain`](Self::drain) returns only when every one was confirmed.
pub struct ConfirmWindow {
    pending: std::collections::VecDeque<PendingConfirm>,
    max: usize,
}

impl ConfirmWindow {
    pub fn new(max: usize) -> Self {
        Self {
            pending: std::collections::VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Adds a publish; waits for the oldest confirms while the window is full.
    pub async fn push(&mut self, pending: PendingConfirm) -> Result<(), PublishError> {
        self.pending.push_back(pending);
        while self.pending.len() >= self.max {
            if let Some(p) = self.pending.pop_front() {
                confirm(p).await?;
            }
        }
        Ok(())
    }

    /// Waits for every outstanding confirm.
    pub async fn drain(&mut self) -> Result<(), PublishError> {
        while let Some(p) = self.pending.pop_front() {
            confirm(p).await?;
        }
        Ok(())
    }
}

/// Publishes a dead-letter record (confirmed) to the dead-letter queue of
/// the work exchange `exchange`.
pub async fn publish_dead(
    channel: &Channel,
    exchange: &str,
    record: &crate::message::DeadRecord,
) -> Result<(), PublishError> {
    publish_confirmed(
        channel,
        exchange,
        crate::topology::Topology::DEAD,
        &serde_json::to_vec(record).unwrap_or_default(),
        with_headers(
            properties(),
            &[("x-mailpipe-reason", record.reason.clone())],
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_broker_urls_are_understood() {
        let uri: lapin::uri::AMQPUri = "amqps://mailpipe:secret@broker.example:5671/%2f"
            .parse()
            .unwrap();
        assert_eq!(uri.scheme, lapin::uri::AMQPScheme::AMQPS);
        assert_eq!(uri.authority.port, 5671);
    }
}

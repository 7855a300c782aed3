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

/// The order in which to try `n` broker nodes, starting at `start`:
/// every node once, round the ring.
pub fn node_order(n: usize, start: usize) -> Vec<usize> {
    (0..n).map(|i| (start + i) % n.max(1)).collect()
}

/// Where this process starts trying nodes next time: set at random on
/// first use (so the processes of an installation spread over the nodes)
/// and moved past each node used, so that a reconnect after a lost session
/// tries the other nodes before the one that just failed.
static NEXT_NODE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);

fn next_start(n: usize) -> usize {
    use std::sync::atomic::Ordering;
    let mut start = NEXT_NODE.load(Ordering::Relaxed);
    if start == usize::MAX {
        start = uuid::Uuid::new_v4().as_u128() as usize;
    }
    start % n.max(1)
}

fn used_node(i: usize) {
    NEXT_NODE.store(i + 1, std::sync::atomic::Ordering::Relaxed);
}

/// Tries every node of `settings.url` once, in [`node_order`]; the error
/// is the last node's (`None` when no URL is configured).
async fn connect_any(
    settings: &AmqpSettings,
    name: &str,
) -> Result<Connection, Option<lapin::Error>> {
    let urls = settings.node_urls();
    let mut last = None;
    for i in node_order(urls.len(), next_start(urls.len())) {
        let url = &urls[i];
        let props = ConnectionProperties::default().with_connection_name(name.into());
        match Connection::connect(url, props).await {
            Ok(conn) => {
                used_node(i);
                tracing::info!(url = %redact_url(url), "connected to RabbitMQ");
                return Ok(conn);
            }
            Err(e) => {
                tracing::warn!(url = %redact_url(url), error = %e, "cannot connect to RabbitMQ node");
                last = Some(e);
            }
        }
    }
    Err(last)
}

/// Connects to RabbitMQ, trying every node of `amqp.url` (one URL, or
/// several separated by commas for a cluster) in turn, and retrying the
/// round with exponential backoff (capped at 30 s) until one answers or
/// `shutdown` fires. Returns `None` on shutdown.
pub async fn connect(
    settings: &AmqpSettings,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut delay = settings.reconnect_delay;
    loop {
        match connect_any(settings, name).await {
            Ok(conn) => return Some(conn),
            Err(_) => tracing::warn!(retry_in = ?delay, "no RabbitMQ node answers"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Connects once (every node tried once), without retrying: for the CLI
/// and tests. The error names the node, without its password.
pub async fn connect_once(settings: &AmqpSettings, name: &str) -> anyhow::Result<Connection> {
    connect_any(settings, name).await.map_err(|e| {
        let urls: Vec<String> = settings.node_urls().iter().map(|u| redact_url(u)).collect();
        let why = e.map_or_else(|| "amqp.url names no node".to_string(), |e| plain(&e));
        anyhow::anyhow!("cannot connect to RabbitMQ at {}: {why}", urls.join(", "))
    })
}

/// An I/O error's text once: lapin's wraps the same io::Error twice
/// ("Connection refused (os error 111): Connection refused (os error 111)").
fn plain(e: &lapin::Error) -> String {
    said_once(&e.to_string())
}

/// A text made of the same half twice (joined by ": "), as that half.
fn said_once(text: &str) -> String {
    let half = text.len().saturating_sub(2) / 2;
    let doubled = !text.is_empty()
        && text.len() == 2 * half + 2
        && text.get(half..half + 2) == Some(": ")
        && text.get(..half) == text.get(half + 2..);
    if doubled {
        text[..half].to_string()
    } else {
        text.to_string()
    }
}

/// The channels [`channel`] opened, with the connection they belong to (its
/// address), until [`close`] closes them with their connection.
static OPENED: std::sync::Mutex<Vec<(usize, Channel)>> = std::sync::Mutex::new(Vec::new());

fn connection_key(conn: &Connection) -> usize {
    conn as *const Connection as usize
}

/// Opens a channel with publisher confirms enabled and, if `prefetch` is
/// given, that consumer prefetch applied (it must be re-applied after every
/// reconnect, which is why it lives here). [`close`] closes it with its
/// connection.
pub async fn channel(conn: &Connection, prefetch: Option<u16>) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    if let Some(p) = prefetch {
        ch.basic_qos(p, BasicQosOptions::default()).await?;
    }
    OPENED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((connection_key(conn), ch.clone()));
    Ok(ch)
}

/// Closes a connection at the end of its session: first each channel that
/// [`channel`] opened on it and that is still open, then the connection.
///
/// A channel dropped at the end of a session closes itself in the
/// background; closing the connection meanwhile made the client log
/// `ERROR Connection error: invalid channel state: Closing` at every stop,
/// an error where nothing went wrong. Closed one by one, each channel's
/// close is answered before the connection's.
pub async fn close(conn: &Connection, text: &str) {
    let key = connection_key(conn);
    let mine: Vec<Channel> = {
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        let (mine, rest) = std::mem::take(&mut *opened)
            .into_iter()
            .partition(|(k, _)| *k == key);
        *opened = rest;
        mine.into_iter().map(|(_, ch)| ch).collect()
    };
    if conn.status().connected() {
        for ch in mine.iter().filter(|ch| ch.status().connected()) {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                ch.close(200, text.to_string().into()),
            )
            .await;
        }
    }
    drop(mine);
    let _ = conn.close(200, text.to_string().into()).await;
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

/// The poison check: `Some(returned)` when a delivery the broker returned
/// `returned` times without an ack (its `x-delivery-count`) is on its last
/// allowed delivery. The broker dead-letters a message returned
/// `delivery_limit` times (a crash loop) without telling anyone; a consumer
/// that gets `Some` ends the message itself instead, with its terminal
/// records, so its campaign's counts still close.
pub fn poisoned(props: &BasicProperties, delivery_limit: u32) -> Option<u32> {
    let returned = header_str(props, "x-delivery-count")
        .and_then(|c| c.parse::<u32>().ok())
        .unwrap_or(0);
    (returned.saturating_add(1) >= delivery_limit).then_some(returned)
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

/// Publishes a site's change of state to the events exchange (routing key
/// `site.<action>`), as a JSON array of one event like every event message.
pub async fn publish_site_event(
    channel: &Channel,
    exchange: &str,
    event: &crate::message::SiteEvent,
) -> Result<PendingConfirm, PublishError> {
    let key = format!("site.{}", event.action);
    let payload = serde_json::to_vec(&[event]).unwrap_or_default();
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
    use super::*;

    #[test]
    fn a_delivery_is_poison_on_its_last_allowed_delivery() {
        let count = |v: AMQPValue| {
            let mut t = FieldTable::default();
            t.insert("x-delivery-count".into(), v);
            properties().with_headers(t)
        };
        let text = |v: &str| with_headers(properties(), &[("x-delivery-count", v.to_string())]);
        let table = [
            (properties(), 10, None),
            (count(AMQPValue::LongLongInt(8)), 10, None),
            (count(AMQPValue::LongLongInt(9)), 10, Some(9)),
            (count(AMQPValue::LongInt(12)), 10, Some(12)),
            (text("9"), 10, Some(9)),
            (text("not a number"), 10, None),
            // A limit of 1 allows one delivery: the first is the last.
            (properties(), 1, Some(0)),
            (text("4294967295"), 10, Some(u32::MAX)),
        ];
        for (props, limit, want) in table {
            assert_eq!(poisoned(&props, limit), want, "{:?}", props.headers());
        }
    }

    #[test]
    fn tls_broker_urls_are_understood() {
        let uri: lapin::uri::AMQPUri = "amqps://mailpipe:secret@broker.example:5671/%2f"
            .parse()
            .unwrap();
        assert_eq!(uri.scheme, lapin::uri::AMQPScheme::AMQPS);
        assert_eq!(uri.authority.port, 5671);
    }
}

#[cfg(test)]
mod node_tests {
    use super::*;

    #[test]
    fn every_node_is_tried_once_round_the_ring_from_the_start() {
        let table: &[(usize, usize, &[usize])] = &[
            (1, 0, &[0]),
            (1, 7, &[0]),
            (3, 0, &[0, 1, 2]),
            (3, 1, &[1, 2, 0]),
            (3, 2, &[2, 0, 1]),
            (3, 5, &[2, 0, 1]),
            (0, 3, &[]),
        ];
        for (n, start, expected) in table {
            assert_eq!(node_order(*n, *start), *expected, "n={n} start={start}");
        }
    }

    #[test]
    fn the_url_setting_lists_the_nodes_of_a_cluster() {
        let s = AmqpSettings {
            url: secrecy::SecretString::from(" amqp://a:5672/%2f, amqp://b:5672/%2f ,,amqp://c/ "),
            ..Default::default()
        };
        assert_eq!(
            s.node_urls(),
            vec!["amqp://a:5672/%2f", "amqp://b:5672/%2f", "amqp://c/"]
        );
        assert_eq!(AmqpSettings::default().node_urls().len(), 1);
    }

    #[test]
    fn an_error_text_that_repeats_itself_is_said_once() {
        let table = [
            (
                "IO error: Connection refused (os error 111): IO error: Connection refused (os error 111)",
                "IO error: Connection refused (os error 111)",
            ),
            ("Connection refused (os error 111): Connection refused (os error 111)", "Connection refused (os error 111)"),
            ("connection refused", "connection refused"),
            ("ab", "ab"),
            ("", ""),
        ];
        for (text, expected) in table {
            assert_eq!(said_once(text), expected, "{text}");
        }
    }
}

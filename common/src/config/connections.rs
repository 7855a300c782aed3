//! Where the services are: the RabbitMQ broker and the Redis server, and
//! the prefix every queue and key name of an installation starts with.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::values::duration;

/// RabbitMQ connection and naming.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://` or `amqps://` URL, credentials included (redacted in logs).
    /// For a cluster, the URLs of several nodes separated by commas: a
    /// process starts at a random one and moves to the next when a node
    /// does not answer or its session ends.
    pub url: SecretString,
    /// Prefix of every exchange and queue name, so several installations (or
    /// test runs) can share one broker.
    pub prefix: String,
    /// Deliveries after which the broker dead-letters a message that keeps
    /// crashing its consumer (quorum queue `x-delivery-limit`).
    pub delivery_limit: u32,
    /// Delay before reconnecting after the broker went away (doubles up to 30 s).
    #[serde(deserialize_with = "duration")]
    pub reconnect_delay: Duration,
}

impl AmqpSettings {
    /// The broker nodes' URLs (`url` split at commas).
    pub fn node_urls(&self) -> Vec<String> {
        secrecy::ExposeSecret::expose_secret(&self.url)
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "mailpipe".into(),
            delivery_limit: 10,
            reconnect_delay: Duration::from_millis(500),
        }
    }
}

/// Redis connection and key naming.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL (redacted in logs).
    pub url: SecretString,
    /// Prefix of every key mailpipe writes.
    pub prefix: String,
    /// Start against a Redis that keeps nothing across a restart (neither
    /// AOF nor RDB snapshots). Off by default: the workers refuse such a
    /// Redis, because one that forgets its writes forgets which messages
    /// were sent (they would be sent twice) and which recipients are
    /// quarantined. Only for throwaway test and demo instances.
    pub allow_volatile: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379"),
            prefix: "mailpipe".into(),
            allow_volatile: false,
        }
    }
}

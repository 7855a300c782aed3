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
    /// A single Redis: its `redis://` or `rediss://` URL (redacted in
    /// logs). Without it, `sentinel` and `cluster`, mailpipe uses
    /// [`DEFAULT_REDIS_URL`]. Set one of `url`, `sentinel` and `cluster`.
    pub url: Option<SecretString>,
    /// A Redis master watched by Sentinels: mailpipe asks the Sentinels
    /// where the master is, and asks again when the master stops answering
    /// or turns read-only (a failover), without a restart.
    pub sentinel: Option<SentinelSettings>,
    /// A Redis Cluster: mailpipe learns the cluster's nodes and slots from
    /// the seed nodes, sends each command to the master of its key's slot
    /// and follows the cluster through a failover, without a restart.
    pub cluster: Option<ClusterSettings>,
    /// Prefix of every key mailpipe writes. In a cluster the keys start
    /// with it as a hash tag (`{mailpipe}:...`, [`Self::key_prefix`]).
    pub prefix: String,
    /// Start against a Redis that keeps nothing across a restart (neither
    /// AOF nor RDB snapshots). Off by default: the workers refuse such a
    /// Redis, because one that forgets its writes forgets which messages
    /// were sent (they would be sent twice) and which recipients are
    /// quarantined. Only for throwaway test and demo instances.
    pub allow_volatile: bool,
}

/// The Redis a process uses when the configuration names none.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            sentinel: None,
            cluster: None,
            prefix: "mailpipe".into(),
            allow_volatile: false,
        }
    }
}

/// Where the Sentinels are and which master they watch.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelSettings {
    /// The Sentinels, as `host:port` (or `redis://host:port` URLs). Give
    /// several: mailpipe asks the next one when one does not answer. In a
    /// config file a list; in an environment variable one string with
    /// commas (`MAILPIPE__REDIS__SENTINEL__ADDRESSES=s1:26379,s2:26379`).
    #[serde(deserialize_with = "list_or_commas")]
    pub addresses: Vec<String>,
    /// The name the Sentinels know the master by (`sentinel monitor NAME
    /// ...` in their configuration).
    pub master_name: String,
    /// Password of the master and its replicas (their `requirepass`).
    pub password: Option<SecretString>,
    /// Password of the Sentinels themselves, when they require one.
    pub sentinel_password: Option<SecretString>,
    /// TLS to the Sentinels and to the master.
    pub tls: bool,
}

/// Where a Redis Cluster is.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Seed nodes, as `host:port` or `redis://` / `rediss://` URLs (a
    /// password in a URL is redacted in logs): mailpipe asks them for the
    /// cluster's nodes and slots, so a few are enough, and any one that
    /// answers will do. In a config file a list; in an environment
    /// variable one string with commas
    /// (`MAILPIPE__REDIS__CLUSTER__NODES=redis-0:6379,redis-1:6379`).
    #[serde(deserialize_with = "list_or_commas")]
    pub nodes: Vec<String>,
    /// Password of the cluster's nodes (their `requirepass`), when the
    /// seed URLs do not carry it.
    pub password: Option<SecretString>,
}

/// Which Redis deployment the settings describe, once checked
/// ([`RedisSettings::topology`]).
#[derive(Debug, Clone)]
pub enum RedisTopology {
    /// One Redis at this URL.
    Single { url: SecretString },
    /// A master found through Sentinels.
    Sentinel(SentinelSettings),
    /// A Redis Cluster, found through its seed nodes.
    Cluster(ClusterSettings),
}

impl RedisSettings {
    /// The deployment these settings name, or why they name none: more
    /// than one of `url`, `sentinel` and `cluster` is refused (which one
    /// would be meant?), as is a Sentinel section without addresses or
    /// master name, or a cluster section without nodes.
    pub fn topology(&self) -> Result<RedisTopology, String> {
        let set: Vec<&str> = [
            ("redis.url", self.url.is_some()),
            ("redis.sentinel", self.sentinel.is_some()),
            ("redis.cluster", self.cluster.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if set.len() > 1 {
            return Err(format!(
                "{} are all set: set redis.url for a single Redis, redis.sentinel (addresses and master_name) for a master watched by Sentinels, or redis.cluster (nodes) for a Redis Cluster, only one of them",
                set.join(" and ")
            ));
        }
        if let Some(c) = &self.cluster {
            if c.nodes.is_empty() {
                return Err(
                    "redis.cluster.nodes is empty: name at least one node of the cluster (host:port)"
                        .into(),
                );
            }
            return Ok(RedisTopology::Cluster(c.clone()));
        }
        match (&self.url, &self.sentinel) {
            (Some(url), _) => Ok(RedisTopology::Single { url: url.clone() }),
            (None, None) => Ok(RedisTopology::Single {
                url: SecretString::from(DEFAULT_REDIS_URL),
            }),
            (None, Some(s)) if s.addresses.is_empty() => {
                Err("redis.sentinel.addresses is empty: name at least one Sentinel (host:port)".into())
            }
            (None, Some(s)) if s.master_name.trim().is_empty() => Err(
                "redis.sentinel.master_name is empty: give the name the Sentinels monitor the master by".into(),
            ),
            (None, Some(s)) => Ok(RedisTopology::Sentinel(s.clone())),
        }
    }

    /// What every key name starts with: `prefix`, and in a cluster
    /// `{prefix}`, a hash tag that keeps every key of mailpipe in one hash
    /// slot, so that each script and pipeline, whose keys span key
    /// families, runs on one node as it does on a single Redis. A prefix
    /// that holds a hash tag of its own (`{mp}`, `mp{eu}`) is kept as it is.
    pub fn key_prefix(&self) -> String {
        if self.cluster.is_none() || has_hash_tag(&self.prefix) {
            return self.prefix.clone();
        }
        format!("{{{}}}", self.prefix)
    }

    /// Where Redis is, for logs: the URL with its password hidden, or the
    /// master name and the Sentinels.
    pub fn describe(&self) -> String {
        match self.topology() {
            Ok(RedisTopology::Single { url }) => {
                super::redact_url(secrecy::ExposeSecret::expose_secret(&url))
            }
            Ok(RedisTopology::Sentinel(s)) => format!(
                "master {:?} through Sentinels {}",
                s.master_name,
                s.addresses
                    .iter()
                    .map(|a| super::redact_url(a))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Ok(RedisTopology::Cluster(c)) => format!(
                "Redis Cluster through {}",
                c.nodes
                    .iter()
                    .map(|a| super::redact_url(a))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Err(e) => format!("(invalid: {e})"),
        }
    }
}

/// Whether Redis Cluster reads a hash tag in `key`: a `{` followed later by
/// a `}` with at least one character between them.
pub fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// A list from a config file's sequence, or from one string split at
/// commas (how an environment variable gives a list).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let items = match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::Text(t) => t.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(addresses: &[&str], master_name: &str) -> SentinelSettings {
        SentinelSettings {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            master_name: master_name.into(),
            ..Default::default()
        }
    }

    fn cluster(nodes: &[&str]) -> Option<ClusterSettings> {
        Some(ClusterSettings {
            nodes: nodes.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })
    }

    #[test]
    fn redis_settings_name_one_topology_or_say_why_not() {
        let url = || Some(SecretString::from("redis://cache:6379"));
        let good = || Some(sentinel(&["s1:26379", "s2:26379"], "mymaster"));
        let nodes = || cluster(&["r0:6379", "r1:6379"]);
        // (url, sentinel, cluster, Ok(topology kind) or a word of the error)
        let table: Vec<(_, _, _, Result<&str, &str>)> = vec![
            (None, None, None, Ok("single redis://127.0.0.1:6379")),
            (url(), None, None, Ok("single redis://cache:6379")),
            (None, good(), None, Ok("sentinel mymaster")),
            (None, None, nodes(), Ok("cluster r0:6379,r1:6379")),
            (
                url(),
                good(),
                None,
                Err("redis.url and redis.sentinel are all set"),
            ),
            (
                url(),
                None,
                nodes(),
                Err("redis.url and redis.cluster are all set"),
            ),
            (None, good(), nodes(), Err("only one of them")),
            (None, None, cluster(&[]), Err("cluster.nodes is empty")),
            (
                None,
                Some(sentinel(&[], "mymaster")),
                None,
                Err("addresses is empty"),
            ),
            (
                None,
                Some(sentinel(&["s1:26379"], " ")),
                None,
                Err("master_name is empty"),
            ),
        ];
        for (url, sentinel, cluster, expected) in table {
            let s = RedisSettings {
                url,
                sentinel,
                cluster,
                ..Default::default()
            };
            let got = s.topology().map(|t| match t {
                RedisTopology::Single { url } => {
                    format!("single {}", secrecy::ExposeSecret::expose_secret(&url))
                }
                RedisTopology::Sentinel(s) => format!("sentinel {}", s.master_name),
                RedisTopology::Cluster(c) => format!("cluster {}", c.nodes.join(",")),
            });
            match (expected, got) {
                (Ok(want), Ok(got)) => assert_eq!(got, want),
                (Err(word), Err(e)) => assert!(e.contains(word), "{e:?} lacks {word:?}"),
                (want, got) => panic!("expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn in_a_cluster_every_key_starts_with_the_prefix_as_a_hash_tag() {
        // (prefix, cluster, what keys start with)
        let table = [
            ("mailpipe", false, "mailpipe"),
            ("mailpipe", true, "{mailpipe}"),
            ("{mp}", true, "{mp}"),
            ("mp{eu}", true, "mp{eu}"),
            // `{}` is no hash tag: Redis would hash the whole key.
            ("mp{}", true, "{mp{}}"),
            ("{mp}", false, "{mp}"),
        ];
        for (prefix, in_cluster, expected) in table {
            let s = RedisSettings {
                prefix: prefix.into(),
                cluster: if in_cluster {
                    cluster(&["r0:6379"])
                } else {
                    None
                },
                ..Default::default()
            };
            assert_eq!(s.key_prefix(), expected, "{prefix} {in_cluster}");
        }
    }

    #[test]
    fn cluster_nodes_are_a_list_or_one_string_with_commas() {
        let from_yaml = |yaml: &str| -> RedisSettings { serde_yaml::from_str(yaml).unwrap() };
        for yaml in [
            "cluster:\n  nodes: [r0:6379, ' redis://r1:6379']\n",
            "cluster:\n  nodes: 'r0:6379, redis://r1:6379,'\n",
        ] {
            let c = from_yaml(yaml).cluster.unwrap();
            assert_eq!(c.nodes, ["r0:6379", "redis://r1:6379"], "{yaml}");
        }
    }

    #[test]
    fn sentinel_addresses_are_a_list_or_one_string_with_commas() {
        let from_yaml = |yaml: &str| -> RedisSettings { serde_yaml::from_str(yaml).unwrap() };
        for yaml in [
            "sentinel:\n  addresses: [s1:26379, ' s2:26379']\n  master_name: m\n",
            "sentinel:\n  addresses: 's1:26379, s2:26379,'\n  master_name: m\n",
        ] {
            let s = from_yaml(yaml).sentinel.unwrap();
            assert_eq!(s.addresses, ["s1:26379", "s2:26379"], "{yaml}");
        }
    }

    #[test]
    fn a_sentinel_description_hides_passwords() {
        let s = RedisSettings {
            sentinel: Some(sentinel(&["redis://:pw@s1:26379", "s2:26379"], "m")),
            ..Default::default()
        };
        let text = s.describe();
        assert!(!text.contains("pw"), "{text}");
        assert!(
            text.contains("s2:26379") && text.contains("\"m\""),
            "{text}"
        );
    }

    #[test]
    fn a_cluster_description_hides_passwords() {
        let s = RedisSettings {
            cluster: cluster(&["redis://:pw@r0:6379", "r1:6379"]),
            ..Default::default()
        };
        let text = s.describe();
        assert!(!text.contains("pw"), "{text}");
        assert!(
            text.contains("Redis Cluster") && text.contains("r0:6379") && text.contains("r1:6379"),
            "{text}"
        );
    }
}

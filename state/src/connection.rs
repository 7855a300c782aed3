//! How every mailpipe process opens Redis: [`open`] reads `redis.url`,
//! `redis.sentinel` or `redis.cluster` and returns one [`RedisConnection`],
//! which the store ([`crate::store::Store`]), and through it the workers
//! and the CLI, use for every command.
//!
//! * **A single Redis** (`redis.url`): the client's own `ConnectionManager`,
//!   one multiplexed connection that reconnects to the same address.
//! * **A master watched by Sentinels** (`redis.sentinel`): the client's
//!   `SentinelClient` asks the Sentinels where the master is and checks
//!   with `ROLE` that it is one; commands go over one multiplexed
//!   connection to it. The client has no reconnecting connection over
//!   Sentinel, so this module keeps that one connection and replaces it:
//!   when a command fails the way a lost or demoted master fails (the
//!   connection dropped or timed out, or a write answered `READONLY` or
//!   `MASTERDOWN`, [`calls_for_new_master`]), one background task asks the
//!   Sentinels again, with backoff, until they name a master that answers;
//!   then the following commands go there. The same search starts when a
//!   Sentinel announces `+switch-master` for our master (a failover that
//!   left the old master running gives no error until the Sentinels
//!   demote it). After a failover the workers find the new master by
//!   themselves, without a restart.
//! * **A Redis Cluster** (`redis.cluster`): the client's own
//!   `cluster_async::ClusterConnection`, which learns the slots from the
//!   seed nodes, sends each command to the master of its key's slot,
//!   follows `MOVED` and `ASK`, and finds the new master after a failover
//!   (it reloads the slots when a node stops answering). Every key name
//!   starts with the prefix as a hash tag (`{mailpipe}:...`,
//!   `RedisSettings::key_prefix`), so all of mailpipe's keys share one
//!   slot: each script and pipeline, whose keys span key families (a
//!   request's counters, its messages' records, a domain's rate), runs on
//!   one node as on a single Redis. Commands without a key (`SCAN`,
//!   `INFO`, `CONFIG GET`, `PING`, `TIME`, `DBSIZE`) go to the master of
//!   that slot too, the node that holds the keys ([`KEYLESS_TO_TAG`]). The
//!   cluster gives failover without Sentinels, not yet capacity: one master
//!   serves all of mailpipe's keys (spreading them needs every call's keys
//!   tagged by request, domain or address instead, see `store/mod.rs`).
//!
//! Over Sentinels, as with `ConnectionManager`, the command that met the
//! failure returns its error (it is not sent again: it may have been
//! applied), and so do the commands sent before the new master is found:
//! the callers' own retries (a lane message rejected and redelivered, a
//! readiness probe that fails meanwhile) cover the gap, as they do while a
//! single Redis restarts.
//!
//! Unlike the other two, the cluster client sends a command again when its
//! connection dropped or failed before the reply (its own retries, which
//! also carry a command across a failover): a command may then be applied
//! twice. The writes that count are guarded against that as against a
//! redelivered message (a terminal record is counted by the `SET NX` that
//! creates it, screening is replay-safe, a lease taken again by its owner
//! is its own); an attempt count or a rate's place can be taken twice.
//!
//! Nothing here changes what a command does or how many round trips it
//! takes; a single Redis goes straight to its `ConnectionManager`.
//!
//! A node of a Redis Cluster named as a single Redis (`redis.url`) is
//! refused when opened ([`CLUSTER_REFUSAL`]): commands for keys in other
//! nodes' slots would fail with `MOVED`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsMode, Value,
};
use secrecy::ExposeSecret;

use crate::config::{ClusterSettings, RedisSettings, RedisTopology, SentinelSettings};

/// Longest wait to connect to a Redis or a Sentinel, and for a reply.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait between two searches for the master (the first waits
/// [`FIRST_SEARCH_DELAY`], each next one twice as long).
const MAX_SEARCH_DELAY: Duration = Duration::from_secs(2);
const FIRST_SEARCH_DELAY: Duration = Duration::from_millis(100);

/// A connection to mailpipe's Redis: cheap to clone (clones share one
/// multiplexed connection), and it reconnects by itself, following the
/// master through a failover when Sentinels watch it.
#[derive(Clone)]
pub struct RedisConnection(Link);

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelLink>),
    Cluster(ClusterLink),
}

/// A Redis Cluster connection and the slot of mailpipe's hash tag.
#[derive(Clone)]
struct ClusterLink {
    conn: ClusterConnection,
    /// The master of the slot every key of mailpipe is in (the prefix's
    /// hash tag): where commands without a key go.
    tag_master: Route,
}

/// Commands without a key that a cluster connection sends to the master of
/// mailpipe's slot, where its keys are: a key walk (`SCAN`) must walk them,
/// and the persistence check (`CONFIG GET`, `INFO`) must read the node that
/// keeps them. Left to the client, `SCAN` would go to a node at random and
/// `INFO` to every master, answered as one map.
pub const KEYLESS_TO_TAG: [&str; 6] = ["SCAN", "INFO", "CONFIG", "PING", "TIME", "DBSIZE"];

/// The connection to the master Sentinels named last, and what is needed
/// to ask them again.
struct SentinelLink {
    /// The current master's connection. A std mutex: held only to clone or
    /// replace it, never across an await.
    master: Mutex<MultiplexedConnection>,
    /// A search for the master is running (at most one at a time).
    searching: AtomicBool,
    /// The Sentinels. A tokio mutex: a search holds it across its awaits.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// Timeouts of the connections to the master.
    config: redis::AsyncConnectionConfig,
    master_name: String,
}

/// Opens Redis as the settings say: fails fast when Redis (or every
/// Sentinel, or the master they name) does not answer; callers retry.
pub async fn open(settings: &RedisSettings) -> RedisResult<RedisConnection> {
    let topology = settings
        .topology()
        .map_err(|e| RedisError::from((ErrorKind::InvalidClientConfig, "redis settings", e)))?;
    let mut conn = match topology {
        RedisTopology::Single { url } => open_single(url.expose_secret()).await?,
        RedisTopology::Sentinel(s) => open_sentinel(&s).await?,
        RedisTopology::Cluster(c) => return open_cluster(&c, &settings.key_prefix()).await,
    };
    refuse_cluster(&mut conn).await?;
    Ok(conn)
}

/// Fails with a configuration error (the kind a retry does not mend) when
/// the server named as a single Redis or a Sentinel master is a node of a
/// Redis Cluster: its keys' slots are spread over the cluster's masters,
/// and without the cluster's client commands for the other nodes' slots
/// fail (`MOVED`). Without this a worker would start and fail on its first
/// calls, over and over. A server that does not answer `INFO cluster`
/// (renamed on some managed services) is taken as what it was configured
/// as.
async fn refuse_cluster(conn: &mut RedisConnection) -> RedisResult<()> {
    let Ok(info) = redis::cmd("INFO")
        .arg("cluster")
        .query_async::<String>(conn)
        .await
    else {
        return Ok(());
    };
    if cluster_enabled(&info) {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "unsupported Redis",
            CLUSTER_REFUSAL.to_string(),
        )));
    }
    Ok(())
}

/// Why a process refuses a Redis Cluster node named as a single Redis when
/// [`open`] meets one.
pub const CLUSTER_REFUSAL: &str = "this Redis is a node of a Redis Cluster (INFO cluster: \
     cluster_enabled:1), named as a single Redis: name the cluster's nodes in redis.cluster.nodes \
     instead of redis.url (or redis.sentinel)";

/// Whether an `INFO cluster` answer says the server runs in cluster mode
/// (`cluster_enabled:1`).
pub fn cluster_enabled(info: &str) -> bool {
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .any(|(k, v)| k == "cluster_enabled" && v.trim() == "1")
}

fn nodelay() -> redis::io::tcp::TcpSettings {
    // Nagle off: many small requests share one multiplexed connection, and
    // none should wait for the ACK of the one before.
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

async fn open_single(url: &str) -> RedisResult<RedisConnection> {
    let info = url.into_connection_info()?.set_tcp_settings(nodelay());
    let client = redis::Client::open(info)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_max_delay(Duration::from_secs(2));
    let manager = client.get_connection_manager_with_config(config).await?;
    Ok(RedisConnection(Link::Single(manager)))
}

async fn open_cluster(c: &ClusterSettings, key_prefix: &str) -> RedisResult<RedisConnection> {
    let mut nodes = Vec::with_capacity(c.nodes.len());
    for node in &c.nodes {
        let addr = sentinel_address(node, false)
            .map_err(|e| RedisError::from((ErrorKind::InvalidClientConfig, "cluster node", e)))?;
        // A URL keeps what it says beyond the address (a password, TLS).
        let info = if node.contains("://") {
            node.trim().into_connection_info()?
        } else {
            addr.into_connection_info()?
        };
        nodes.push(info);
    }
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .tcp_settings(nodelay());
    if let Some(pw) = &c.password {
        builder = builder.password(pw.expose_secret());
    }
    let conn = builder.build()?.get_async_connection().await?;
    Ok(RedisConnection(Link::Cluster(ClusterLink {
        conn,
        tag_master: Route::with_key(key_prefix.as_bytes(), SlotAddr::Master),
    })))
}

/// Whether a cluster connection sends `cmd` to the master of mailpipe's
/// slot ([`KEYLESS_TO_TAG`]) rather than where the client would.
fn goes_to_tag_master(cmd: &Cmd) -> bool {
    let Some(redis::Arg::Simple(name)) = cmd.args_iter().next() else {
        return false;
    };
    KEYLESS_TO_TAG
        .iter()
        .any(|k| k.as_bytes().eq_ignore_ascii_case(name))
}

async fn open_sentinel(s: &SentinelSettings) -> RedisResult<RedisConnection> {
    let mut sentinels = Vec::with_capacity(s.addresses.len());
    for address in &s.addresses {
        let info = sentinel_address(address, s.tls)
            .map_err(|e| RedisError::from((ErrorKind::InvalidClientConfig, "sentinel", e)))?
            .into_connection_info()?
            .set_tcp_settings(nodelay());
        let info = match &s.sentinel_password {
            Some(pw) => {
                let redis = info
                    .redis_settings()
                    .clone()
                    .set_password(pw.expose_secret());
                info.set_redis_settings(redis)
            }
            None => info,
        };
        sentinels.push(info);
    }
    let mut master = RedisConnectionInfo::default();
    if let Some(pw) = &s.password {
        master = master.set_password(pw.expose_secret());
    }
    let mut node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(master)
        .set_tcp_settings(nodelay());
    if s.tls {
        node = node.set_tls_mode(TlsMode::Secure);
    }
    let mut client = SentinelClient::build(
        sentinels,
        s.master_name.clone(),
        Some(node),
        SentinelServerType::Master,
    )?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let master = find_master(&mut client, &config).await?;
    let link = Arc::new(SentinelLink {
        master: Mutex::new(master),
        searching: AtomicBool::new(false),
        sentinels: tokio::sync::Mutex::new(client),
        config,
        master_name: s.master_name.clone(),
    });
    watch_switches(Arc::downgrade(&link));
    Ok(RedisConnection(Link::Sentinel(link)))
}

/// Listens to the Sentinels' `+switch-master` announcements and looks for
/// the master as soon as one names ours. A failover that leaves the old
/// master running (`SENTINEL FAILOVER`, a partition that heals) gives no
/// error until the Sentinels demote it, which can take them many seconds;
/// writes accepted by it meanwhile are lost when it turns replica. Ends
/// once no one holds the connection.
fn watch_switches(link: std::sync::Weak<SentinelLink>) {
    tokio::spawn(async move {
        use futures_lite::StreamExt as _;
        loop {
            let subscribed = async {
                let client = {
                    let link = link.upgrade()?;
                    let mut sentinels = link.sentinels.lock().await;
                    tokio::time::timeout(TIMEOUT, sentinels.async_get_sentinel_client())
                        .await
                        .ok()?
                        .ok()?
                };
                let mut pubsub = tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
                    .await
                    .ok()?
                    .ok()?;
                pubsub.subscribe("+switch-master").await.ok()?;
                Some(pubsub.into_on_message())
            }
            .await;
            if let Some(mut messages) = subscribed {
                loop {
                    match tokio::time::timeout(TIMEOUT, messages.next()).await {
                        // Quiet: check that someone still holds the link.
                        Err(_) => {}
                        Ok(Some(msg)) => {
                            let text: String = msg.get_payload().unwrap_or_default();
                            let Some(link) = link.upgrade() else { return };
                            if switch_names(&text, &link.master_name) {
                                link.search_master(&RedisError::from((
                                    ErrorKind::Io,
                                    "the Sentinels announced a new master",
                                    text,
                                )));
                            }
                        }
                        // The Sentinel went away: subscribe to another.
                        Ok(None) => break,
                    }
                    if link.strong_count() == 0 {
                        return;
                    }
                }
            }
            if link.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(MAX_SEARCH_DELAY).await;
        }
    });
}

/// Whether a `+switch-master` announcement (`name old-ip old-port new-ip
/// new-port`) is about the master named `name`.
pub fn switch_names(announcement: &str, name: &str) -> bool {
    announcement.split_whitespace().next() == Some(name)
}

/// Asks the Sentinels for the master (the client checks with `ROLE` that
/// the node it names is one) and connects to it.
async fn find_master(
    sentinels: &mut SentinelClient,
    config: &redis::AsyncConnectionConfig,
) -> RedisResult<MultiplexedConnection> {
    match tokio::time::timeout(
        TIMEOUT * 2,
        sentinels.get_async_connection_with_config(config),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(RedisError::from((
            ErrorKind::Io,
            "no master found through the Sentinels in time",
        ))),
    }
}

/// A Sentinel's address as the client takes it: `host:port` (`[v6]:port`)
/// or a `redis://` / `rediss://` URL (whose own scheme wins over `tls`).
pub fn sentinel_address(text: &str, tls: bool) -> Result<ConnectionAddr, String> {
    let text = text.trim();
    if text.contains("://") {
        let info = text
            .into_connection_info()
            .map_err(|e| format!("Sentinel address {text:?}: {e}"))?;
        return Ok(info.addr().clone());
    }
    let bad = || format!("Sentinel address {text:?} is not host:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(if tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    })
}

/// Whether a failed command says the connection no longer reaches a
/// master: it dropped, timed out or could not be made (the master died or
/// is cut off), or a write met a replica (`READONLY`: the old master came
/// back demoted) or a replica that lost its master (`MASTERDOWN`).
pub fn calls_for_new_master(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
        || matches!(error.code(), Some("READONLY" | "MASTERDOWN"))
}

/// The same for a reply that carries errors inside it (a pipeline's or a
/// transaction's items are answered one by one).
pub fn reply_calls_for_new_master(reply: &Value) -> bool {
    match reply {
        Value::ServerError(e) => matches!(e.code(), "READONLY" | "MASTERDOWN"),
        Value::Array(items) => items.iter().any(reply_calls_for_new_master),
        _ => false,
    }
}

impl SentinelLink {
    fn current(&self) -> MultiplexedConnection {
        self.master.lock().expect("master connection lock").clone()
    }

    async fn connect_master(&self) -> RedisResult<MultiplexedConnection> {
        let mut sentinels = self.sentinels.lock().await;
        find_master(&mut sentinels, &self.config).await
    }

    /// Looks for the master in the background, unless a search runs
    /// already; retries with backoff until a master answers, or until no
    /// one holds this connection any more.
    fn search_master(self: &Arc<Self>, why: &RedisError) {
        if self.searching.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            master = %self.master_name,
            error = %why,
            "Redis master lost; asking the Sentinels where it is"
        );
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let mut delay = FIRST_SEARCH_DELAY;
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                match link.connect_master().await {
                    Ok(conn) => {
                        *link.master.lock().expect("master connection lock") = conn;
                        tracing::info!(
                            master = %link.master_name,
                            attempts,
                            "connected to the Redis master the Sentinels name"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(master = %link.master_name, error = %e, retry_in = ?delay, "no Redis master yet");
                    }
                }
                if Arc::strong_count(&link) == 1 {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_SEARCH_DELAY);
            }
            link.searching.store(false, Ordering::Release);
        });
    }

    /// What a command's outcome says about the master, acted upon.
    fn watch<T>(self: &Arc<Self>, result: &RedisResult<T>, reply_says: impl Fn(&T) -> bool) {
        match result {
            Err(e) if calls_for_new_master(e) => self.search_master(e),
            Ok(reply) if reply_says(reply) => self.search_master(&RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "a reply said the node is no longer the master",
            ))),
            _ => {}
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => {
                if goes_to_tag_master(cmd) {
                    let to = SingleNodeRoutingInfo::SpecificNode(c.tag_master);
                    Box::pin(
                        c.conn
                            .route_command(cmd.clone(), RoutingInfo::SingleNode(to)),
                    )
                } else {
                    c.conn.req_packed_command(cmd)
                }
            }
            Link::Sentinel(link) => Box::pin(async move {
                let mut conn = link.current();
                let result = conn.req_packed_command(cmd).await;
                link.watch(&result, reply_calls_for_new_master);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Link::Single(c) => c.req_packed_commands(pipeline, offset, count),
            // Routed by its first key (all of mailpipe's keys share a slot).
            Link::Cluster(c) => c.conn.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(link) => Box::pin(async move {
                let mut conn = link.current();
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                link.watch(&result, |items: &Vec<Value>| {
                    items.iter().any(reply_calls_for_new_master)
                });
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Link::Single(c) => c.get_db(),
            Link::Sentinel(_) | Link::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(wire: &str) -> RedisError {
        redis::parse_redis_value(wire.as_bytes())
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn a_cluster_sends_keyless_commands_to_the_master_of_the_prefix_slot() {
        // (command, to the tag's master)
        let table = [
            (redis::cmd("SCAN").arg(0).clone(), true),
            (redis::cmd("info").arg("persistence").clone(), true),
            (redis::cmd("CONFIG").arg("GET").arg("save").clone(), true),
            (redis::cmd("PING"), true),
            (redis::cmd("TIME"), true),
            (redis::cmd("DBSIZE"), true),
            (redis::cmd("GET").arg("{mailpipe}:x").clone(), false),
            (
                redis::cmd("EVALSHA")
                    .arg("abc")
                    .arg(1)
                    .arg("{mailpipe}:x")
                    .clone(),
                false,
            ),
            (
                redis::cmd("SCRIPT").arg("LOAD").arg("return 1").clone(),
                false,
            ),
        ];
        for (cmd, expected) in table {
            assert_eq!(goes_to_tag_master(&cmd), expected, "{cmd:?}");
        }
    }

    #[test]
    fn only_a_server_in_cluster_mode_is_a_cluster_node() {
        for (info, cluster) in [
            ("# Cluster\r\ncluster_enabled:1\r\n", true),
            ("# Cluster\r\ncluster_enabled:0\r\n", false),
            ("# Cluster\r\n", false),
            ("", false),
        ] {
            assert_eq!(cluster_enabled(info), cluster, "{info:?}");
        }
    }

    #[test]
    fn a_lost_or_demoted_master_is_looked_for_again_and_other_errors_are_not() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "x"));
        // (error, look for the master again)
        let table = [
            (io(std::io::ErrorKind::ConnectionRefused), true),
            (io(std::io::ErrorKind::ConnectionReset), true),
            (io(std::io::ErrorKind::BrokenPipe), true),
            (io(std::io::ErrorKind::TimedOut), true),
            (RedisError::from((ErrorKind::Io, "driver terminated")), true),
            (
                server_error("-READONLY You can't write against a read only replica.\r\n"),
                true,
            ),
            (
                server_error("-MASTERDOWN Link with MASTER is down\r\n"),
                true,
            ),
            (server_error("-ERR wrong number of arguments\r\n"), false),
            (server_error("-NOSCRIPT No matching script\r\n"), false),
            (
                server_error("-BUSY Redis is busy running a script\r\n"),
                false,
            ),
            (
                server_error(
                    "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                ),
                false,
            ),
            (
                RedisError::from((ErrorKind::UnexpectedReturnType, "not an integer")),
                false,
            ),
        ];
        for (error, expected) in table {
            assert_eq!(calls_for_new_master(&error), expected, "{error:?}");
        }
    }

    #[test]
    fn errors_inside_a_pipeline_reply_are_seen() {
        let readonly = redis::parse_redis_value(b"-READONLY no\r\n").unwrap();
        let other = redis::parse_redis_value(b"-ERR no\r\n").unwrap();
        assert!(reply_calls_for_new_master(&readonly));
        assert!(!reply_calls_for_new_master(&other));
        assert!(reply_calls_for_new_master(&Value::Array(vec![
            Value::Okay,
            readonly
        ])));
        assert!(!reply_calls_for_new_master(&Value::Array(vec![
            Value::Int(1),
            other
        ])));
    }

    #[test]
    fn a_switch_announcement_is_matched_by_master_name() {
        let text = "mymaster 10.0.0.1 6379 10.0.0.2 6379";
        assert!(switch_names(text, "mymaster"));
        assert!(!switch_names(text, "mymaster2"));
        assert!(!switch_names(text, "my"));
        assert!(!switch_names("", "mymaster"));
    }

    #[test]
    fn sentinel_addresses_are_host_port_or_urls() {
        let tcp = |h: &str, p| Ok(ConnectionAddr::Tcp(h.into(), p));
        // (text, tls, address)
        let table = [
            ("sentinel-0:26379", false, tcp("sentinel-0", 26379)),
            (" 10.0.0.7:26379 ", false, tcp("10.0.0.7", 26379)),
            ("[::1]:26380", false, tcp("::1", 26380)),
            ("redis://s1:26379", true, tcp("s1", 26379)),
        ];
        for (text, tls, expected) in table {
            assert_eq!(sentinel_address(text, tls), expected, "{text}");
        }
        assert!(matches!(
            sentinel_address("s1:26379", true),
            Ok(ConnectionAddr::TcpTls { ref host, port: 26379, insecure: false, .. }) if host == "s1"
        ));
        for bad in ["sentinel-0", "s1:port", ":26379", "s1:0", "s1:70000"] {
            assert!(sentinel_address(bad, false).is_err(), "{bad}");
        }
    }
}

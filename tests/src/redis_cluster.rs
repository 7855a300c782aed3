//! A Redis Cluster of the test's own: three masters with one replica each,
//! on free loopback ports (`pipeline::redis_cluster`).
//!
//! Every node is `redis-server --cluster-enabled yes` with its cluster bus
//! on a port of its own (`--cluster-port`, taken from [`free_port`] like
//! the client port: the default, port + 10000, may be anyone's), in its own
//! process group, with its files (`nodes.conf`, append-only file, log) in
//! one temporary directory. `redis-cli --cluster create ...
//! --cluster-replicas 1` joins them and assigns the slots; [`RedisCluster`]
//! returns once every node says `cluster_state:ok`, and kills every node
//! with SIGKILL when dropped, also when the test panics.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::faults::{tail, REDIS_TIMEOUT};
use crate::free_port;
use crate::sentinel::command;

/// How long a node may not answer before the others call it failed
/// (production clusters wait 15 s).
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Masters, and replicas per master.
const MASTERS: usize = 3;
const REPLICAS: usize = 1;

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Three masters and their replicas, the slots spread over the masters.
pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node
    /// says it is ok, with three masters and a replica each.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailpipe-redis-cluster-")
            .tempdir()
            .expect("temp dir for the Redis Cluster");
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
        };
        for _ in 0..MASTERS * (1 + REPLICAS) {
            cluster.launch();
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &REPLICAS.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create (apt-get install redis-tools)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}\n{}\n{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr),
            cluster.log_tail()
        );
        cluster.wait(
            "the cluster to be ok on every node",
            Duration::from_secs(30),
            |c| {
                c.nodes.iter().all(|n| {
                    let info = c.cluster_info(n.port);
                    info.iter().any(|l| l == "cluster_state:ok")
                        && info.iter().any(|l| *l == format!("cluster_size:{MASTERS}"))
                        && info.iter().any(|l| {
                            *l == format!("cluster_known_nodes:{}", MASTERS * (1 + REPLICAS))
                        })
                })
            },
        );
        // A replica counts once it holds its master's data: a failover to
        // one that has not synchronized yet would start from nothing.
        cluster.wait(
            "every replica to be in sync with its master",
            Duration::from_secs(30),
            |c| {
                let linked = c.nodes.iter().filter(|n| {
                    command(n.port, &["INFO", "replication"])
                        .unwrap_or_default()
                        .iter()
                        .any(|l| l.trim() == "master_link_status:up")
                });
                linked.count() == MASTERS * REPLICAS
            },
        );
        cluster
    }

    fn launch(&mut self) {
        let port = free_port();
        let bus = free_port();
        let d = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&d).expect("node dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &bus.to_string()])
            .args(["--cluster-config-file", "nodes.conf"])
            .args([
                "--cluster-node-timeout",
                &NODE_TIMEOUT.as_millis().to_string(),
            ])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            // Replicas synchronize at once instead of waiting 5 s for
            // other replicas to share the transfer.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&d)
            .arg("--logfile")
            .arg(d.join("redis.log"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        self.nodes.push(Node {
            port,
            child: Some(child),
        });
        self.wait(
            &format!("127.0.0.1:{port} to answer PING"),
            REDIS_TIMEOUT,
            |_| {
                command(port, &["PING"])
                    .is_some_and(|r| r.first().map(String::as_str) == Some("+PONG"))
            },
        );
    }

    /// The lines of `CLUSTER INFO` of the node on `port` (none when it
    /// does not answer).
    fn cluster_info(&self, port: u16) -> Vec<String> {
        command(port, &["CLUSTER", "INFO"])
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// Waits for `done`, at most `timeout`; panics with the logs if it
    /// does not come or a node exits meanwhile.
    fn wait(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !done(self) {
            let exited = self.nodes.iter_mut().find_map(|n| {
                let status = n.child.as_mut()?.try_wait().ok()??;
                Some(format!("node on port {} exited ({status})", n.port))
            });
            if let Some(exited) = exited {
                panic!("{exited} while waiting for {what}:\n{}", self.log_tail());
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The number of keys of every node (`DBSIZE`), `None` for a node
    /// that does not answer.
    pub fn dbsizes(&self) -> Vec<Option<i64>> {
        self.nodes
            .iter()
            .map(|n| {
                command(n.port, &["DBSIZE"])?
                    .first()?
                    .strip_prefix(':')?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// `redis://127.0.0.1:PORT` of the first node.
    pub fn first_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    /// Every node as `127.0.0.1:PORT`, as `redis.cluster.nodes` takes them.
    pub fn seed_nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        self.live_ports()
            .into_iter()
            .find_map(|port| {
                command(port, &["CLUSTER", "KEYSLOT", key])?
                    .first()?
                    .strip_prefix(':')?
                    .parse()
                    .ok()
            })
            .expect("a node answers CLUSTER KEYSLOT")
    }

    /// The port of the master that serves `slot`, as the live nodes see it
    /// (`CLUSTER NODES`; a master flagged `fail` serves nothing); `None`
    /// while no node names one.
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        self.live_ports().into_iter().find_map(|port| {
            command(port, &["CLUSTER", "NODES"])?
                .iter()
                .find_map(|line| serving_master(line, slot))
        })
    }

    /// Kills the node on `port` with SIGKILL (no shutdown, no last save).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of the cluster");
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until a node other than `old` serves `slot` as master and the
    /// live nodes say the cluster is ok; returns its port.
    pub fn wait_promoted(&mut self, slot: u16, old: u16, timeout: Duration) -> u16 {
        self.wait("a replica to be promoted", timeout, |c| {
            c.master_of(slot).is_some_and(|p| p != old)
                && c.live_ports()
                    .into_iter()
                    .all(|p| c.cluster_info(p).iter().any(|l| l == "cluster_state:ok"))
        });
        self.master_of(slot).expect("a master after the promotion")
    }

    /// The ports of the nodes not killed.
    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The end of every node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out += &format!(
                "--- node {}\n{}\n",
                n.port,
                tail(
                    &self.dir.path().join(n.port.to_string()).join("redis.log"),
                    10
                )
            );
        }
        out
    }
}

/// The port of the node a `CLUSTER NODES` line describes, when it is a
/// master not flagged as failed whose slot ranges hold `slot`.
fn serving_master(line: &str, slot: u16) -> Option<u16> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = fields.get(2)?;
    if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
        return None;
    }
    let serves = fields.iter().skip(8).any(|range| {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
    });
    if !serves {
        return None;
    }
    let address = fields.get(1)?;
    let address = address.split('@').next()?;
    address.rsplit_once(':')?.1.parse().ok()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cluster_nodes_line_names_the_master_that_serves_a_slot() {
        let line = |flags: &str, slots: &str| {
            format!("07c3 127.0.0.1:30004@31004 {flags} - 0 1426238317239 4 connected {slots}")
        };
        // (flags, slots, slot, serving port)
        let table = [
            ("master", "0-5460", 100, Some(30004)),
            ("myself,master", "0-5460 10000", 10000, Some(30004)),
            ("master", "0-5460", 5461, None),
            ("master,fail", "0-5460", 100, None),
            ("slave", "", 100, None),
        ];
        for (flags, slots, slot, expected) in table {
            assert_eq!(
                super::serving_master(&line(flags, slots), slot),
                expected,
                "{flags} {slots} {slot}"
            );
        }
    }
}

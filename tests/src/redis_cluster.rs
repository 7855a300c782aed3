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

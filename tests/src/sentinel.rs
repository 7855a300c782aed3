//! A Redis master, one replica and three Sentinels of the test's own, on
//! free loopback ports, for the failover scenario (`pipeline::sentinel`).
//!
//! Every process is `redis-server` (a Sentinel is `redis-server FILE
//! --sentinel`, so no `redis-sentinel` package is needed), runs in its own
//! process group, and keeps its files (configuration, logs, the master's
//! append-only file) in one temporary directory. [`SentinelSet`] kills
//! them all with SIGKILL when dropped, also when the test panics.
//!
//! The Sentinels are quick: the master is declared down after
//! [`DOWN_AFTER`] without an answer, and a failover that stalls is tried
//! again after [`FAILOVER_TIMEOUT`] (production Sentinels wait 30 s and
//! 3 min).
//!
//! The master runs with an append-only file, the replica with no
//! persistence at all: a worker that read the replica's persistence
//! settings instead of the master's would refuse to start. (In production
//! give replicas the master's persistence: after a failover the replica
//! is the master.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::faults::{tail, REDIS_TIMEOUT};
use crate::free_port;

/// How long the Sentinels wait for an answer before they call the master
/// down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// How long a failover may stall before the Sentinels try another.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(4000);

/// The name the Sentinels monitor the master by.
pub const MASTER_NAME: &str = "mailpipe-test";

/// One `redis-server` process of the set.
struct Node {
    port: u16,
    role: &'static str,
    child: Option<Child>,
}

/// A master, a replica and three Sentinels (quorum 2).
pub struct SentinelSet {
    dir: tempfile::TempDir,
    /// `[0]` the first master, `[1]` its replica.
    servers: Vec<Node>,
    sentinels: Vec<Node>,
}

/// Sends one command over RESP and reads the reply as text lines (enough
/// for `PING`, `INFO`, `SENTINEL ...`): the harness has no Redis client of
/// its own in synchronous code.
pub fn command(port: u16, args: &[&str]) -> Option<Vec<String>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut wire = format!("*{}\r\n", args.len());
    for a in args {
        wire.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(wire.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut out = Vec::new();
    read_reply(&mut r, &mut out)?;
    Some(out)
}

fn read_reply(r: &mut impl BufRead, out: &mut Vec<String>) -> Option<()> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end().to_string();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | "-" | ":" => out.push(line),
        "$" => {
            let n: i64 = rest.parse().ok()?;
            if n >= 0 {
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(r, &mut buf).ok()?;
                out.extend(
                    String::from_utf8_lossy(&buf[..n as usize])
                        .lines()
                        .map(str::to_string),
                );
            }
        }
        "*" => {
            let n: i64 = rest.parse().ok()?;
            for _ in 0..n.max(0) {
                read_reply(r, out)?;
            }
        }
        _ => return None,
    }
    Some(())
}

impl SentinelSet {
    /// Starts the master, its replica (in sync before this returns) and
    /// three Sentinels that know each other and the replica.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailpipe-sentinel-")
            .tempdir()
            .expect("temp dir for the Sentinel set");
        let mut set = Self {
            dir,
            servers: Vec::new(),
            sentinels: Vec::new(),
        };
        let master = free_port();
        set.launch_server(master, "master", &["--appendonly", "yes"]);
        let replica = free_port();
        let master_port = master.to_string();
        set.launch_server(
            replica,
            "replica",
            &[
                "--appendonly",
                "no",
                "--replicaof",
                "127.0.0.1",
                &master_port,
            ],
        );
        set.wait(
            "the replica to sync with the master",
            Duration::from_secs(20),
            |s| s.info_field(replica, "master_link_status").as_deref() == Some("up"),
        );
        for _ in 0..3 {
            set.launch_sentinel(master);
        }
        set.wait(
            "the Sentinels to know each other and the replica",
            Duration::from_secs(30),
            |s| {
                s.sentinels.iter().all(|n| {
                    let fields = s.master_state(n.port);
                    fields.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && fields.get("num-slaves").map(String::as_str) == Some("1")
                })
            },
        );
        set
    }

    fn launch_server(&mut self, port: u16, role: &'static str, extra: &[&str]) {
        let d = self.dir.path().join(format!("{role}-{port}"));
        std::fs::create_dir_all(&d).expect("server dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(&d)
            .arg("--logfile")
            .arg(d.join("redis.log"))
            .args(extra)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        self.servers.push(Node {
            port,
            role,
            child: Some(child),
        });
        self.wait_ping(port);
    }

    fn launch_sentinel(&mut self, master: u16) {
        let port = free_port();
        let conf = self.dir.path().join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel-{port}.log\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {down}\n\
                 sentinel failover-timeout {MASTER_NAME} {failover}\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = self.dir.path().display(),
                down = DOWN_AFTER.as_millis(),
                failover = FAILOVER_TIMEOUT.as_millis(),
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server --sentinel");
        self.sentinels.push(Node {
            port,
            role: "sentinel",
            child: Some(child),
        });
        self.wait_ping(port);
    }

    fn wait_ping(&mut self, port: u16) {
        self.wait(
            &format!("127.0.0.1:{port} to answer PING"),
            REDIS_TIMEOUT,
            |_| {
                command(port, &["PING"])
                    .is_some_and(|r| r.first().map(String::as_str) == Some("+PONG"))
            },
        );
    }

    /// Waits for `done`, at most `timeout`; panics with the logs if it
    /// does not come.
    fn wait(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !done(self) {
            let exited = self
                .servers
                .iter_mut()
                .chain(self.sentinels.iter_mut())
                .find_map(|n| {
                    let status = n.child.as_mut()?.try_wait().ok()??;
                    Some(format!("{} on port {} exited ({status})", n.role, n.port))
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

    /// A field of `INFO replication` of the server on `port`.
    fn info_field(&self, port: u16, name: &str) -> Option<String> {
        command(port, &["INFO", "replication"])?
            .iter()
            .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.trim().to_string()))
    }

    /// What a Sentinel says of the master (`SENTINEL MASTER name`), as
    /// field → value.
    fn master_state(&self, sentinel: u16) -> std::collections::BTreeMap<String, String> {
        let reply = command(sentinel, &["SENTINEL", "MASTER", MASTER_NAME]).unwrap_or_default();
        reply
            .chunks(2)
            .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
            .collect()
    }

    /// The Sentinels' addresses, `127.0.0.1:PORT`, as `redis.sentinel.addresses`
    /// takes them.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The master's port as the first Sentinel that answers names it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|n| {
            let reply = command(
                n.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            )?;
            reply.get(1)?.parse().ok()
        })
    }

    /// Kills the current master with SIGKILL (no shutdown, no final
    /// fsync); returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("the Sentinels name a master");
        let node = self
            .servers
            .iter_mut()
            .find(|n| n.port == port)
            .expect("the master is one of the set's servers");
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        port
    }

    /// Asks a Sentinel for a failover while the master is healthy
    /// (`SENTINEL FAILOVER`): the replica is promoted and the old master,
    /// still running, becomes its replica and answers writes with
    /// `READONLY`. Returns the old master's port.
    pub fn manual_failover(&mut self) -> u16 {
        let old = self.master_port().expect("the Sentinels name a master");
        let reply = command(
            self.sentinels[0].port,
            &["SENTINEL", "FAILOVER", MASTER_NAME],
        );
        assert_eq!(
            reply.as_deref().and_then(|r| r.first()).map(String::as_str),
            Some("+OK"),
            "SENTINEL FAILOVER: {reply:?}\n{}",
            self.log_tail()
        );
        old
    }

    /// What `INFO replication` of the server on `port` says its role is.
    pub fn role(&self, port: u16) -> Option<String> {
        self.info_field(port, "role")
    }

    /// Waits until the Sentinels name a master other than `old` and it
    /// says it is one; returns its port.
    pub fn wait_failover(&mut self, old: u16, timeout: Duration) -> u16 {
        self.wait("the Sentinels to fail over", timeout, |s| {
            s.master_port()
                .is_some_and(|p| p != old && s.info_field(p, "role").as_deref() == Some("master"))
        });
        self.master_port().expect("a master after the failover")
    }

    /// The end of every log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        let d = self.dir.path();
        for n in &self.servers {
            out += &format!(
                "--- {} {}\n{}\n",
                n.role,
                n.port,
                tail(
                    &d.join(format!("{}-{}", n.role, n.port)).join("redis.log"),
                    10
                )
            );
        }
        for n in &self.sentinels {
            out += &format!(
                "--- sentinel {}\n{}\n",
                n.port,
                tail(&d.join(format!("sentinel-{}.log", n.port)), 15)
            );
        }
        out
    }

    /// The set's directory (configurations and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        for n in self.servers.iter_mut().chain(self.sentinels.iter_mut()) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

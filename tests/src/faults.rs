//! Fault injection for the integration tests (private broker and Redis instances).
//! Crashes, restarts, outages and hostile input lose nothing.
//!
//! The machine's own RabbitMQ (5672) and Redis (6379) are shared by every
//! test and must never be restarted by one, so the scenarios that take a
//! service away run their own:
//!
//! * [`PrivateRabbit`] — a second RabbitMQ node (`mp-<random>@localhost`) on
//!   free ports, with its data, logs and configuration in a temporary
//!   directory. [`restart`](PrivateRabbit::restart) keeps the data directory,
//!   so durable quorum queues and the messages in them survive, as they do
//!   when a production broker restarts. Starting a node takes about 4–5 s
//!   on the 2-core CI machine (measured); every wait is bounded by
//!   [`RABBIT_START_TIMEOUT`].
//! * [`PrivateRedis`] — a `redis-server` on a free port with an append-only
//!   file in a temporary directory, so a restart keeps every key.
//! * [`WorkerProcess`] — a worker binary run as a real process with the
//!   pipeline's environment, which a test can send SIGTERM (graceful stop)
//!   or SIGKILL, and whose exit status and log it can read.
//!
//! Plug the private services into a pipeline through its settings (the
//! worker processes get them through [`TestPipeline::env`], which exports
//! `MAILPIPE__AMQP__URL` and `MAILPIPE__REDIS__URL`):
//!
//! ```no_run
//! # async fn f() {
//! use mailpipe_tests::faults::{PrivateRabbit, PrivateRedis};
//! use mailpipe_tests::{SmtpSink, TestPipeline, Workers};
//! use secrecy::SecretString;
//! let rabbit = PrivateRabbit::start();
//! let redis = PrivateRedis::start();
//! let p = TestPipeline::spawn_with(SmtpSink::start(), Workers::ALL, |s| {
//!     s.amqp.url = SecretString::from(rabbit.url());
//!     s.redis.url = Some(SecretString::from(redis.url()));
//! })
//! .await;
//! # }
//! ```
//!
//! Everything here is synchronous (it waits for processes); from an async
//! test call it inside `tokio::task::block_in_place` so the in-process
//! workers keep running on the runtime's other thread.
//!
//! Over 500 lines: the private broker and Redis and the faults they take,
//! kept together.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mailpipe_state::store::RequestStatus;

use crate::{binary, free_port, TestPipeline};

/// Longest wait for a RabbitMQ node to start or stop. A node starts in
/// 4–5 s here; a loaded CI machine may need several times that.
pub const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for a Redis server to start (loading its append-only file)
/// or to stop.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a command and returns its output; `None` when it could not run.
fn run(cmd: &mut Command) -> Option<std::process::Output> {
    cmd.stdin(Stdio::null()).output().ok()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u"))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// uid and gid of a system user, if it exists.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = run(Command::new("id").args([flag, user]))?;
        if !o.status.success() {
            return None;
        }
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Sends a signal to a process (or, with a negative id, to a process
/// group) through kill(1): the test crate has no libc dependency.
fn signal(pid: i64, sig: &str) -> bool {
    run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(pid.to_string()))
    .map(|o| o.status.success())
    .unwrap_or(false)
}

/// Waits for a child to exit, at most `timeout`.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => return None,
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The last `n` lines of a text file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn first_existing(candidates: &[&str], name: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

// ---------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------

/// A RabbitMQ node of the test's own, next to (never instead of) the
/// machine's node on 5672.
///
/// How it is run, and why:
///
/// * Debian's `/usr/sbin/rabbitmq-server` and `rabbitmqctl`, run as root,
///   switch to the `rabbitmq` user (`su rabbitmq`), whose `HOME` is
///   `/var/lib/rabbitmq`: the system node and the CLI both use
///   `/var/lib/rabbitmq/.erlang.cookie`. This node does the same without the
///   wrapper: as root, `/usr/lib/rabbitmq/bin/rabbitmq-server` and
///   `rabbitmqctl` run as the `rabbitmq` user with `HOME=/var/lib/rabbitmq`,
///   so it shares the system's cookie and `rabbitmqctl -n NODE` reaches it.
///   As another user, both run as that user with its own `~/.erlang.cookie`.
/// * Node name, AMQP port, distribution port, data (`RABBITMQ_MNESIA_BASE`),
///   logs, `rabbitmq.conf`, `enabled_plugins` (none: no management listener
///   to collide with) and the env file (`RABBITMQ_CONF_ENV_FILE`, empty, so
///   `/etc/rabbitmq/rabbitmq-env.conf`'s `NODENAME` does not apply) are all
///   the node's own. It registers with the machine's epmd under its unique
///   name.
/// * The server runs in its own process group, so [`kill`](Self::kill) and
///   `Drop` end the shell wrapper and `beam.smp` together, by group id.
pub struct PrivateRabbit {
    /// Erlang node name, `mp-<random>@localhost`.
    pub node: String,
    /// AMQP port on 127.0.0.1.
    pub port: u16,
    /// Erlang distribution port.
    pub dist_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `(uid, gid)` to run the server and CLI as (root only).
    run_as: Option<(u32, u32)>,
    /// How long the last start took, until the node answered.
    pub last_start: Duration,
}

impl PrivateRabbit {
    fn server_path() -> PathBuf {
        first_existing(
            &["/usr/lib/rabbitmq/bin/rabbitmq-server"],
            "rabbitmq-server",
        )
    }

    fn ctl_path() -> PathBuf {
        first_existing(&["/usr/lib/rabbitmq/bin/rabbitmqctl"], "rabbitmqctl")
    }

    /// Starts a fresh node on free ports; returns once it accepts AMQP
    /// connections and `rabbitmqctl await_startup` agrees.
    pub fn start() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = tempfile::Builder::new()
            .prefix("mailpipe-rabbit-")
            .tempdir()
            .expect("temp dir for the private RabbitMQ node");
        let run_as = if is_root() {
            Some(user_ids("rabbitmq").expect(
                "running as root, the private node runs as the `rabbitmq` user, which does not exist",
            ))
        } else {
            None
        };
        let mut rabbit = Self {
            node: format!("mp-{}@localhost", &id[..10]),
            port: free_port(),
            dist_port: free_port(),
            dir,
            child: None,
            run_as,
            last_start: Duration::ZERO,
        };
        rabbit.write_files();
        rabbit.launch();
        rabbit
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` (guest may log in from
    /// loopback only, which is where the tests are).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's temporary directory (data in `mnesia/`, logs in `log/`,
    /// the server's console output in `server.out`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of the node's console output and log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node));
        format!(
            "--- server.out\n{}\n--- {}\n{}",
            tail(&self.dir.path().join("server.out"), 20),
            log.display(),
            tail(&log, 30)
        )
    }

    fn write_files(&self) {
        let d = self.dir.path();
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(d.join(sub)).expect("node dirs");
        }
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\nloopback_users.guest = true\n",
                self.port
            ),
        )
        .expect("rabbitmq.conf");
        std::fs::write(d.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        std::fs::write(d.join("rabbitmq-env.conf"), "").expect("rabbitmq-env.conf");
        if let Some((uid, gid)) = self.run_as {
            for p in [
                d.to_path_buf(),
                d.join("mnesia"),
                d.join("log"),
                d.join("rabbitmq.conf"),
                d.join("enabled_plugins"),
                d.join("rabbitmq-env.conf"),
            ] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown node files");
            }
        }
    }

    /// Environment shared by the server and the CLI.
    fn apply_env(&self, cmd: &mut Command) {
        let d = self.dir.path();
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", "/var/lib/rabbitmq");
        }
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                d.join("advanced.config.absent"),
            )
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .current_dir(d);
    }

    /// Runs `rabbitmqctl -n NODE <args>`; returns whether it succeeded and
    /// what it printed.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(Self::ctl_path());
        self.apply_env(&mut cmd);
        cmd.arg("-n").arg(&self.node).args(args);
        match run(&mut cmd) {
            Some(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            ),
            None => (false, "rabbitmqctl could not run".into()),
        }
    }

    fn launch(&mut self) {
        let started = Instant::now();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.out"))
            .expect("server.out");
        let mut cmd = Command::new(Self::server_path());
        self.apply_env(&mut cmd);
        cmd.env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("server.out"))
        .stderr(out);
        self.child = Some(cmd.spawn().expect("start rabbitmq-server"));
        while !port_open(self.port) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "private RabbitMQ node {} exited during start ({status}):\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < RABBIT_START_TIMEOUT,
                "private RabbitMQ node {} did not open port {} within {RABBIT_START_TIMEOUT:?}:\n{}",
                self.node,
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (ok, out) = self.ctl(&[
            "await_startup",
            "--timeout",
            &RABBIT_START_TIMEOUT.as_secs().to_string(),
        ]);
        assert!(
            ok,
            "rabbitmqctl await_startup failed: {out}\n{}",
            self.log_tail()
        );
        self.last_start = started.elapsed();
        eprintln!(
            "private RabbitMQ {} up on 127.0.0.1:{} in {:.1?}",
            self.node, self.port, self.last_start
        );
    }

    /// Whether the node's server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the node gracefully (`rabbitmqctl stop`: clients get a
    /// connection.close, queues are shut down cleanly); kills it if it is
    /// still running after [`RABBIT_START_TIMEOUT`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let (ok, out) = self.ctl(&["stop"]);
        if !ok {
            eprintln!("rabbitmqctl stop failed ({out}); killing the node");
        }
        if wait_timeout(&mut child, RABBIT_START_TIMEOUT).is_none() {
            eprintln!(
                "private RabbitMQ {} still running after stop; killing it",
                self.node
            );
            signal(-(child.id() as i64), "KILL");
            let _ = child.wait();
        }
        self.wait_port_closed();
    }

    /// Kills the node with SIGKILL (a crash: no clean shutdown of queues).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(-(child.id() as i64), "KILL");
            let _ = child.wait();
        }
        self.wait_port_closed();
    }

    fn wait_port_closed(&self) {
        let start = Instant::now();
        while port_open(self.port) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the node again on the same ports and data directory, after a
    /// [`stop`](Self::stop) or [`kill`](Self::kill) (or stops it first).
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.launch();
    }

    /// [`stop`](Self::stop) then start on the same data directory: durable
    /// quorum queues and the messages in them survive.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(-(child.id() as i64), "KILL");
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// A Redis server of the test's own on a free loopback port.
///
/// It runs with `--appendonly yes` in a temporary directory, and
/// [`stop`](Self::stop) sends SIGTERM, on which Redis fsyncs the append-only
/// file before exiting: a [`restart`](Self::restart) finds every key again.
/// This matters: the sender's idempotency rests on Redis (the sent record
/// of each message and the lease taken before the SMTP transaction). A Redis
/// that loses its data on restart (the machine's own runs with
/// `--appendonly no --save ""`) would forget which messages were sent, and
/// every redelivered message would be sent again. mailpipe expects a
/// persistent Redis; this is one ([`start_volatile`](Self::start_volatile)
/// starts one that is not, which the workers refuse).
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `--appendonly yes` (else no persistence at all: `--appendonly no
    /// --save ""`).
    persistent: bool,
    /// More `redis-server` arguments, e.g. `--rename-command CONFIG ""`.
    extra_args: Vec<String>,
}

impl PrivateRedis {
    /// Starts a server; returns once it answers PING.
    pub fn start() -> Self {
        Self::start_with(true, &[])
    }

    /// Starts a server that keeps nothing across a restart (neither AOF nor
    /// RDB), as the workers must refuse unless `redis.allow_volatile`.
    pub fn start_volatile() -> Self {
        Self::start_with(false, &[])
    }

    /// Starts a server with or without its append-only file, and with more
    /// `redis-server` arguments.
    pub fn start_with(persistent: bool, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mailpipe-redis-")
            .tempdir()
            .expect("temp dir for the private Redis");
        let mut r = Self {
            port: free_port(),
            dir,
            child: None,
            persistent,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        r.launch();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The end of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("redis.log"), 20)
    }

    fn launch(&mut self) {
        let started = Instant::now();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.persistent { "yes" } else { "no" }])
            .args(["--appendfsync", "everysec"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(["--daemonize", "no"])
            .args(&self.extra_args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        self.child = Some(child);
        loop {
            if self.ping() {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "private Redis exited during start ({status}):\n{}",
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < REDIS_TIMEOUT,
                "private Redis did not answer PING within {REDIS_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether the server answers `PING` with `+PONG` (not `-LOADING`).
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Stops the server gracefully (SIGTERM: the append-only file is
    /// fsynced); kills it if it is still running after [`REDIS_TIMEOUT`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id() as i64, "TERM");
            if wait_timeout(&mut child, REDIS_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let start = Instant::now();
        while port_open(self.port) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops and starts the server on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts the server again after [`stop`](Self::stop).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.launch();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Worker processes
// ---------------------------------------------------------------------------

/// A worker binary run as a process with a pipeline's environment
/// ([`TestPipeline::env`]), its standard error kept in a file
/// ([`log`](Self::log)). Unlike [`TestPipeline::spawn_process`], the test
/// holds the process: it can send SIGTERM and read the exit status. Killed
/// on drop.
pub struct WorkerProcess {
    pub name: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: tempfile::NamedTempFile,
}

impl WorkerProcess {
    /// Starts `binary_name` (e.g. `mailpipe-sender`) with the pipeline's
    /// environment plus `extra` variables. Logs at `info` unless `RUST_LOG`
    /// says otherwise.
    pub fn spawn(p: &TestPipeline, binary_name: &str, extra: &[(&str, &str)]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut cmd = Command::new(binary(binary_name));
        cmd.envs(p.env())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"));
        let child = cmd.spawn().expect("spawn worker process");
        Self {
            name: binary_name.to_string(),
            child: Some(child),
            status: None,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM (what Kubernetes sends at a pod's termination).
    pub fn sigterm(&self) {
        assert!(
            signal(self.pid() as i64, "TERM"),
            "cannot send SIGTERM to {}",
            self.pid()
        );
    }

    /// Waits for the process to exit; `None` if it is still running after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = wait_timeout(c, timeout);
            }
        }
        self.status
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.status.get_or_insert(s);
            }
        }
    }

    /// Everything the process wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The last `n` lines of its standard error.
    pub fn log_tail(&self, n: usize) -> String {
        tail(self.log.path(), n)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Small helpers shared by the scenarios
// ---------------------------------------------------------------------------

/// Status code of a GET on loopback (`mailpipe_tests::http_get` returns the
/// body only); `None` when nothing answers.
pub async fn http_status(addr: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Recipients that received more than one message, with their counts.
pub fn duplicates(per_recipient: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    per_recipient
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(r, n)| (r.clone(), *n))
        .collect()
}

/// Extra copies received in all (a recipient with 3 messages counts 2).
pub fn duplicate_count(per_recipient: &BTreeMap<String, usize>) -> usize {
    per_recipient.values().map(|n| n.saturating_sub(1)).sum()
}

/// The verdict of an outage scenario: every valid recipient received,
/// nothing else, Redis agrees, and no more than `allowed_duplicates` extra
/// copies in all (0, or the transactions in flight when a failover may drop
/// the last writes). Prints the duplicates first so a failing run still
/// reports them.
pub fn check_delivered(
    scenario: &str,
    per: &BTreeMap<String, usize>,
    valid: &BTreeSet<String>,
    status: &RequestStatus,
    started: Instant,
    allowed_duplicates: usize,
) {
    let dups = duplicates(per);
    let extra = duplicate_count(per);
    let missing: Vec<&String> = valid.iter().filter(|a| !per.contains_key(*a)).collect();
    let unexpected: Vec<&String> = per.keys().filter(|a| !valid.contains(*a)).collect();
    eprintln!(
        "[{scenario}] {} recipients, {} received, {extra} duplicate(s) {dups:?} (allowed: \
         {allowed_duplicates}), {} missing, sent={} dead={:?}, took {:.1?}",
        valid.len(),
        per.len(),
        missing.len(),
        status.sent,
        status.dead,
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "[{scenario}] {} recipient(s) never received their message, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        unexpected.is_empty(),
        "[{scenario}] mail for unexpected recipients: {unexpected:?}"
    );
    assert!(
        extra <= allowed_duplicates,
        "[{scenario}] {} recipient(s) received more than one message ({extra} extra, \
         {allowed_duplicates} allowed): {dups:?}",
        dups.len()
    );
    assert_eq!(status.sent, valid.len() as u64, "[{scenario}] status.sent");
    assert!(
        status.dead.is_empty(),
        "[{scenario}] dead: {:?}",
        status.dead
    );
    assert_eq!(status.pending, 0, "[{scenario}] pending");
}

/// Publishes a raw body (confirmed) to the pipeline's work exchange with
/// `routing_key`, e.g. `send.bulk` or `failed`: what a buggy or hostile
/// producer could put into a queue mailpipe consumes.
pub async fn publish_raw(p: &TestPipeline, routing_key: &str, body: &[u8]) {
    use mailpipe_common::amqp;
    let conn = crate::connect_amqp(&p.settings.amqp, "test-raw-publisher").await;
    let ch = amqp::channel(&conn, None).await.expect("channel");
    amqp::publish_confirmed(
        &ch,
        &p.topology.exchange(),
        routing_key,
        body,
        amqp::properties(),
    )
    .await
    .expect("publish confirmed");
    let _ = conn.close(200, "ok".into()).await;
}

/// Runs blocking fault-injection code (process starts and stops) without
/// stalling the in-process workers: they keep the runtime's other thread.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

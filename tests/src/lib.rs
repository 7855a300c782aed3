//! Test harness for mailpipe's integration tests.
//!
//! [`TestPipeline::spawn`] starts a whole pipeline against the real RabbitMQ
//! and Redis on localhost and a real SMTP server (Postfix's `smtp-sink`,
//! writing every message it accepts to a file), isolated from every other
//! test by a random queue and key prefix and its own SMTP port. Workers run
//! in-process through the same `run_until_stopped` the binaries call, or as
//! real processes when a test needs to kill one.
//!
//! Depended upon by every test in `tests/tests/`; keep helpers here, not in
//! the scenarios.
//!
//! Over 500 lines: the whole harness (`TestPipeline` and its helpers) is one
//! file that every scenario reads.

pub mod certs;
pub mod dns;
pub mod dovecot;
pub mod faults;
pub mod postfix;
pub mod providers;
pub mod redis_cluster;
pub mod scripted;
pub mod sentinel;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use mailpipe_common::amqp;
use mailpipe_common::config::Settings;
use mailpipe_common::topology::Topology;
use mailpipe_state::store::{RequestStatus, Store};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A declaration that only asks whether a queue exists (and its counts).
const PASSIVE: QueueDeclareOptions = QueueDeclareOptions {
    passive: true,
    durable: false,
    exclusive: false,
    auto_delete: false,
    nowait: false,
};

/// A loopback port that is free, and that no other test of this machine
/// is handed for the next [`PORT_CLAIM`].
///
/// Asking the kernel for port 0 and closing the socket is not enough: the
/// kernel may hand the same port to the next caller (measured: 4 ports
/// asked in a row held a repeat once in 2,500 tries, about one scenario
/// in 7 of a suite run), and to the outgoing connections of every other
/// test. A worker whose health port was taken that way stopped at
/// start-up and failed its scenario with nothing sent. The ports are
/// therefore taken below the kernel's ephemeral range (32768 and up on
/// Linux), each claimed by a file in the temporary directory that every
/// test process checks.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static TRIES: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join("mailpipe-test-ports");
    std::fs::create_dir_all(&dir).expect("the directory of claimed test ports");
    let seed = uuid::Uuid::new_v4().as_u128() as u32;
    for _ in 0..PORT_SPAN {
        let n = seed.wrapping_add(TRIES.fetch_add(7919, Ordering::Relaxed));
        let port = PORT_FIRST + (n % PORT_SPAN) as u16;
        if claim_port(&dir.join(port.to_string())) && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!(
        "no free loopback port between {PORT_FIRST} and {}",
        PORT_FIRST as u32 + PORT_SPAN
    )
}

/// The ports [`free_port`] hands out: 20000 up to the ephemeral range.
const PORT_FIRST: u16 = 20_000;
const PORT_SPAN: u32 = 12_700;

/// How long a port handed out by [`free_port`] stays claimed: longer than
/// any scenario, shorter than it takes a few suite runs to use them all.
const PORT_CLAIM: Duration = Duration::from_secs(20 * 60);

/// Claims a port by creating its file; a claim older than [`PORT_CLAIM`]
/// is taken over.
fn claim_port(path: &Path) -> bool {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .is_ok()
    };
    if create() {
        return true;
    }
    let stale = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > PORT_CLAIM);
    stale && std::fs::remove_file(path).is_ok() && create()
}

/// Waits until `check` returns `Some`, polling every 50 ms; panics with
/// `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Directory of the workspace's built binaries (`target/debug`), found from
/// the test executable's own path (`target/debug/deps/...`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf()
}

/// Path of a workspace binary; panics with instructions when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins), as scripts/test does",
        p.display()
    );
    p
}

/// One message as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Envelope recipients.
    pub rcpt: Vec<String>,
    /// Envelope sender.
    pub mail_from: String,
    /// Header fields in order (unfolded), names as written.
    pub headers: Vec<(String, String)>,
    /// Everything after the header block.
    pub body: String,
}

impl ReceivedMail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a message file as written by `smtp-sink -d` or the scripted peer.
    pub fn from_raw(raw: &str) -> Self {
        Self::parse(raw)
    }

    fn parse(raw: &str) -> Self {
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .or_else(|| raw.split_once("\n\n"))
            .unwrap_or((raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let strip = |s: &str| {
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        };
        let rcpt = headers
            .iter()
            .filter(|(n, _)| n == "X-Rcpt-Args")
            .map(|(_, v)| strip(v.split_whitespace().next().unwrap_or_default()))
            .collect();
        let mail_from = headers
            .iter()
            .find(|(n, _)| n == "X-Mail-Args")
            .map(|(_, v)| strip(v.split_whitespace().next().unwrap_or_default()))
            .unwrap_or_default();
        Self {
            rcpt,
            mail_from,
            headers,
            body: body.replace("\r\n", "\n"),
        }
    }
}

/// Postfix's `smtp-sink` on a free loopback port, dumping each accepted
/// message to its own file.
pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl SmtpSink {
    /// Starts a sink that accepts everything.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a sink with extra `smtp-sink` options (e.g. `-r rcpt` to
    /// answer RCPT TO with a soft error).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = Self {
            port: free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        sink.restart();
        sink
    }

    fn smtp_sink_path() -> &'static str {
        ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("smtp-sink is not installed (apt-get install postfix)")
    }

    /// (Re)starts the server on the same port and dump directory.
    pub fn restart(&mut self) {
        self.stop();
        let dump = self.dir.path().join("mail");
        std::fs::create_dir_all(&dump).expect("dump dir");
        let _ = Command::new("chmod")
            .args(["-R", "a+rwx"])
            .arg(self.dir.path())
            .status();
        let mut cmd = Command::new(Self::smtp_sink_path());
        // As root, smtp-sink insists on dropping privileges.
        if is_root() {
            cmd.args(["-u", "postfix"]);
        }
        cmd.args(&self.extra)
            .arg("-d")
            .arg(format!("{}/%H/%M.", dump.display()))
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("256")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("start smtp-sink"));
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "smtp-sink did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (connections are refused until [`restart`](Self::restart)).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<ReceivedMail> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().join("mail")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(raw) = std::fs::read_to_string(&p) {
                    // A file still being written has no end of headers yet.
                    if raw.contains("\n\n") || raw.contains("\r\n\r\n") {
                        out.push(ReceivedMail::parse(&raw));
                    }
                }
            }
        }
        out
    }

    /// How many messages each recipient received.
    pub fn per_recipient(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for mail in self.received() {
            for r in mail.rcpt {
                *m.entry(r.to_ascii_lowercase()).or_default() += 1;
            }
        }
        m
    }

    /// Number of files written (messages accepted).
    pub fn count(&self) -> usize {
        let mut n = 0;
        let mut stack = vec![self.dir.path().join("mail")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    n += 1;
                }
            }
        }
        n
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Which workers a pipeline runs in-process.
#[derive(Clone, Copy)]
pub struct Workers {
    pub expander: bool,
    pub sender: bool,
    pub retrier: bool,
}

impl Workers {
    pub const ALL: Workers = Workers {
        expander: true,
        sender: true,
        retrier: true,
    };
}

/// A running, isolated pipeline.
pub struct TestPipeline {
    pub settings: Settings,
    /// The SMTP sink, when the pipeline started one (see [`Self::sink`]).
    smtp: Option<SmtpSink>,
    pub store: Store,
    pub topology: Topology,
    tasks: Vec<(
        &'static str,
        CancellationToken,
        JoinHandle<anyhow::Result<()>>,
    )>,
    processes: Vec<Child>,
    /// Whether the scenario disturbs the broker on purpose, so that its
    /// workers' reconnects are expected (see [`TestPipeline::expect_reconnects`]).
    reconnects_expected: bool,
}

/// How long the end-of-scenario health check watches the workers for a
/// reconnect loop: longer than the retrier's sweep of parked campaigns
/// (2 s), the periodic step most likely to fail on its own.
/// Longest wait for the broker to delete a finished test's queues.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
const HEALTH_WINDOW: Duration = Duration::from_millis(2500);

/// Longest wait for [`TestPipeline::queue_depth`] (connect, passive
/// declare, close): far above the milliseconds it takes, and the connect
/// alone retries for 60 s.
const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_secs(90);

/// Settings of an isolated test pipeline: random prefix, free ports,
/// millisecond retry tiers.
pub fn test_settings(smtp_port: u16) -> Settings {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("test-{}", &id[..12]);
    let mut s = Settings::default();
    s.amqp.prefix = prefix.clone();
    s.amqp.reconnect_delay = Duration::from_millis(100);
    s.redis.prefix = prefix;
    // The machine's Redis is a throwaway without persistence (see
    // scripts/services); the scenarios test other things. The start-up
    // check itself is tested against a private Redis (`durability`).
    s.redis.allow_volatile = true;
    s.expander.listen = format!("127.0.0.1:{}", free_port());
    s.sender.listen = format!("127.0.0.1:{}", free_port());
    s.retrier.listen = format!("127.0.0.1:{}", free_port());
    s.bounces.listen = format!("127.0.0.1:{}", free_port());
    s.bounces.smtp_listen = format!("127.0.0.1:{}", free_port());
    s.sender.smtp.port = smtp_port;
    s.sender.smtp.timeout = Duration::from_secs(5);
    s.sender.lease = Duration::from_secs(8);
    // A route whose dial failed is held shorter than the routing retry
    // below, as in production (30 s against an hour): a message is not
    // failed again and again without a dial while the relay is held.
    s.sender.route_retry_after = Duration::from_millis(300);
    s.retrier.tiers = vec![
        Duration::from_millis(200),
        Duration::from_millis(400),
        Duration::from_secs(1),
    ];
    let ms = Duration::from_millis;
    // Deterministic delays; the failure scenarios turn jitter back on.
    s.retrier.jitter = 0.0;
    s.retrier.policies.routing.schedule = vec![ms(400)];
    s.retrier.policies.routing.max_attempts = 4;
    s.retrier.policies.throttled.schedule = vec![ms(200), ms(400)];
    s.retrier.policies.throttled.max_attempts = 5;
    s.retrier.policies.soft.schedule = vec![ms(200)];
    s.retrier.policies.soft.max_attempts = 4;
    // Qualifications apply within a fifth of a second.
    s.classifier.kept_rules_poll = Duration::from_millis(200);
    s
}

impl TestPipeline {
    /// Starts an SMTP sink and every worker in-process.
    pub async fn spawn() -> Self {
        Self::spawn_with(SmtpSink::start(), Workers::ALL, |_| {}).await
    }

    /// Starts a pipeline with a given SMTP peer, a choice of in-process
    /// workers, and a chance to adjust the settings.
    pub async fn spawn_with(
        smtp: SmtpSink,
        workers: Workers,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let port = smtp.port;
        Self::spawn_inner(Some(smtp), port, workers, tweak).await
    }

    /// Starts a pipeline whose sender submits to an SMTP server the test
    /// runs itself (e.g. the scripted peer) on `smtp_port`.
    pub async fn spawn_for_port(
        smtp_port: u16,
        workers: Workers,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::spawn_inner(None, smtp_port, workers, tweak).await
    }

    /// The pipeline's smtp-sink.
    pub fn sink(&self) -> &SmtpSink {
        self.smtp.as_ref().expect("this pipeline has no smtp-sink")
    }

    async fn spawn_inner(
        smtp: Option<SmtpSink>,
        smtp_port: u16,
        workers: Workers,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        mailpipe_common::telemetry::init_for_tests();
        let mut settings = test_settings(smtp_port);
        tweak(&mut settings);
        let store = Store::connect(&settings.redis)
            .await
            .expect("Redis on localhost");
        let topology = Topology::from_settings(&settings);
        // Declare before anything publishes, so no test races the workers' start.
        let conn = connect_amqp(&settings.amqp, "test-declare").await;

        topology.declare(&conn).await.expect("declare topology");
        let _ = conn.close(200, "ok".into()).await;
        let mut p = Self {
            settings,
            smtp,
            store,
            topology,
            tasks: Vec::new(),
            processes: Vec::new(),
            reconnects_expected: false,
        };
        if workers.expander {
            p.start_worker("expander");
        }
        if workers.sender {
            p.start_worker("sender");
        }
        if workers.retrier {
            p.start_worker("retrier");
        }
        p
    }

    /// Starts one worker in-process.
    pub fn start_worker(&mut self, name: &'static str) {
        let token = CancellationToken::new();
        let s = self.settings.clone();
        let t = token.clone();
        type Run = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;
        let run: Run = match name {
            "expander" => Box::pin(mailpipe_expander::run_until_stopped(s, t)),
            "sender" => Box::pin(mailpipe_sender::run_until_stopped(s, t)),
            "retrier" => Box::pin(mailpipe_retrier::run_until_stopped(s, t)),
            "intake" => Box::pin(mailpipe_intake::run_until_stopped(s, t)),
            other => panic!("unknown worker {other}"),
        };
        // A worker that stops with an error says so at once, in the
        // scenario's output: the scenario itself may only see that nothing
        // happens.
        let handle = tokio::spawn(async move {
            let result = run.await;
            if let Err(e) = &result {
                eprintln!("the in-process {name} stopped: {e:#}");
            }
            result
        });
        self.tasks.push((name, token, handle));
    }

    /// Stops an in-process worker gracefully and waits for it.
    pub async fn stop_worker(&mut self, name: &str) {
        let mut keep = Vec::new();
        for (n, token, handle) in std::mem::take(&mut self.tasks) {
            if n == name {
                token.cancel();
                handle
                    .await
                    .expect("worker task")
                    .expect("worker stopped cleanly");
            } else {
                keep.push((n, token, handle));
            }
        }
        self.tasks = keep;
    }

    /// Environment that makes a worker binary use this pipeline's settings.
    pub fn env(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        let d = mailpipe_common::config::format_duration;
        let list = |v: &[Duration]| v.iter().map(|t| d(*t)).collect::<Vec<_>>().join(",");
        let mut env: Vec<(String, String)> = vec![
            ("MAILPIPE__AMQP__PREFIX".into(), s.amqp.prefix.clone()),
            (
                "MAILPIPE__AMQP__URL".into(),
                s.amqp.url.expose_secret().to_string(),
            ),
            (
                "MAILPIPE__AMQP__RECONNECT_DELAY".into(),
                d(s.amqp.reconnect_delay),
            ),
            ("MAILPIPE__REDIS__PREFIX".into(), s.redis.prefix.clone()),
            (
                "MAILPIPE__REDIS__ALLOW_VOLATILE".into(),
                s.redis.allow_volatile.to_string(),
            ),
            (
                "MAILPIPE__SENDER__SMTP__PORT".into(),
                s.sender.smtp.port.to_string(),
            ),
            (
                "MAILPIPE__SENDER__SMTP__TIMEOUT".into(),
                d(s.sender.smtp.timeout),
            ),
            ("MAILPIPE__SENDER__LEASE".into(), d(s.sender.lease)),
            (
                "MAILPIPE__SENDER__ON_AMBIGUOUS".into(),
                s.sender.on_ambiguous.as_str().into(),
            ),
            (
                "MAILPIPE__SENDER__BULK_CONCURRENCY".into(),
                s.sender.bulk_concurrency.to_string(),
            ),
            ("MAILPIPE__SENDER__LISTEN".into(), "127.0.0.1:0".into()),
            ("MAILPIPE__EXPANDER__LISTEN".into(), "127.0.0.1:0".into()),
            ("MAILPIPE__RETRIER__LISTEN".into(), "127.0.0.1:0".into()),
            ("MAILPIPE__RETRIER__TIERS".into(), list(&s.retrier.tiers)),
            (
                "MAILPIPE__RETRIER__JITTER".into(),
                s.retrier.jitter.to_string(),
            ),
            (
                "MAILPIPE__CLASSIFIER__KEPT_RULES_POLL".into(),
                d(s.classifier.kept_rules_poll),
            ),
            (
                "MAILPIPE__QUARANTINE__THRESHOLD".into(),
                s.quarantine.threshold.to_string(),
            ),
            (
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ];
        if let Some(url) = &s.redis.url {
            env.push((
                "MAILPIPE__REDIS__URL".into(),
                url.expose_secret().to_string(),
            ));
        }
        if let Some(cluster) = &s.redis.cluster {
            env.push((
                "MAILPIPE__REDIS__CLUSTER__NODES".into(),
                cluster.nodes.join(","),
            ));
        }
        if let Some(sentinel) = &s.redis.sentinel {
            env.push((
                "MAILPIPE__REDIS__SENTINEL__ADDRESSES".into(),
                sentinel.addresses.join(","),
            ));
            env.push((
                "MAILPIPE__REDIS__SENTINEL__MASTER_NAME".into(),
                sentinel.master_name.clone(),
            ));
        }
        let a = &s.sender.archive;
        if a.enabled {
            env.push(("MAILPIPE__SENDER__ARCHIVE__ENABLED".into(), "true".into()));
            env.push(("MAILPIPE__SENDER__ARCHIVE__MAX_AGE".into(), d(a.max_age)));
            env.push((
                "MAILPIPE__SENDER__ARCHIVE__MAX_BYTES".into(),
                a.max_bytes.to_string(),
            ));
        }
        let p = &s.retrier.policies;
        for (name, policy) in [
            ("ROUTING", &p.routing),
            ("THROTTLED", &p.throttled),
            ("SOFT", &p.soft),
        ] {
            env.push((
                format!("MAILPIPE__RETRIER__POLICIES__{name}__SCHEDULE"),
                list(&policy.schedule),
            ));
            env.push((
                format!("MAILPIPE__RETRIER__POLICIES__{name}__MAX_ATTEMPTS"),
                policy.max_attempts.to_string(),
            ));
        }
        env
    }

    /// Starts a worker as a real process (so a test can kill it).
    pub fn spawn_process(&mut self, binary_name: &str) -> usize {
        let mut cmd = Command::new(binary(binary_name));
        cmd.envs(self.env()).stdout(Stdio::null()).stderr(
            if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            },
        );
        self.processes
            .push(cmd.spawn().expect("spawn worker process"));
        self.processes.len() - 1
    }

    /// Kills a worker process with SIGKILL.
    pub fn kill_process(&mut self, index: usize) {
        let c = &mut self.processes[index];
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Runs the operator CLI against this pipeline; returns (exit code, stdout).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(binary("mailpipe"))
            .args(args)
            .envs(self.env())
            .output()
            .expect("run mailpipe");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs the operator CLI: exit code, standard output, standard error.
    pub fn cli_full(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(binary("mailpipe"))
            .args(args)
            .envs(self.env())
            .output()
            .expect("run mailpipe");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the operator CLI with `input` on its standard input.
    pub fn cli_with_stdin(&self, args: &[&str], input: &str) -> (i32, String) {
        use std::io::Write;
        let mut child = Command::new(binary("mailpipe"))
            .args(args)
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run mailpipe");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("mailpipe output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Publishes a raw request body to the requests queue (confirmed).
    pub async fn publish_request(&self, body: &[u8]) {
        let conn = connect_amqp(&self.settings.amqp, "test-publisher").await;
        let ch = amqp::channel(&conn, None).await.expect("channel");
        amqp::publish_confirmed(
            &ch,
            &self.topology.exchange(),
            Topology::REQUESTS,
            body,
            amqp::properties(),
        )
        .await
        .expect("request confirmed");
        let _ = conn.close(200, "ok".into()).await;
    }

    /// Publishes a request given as JSON.
    pub async fn publish_json(&self, request: &serde_json::Value) {
        self.publish_request(&serde_json::to_vec(request).expect("json"))
            .await;
    }

    /// The request's counts as Redis has them.
    pub async fn status(&self, request: &str) -> RequestStatus {
        self.store.request_status(request).await.expect("status")
    }

    /// [`wait_for`], but a timeout's panic says where the pipeline stands
    /// ([`Self::diagnose`]): which queue holds the mail, which worker is not
    /// ready, what the workers counted. A scenario that fails on a shared
    /// CI machine then shows its cause in its output.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if start.elapsed() > timeout {
                let state = self.diagnose().await;
                panic!("timed out after {timeout:?} waiting for {what}\n{state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where the pipeline stands, for a failed scenario's output: each
    /// queue's ready messages and consumers, each in-process worker's state
    /// and readiness, and the non-zero series of its metrics. Every step is
    /// bounded, so a broker that stopped answering is said, not waited on.
    pub async fn diagnose(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("pipeline state:\n");
        let queues = async {
            let conn = amqp::connect_once(&self.settings.amqp, "test-diagnose")
                .await
                .map_err(|e| format!("{e:#}"))?;
            let ch = conn.create_channel().await.map_err(|e| format!("{e:#}"))?;
            let mut lines = String::new();
            for key in self.topology.all_keys() {
                let name = self.topology.queue(&key);
                match ch
                    .queue_declare(name.as_str().into(), PASSIVE, FieldTable::default())
                    .await
                {
                    Ok(q) if q.message_count() > 0 || q.consumer_count() > 0 => {
                        let _ = writeln!(
                            lines,
                            "  queue {key}: {} ready, {} consumer(s)",
                            q.message_count(),
                            q.consumer_count()
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = writeln!(lines, "  queue {key}: {e}");
                        // A failed passive declare closes the channel.
                        break;
                    }
                }
            }
            let _ = conn.close(200, "ok".into()).await;
            Ok::<_, String>(lines)
        };
        match tokio::time::timeout(Duration::from_secs(15), queues).await {
            Ok(Ok(lines)) if lines.is_empty() => out.push_str("  every queue empty, no consumer\n"),
            Ok(Ok(lines)) => out.push_str(&lines),
            Ok(Err(e)) => {
                let _ = writeln!(out, "  the broker: {e}");
            }
            Err(_) => out.push_str("  the broker did not answer within 15 s\n"),
        }
        for (name, _, handle) in &self.tasks {
            if handle.is_finished() {
                let _ = writeln!(out, "  {name}: stopped");
                continue;
            }
            let listen = self.listen_of(name);
            let get = |path: &'static str| {
                tokio::time::timeout(Duration::from_secs(5), http_get(listen, path))
            };
            let ready = get("/readyz").await.ok().flatten();
            let _ = writeln!(
                out,
                "  {name}: {}",
                ready
                    .as_deref()
                    .map(str::trim)
                    .unwrap_or("no answer on /readyz")
            );
            if let Ok(Some(metrics)) = get("/metrics").await {
                for line in metrics.lines().filter(|l| {
                    l.starts_with("mailpipe_")
                        && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) != Some(0.0)
                        && !l.contains("_bucket{")
                }) {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        out
    }

    /// Waits until every part of the request is expanded and nothing is pending.
    pub async fn wait_complete(&self, request: &str, timeout: Duration) -> RequestStatus {
        self.wait_for(
            &format!("request {request} to complete"),
            timeout,
            || async {
                let s = self.status(request).await;
                let parts = s.meta.as_ref().map(|m| m.parts_total).unwrap_or(u32::MAX);
                (s.parts_done >= parts && s.pending == 0).then_some(s)
            },
        )
        .await
    }

    /// Whether a queue (by routing key) exists.
    pub async fn queue_exists(&self, key: &str) -> bool {
        let conn = connect_amqp(&self.settings.amqp, "test-inspect").await;
        let ch = conn.create_channel().await.expect("channel");
        let found = ch
            .queue_declare(
                self.topology.queue(key).into(),
                PASSIVE,
                FieldTable::default(),
            )
            .await
            .is_ok();
        let _ = conn.close(200, "ok".into()).await;
        found
    }

    /// Messages waiting in a queue (by routing key), not counting unacked
    /// ones; the queue must exist.
    ///
    /// Bounded by [`QUEUE_DEPTH_TIMEOUT`]: lapin's calls have no timeout of
    /// their own. A scenario once hung for ten minutes after its campaign
    /// was complete, its workers ready, with one TCP connection to the
    /// broker more than its workers hold and unknown to `rabbitmqctl
    /// list_connections`: most likely one of these calls, which would
    /// have held it forever instead of failing it.
    pub async fn queue_depth(&self, key: &str) -> u32 {
        let inspect = async {
            let conn = connect_amqp(&self.settings.amqp, "test-inspect").await;
            let ch = conn.create_channel().await.expect("channel");
            let q = ch
                .queue_declare(
                    self.topology.queue(key).into(),
                    PASSIVE,
                    FieldTable::default(),
                )
                .await
                .expect("queue exists");
            let _ = conn.close(200, "ok".into()).await;
            q.message_count()
        };
        tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, inspect)
            .await
            .unwrap_or_else(|_| {
                panic!("the depth of queue {key}: RabbitMQ did not answer within {QUEUE_DEPTH_TIMEOUT:?}")
            })
    }

    /// Waits until a (one-part) request is expanded: every job confirmed in
    /// its lane and the part's counts stored.
    pub async fn wait_expanded(&self, request: &str) {
        wait_for(
            &format!("{request} expanded"),
            Duration::from_secs(60),
            || async { (self.status(request).await.parts_done == 1).then_some(()) },
        )
        .await;
    }

    /// Lane messages that `recipients` accepted recipients of one request
    /// make (`expander.jobs_per_message` to a message).
    pub fn lane_messages(&self, recipients: usize) -> u32 {
        recipients.div_ceil(self.settings.expander.jobs_per_message.max(1)) as u32
    }

    /// Takes every message currently in a queue (acking them), as JSON.
    pub async fn drain_queue(&self, key: &str) -> Vec<serde_json::Value> {
        let conn = connect_amqp(&self.settings.amqp, "test-drain").await;
        let ch = conn.create_channel().await.expect("channel");
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                self.topology.queue(key).into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            out.push(serde_json::from_slice(&m.delivery.data).unwrap_or(serde_json::Value::Null));
        }
        let _ = conn.close(200, "ok".into()).await;
        out
    }

    /// Takes every message of a send lane (acking them) and reads their jobs.
    pub async fn drain_jobs(&self, key: &str) -> Vec<mailpipe_common::message::Job> {
        self.drain_queue(key)
            .await
            .iter()
            .flat_map(|m| {
                mailpipe_common::message::LaneMessage::decode(&serde_json::to_vec(m).unwrap())
                    .expect("a lane message")
                    .into_jobs()
            })
            .collect()
    }

    /// Collects every delivery event the pipeline publishes from now on
    /// into a temporary queue (keep the connection while consuming).
    pub async fn subscribe_events(&self) -> (lapin::Connection, lapin::Consumer) {
        let conn = connect_amqp(&self.settings.amqp, "test-events").await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        ch.queue_bind(
            q.name().clone(),
            self.topology.events_exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let consumer = ch
            .basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        (conn, consumer)
    }

    /// Reads a counter from a worker's /metrics endpoint (sum over series
    /// whose line starts with `series`).
    pub async fn metric(&self, worker: &str, series: &str) -> f64 {
        let listen = self.listen_of(worker);
        let body = http_get(listen, "/metrics").await.unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Says that this scenario makes the workers reconnect on purpose (it
    /// restarts or kills the broker): the health check then allows earlier
    /// reconnects, but still none during its watch.
    pub fn expect_reconnects(&mut self) {
        self.reconnects_expected = true;
    }

    fn listen_of(&self, worker: &str) -> &str {
        match worker {
            "expander" => &self.settings.expander.listen,
            "sender" => &self.settings.sender.listen,
            "intake" => &self.settings.bounces.listen,
            _ => &self.settings.retrier.listen,
        }
    }

    /// The end-of-scenario health check, run by [`Self::shutdown`]: every
    /// in-process worker still running is ready, has not reconnected to the
    /// broker (unless [`Self::expect_reconnects`]) and does not reconnect
    /// during a watch of [`HEALTH_WINDOW`]; with a retrier running, the
    /// failure queue is drained. A scenario whose mail arrived while a
    /// worker loops on the broker fails here.
    pub async fn assert_healthy(&self) {
        let running: Vec<&'static str> = self
            .tasks
            .iter()
            .filter(|(_, _, h)| !h.is_finished())
            .map(|(n, _, _)| *n)
            .collect();
        for (name, _, h) in &self.tasks {
            assert!(
                !h.is_finished(),
                "health: the {name} stopped before the end of the scenario"
            );
        }
        for w in &running {
            let listen = self.listen_of(w).to_string();
            wait_for(
                &format!("the {w} to be ready"),
                Duration::from_secs(20),
                || {
                    let listen = listen.clone();
                    async move {
                        let body = http_get(&listen, "/readyz").await?;
                        body.starts_with("ready").then_some(())
                    }
                },
            )
            .await;
        }
        let reconnects = |w: &'static str| self.metric(w, "mailpipe_broker_reconnects_total");
        let mut before = Vec::new();
        for w in &running {
            let n = reconnects(w).await;
            if !self.reconnects_expected {
                assert_eq!(
                    n, 0.0,
                    "health: the {w} reconnected to the broker {n} time(s)"
                );
            }
            before.push(n);
        }
        tokio::time::sleep(HEALTH_WINDOW).await;
        for (w, n) in running.iter().zip(before) {
            let now = reconnects(w).await;
            assert_eq!(
                now, n,
                "health: the {w} reconnected to the broker during the final watch (a reconnect loop)"
            );
            let body = http_get(self.listen_of(w), "/readyz").await;
            assert!(
                body.as_deref().is_some_and(|b| b.starts_with("ready")),
                "health: the {w} is not ready at the end of the scenario"
            );
        }
        if running.contains(&"retrier") {
            wait_for(
                "the failure queue to drain",
                Duration::from_secs(60),
                || async { (self.queue_depth(Topology::FAILED).await == 0).then_some(()) },
            )
            .await;
        }
    }

    /// Checks the pipeline's health ([`Self::assert_healthy`]), then stops
    /// it ([`Self::shutdown_unchecked`]).
    pub async fn shutdown(self) {
        self.assert_healthy().await;
        self.shutdown_unchecked().await;
    }

    /// Stops every worker and deletes the test's queues and exchanges.
    pub async fn shutdown_unchecked(mut self) {
        for (_, token, _) in &self.tasks {
            token.cancel();
        }
        for (_, _, handle) in std::mem::take(&mut self.tasks) {
            let _ = handle.await;
        }
        for c in &mut self.processes {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Held campaigns' queues are named after their requests.
        let mut c = self.store.connection();
        let requests: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{}:requests", self.store.prefix()))
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        // Best effort, and bounded: a broker that stopped answering (a
        // restart by another session, a lapin call that never returns)
        // leaves the queues behind instead of hanging the scenario.
        let cleanup = async {
            if let Ok(conn) = amqp::connect_once(&self.settings.amqp, "test-cleanup").await {
                if let Ok(ch) = conn.create_channel().await {
                    let held = requests.iter().map(|r| Topology::held_key(r));
                    let archive = std::iter::once(Topology::ARCHIVE.to_string());
                    for key in self
                        .topology
                        .all_keys()
                        .into_iter()
                        .chain(held)
                        .chain(archive)
                    {
                        let _ = ch
                            .queue_delete(
                                self.topology.queue(&key).into(),
                                QueueDeleteOptions::default(),
                            )
                            .await;
                    }
                    for ex in [self.topology.exchange(), self.topology.events_exchange()] {
                        let _ = ch.exchange_delete(ex.into(), Default::default()).await;
                    }
                }
                let _ = conn.close(200, "ok".into()).await;
            }
        };
        if tokio::time::timeout(CLEANUP_TIMEOUT, cleanup)
            .await
            .is_err()
        {
            eprintln!("test harness: the broker did not answer the clean-up within {CLEANUP_TIMEOUT:?}; the test's queues stay");
        }
        // The test's Redis keys go too (a 20,000-recipient scenario leaves
        // some 20,000 records), so the shared Redis does not fill up with
        // them run after run.
        let pattern = format!(
            "{}:*",
            mailpipe_state::store::glob_escape(self.store.prefix())
        );
        let mut cursor: u64 = 0;
        loop {
            let scanned: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(5000)
                .query_async(&mut c)
                .await;
            let Ok((next, keys)) = scanned else { break };
            if !keys.is_empty() {
                let _: Result<i64, _> = redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

impl Drop for TestPipeline {
    fn drop(&mut self) {
        for (_, token, _) in &self.tasks {
            token.cancel();
        }
        for c in &mut self.processes {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET on loopback, for health and metrics endpoints.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The events of one message of the events exchange (a JSON array of
/// events of one kind), checked to be that.
pub fn events_in(body: &[u8]) -> Vec<serde_json::Value> {
    let events: Vec<serde_json::Value> =
        serde_json::from_slice(body).expect("an event message is a JSON array of events");
    assert!(!events.is_empty(), "an event message without events");
    let kind = &events[0]["event"];
    assert!(
        events.iter().all(|e| &e["event"] == kind),
        "events of several kinds in one message: {events:?}"
    );
    events
}

/// A request whose recipients are `{local}@example.com` for the given local
/// parts (which tell the scripted SMTP peer what to answer each one).
pub fn request_for(id: &str, locals: &[impl AsRef<str>]) -> serde_json::Value {
    let recipients: Vec<_> = locals
        .iter()
        .map(|l| {
            let l = l.as_ref();
            serde_json::json!({"email": format!("{l}@example.com"), "vars": {"who": l}})
        })
        .collect();
    serde_json::json!({
        "schema_version": 1,
        "request_id": id,
        "from": "ACME <news@acme.example>",
        "subject": "Hello {{ who }}",
        "text": "Hi {{ who }}.\n.a line that starts with a dot\n",
        "recipients": recipients,
    })
}

/// A connection for the test itself (publishing, inspecting, draining).
/// On this shared machine a loaded broker, or a private node still
/// booting, sometimes resets a handshake: the harness tries again for up to
/// a minute, as mailpipe's workers do, instead of failing the scenario on
/// its own plumbing.
pub async fn connect_amqp(
    settings: &mailpipe_common::config::AmqpSettings,
    name: &str,
) -> lapin::Connection {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(15),
            mailpipe_common::amqp::connect_once(settings, name),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 15 s")));
        match attempt {
            Ok(conn) => return conn,
            Err(e) if Instant::now() < deadline => {
                eprintln!("test harness: RabbitMQ connection failed, trying again: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("RabbitMQ: {e:#}"),
        }
    }
}

/// A request body with `n` recipients `user{i}@{domain}`, personalized with
/// their index.
pub fn sample_request(request_id: &str, n: usize, domain: &str) -> serde_json::Value {
    let recipients: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"email": format!("user{i}@{domain}"), "name": format!("User {i}"), "vars": {"code": i}}))
        .collect();
    serde_json::json!({
        "schema_version": 1,
        "request_id": request_id,
        "campaign": "test",
        "lane": "bulk",
        "from": "ACME News <news@acme.example>",
        "subject": "Hello {{ name }}",
        "text": "Your code is {{ code }}.",
        "recipients": recipients,
    })
}

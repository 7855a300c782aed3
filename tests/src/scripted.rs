//! Scripted SMTP peer for the integration tests.
//!
//! [`ScriptedSmtp`] runs `tests/peers/scripted_smtp.py` (a real SMTP server
//! built on Python's `aiosmtpd`) on a free loopback port. Each recipient's
//! fate is chosen by its local part, `<behaviour>-<n>-<anything>@domain`,
//! where `n` is how many attempts fail before the recipient is accepted
//! (`0` = fail forever); failures are counted per recipient address across
//! connections:
//!
//! | behaviour | stage | reply while failing                                   |
//! |-----------|-------|-------------------------------------------------------|
//! | `ok`      | -     | always 250                                            |
//! | `r421`    | RCPT  | `421 4.7.0 ...`, then the server closes the connection |
//! | `r443`    | RCPT  | `451 4.4.3 Routing server failure`                    |
//! | `r452`    | RCPT  | `452 4.2.2 Mailbox full`                              |
//! | `r450`    | RCPT  | `450 4.2.1 The user you are trying to contact ...`    |
//! | `grey`    | RCPT  | `451 4.7.1 Greylisted, please try again later`        |
//! | `r550`    | RCPT  | `550 5.1.1 The email account ... does not exist`      |
//! | `odd`     | RCPT  | `550 5.0.0 <rcpt>: not on the guest list of this party` (no shipped rule knows it) |
//! | `r554`    | DATA  | `554 5.7.1 Message rejected as spam ...`               |
//! | `r552`    | DATA  | `552 5.3.4 Message size exceeds fixed limit`          |
//! | `slow`    | DATA  | no reply for `slow_seconds` (default 10), then 250    |
//! | `drop`    | DATA  | connection closed after the data, with no reply       |
//!
//! Any other local part is accepted. Accepted messages land in
//! [`received`](ScriptedSmtp::received); every RCPT reply and every
//! end-of-DATA outcome is listed by [`attempts`](ScriptedSmtp::attempts),
//! and [`connections`](ScriptedSmtp::connections) counts the connections.
//!
//! A connection limit (`--max-connections N`, or
//! [`set_max_connections`](ScriptedSmtp::set_max_connections) at run time)
//! makes it answer `421 4.7.0 Too many connections` at connect past N open
//! connections, as a mailbox provider does;
//! [`refused_connections`](ScriptedSmtp::refused_connections) counts those.
//! The script's header documents the details.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/scripted_smtp.py");
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_SLOW_SECONDS: f64 = 10.0;

/// One decision of the scripted server, as logged in `attempts.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Attempt {
    /// Recipient address as the client sent it.
    pub rcpt: String,
    /// `"rcpt"` (reply to RCPT TO) or `"data"` (outcome at the end of DATA).
    pub stage: String,
    /// Reply code sent; `0` when no reply was sent (a `drop`, or the client
    /// hung up while a `slow` reply was pending).
    pub code: u16,
    /// Unix time of the decision, in seconds.
    pub time: f64,
    /// `"reply"`, `"close"` (reply then disconnect, `r421`), `"drop"`,
    /// `"slow"` (250 after the delay) or `"timeout"` (client gave up on a
    /// `slow` reply).
    #[serde(default)]
    pub action: String,
}

/// The scripted SMTP server on a free loopback port, with its own
/// temporary output directory. Killed on drop.
pub struct ScriptedSmtp {
    pub port: u16,
    /// Loopback address it listens on (127.0.0.1 unless started with `start_at`).
    pub host: String,
    dir: tempfile::TempDir,
    slow_seconds: f64,
    /// Further command-line options of the script (TLS, AUTH, pipelining).
    options: Vec<String>,
    child: Option<Child>,
    /// Held open so the server exits by itself if this process dies.
    stdin: Option<ChildStdin>,
}

enum Startup {
    Ready,
    Eof,
}

impl ScriptedSmtp {
    /// Starts the server (`slow` recipients are answered after 10 s);
    /// returns once it is listening.
    pub fn start() -> Self {
        Self::start_with_slow_seconds(DEFAULT_SLOW_SECONDS)
    }

    /// Starts the server with the delay before a `slow` recipient's
    /// end-of-DATA reply (pick more than the sender's SMTP timeout).
    pub fn start_with_slow_seconds(secs: f64) -> Self {
        Self::start_with(secs, &[])
    }

    /// Starts the server with further options of the script:
    /// `--no-pipelining`, `--tls-cert CERT --tls-key KEY [--tls-mode M]`,
    /// `--auth USER:PASSWORD`, `--max-connections N` (see
    /// `tests/peers/scripted_smtp.py`).
    pub fn start_with_options(options: &[&str]) -> Self {
        Self::start_with(DEFAULT_SLOW_SECONDS, options)
    }

    fn start_with(secs: f64, options: &[&str]) -> Self {
        let port = crate::free_port();
        let mut server = Self {
            port,
            host: "127.0.0.1".into(),
            dir: tempfile::tempdir().expect("temp dir for the scripted SMTP server"),
            slow_seconds: secs,
            options: options.iter().map(|o| o.to_string()).collect(),
            child: None,
            stdin: None,
        };
        server.restart();
        server
    }

    /// Starts the server on a given loopback address and port (several
    /// servers can share a port on different 127.0.0.x addresses, as MX hosts
    /// share port 25).
    pub fn start_at(host: &str, port: u16) -> Self {
        Self::start_at_with(host, port, &[])
    }

    /// [`start_at`](Self::start_at) with further options of the script (see
    /// [`start_with_options`](Self::start_with_options)).
    pub fn start_at_with(host: &str, port: u16, options: &[&str]) -> Self {
        let mut server = Self {
            port,
            host: host.to_string(),
            dir: tempfile::tempdir().expect("temp dir for the scripted SMTP server"),
            slow_seconds: DEFAULT_SLOW_SECONDS,
            options: options.iter().map(|o| o.to_string()).collect(),
            child: None,
            stdin: None,
        };
        server.restart();
        server
    }

    /// Kills the server; connections are refused until
    /// [`restart`](Self::restart).
    pub fn stop(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same port and output directory.
    /// Messages and attempts recorded so far are kept, but the per-recipient
    /// failure counters live in the server's memory and start again from
    /// zero: a `grey-1-...` recipient is greylisted once more after a restart.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--host")
            .arg(&self.host)
            .arg("--slow-seconds")
            .arg(self.slow_seconds.to_string())
            .arg("--exit-on-stdin-eof")
            .args(&self.options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {SCRIPT}: {e} (is python3 on PATH?)"));

        // Everything the server says on stderr is kept for error messages
        // and passed on to the test's (captured) output.
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("scripted_smtp: {line}");
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        // Stdout is drained until the end, so the server never blocks on it.
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "READY" {
                    let _ = tx.send(Startup::Ready);
                }
            }
            let _ = tx.send(Startup::Eof);
        });

        let failed = |child: &mut Child, what: String| -> ! {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            // Give the stderr thread a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(200));
            let err = stderr_text
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            panic!(
                "scripted SMTP server ({SCRIPT}) on 127.0.0.1:{}: {what} ({status}).\n\
                 It needs python3 with aiosmtpd: `python3 -m pip install aiosmtpd`.\n\
                 Its stderr:\n{err}",
                self.port
            )
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Startup::Ready) => {}
            Ok(Startup::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                failed(&mut child, "exited before printing READY".into())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                failed(&mut child, format!("not READY after {READY_TIMEOUT:?}"))
            }
        }
        self.stdin = child.stdin.take();
        self.child = Some(child);
    }

    /// The server's output directory (`mail/`, `attempts.jsonl`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every message accepted so far, in the order they were accepted.
    pub fn received(&self) -> Vec<crate::ReceivedMail> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail")) else {
            return Vec::new();
        };
        // Names start with the acceptance time in nanoseconds.
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        paths
            .iter()
            // Files appear by rename, complete; one read can still fail if
            // the directory is removed underneath us.
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|raw| crate::ReceivedMail::from_raw(&raw))
            .collect()
    }

    /// Number of TCP connections the server accepted so far (served or
    /// refused with 421 at connect).
    pub fn connections(&self) -> usize {
        self.connection_log().lines().count()
    }

    /// Number of connections answered `421` at connect (over the limit).
    pub fn refused_connections(&self) -> usize {
        self.connection_log()
            .lines()
            .filter(|l| l.trim() == "421")
            .count()
    }

    fn connection_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("connections.log")).unwrap_or_default()
    }

    /// Sets the connection limit at run time (`None`: no limit); the
    /// server takes it up at the next connection. Connections open stay.
    pub fn set_max_connections(&self, max: Option<u32>) {
        let control = serde_json::json!({ "max_connections": max });
        let tmp = self.dir.path().join("control.json.tmp");
        std::fs::write(&tmp, control.to_string()).expect("write control.json");
        std::fs::rename(&tmp, self.dir.path().join("control.json")).expect("rename control.json");
    }

    /// Number of messages accepted so far.
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("mail"))
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    }

    /// How many messages each (lowercased) recipient was accepted for.
    pub fn per_recipient(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for mail in self.received() {
            for r in mail.rcpt {
                *m.entry(r.to_ascii_lowercase()).or_default() += 1;
            }
        }
        m
    }

    /// Every decision so far, oldest first: for each RCPT TO its reply, and
    /// for each end of DATA one entry per recipient of the transaction.
    pub fn attempts(&self) -> Vec<Attempt> {
        let path = self.dir.path().join("attempts.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        // Only whole lines: the last one may still be being written.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("malformed line in {}: {e}: {l}", path.display()))
            })
            .collect()
    }

    /// The decisions about one recipient (address compared case-insensitively).
    pub fn attempts_for(&self, rcpt: &str) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.rcpt.eq_ignore_ascii_case(rcpt))
            .collect()
    }
}

impl Drop for ScriptedSmtp {
    fn drop(&mut self) {
        self.stop();
    }
}

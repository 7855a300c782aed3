//! A loopback DNS server for the scenarios that need DNS (MX delivery, the
//! address checks): dnsmasq on a free port, answering for the `test` zone
//! only (names it was not told about do not exist), with the records a
//! scenario gives (`--mx-host=...`, `--host-record=...`, as dnsmasq spells
//! them). With [`Dns::start_logged`] it logs every query it receives, so a
//! scenario can count them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// dnsmasq on a free loopback port; killed on drop.
pub struct Dns {
    pub port: u16,
    child: Child,
    /// The query log (and the directory holding it), when logged.
    log: Option<(tempfile::TempDir, PathBuf)>,
}

impl Dns {
    /// Starts dnsmasq with these records (dnsmasq options).
    pub fn start(records: &[String]) -> Self {
        Self::spawn(records, false)
    }

    /// Like [`Self::start`], and logs every query it receives.
    pub fn start_logged(records: &[String]) -> Self {
        Self::spawn(records, true)
    }

    fn spawn(records: &[String], logged: bool) -> Self {
        // dnsmasq listens on UDP and TCP: a port that is free for both,
        // claimed like every test port (see `free_port`).
        let port = loop {
            let port = crate::free_port();
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let log = logged.then(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("queries.log");
            (dir, path)
        });
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--local=/test/",
        ]);
        if let Some((_, path)) = &log {
            cmd.arg("--log-queries")
                .arg(format!("--log-facility={}", path.display()));
        }
        let child = cmd
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is not installed (apt-get install dnsmasq-base)");
        let mut dns = Self { port, child, log };
        dns.wait_ready();
        dns
    }

    /// Waits until dnsmasq answers a query (any answer), for 15 s at most.
    /// A scenario whose first lookups went unanswered would see its
    /// domains as sites of their own for a minute (a failed lookup's
    /// retry time), and its site rules would not apply to them.
    fn wait_ready(&mut self) {
        // A query for `ready.test` A, recursion desired.
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x05ready\x04test\x00\x00\x01\x00\x01");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("a read timeout");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "dnsmasq on 127.0.0.1:{} exited at start: {status}",
                    self.port
                );
            }
            if socket.send_to(&query, ("127.0.0.1", self.port)).is_ok()
                && socket
                    .recv(&mut buf)
                    .is_ok_and(|n| n >= 2 && buf[..2] == [0x12, 0x34])
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "dnsmasq on 127.0.0.1:{} did not answer within 15 s",
            self.port
        );
    }

    /// The server as the sender's `mx.nameservers` entry.
    pub fn nameserver(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// How many queries of `qtype` (`MX`, `A`, `AAAA`) for `name` it
    /// received so far (a logged instance only).
    pub fn queries(&self, qtype: &str, name: &str) -> usize {
        let (_, path) = self.log.as_ref().expect("started with start_logged");
        let needle = format!("query[{qtype}] {name} from");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
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
        std::thread::sleep(Duration::from_millis(300));
        Self { port, child, log }
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

//! A loopback DNS server for MX-mode scenarios: dnsmasq on a free port,
//! answering for the `test` zone only, with the records a scenario gives
//! (`--mx-host=...`, `--host-record=...`, as dnsmasq spells them).

use std::time::Duration;

/// dnsmasq on a free loopback port; killed on drop.
pub struct Dns {
    pub port: u16,
    child: std::process::Child,
}

impl Dns {
    /// Starts dnsmasq with these records (dnsmasq options).
    pub fn start(records: &[String]) -> Self {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = std::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--local=/test/",
            ])
            .args(records)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq is not installed (apt-get install dnsmasq-base)");
        std::thread::sleep(Duration::from_millis(300));
        Self { port, child }
    }

    /// The server as the sender's `mx.nameservers` entry.
    pub fn nameserver(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

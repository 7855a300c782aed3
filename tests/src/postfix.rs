//! A throwaway Postfix instance for the bounce tests: its own config, queue
//! and log under a temporary directory, listening on its own loopback port.
//! The system's `/etc/postfix` is never read for settings or touched.
//!
//! It delivers `@local.test` locally, where only existing system users have
//! mailboxes: any other address there is accepted in the SMTP session and
//! bounced afterwards by Postfix's local delivery agent, the way a real
//! mailbox provider bounces after the fact. Mail to the other domains the
//! test names is relayed by transport map to loopback ports (the bounce
//! intake, an SMTP sink).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A running private Postfix.
pub struct Postfix {
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Whether this machine can run a private Postfix (the package is
/// installed and the tests run as root, as Postfix's master requires).
pub fn available() -> bool {
    std::path::Path::new("/usr/sbin/postfix").exists()
        && Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
}

impl Postfix {
    /// Starts Postfix on a free port, relaying each `(domain, port)` of
    /// `relays` to `127.0.0.1:port`.
    pub fn start(relays: &[(&str, u16)]) -> Self {
        let port = crate::free_port();
        let dir = tempfile::Builder::new()
            .prefix("mailpipe-postfix-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["etc", "spool", "data"] {
            std::fs::create_dir_all(d.join(sub)).expect("postfix dirs");
        }
        // Postfix's own users must reach the queue below the temp dir.
        let _ = Command::new("chmod").arg("755").arg(d).status();
        let _ = Command::new("chown")
            .args(["postfix"])
            .arg(d.join("data"))
            .status();
        let transport = relays
            .iter()
            .map(|(domain, p)| format!("{domain}=smtp:[127.0.0.1]:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {dir}/spool
data_directory = {dir}/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
myhostname = mx.local.test
mydomain = local.test
myorigin = $myhostname
mydestination = local.test
local_recipient_maps =
alias_maps =
alias_database =
transport_maps = inline:{{ {transport} }}
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
biff = no
smtputf8_enable = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
",
            dir = d.display()
        );
        std::fs::write(d.join("etc/main.cf"), main_cf).expect("main.cf");
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
        );
        std::fs::write(d.join("etc/master.cf"), master_cf).expect("master.cf");
        let p = Self { port, dir };
        let check = p.postfix(&["check"]);
        assert!(check, "postfix check failed:\n{}", p.log());
        assert!(p.postfix(&["start"]), "postfix start failed:\n{}", p.log());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the test Postfix does not listen:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn postfix(&self, args: &[&str]) -> bool {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(self.config_dir())
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Postfix's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if !self.postfix(&["stop"]) {
            self.postfix(&["abort"]);
        }
    }
}

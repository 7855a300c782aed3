//! A throwaway Dovecot IMAP server for the bounce-mailbox tests.
//!
//! [`Dovecot::start`] writes its own configuration, `base_dir`, state
//! directory, Maildir and passwd-file user into a temporary directory, and
//! runs `dovecot -F -c <that file>` as a child process listening on a free
//! 127.0.0.1 port, plain text, cleartext logins allowed (`ssl = no`,
//! `disable_plaintext_auth = no`: Dovecot 2.3; Dovecot 2.4 would call it
//! `auth_allow_cleartext`). It never reads or touches `/etc/dovecot` nor the
//! system's Dovecot, and is stopped on Drop.
//!
//! Mail is put in and looked at through the Maildir on disk, not through
//! IMAP, so the fixture does not share code (or bugs) with the poller it
//! tests: [`Dovecot::deliver`] writes a file into a mailbox's `new/` (as an
//! MDA would; Dovecot picks it up at the next SELECT or NOOP), and
//! [`Dovecot::messages`] reads what is left in `cur/` and `new/`.
//!
//! Running as root (here and in CI), Dovecot insists on unprivileged
//! processes: logins run as `dovenull`, internal services as `dovecot`, and
//! the mailbox belongs to the `dovecot` user (it refuses uid 0 for mail).
//! Run by another user, everything runs as that user.
//!
//! Depended upon by `intake/tests/imap.rs`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where Debian's `dovecot-imapd` puts the server.
pub const DOVECOT: &str = "/usr/sbin/dovecot";

/// A running throwaway Dovecot.
pub struct Dovecot {
    /// The IMAP port on 127.0.0.1 (plain text).
    pub port: u16,
    /// The one user, and its password at start.
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Owner of the mail files (Dovecot refuses root).
    uid: u32,
    gid: u32,
    /// Makes delivered file names unique.
    seq: AtomicU32,
}

/// Choices of [`Dovecot::start_with`].
#[derive(Debug, Clone, Copy)]
pub struct DovecotOptions {
    /// Advertise MOVE and UIDPLUS (Dovecot's default). Without them a
    /// client must fall back to COPY, `\Deleted` and a plain EXPUNGE.
    pub move_and_uidplus: bool,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        Self {
            move_and_uidplus: true,
        }
    }
}

/// One message file of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMail {
    /// The message, as stored.
    pub data: Vec<u8>,
    /// Maildir flags of the file name (`S` seen, `T` deleted, …).
    pub flags: String,
}

impl Dovecot {
    /// Whether the Dovecot binary is installed (`scripts/services`
    /// installs it).
    pub fn available() -> bool {
        Path::new(DOVECOT).exists()
    }

    /// Starts a server with one user, `bounces` / `secret`.
    pub fn start() -> Self {
        Self::start_with(DovecotOptions::default())
    }

    pub fn start_with(options: DovecotOptions) -> Self {
        assert!(
            Self::available(),
            "{DOVECOT} is missing: run scripts/services (Debian package dovecot-imapd)"
        );
        let dir = tempfile::Builder::new()
            .prefix("mailpipe-dovecot-")
            .tempdir()
            .expect("temp dir");
        // Dovecot's unprivileged processes must reach base_dir.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let root = is_root();
        let (login_user, internal_user, internal_group, mail_user) = if root {
            (
                "dovenull".to_string(),
                "dovecot".to_string(),
                "dovecot".to_string(),
                "dovecot",
            )
        } else {
            let me = id(&["-un"]);
            (me.clone(), me, id(&["-gn"]), "")
        };
        let (uid, gid) = if root {
            (
                id(&["-u", mail_user]).parse().expect("dovecot uid"),
                id(&["-g", mail_user]).parse().expect("dovecot gid"),
            )
        } else {
            (
                id(&["-u"]).parse().expect("uid"),
                id(&["-g"]).parse().expect("gid"),
            )
        };
        let mut dovecot = Self {
            port: free_port(),
            user: "bounces".into(),
            password: "secret".into(),
            dir,
            child: None,
            uid,
            gid,
            seq: AtomicU32::new(0),
        };
        let d = dovecot.dir.path().to_path_buf();
        for sub in ["run", "state"] {
            std::fs::create_dir_all(d.join(sub)).expect("dovecot dirs");
        }
        dovecot.set_password("secret");
        dovecot.make_mailbox("INBOX");
        let capability = if options.move_and_uidplus {
            String::new()
        } else {
            "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+\n"
                .to_string()
        };
        let conf = format!(
            r#"# Written by mailpipe-tests (tests/src/dovecot.rs); throwaway.
base_dir = {d}/run
state_dir = {d}/state
instance_name = mailpipe-test-{port}
protocols = imap
listen = 127.0.0.1
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:~/Maildir
{capability}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#,
            d = d.display(),
            port = dovecot.port,
        );
        std::fs::write(d.join("dovecot.conf"), conf).expect("write dovecot.conf");
        let stderr = std::fs::File::create(d.join("stderr.log")).expect("stderr log");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start dovecot");
        dovecot.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", dovecot.port)).is_err() {
            if let Some(status) = dovecot
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dovecot exited ({status}):\n{}", dovecot.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "dovecot did not start listening:\n{}",
                dovecot.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        dovecot
    }

    fn maildir(&self, mailbox: &str) -> PathBuf {
        let root = self
            .dir
            .path()
            .join("home")
            .join(&self.user)
            .join("Maildir");
        if mailbox.eq_ignore_ascii_case("INBOX") {
            root
        } else {
            // Maildir++: a folder is a dot directory next to INBOX's.
            root.join(format!(".{mailbox}"))
        }
    }

    fn chown(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).expect("chown");
    }

    /// Creates a mailbox's Maildir (INBOX or a folder).
    pub fn make_mailbox(&self, mailbox: &str) {
        let md = self.maildir(mailbox);
        let home = self.dir.path().join("home").join(&self.user);
        for p in [
            self.dir.path().join("home"),
            home.clone(),
            home.join("Maildir"),
        ] {
            if !p.exists() {
                std::fs::create_dir_all(&p).expect("mail dir");
                self.chown(&p);
            }
        }
        for sub in ["", "cur", "new", "tmp"] {
            let p = md.join(sub);
            if !p.exists() {
                std::fs::create_dir_all(&p).expect("maildir");
                self.chown(&p);
            }
        }
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            let marker = md.join("maildirfolder");
            std::fs::write(&marker, b"").expect("maildirfolder");
            self.chown(&marker);
        }
    }

    /// Changes the user's password (the passwd file is re-read at the next
    /// login; give the new one another length, as Dovecot notices a change
    /// by the file's size and time).
    pub fn set_password(&self, password: &str) {
        let d = self.dir.path();
        let tmp = d.join("passwd.tmp");
        std::fs::write(&tmp, format!("{}:{{PLAIN}}{password}\n", self.user)).expect("write passwd");
        std::fs::rename(&tmp, d.join("passwd")).expect("install passwd");
    }

    /// Puts a message into a mailbox, as an MDA would: written into `tmp/`,
    /// then renamed into `new/`.
    pub fn deliver(&self, mailbox: &str, data: &[u8]) {
        self.make_mailbox(mailbox);
        let md = self.maildir(mailbox);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("{nanos}.M{n}P{}.mailpipe-test", std::process::id());
        let tmp = md.join("tmp").join(&name);
        let mut f = std::fs::File::create(&tmp).expect("create message");
        f.write_all(data).expect("write message");
        f.sync_all().expect("sync message");
        drop(f);
        self.chown(&tmp);
        std::fs::rename(&tmp, md.join("new").join(&name)).expect("deliver message");
    }

    /// The messages in a mailbox (none when it does not exist), in the
    /// order they were delivered.
    pub fn messages(&self, mailbox: &str) -> Vec<StoredMail> {
        let md = self.maildir(mailbox);
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(md.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                files.push((name, e.path()));
            }
        }
        // Names start with the delivery time; Dovecot keeps the base name
        // when it moves a file to cur/ (or copies it to another folder).
        files.sort();
        files
            .into_iter()
            .filter_map(|(name, path)| {
                let data = std::fs::read(&path).ok()?;
                let flags = name
                    .rsplit_once(":2,")
                    .map(|(_, f)| f.to_string())
                    .unwrap_or_default();
                Some(StoredMail { data, flags })
            })
            .collect()
    }

    /// Just the contents of [`messages`](Self::messages).
    pub fn contents(&self, mailbox: &str) -> Vec<Vec<u8>> {
        self.messages(mailbox).into_iter().map(|m| m.data).collect()
    }

    /// The server's log so far, for assertion messages.
    pub fn log(&self) -> String {
        let d = self.dir.path();
        let mut out = std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default();
        out.push_str(&std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default());
        out
    }

    /// Stops the server: SIGTERM (the master stops its children), SIGKILL
    /// if it takes longer than 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    id(&["-u"]) == "0"
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

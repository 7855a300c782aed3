//! A throwaway certificate authority and a server certificate it signed,
//! made with the `openssl` command, for the tests of TLS to a relay.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a certificate for `relay.test` and 127.0.0.1, in a temporary
/// directory that lives as long as this value.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes the CA and the server certificate (P-256 keys: quick to make).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for test certificates");
        let ext = dir.path().join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:relay.test,IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("writing the extensions file");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
            &[
                "-days",
                "2",
                "-subj",
                "/CN=mailpipe test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            dir.path(),
            &[
                &["req"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
            &["-subj", "/CN=relay.test"],
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
            ],
            &[
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        Self { dir }
    }

    /// The CA certificate (PEM), to trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

fn openssl(dir: &Path, args: &[&str], more: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .args(more)
        .current_dir(dir)
        .output()
        .expect("running openssl (scripts/services installs it)");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The archive of delivered mail (`sender.archive`): every message a server
//! accepted is in the archive stream exactly as sent, `mailpipe archive
//! export` writes a request's messages back byte for byte, and their DKIM
//! signatures still verify (dkimpy, with the DNS records handed over). With
//! the archive off, no stream exists.
//!
//! The SMTP peer is the scripted server: it saves each message's data as
//! received (dot-stuffing undone) after three `X-` lines of its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mailpipe_common::address::EmailAddress;
use mailpipe_common::config::{DkimAlgorithm, DkimSettings};
use mailpipe_common::message::message_id;
use mailpipe_common::topology::Topology;
use mailpipe_tests::scripted::ScriptedSmtp;
use mailpipe_tests::{wait_for, TestPipeline, Workers};

/// Verifies every signature of every `.eml` file in a directory; prints
/// `{"files": n, "signatures": n, "ok": n, "failed": [...]}`.
const VERIFY: &str = r#"
import json, os, sys
import dkim
records = json.loads(sys.argv[2])
def dns(name, timeout=5):
    key = name.decode() if isinstance(name, bytes) else name
    return records.get(key.rstrip('.').lower(), '').encode() or None
files = sorted(f for f in os.listdir(sys.argv[1]) if f.endswith('.eml'))
out = {'files': len(files), 'signatures': 0, 'ok': 0, 'failed': []}
for f in files:
    message = open(os.path.join(sys.argv[1], f), 'rb').read()
    headers, _ = dkim.rfc822_parse(message)
    n = sum(1 for (k, v) in headers if k.lower() == b'dkim-signature')
    out['signatures'] += n
    for i in range(n):
        try:
            ok = dkim.DKIM(message).verify(idx=i, dnsfunc=dns)
        except Exception as e:
            ok = False
        if ok:
            out['ok'] += 1
        else:
            out['failed'].append('%s#%d' % (f, i))
print(json.dumps(out))
"#;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// An RSA and an Ed25519 key of `acme.example` (made by the openssl CLI),
/// and their DNS records.
fn keys(dir: &Path) -> (Vec<DkimSettings>, BTreeMap<String, String>) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args));
    let base64 = |der_file: &str| {
        String::from_utf8(openssl(&["base64", "-A", "-in", der_file]))
            .unwrap()
            .trim()
            .to_string()
    };
    openssl(&["genrsa", "-out", &path("rsa.pem"), "2048"]);
    openssl(&[
        "rsa",
        "-in",
        &path("rsa.pem"),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        &path("rsa.der"),
    ]);
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &path("ed.pem")]);
    let ed_spki = openssl(&["pkey", "-in", &path("ed.pem"), "-pubout", "-outform", "DER"]);
    // An Ed25519 SubjectPublicKeyInfo ends with the raw 32-byte key.
    std::fs::write(path("ed.raw"), &ed_spki[ed_spki.len() - 32..]).unwrap();
    let settings = vec![
        DkimSettings {
            domain: "acme.example".into(),
            selector: "arc1".into(),
            algorithm: DkimAlgorithm::RsaSha256,
            key_file: dir.join("rsa.pem"),
        },
        DkimSettings {
            domain: "acme.example".into(),
            selector: "arc2".into(),
            algorithm: DkimAlgorithm::Ed25519Sha256,
            key_file: dir.join("ed.pem"),
        },
    ];
    let records = BTreeMap::from([
        (
            "arc1._domainkey.acme.example".to_string(),
            format!("v=DKIM1; k=rsa; p={}", base64(&path("rsa.der"))),
        ),
        (
            "arc2._domainkey.acme.example".to_string(),
            format!("v=DKIM1; k=ed25519; p={}", base64(&path("ed.raw"))),
        ),
    ]);
    (settings, records)
}

/// A campaign whose text has lines that start with dots (SMTP doubles
/// them on the wire; the archive must not).
fn campaign(id: &str, n: usize) -> serde_json::Value {
    let recipients: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"email": format!("user{i}@example.com"), "name": format!("Üser {i}"), "vars": {"code": i}}))
        .collect();
    serde_json::json!({
        "schema_version": 1,
        "request_id": id,
        "campaign": "archive",
        "lane": "bulk",
        "from": "ACME News <news@acme.example>",
        "subject": "Your code, {{ name }}",
        "text": "Your code is {{ code }}.\n.a line that starts with a dot\n..and one with two\n.\n",
        "html": "<p>Your code is <b>{{ code }}</b>.</p>",
        "recipients": recipients,
    })
}

/// A message as the scripted server saved it, without its own `X-` lines
/// in front: the bytes it received. Also the envelope recipient.
fn as_received(saved: &[u8]) -> (String, Vec<u8>) {
    let mut rest = saved;
    let mut rcpt = String::new();
    for prefix in ["X-Mail-Args: ", "X-Rcpt-Args: ", "X-Session: "] {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a line of the server's own");
        let line = std::str::from_utf8(&rest[..end]).unwrap();
        assert!(line.starts_with(prefix), "{line}");
        if prefix == "X-Rcpt-Args: " {
            rcpt = line[prefix.len()..]
                .trim_matches(|c| c == '<' || c == '>')
                .to_string();
        }
        rest = &rest[end + 2..];
    }
    (rcpt, rest.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sent_message_is_exported_byte_for_byte_and_its_dkim_signatures_verify() {
    let smtp = ScriptedSmtp::start();
    let keydir = tempfile::tempdir().unwrap();
    let (dkim, records) = keys(keydir.path());
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |s| {
        s.sender.dkim = dkim;
        s.sender.archive.enabled = true;
        s.sender.archive.max_bytes = 200_000_000;
    })
    .await;
    assert!(
        p.queue_exists(Topology::ARCHIVE).await,
        "the archive stream"
    );

    let n = 1000;
    let rid = "archive-1000";
    p.publish_json(&campaign(rid, n)).await;
    let status = p.wait_complete(rid, Duration::from_secs(180)).await;
    assert_eq!(status.sent, n as u64, "{status:?}");
    wait_for("the sink's files", Duration::from_secs(10), || async {
        (smtp.count() == n).then_some(())
    })
    .await;

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("export");
    let (code, stdout) = p.cli(&[
        "archive",
        "export",
        "--request",
        rid,
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains(&format!("wrote {n} messages")), "{stdout}");
    let exported = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(exported, n, "one file per sent message");

    // Byte for byte what the server received, under the recipient's id.
    let mut compared = 0;
    for entry in std::fs::read_dir(smtp.dir().join("mail")).unwrap() {
        let (rcpt, received) = as_received(&std::fs::read(entry.unwrap().path()).unwrap());
        let key = EmailAddress::parse(&rcpt).unwrap().key();
        let file = dir.join(format!("{}.eml", message_id(rid, &key)));
        let archived =
            std::fs::read(&file).unwrap_or_else(|e| panic!("{} for {rcpt}: {e}", file.display()));
        assert!(
            archived == received,
            "{rcpt}: the archived copy differs from what the server received:\n{}\n---\n{}",
            String::from_utf8_lossy(&archived),
            String::from_utf8_lossy(&received)
        );
        compared += 1;
    }
    assert_eq!(compared, n);
    let sample =
        std::fs::read_to_string(dir.join(format!("{}.eml", message_id(rid, "user7@example.com"))))
            .unwrap();
    assert!(
        sample.contains("\r\n.a line that starts with a dot\r\n"),
        "dot-stuffing is not in the archive: {sample}"
    );

    // Both signatures of every exported message verify.
    let verified = run(Command::new("python3").args([
        "-c",
        VERIFY,
        dir.to_str().unwrap(),
        &serde_json::to_string(&records).unwrap(),
    ]));
    let verified: serde_json::Value = serde_json::from_slice(&verified).unwrap();
    assert_eq!(verified["files"], n, "{verified}");
    assert_eq!(verified["signatures"], 2 * n, "{verified}");
    assert_eq!(verified["ok"], 2 * n, "{verified}");

    // An unknown request: exit 3, nothing written.
    let unknown = out.path().join("unknown");
    let (code, _) = p.cli(&[
        "archive",
        "export",
        "--request",
        "no-such-request",
        "--to",
        unknown.to_str().unwrap(),
    ]);
    assert_eq!(code, 3);
    assert!(!unknown.exists());
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_archive_off_no_stream_is_declared_and_export_says_so() {
    let smtp = ScriptedSmtp::start();
    let p = TestPipeline::spawn_for_port(smtp.port, Workers::ALL, |_| {}).await;
    let rid = "archive-off";
    p.publish_json(&campaign(rid, 3)).await;
    let status = p.wait_complete(rid, Duration::from_secs(60)).await;
    assert_eq!(status.sent, 3);
    // Every worker has declared its topology by now.
    assert!(p.queue_exists(Topology::FAILED).await);
    assert!(
        !p.queue_exists(Topology::ARCHIVE).await,
        "a stream with the archive off"
    );

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("export");
    let (code, _) = p.cli(&[
        "archive",
        "export",
        "--request",
        rid,
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(!dir.exists());
    p.shutdown().await;
}

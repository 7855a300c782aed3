//! The sender's DKIM signatures checked by an independent verifier: keys
//! made by the openssl CLI, messages built by `mime::build` as the sender
//! sends them, verified by Python's dkimpy with the DNS records handed over
//! instead of looked up.
//!
//! Needs `openssl` and `python3` with dkimpy and PyNaCl (Ed25519):
//! `python3 -m pip install dkimpy pynacl` (scripts/services installs them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use data_encoding::BASE64;
use mailpipe_common::config::{DkimAlgorithm, DkimSettings};
use mailpipe_common::message::{Job, Lane, JOB_SCHEMA_VERSION};
use mailpipe_common::template::Rendered;
use mailpipe_sender::dkim::Signers;
use mailpipe_sender::mime::{self, Origin, Sender};
use serde_json::Value;

/// Verifies every DKIM-Signature of one message: prints one JSON object per
/// signature, `{"ok": bool, "d", "s", "a", "h": [...], "error"}`.
const VERIFY: &str = r#"
import json, sys
import dkim
from dkim.util import parse_tag_value
records = json.loads(sys.argv[2])
def dns(name, timeout=5):
    key = name.decode() if isinstance(name, bytes) else name
    return records.get(key.rstrip('.').lower(), '').encode() or None
message = open(sys.argv[1], 'rb').read()
headers, _ = dkim.rfc822_parse(message)
signatures = [v for (k, v) in headers if k.lower() == b'dkim-signature']
out = []
for i, value in enumerate(signatures):
    tags = parse_tag_value(value)
    entry = {
        'd': tags[b'd'].decode(),
        's': tags[b's'].decode(),
        'a': tags[b'a'].decode(),
        'h': [h.strip().decode().lower() for h in tags[b'h'].split(b':')],
    }
    try:
        entry['ok'] = bool(dkim.DKIM(message).verify(idx=i, dnsfunc=dns))
    except Exception as e:
        entry['ok'] = False
        entry['error'] = '%s: %s' % (type(e).__name__, e)
    out.append(entry)
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

fn openssl(args: &[&str]) -> Vec<u8> {
    run(Command::new("openssl").args(args))
}

/// Test keys and their DNS records.
struct Keys {
    _dir: tempfile::TempDir,
    rsa_pkcs1: PathBuf,
    rsa_pkcs8: PathBuf,
    ed_pkcs8: PathBuf,
    ed_raw: PathBuf,
    rsa_1024: PathBuf,
    /// `p=` of the RSA key: base64 of its SubjectPublicKeyInfo.
    rsa_p: String,
    /// `p=` of the Ed25519 key: base64 of the raw 32-byte public key.
    ed_p: String,
}

impl Keys {
    fn generate() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let (rsa_pkcs1, rsa_pkcs8) = (path("rsa1.pem"), path("rsa8.pem"));
        openssl(&["genrsa", "-traditional", "-out", &s(&rsa_pkcs1), "2048"]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &s(&rsa_pkcs1),
            "-out",
            &s(&rsa_pkcs8),
        ]);
        let rsa_spki = openssl(&["rsa", "-in", &s(&rsa_pkcs1), "-pubout", "-outform", "DER"]);
        let rsa_1024 = path("rsa1024.pem");
        openssl(&["genrsa", "-traditional", "-out", &s(&rsa_1024), "1024"]);

        let ed_pkcs8 = path("ed.pem");
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", &s(&ed_pkcs8)]);
        let ed_spki = openssl(&["pkey", "-in", &s(&ed_pkcs8), "-pubout", "-outform", "DER"]);
        let ed_der = openssl(&["pkey", "-in", &s(&ed_pkcs8), "-outform", "DER"]);
        // An Ed25519 SPKI and a PKCS#8 v1 document both end with the raw key.
        let ed_raw = path("ed.b64");
        std::fs::write(&ed_raw, BASE64.encode(&ed_der[ed_der.len() - 32..]) + "\n").unwrap();

        let text = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert!(text(&rsa_pkcs1).starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        assert!(text(&rsa_pkcs8).starts_with("-----BEGIN PRIVATE KEY-----"));
        Keys {
            rsa_pkcs1,
            rsa_pkcs8,
            ed_pkcs8,
            ed_raw,
            rsa_1024,
            rsa_p: BASE64.encode(&rsa_spki),
            ed_p: BASE64.encode(&ed_spki[ed_spki.len() - 32..]),
            _dir: dir,
        }
    }

    /// The TXT records of the selectors used below.
    fn records(&self) -> BTreeMap<String, String> {
        let rsa = format!("v=DKIM1; k=rsa; p={}", self.rsa_p);
        let ed = format!("v=DKIM1; k=ed25519; p={}", self.ed_p);
        BTreeMap::from([
            ("rsa1._domainkey.example.com".to_string(), rsa.clone()),
            ("rsa8._domainkey.news.example.com".to_string(), rsa),
            ("ed._domainkey.example.com".to_string(), ed.clone()),
            ("edraw._domainkey.example.com".to_string(), ed),
        ])
    }
}

fn entry(domain: &str, selector: &str, algorithm: DkimAlgorithm, key: &Path) -> DkimSettings {
    DkimSettings {
        domain: domain.into(),
        selector: selector.into(),
        algorithm,
        key_file: key.to_path_buf(),
    }
}

fn origin(entries: &[DkimSettings]) -> Origin {
    Origin {
        hostname: "mta.example.com".into(),
        verp: None,
        dkim: Signers::load(entries).expect("keys load"),
    }
}

fn job(to: &str, name: Option<&str>) -> Job {
    Job {
        v: JOB_SCHEMA_VERSION,
        id: mailpipe_common::message::message_id("req-dkim", to),
        request: "req-dkim".into(),
        tenant: None,
        campaign: Some("spring".into()),
        lane: Lane::Bulk,
        content: "content-1".into(),
        to: to.parse().unwrap(),
        name: name.map(str::to_string),
        vars: Default::default(),
        created: 0,
        deadline: i64::MAX,
        attempt: 0,
        last_reason: None,
        retries: None,
    }
}

/// A campaign mail at its hardest: non-ASCII subject and display names,
/// long header lines (folded when formatted), html and text, one-click
/// unsubscribe, trailing spaces and blank lines in the body.
fn campaign(from: &str, reply_to: Option<&str>, origin: &Origin) -> Vec<u8> {
    let sender = Sender::parse(from, reply_to).unwrap();
    let rendered = Rendered {
        subject: "Frühlingsangebote für Sie: Ærøskøbing, Łódź und Zürich — jetzt 20 % \
                  Rabatt auf alles, nur bis Sonntag, solange der Vorrat reicht"
            .into(),
        text: Some("Hallo Jürgen,  \r\n\r\nunsere Angebote:\t20 %  \r\n\r\n\r\n".into()),
        html: Some(format!(
            "<html><body><p>Hallo J&uuml;rgen,</p>{}</body></html>",
            "<p>Ein sehr langer Absatz ohne Umbruch. </p>".repeat(40)
        )),
        headers: vec![
            (
                "X-Campaign-Info".into(),
                format!("spring sale {}", "tracking-token ".repeat(12)),
            ),
            (
                "List-Id".into(),
                "Spring news <spring.news.example.com>".into(),
            ),
        ],
        unsubscribe_url: Some(format!(
            "https://news.example.com/unsubscribe?token={}&campaign=spring",
            "abcdef0123456789".repeat(6)
        )),
    };
    let (_, bytes) = mime::build(
        &job("kunde@example.org", Some("Jürgen Müller-Lüdenscheidt")),
        &sender,
        rendered,
        origin,
        SystemTime::now(),
    )
    .unwrap();
    bytes
}

/// A plain transactional mail: one text part, no Reply-To, no unsubscribe.
fn receipt(from: &str, origin: &Origin) -> Vec<u8> {
    let sender = Sender::parse(from, None).unwrap();
    let rendered = Rendered {
        subject: "Your receipt".into(),
        text: Some("Thank you.\r\n".into()),
        html: None,
        headers: Vec::new(),
        unsubscribe_url: None,
    };
    mime::build(
        &job("a@example.org", None),
        &sender,
        rendered,
        origin,
        SystemTime::now(),
    )
    .unwrap()
    .1
}

/// Runs dkimpy on a message: one JSON object per signature.
fn verify(message: &[u8], keys: &Keys) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let records = serde_json::to_string(&keys.records()).unwrap();
    let out = Command::new("python3")
        .args(["-c", VERIFY, file.to_str().unwrap(), &records])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    assert!(
        out.status.success(),
        "the dkimpy verifier failed: {}\n\
         It needs python3 with dkimpy and PyNaCl: `python3 -m pip install dkimpy pynacl`.",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn signed_headers(sig: &Value) -> Vec<String> {
    sig["h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

fn assert_verified(sigs: &[Value], message: &[u8]) {
    assert!(!sigs.is_empty(), "no signature");
    for sig in sigs {
        assert_eq!(
            sig["ok"],
            Value::Bool(true),
            "signature {sig} does not verify:\n{}",
            String::from_utf8_lossy(message)
        );
    }
}

/// Changes one byte of the body: the last letter of "Angebote" in the
/// text part (not the MIME boundary, which is random).
fn tamper_body(message: &[u8]) -> Vec<u8> {
    let body = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let word = body
        + message[body..]
            .windows(8)
            .position(|w| w == b"Angebote")
            .expect("the text part says Angebote");
    let mut out = message.to_vec();
    out[word + 7] = b'a';
    out
}

/// Asserts that dkimpy refuses the signature for its body hash.
fn assert_body_hash_fails(sig: &Value) {
    assert_eq!(sig["ok"], Value::Bool(false), "a changed body verifies");
    let error = sig["error"].as_str().unwrap_or_default();
    assert!(error.contains("body hash mismatch"), "{sig}");
}

#[test]
fn rsa_signatures_of_pkcs1_and_pkcs8_keys_verify_with_dkimpy() {
    let keys = Keys::generate();
    let o = origin(&[
        entry(
            "example.com",
            "rsa1",
            DkimAlgorithm::RsaSha256,
            &keys.rsa_pkcs1,
        ),
        entry(
            "news.example.com",
            "rsa8",
            DkimAlgorithm::RsaSha256,
            &keys.rsa_pkcs8,
        ),
    ]);
    // PKCS#1, parent domain; PKCS#8, the more specific domain.
    for (from, domain, selector) in [
        ("Händler Straße <shop@example.com>", "example.com", "rsa1"),
        (
            "Ünïcödé News <letters@eu.news.example.com>",
            "news.example.com",
            "rsa8",
        ),
    ] {
        let message = campaign(from, Some("Kundenservice <hilfe@example.com>"), &o);
        let sigs = verify(&message, &keys);
        assert_eq!(sigs.len(), 1);
        assert_verified(&sigs, &message);
        assert_eq!(sigs[0]["d"], domain);
        assert_eq!(sigs[0]["s"], selector);
        assert_eq!(sigs[0]["a"], "rsa-sha256");
        let h = signed_headers(&sigs[0]);
        for name in [
            "from",
            "reply-to",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "list-unsubscribe",
            "list-unsubscribe-post",
            "list-id",
        ] {
            assert!(h.contains(&name.to_string()), "{name} not in h={h:?}");
        }
        assert!(!h.contains(&"x-campaign-info".to_string()));

        assert_body_hash_fails(&verify(&tamper_body(&message), &keys)[0]);
    }
}

#[test]
fn headers_the_message_lacks_are_not_signed() {
    let keys = Keys::generate();
    let o = origin(&[entry(
        "example.com",
        "rsa1",
        DkimAlgorithm::RsaSha256,
        &keys.rsa_pkcs1,
    )]);
    let message = receipt("Billing <billing@example.com>", &o);
    let sigs = verify(&message, &keys);
    assert_verified(&sigs, &message);
    let h = signed_headers(&sigs[0]);
    for absent in [
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "cc",
    ] {
        assert!(!h.contains(&absent.to_string()), "{absent} in h={h:?}");
    }
    for present in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "content-type",
    ] {
        assert!(h.contains(&present.to_string()), "{present} not in h={h:?}");
    }
    // A changed signed header fails too.
    let text = String::from_utf8(message).unwrap();
    let changed = text.replace("Subject: Your receipt", "Subject: Your receipts");
    assert_ne!(changed, text);
    assert_eq!(
        verify(changed.as_bytes(), &keys)[0]["ok"],
        Value::Bool(false)
    );
}

#[test]
fn ed25519_signatures_of_pem_and_raw_keys_verify_with_dkimpy() {
    let keys = Keys::generate();
    for (selector, file) in [("ed", &keys.ed_pkcs8), ("edraw", &keys.ed_raw)] {
        let o = origin(&[entry(
            "example.com",
            selector,
            DkimAlgorithm::Ed25519Sha256,
            file,
        )]);
        let message = campaign("Shop <shop@example.com>", None, &o);
        let sigs = verify(&message, &keys);
        assert_eq!(sigs.len(), 1);
        assert_verified(&sigs, &message);
        assert_eq!(sigs[0]["a"], "ed25519-sha256");
        assert_eq!(sigs[0]["s"], selector);
        let h = signed_headers(&sigs[0]);
        assert!(h.contains(&"list-unsubscribe".to_string()), "{h:?}");
        assert!(h.contains(&"list-unsubscribe-post".to_string()), "{h:?}");
        assert!(!h.contains(&"reply-to".to_string()), "{h:?}");
        assert_body_hash_fails(&verify(&tamper_body(&message), &keys)[0]);
    }
}

#[test]
fn rsa_and_ed25519_keys_of_one_domain_both_sign() {
    let keys = Keys::generate();
    let o = origin(&[
        entry(
            "example.com",
            "rsa1",
            DkimAlgorithm::RsaSha256,
            &keys.rsa_pkcs1,
        ),
        entry(
            "example.com",
            "ed",
            DkimAlgorithm::Ed25519Sha256,
            &keys.ed_pkcs8,
        ),
    ]);
    let message = campaign("Shop <shop@example.com>", None, &o);
    let sigs = verify(&message, &keys);
    assert_eq!(sigs.len(), 2);
    assert_verified(&sigs, &message);
    let algorithms: Vec<&str> = sigs.iter().map(|s| s["a"].as_str().unwrap()).collect();
    assert_eq!(algorithms, ["rsa-sha256", "ed25519-sha256"]);
    // Mail from a domain without a key goes out unsigned.
    let message = campaign("Other <info@example.net>", None, &o);
    assert!(verify(&message, &keys).is_empty());
}

#[test]
fn unusable_key_files_stop_start_up_naming_the_file() {
    let keys = Keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (algorithm, file) in [
        (DkimAlgorithm::RsaSha256, &garbage),
        (DkimAlgorithm::RsaSha256, &missing),
        (DkimAlgorithm::Ed25519Sha256, &garbage),
        // The wrong algorithm for the key.
        (DkimAlgorithm::RsaSha256, &keys.ed_pkcs8),
        (DkimAlgorithm::Ed25519Sha256, &keys.rsa_pkcs1),
        // Too short for RSA signing.
        (DkimAlgorithm::RsaSha256, &keys.rsa_1024),
    ] {
        let good = entry(
            "example.com",
            "ok",
            DkimAlgorithm::RsaSha256,
            &keys.rsa_pkcs8,
        );
        let bad = entry("example.com", "bad", algorithm, file);
        let e = Signers::load(&[good, bad]).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains(file.to_str().unwrap()), "{text}");
    }
}

//! DKIM signatures of outgoing mail (RFC 6376; Ed25519 per RFC 8463).
//!
//! Keys come from `sender.dkim` and are read and parsed once, at start-up
//! ([`Signers::load`]): a key file that cannot be used stops the sender with
//! an error naming the file, it never fails a message. A message whose From
//! domain equals an entry's domain, or is a subdomain of it, is signed with
//! the most specific domain's entries: one signature per entry, so an RSA and
//! an Ed25519 key of the same domain sign side by side (receivers that do not
//! know Ed25519 still find the RSA signature). Mail from other domains goes
//! out unsigned.
//!
//! The signer works on the formatted bytes, as they go over SMTP, with
//! relaxed/relaxed canonicalization. lettre's own DKIM code is not used: it
//! hashes only the top-level headers of its `Message` (Content-Type of a
//! MIME body is not among them) and signs a fixed header list, present or
//! not. Here the signed header fields are those of [`SIGNED_HEADERS`] that
//! the message has, every instance of each.
//!
//! Key formats (`key_file`):
//! - `rsa_sha256`: PEM, PKCS#1 (`BEGIN RSA PRIVATE KEY`, from `openssl genrsa
//!   -traditional`) or PKCS#8 (`BEGIN PRIVATE KEY`, from `openssl genpkey
//!   -algorithm RSA`), unencrypted, 2048 to 8192 bits. The DNS record is
//!   `v=DKIM1; k=rsa; p=<base64 DER of the public key>` (`openssl rsa -in
//!   key.pem -pubout -outform DER | base64 -w0`).
//! - `ed25519_sha256`: PEM PKCS#8 (`openssl genpkey -algorithm ed25519`), or
//!   the 32-byte private key (seed) in base64 on one line (what dkimpy's
//!   `dknewkey --ktype ed25519` writes). The DNS record is `v=DKIM1;
//!   k=ed25519; p=<base64 of the raw 32-byte public key>` (`openssl pkey -in
//!   key.pem -pubout -outform DER | tail -c 32 | base64`).
//!
//! Signing costs one SHA-256 pass over the message and one private-key
//! operation per signature. The crypto is aws-lc-rs (AWS-LC), not *ring*
//! (the crypto of mailpipe's TLS): on the same machine it signs RSA-2048
//! about 1.8 times and Ed25519 about 2.7 times as fast as *ring*, and RSA
//! signing is most of the sender's CPU when keys are RSA (`mailpipe-bench
//! sign` measures it; BENCHMARKS.md, "DKIM signing").
//!
//! Reading the key files is in `key.rs`, the relaxed canonicalization in
//! `canon.rs`; the signers and the signature header are here.
//!
//! Just over 500 lines: the signers and the header they write, with the
//! tests that verify their signatures (a quarter of the file).

mod canon;
mod key;

use anyhow::Context;
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use data_encoding::BASE64;
use mailpipe_common::config::{DkimAlgorithm, DkimSettings};

use canon::{header_fields, relaxed_body_hash, relaxed_header, split_message};
use key::{parse_ed25519, parse_rsa};

/// Header fields signed when the message has them, in this order (lower
/// case, as relaxed canonicalization writes them): every instance the
/// message has, and none it lacks.
pub const SIGNED_HEADERS: &[&str] = &[
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "feedback-id",
];

/// Longest line of the DKIM-Signature header before it is folded.
const LINE: usize = 76;

/// The private key of one `sender.dkim` entry.
enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One signing identity: domain (`d=`), selector (`s=`) and key.
pub struct Signer {
    /// Lower case, without a trailing dot.
    domain: String,
    selector: String,
    key: Key,
    /// Needed by the (ring-compatible) RSA API; PKCS#1 v1.5 padding uses no
    /// randomness.
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

impl Signer {
    /// Reads and parses the key of one `sender.dkim` entry. The error names
    /// the file.
    pub fn load(settings: &DkimSettings) -> anyhow::Result<Signer> {
        let file = &settings.key_file;
        let contents = std::fs::read(file)
            .with_context(|| format!("reading DKIM key file {}", file.display()))?;
        Signer::new(
            &settings.domain,
            &settings.selector,
            settings.algorithm,
            &contents,
        )
        .with_context(|| {
            format!(
                "DKIM key file {} (domain {}, selector {})",
                file.display(),
                settings.domain,
                settings.selector
            )
        })
    }

    /// A signer from the contents of a key file (formats: see the module
    /// documentation).
    pub fn new(
        domain: &str,
        selector: &str,
        algorithm: DkimAlgorithm,
        key: &[u8],
    ) -> anyhow::Result<Signer> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        anyhow::ensure!(
            is_dns_name(&domain),
            "{domain:?} is not a domain name (write it in ASCII, IDNs as xn--)"
        );
        anyhow::ensure!(
            is_dns_name(selector),
            "selector {selector:?} is not a DNS name"
        );
        let key = match algorithm {
            DkimAlgorithm::RsaSha256 => Key::Rsa(parse_rsa(key)?),
            DkimAlgorithm::Ed25519Sha256 => Key::Ed25519(parse_ed25519(key)?),
        };
        Ok(Signer {
            domain,
            selector: selector.to_string(),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    pub fn algorithm(&self) -> DkimAlgorithm {
        match self.key {
            Key::Rsa(_) => DkimAlgorithm::RsaSha256,
            Key::Ed25519(_) => DkimAlgorithm::Ed25519Sha256,
        }
    }

    /// The DKIM-Signature header field (with its final CRLF) of a formatted
    /// message (CRLF line ends), signed at `now` (Unix seconds, the `t=`
    /// tag). Errors only on bytes that are not a message.
    pub fn signature_header(&self, message: &[u8], now: i64) -> Result<String, String> {
        let (headers, body) = split_message(message)?;
        let fields = header_fields(headers);
        let mut signed = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for name in SIGNED_HEADERS {
            // Several instances: the last one first (RFC 6376, 5.4.2).
            for (field_name, raw) in fields.iter().rev() {
                if field_name.eq_ignore_ascii_case(name) {
                    relaxed_header(raw, &mut signed);
                    names.push(name);
                }
            }
        }
        if !names.contains(&"from") {
            return Err("the message has no From header to sign".into());
        }
        let body_hash = BASE64.encode(relaxed_body_hash(body).as_ref());
        let algorithm = match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        };

        let mut header = Folded::new("DKIM-Signature:");
        for tag in [
            "v=1;".to_string(),
            format!("a={algorithm};"),
            "c=relaxed/relaxed;".to_string(),
            format!("d={};", self.domain),
            format!("s={};", self.selector),
            format!("t={now};"),
        ] {
            header.word(" ", &tag);
        }
        // `h=from:to:…;`, folded after a colon when long.
        for (i, name) in names.iter().enumerate() {
            let piece = match (i == 0, i + 1 == names.len()) {
                (true, true) => format!("h={name};"),
                (true, false) => format!("h={name}:"),
                (false, true) => format!("{name};"),
                (false, false) => format!("{name}:"),
            };
            header.word(if i == 0 { " " } else { "" }, &piece);
        }
        header.word(" ", &format!("bh={body_hash};"));
        header.word(" ", "b=");
        // What verifiers rebuild: this header with an empty `b=`, canonical,
        // without its final CRLF.
        relaxed_header(header.text.as_bytes(), &mut signed);
        signed.truncate(signed.len() - 2);

        let signature = match &self.key {
            Key::Rsa(pair) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, &signed, &mut out)
                    .map_err(|_| "RSA signing failed".to_string())?;
                out
            }
            Key::Ed25519(pair) => pair
                .sign(digest::digest(&SHA256, &signed).as_ref())
                .as_ref()
                .to_vec(),
        };
        let signature = BASE64.encode(&signature);
        for chunk in signature.as_bytes().chunks(64) {
            // Base64 is ASCII: every chunk is valid UTF-8.
            header.word("", std::str::from_utf8(chunk).unwrap_or_default());
        }
        header.text.push_str("\r\n");
        Ok(header.text)
    }
}

/// The signers of all `sender.dkim` entries.
#[derive(Debug, Default)]
pub struct Signers {
    /// In configuration order (the order of the signatures of one domain).
    signers: Vec<Signer>,
}

impl Signers {
    /// Loads every key of `sender.dkim`; the first that cannot be used is
    /// an error naming its file.
    pub fn load(settings: &[DkimSettings]) -> anyhow::Result<Signers> {
        let signers = settings
            .iter()
            .map(Signer::load)
            .collect::<anyhow::Result<Vec<_>>>()?;
        for s in &signers {
            tracing::info!(domain = %s.domain, selector = %s.selector, algorithm = ?s.algorithm(), "DKIM key loaded");
        }
        Ok(Signers { signers })
    }

    pub fn new(signers: Vec<Signer>) -> Signers {
        Signers { signers }
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    /// The signers of a From domain: the entries of the most specific
    /// configured domain that is the From domain or one of its parents
    /// (`news.example.com` before `example.com` for
    /// `eu.news.example.com`); empty when none is.
    pub fn for_domain(&self, from_domain: &str) -> Vec<&Signer> {
        let from = from_domain.trim_end_matches('.').to_ascii_lowercase();
        let covers = |d: &str| {
            from == d
                || (from.len() > d.len()
                    && from.ends_with(d)
                    && from.as_bytes()[from.len() - d.len() - 1] == b'.')
        };
        let best = self
            .signers
            .iter()
            .filter(|s| covers(&s.domain))
            .map(|s| s.domain.len())
            .max();
        match best {
            Some(len) => self
                .signers
                .iter()
                .filter(|s| s.domain.len() == len && covers(&s.domain))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Signs a formatted message from `from_domain`: the DKIM-Signature
    /// fields go on top. A message no entry covers comes back unchanged.
    pub fn sign(&self, from_domain: &str, message: Vec<u8>, now: i64) -> Result<Vec<u8>, String> {
        let signers = self.for_domain(from_domain);
        if signers.is_empty() {
            return Ok(message);
        }
        let mut headers = String::new();
        for s in signers {
            headers.push_str(&s.signature_header(&message, now)?);
        }
        let mut out = Vec::with_capacity(headers.len() + message.len());
        out.extend_from_slice(headers.as_bytes());
        out.extend_from_slice(&message);
        Ok(out)
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A header field built word by word, folded (CRLF TAB) before a word that
/// would make the line longer than [`LINE`].
struct Folded {
    text: String,
    line: usize,
}

impl Folded {
    fn new(start: &str) -> Self {
        Folded {
            text: start.to_string(),
            line: start.len(),
        }
    }

    /// Appends `separator` and `word`, or a fold and `word`.
    fn word(&mut self, separator: &str, word: &str) {
        if self.line + separator.len() + word.len() > LINE {
            self.text.push_str("\r\n\t");
            self.line = 8;
        } else {
            self.text.push_str(separator);
            self.line += separator.len();
        }
        self.text.push_str(word);
        self.line += word.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair as _;
    // Test keys come from *ring*, a second implementation: a key another
    // library wrote must load here.
    use ring::signature::KeyPair as _;

    fn ed25519(domain: &str, selector: &str) -> Signer {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            BASE64.encode(pkcs8.as_ref())
        );
        Signer::new(
            domain,
            selector,
            DkimAlgorithm::Ed25519Sha256,
            pem.as_bytes(),
        )
        .unwrap()
    }

    fn selectors<'a>(signers: &'a Signers, from: &str) -> Vec<&'a str> {
        signers
            .for_domain(from)
            .into_iter()
            .map(|s| s.selector())
            .collect()
    }

    #[test]
    fn the_most_specific_domain_signs() {
        let signers = Signers::new(vec![
            ed25519("example.com", "parent"),
            ed25519("news.example.com", "news"),
            ed25519("News.Example.com.", "news2"),
            ed25519("other.org", "other"),
        ]);
        assert_eq!(selectors(&signers, "example.com"), ["parent"]);
        assert_eq!(selectors(&signers, "shop.example.com"), ["parent"]);
        assert_eq!(selectors(&signers, "news.example.com"), ["news", "news2"]);
        assert_eq!(
            selectors(&signers, "EU.News.Example.COM"),
            ["news", "news2"]
        );
        assert_eq!(selectors(&signers, "other.org"), ["other"]);
    }

    #[test]
    fn unrelated_and_lookalike_domains_are_not_signed() {
        let signers = Signers::new(vec![ed25519("example.com", "s")]);
        for from in [
            "badexample.com",
            "example.com.evil.org",
            "example.org",
            "com",
        ] {
            assert!(signers.for_domain(from).is_empty(), "{from}");
        }
        let message = b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n".to_vec();
        assert_eq!(signers.sign("example.org", message.clone(), 0), Ok(message));
        assert!(Signers::default().for_domain("example.com").is_empty());
    }

    #[test]
    fn only_present_headers_are_signed_and_the_header_is_folded() {
        let signer = ed25519("example.com", "s1");
        let message = b"From: A <a@example.com>\r\nTo: b@example.org\r\nSubject: hi\r\n there\r\nX-Other: 1\r\n\r\nbody\r\n";
        let header = signer.signature_header(message, 1_700_000_000).unwrap();
        let unfolded = header.replace("\r\n\t", " ");
        assert!(
            unfolded.contains(" h=from:to:subject; "),
            "only the present headers: {header}"
        );
        assert!(unfolded.contains(" d=example.com; s=s1; t=1700000000;"));
        assert!(unfolded.contains(" a=ed25519-sha256;"));
        assert!(header.ends_with("\r\n"));
        for line in header.trim_end().split("\r\n") {
            assert!(line.len() <= LINE, "{line}");
        }
        let no_from = b"To: b@example.org\r\n\r\nbody\r\n";
        assert!(signer.signature_header(no_from, 0).is_err());
        assert!(signer.signature_header(b"From: a@example.com", 0).is_err());
    }

    #[test]
    fn key_files_in_every_supported_form_load() {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        // The seed is the last 32 bytes of a PKCS#8 v2 document's private
        // key OCTET STRING; ring's v2 layout puts it at bytes 16..48.
        let seed = &pkcs8.as_ref()[16..48];
        let raw = format!("{}\n", BASE64.encode(seed));
        let from_raw = Signer::new(
            "example.com",
            "s",
            DkimAlgorithm::Ed25519Sha256,
            raw.as_bytes(),
        )
        .unwrap();
        match &from_raw.key {
            Key::Ed25519(k) => assert_eq!(k.public_key().as_ref(), pair.public_key().as_ref()),
            Key::Rsa(_) => unreachable!(),
        }
        for bad in [&b"not a key"[..], b"AAAA", b""] {
            assert!(Signer::new("example.com", "s", DkimAlgorithm::Ed25519Sha256, bad).is_err());
            assert!(Signer::new("example.com", "s", DkimAlgorithm::RsaSha256, bad).is_err());
        }
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            BASE64.encode(pkcs8.as_ref())
        );
        let rsa_of_ed =
            Signer::new("example.com", "s", DkimAlgorithm::RsaSha256, pem.as_bytes()).unwrap_err();
        assert!(
            format!("{rsa_of_ed:#}").contains("ed25519_sha256"),
            "{rsa_of_ed:#}"
        );
        assert!(Signer::new(
            "exa mple.com",
            "s",
            DkimAlgorithm::Ed25519Sha256,
            pem.as_bytes()
        )
        .is_err());
        assert!(Signer::new(
            "example.com",
            "",
            DkimAlgorithm::Ed25519Sha256,
            pem.as_bytes()
        )
        .is_err());
    }
}

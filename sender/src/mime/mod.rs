//! Builds the MIME message of one recipient: multipart/alternative when both
//! a text and an html body are given, Message-ID from the deterministic
//! message id (a redelivered message keeps its Message-ID), Date, the
//! request's extra headers, and RFC 8058 one-click unsubscribe headers when
//! the request has an unsubscribe URL. Then its envelope sender (the VERP
//! address of the message when `bounces.domain` is set, else the From
//! address) and its DKIM signatures ([`crate::dkim`]).
//!
//! The bodies' transfer encoding (7bit, quoted-printable, base64) is in
//! `encoding.rs`.

mod encoding;

use std::time::SystemTime;

use anyhow::Context;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use mailpipe_common::config::Settings;
use mailpipe_common::message::Job;
use mailpipe_common::template::Rendered;
use mailpipe_common::verp::{self, Verp};

use crate::dkim::Signers;
use encoding::body;

/// The request-level parts of a message, parsed once per content id.
pub struct Sender {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
}

impl Sender {
    /// Parses the request's From and Reply-To (`Name <address>` or a bare
    /// address).
    pub fn parse(from: &str, reply_to: Option<&str>) -> Result<Self, String> {
        let mailbox = |raw: &str| -> Result<Mailbox, String> {
            let (name, addr) = mailpipe_common::address::parse_mailbox(raw)
                .map_err(|e| format!("{raw:?}: {e}"))?;
            let addr: Address = addr
                .to_string()
                .parse()
                .map_err(|e| format!("{raw:?}: {e}"))?;
            Ok(Mailbox::new(name, addr))
        };
        Ok(Self {
            from: mailbox(from)?,
            reply_to: reply_to.map(mailbox).transpose()?,
        })
    }
}

/// Formats the Message-ID of a job.
pub fn message_id_header(job: &Job, hostname: &str) -> String {
    format!("<{}@{}>", job.id, hostname)
}

/// What every message of a sender carries besides its content, set up once
/// at start-up.
pub struct Origin {
    /// Host name of the Message-ID (`sender.hostname`).
    pub hostname: String,
    /// The VERP return path, when `bounces.domain` is set.
    pub verp: Option<Verp>,
    /// The DKIM keys of `sender.dkim`, parsed.
    pub dkim: Signers,
}

impl Origin {
    /// Reads the DKIM keys and sets up VERP. A key file that cannot be
    /// used, or a `bounces.local_part` too long for a VERP address, is an
    /// error: the sender does not start.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Origin> {
        let bounces = &settings.bounces;
        if bounces.domain.is_some() {
            anyhow::ensure!(
                !bounces.keys.is_empty(),
                "bounces.domain is set but bounces.keys is empty: VERP tokens need a key"
            );
            anyhow::ensure!(
                bounces.local_part.len() <= verp::MAX_LOCAL_PART_LEN,
                "bounces.local_part {:?} is longer than {} characters: with the VERP token \
                 the local part would pass the 64 octets of RFC 5321",
                bounces.local_part,
                verp::MAX_LOCAL_PART_LEN
            );
        }
        Ok(Origin {
            hostname: settings.sender.hostname.clone(),
            verp: Verp::from_settings(bounces),
            dkim: Signers::load(&settings.sender.dkim).context("loading sender.dkim")?,
        })
    }
}

/// Builds the envelope and the formatted message, DKIM-signed when a key
/// covers the From domain. `now` is the Date header and the signature time.
pub fn build(
    job: &Job,
    sender: &Sender,
    rendered: Rendered,
    origin: &Origin,
    now: SystemTime,
) -> Result<(Envelope, Vec<u8>), String> {
    let to_addr =
        Address::new(job.to.local(), job.to.domain()).map_err(|e| format!("recipient: {e}"))?;
    let to = Mailbox::new(job.name.clone(), to_addr.clone());
    let mut b = Message::builder()
        .from(sender.from.clone())
        .to(to)
        .subject(rendered.subject)
        .message_id(Some(message_id_header(job, &origin.hostname)))
        .date(now);
    if let Some(r) = &sender.reply_to {
        b = b.reply_to(r.clone());
    }
    let raw = |name: &str, value: String| -> Result<HeaderValue, String> {
        let n = HeaderName::new_from_ascii(name.to_string())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        Ok(HeaderValue::new(n, value))
    };
    for (name, value) in rendered.headers {
        b = b.raw_header(raw(&name, value)?);
    }
    if let Some(url) = rendered.unsubscribe_url {
        b = b.raw_header(raw("List-Unsubscribe", format!("<{url}>"))?);
        b = b.raw_header(raw(
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click".to_string(),
        )?);
    }
    b = b.raw_header(raw("X-Mailpipe-Id", job.id.clone())?);
    let return_path = match &origin.verp {
        Some(verp) => verp
            .try_address(&job.id)
            .map_err(|e| format!("return path: {e}"))?
            .parse::<Address>()
            .map_err(|e| format!("return path: {e}"))?,
        None => sender.from.email.clone(),
    };
    let envelope =
        Envelope::new(Some(return_path), vec![to_addr]).map_err(|e| format!("envelope: {e}"))?;
    // Given the envelope, lettre does not derive it by parsing the headers
    // it was just given.
    b = b.envelope(envelope.clone());
    let message = match (rendered.text.map(body), rendered.html.map(body)) {
        (Some(text), Some(html)) => b.multipart(MultiPart::alternative_plain_html(text, html)),
        (Some(text), None) => b.singlepart(SinglePart::plain(text)),
        (None, Some(html)) => b.singlepart(SinglePart::html(html)),
        (None, None) => return Err("message has no body".into()),
    }
    .map_err(|e| format!("building message: {e}"))?;
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let bytes = origin
        .dkim
        .sign(sender.from.email.domain(), message.formatted(), unix)
        .map_err(|e| format!("DKIM signing: {e}"))?;
    Ok((envelope, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::Signer;
    use data_encoding::BASE64;
    use mailpipe_common::config::{DkimAlgorithm, DkimSettings};
    use mailpipe_common::message::Lane;
    use ring::signature::Ed25519KeyPair;

    fn job() -> Job {
        Job {
            v: mailpipe_common::message::JOB_SCHEMA_VERSION,
            id: mailpipe_common::message::message_id("req-1", "rcpt@example.org"),
            request: "req-1".into(),
            tenant: None,
            campaign: None,
            lane: Lane::Bulk,
            content: "c1".into(),
            to: "rcpt@example.org".parse().unwrap(),
            name: None,
            vars: Default::default(),
            created: 0,
            deadline: i64::MAX,
            attempt: 0,
            last_reason: None,
            retries: None,
        }
    }

    fn rendered() -> Rendered {
        Rendered {
            subject: "Hello".into(),
            text: Some("Hi there".into()),
            html: None,
            headers: Vec::new(),
            unsubscribe_url: Some("https://example.com/u/1".into()),
        }
    }

    fn origin(verp: Option<Verp>, dkim: Signers) -> Origin {
        Origin {
            hostname: "mx.example.com".into(),
            verp,
            dkim,
        }
    }

    fn sender() -> Sender {
        Sender::parse("News <news@mail.example.com>", None).unwrap()
    }

    fn ed25519(domain: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            BASE64.encode(pkcs8.as_ref())
        );
        Signer::new(domain, "s1", DkimAlgorithm::Ed25519Sha256, pem.as_bytes()).unwrap()
    }

    fn decoded(message: &[u8]) -> (String, String) {
        let m = mail_parser::MessageParser::default()
            .parse(message)
            .expect("a MIME message");
        let lf = |s: &str| s.replace("\r\n", "\n");
        (
            lf(&m.body_text(0).expect("a text body")),
            lf(&m.body_html(0).expect("an html body")),
        )
    }

    #[test]
    fn every_body_decodes_to_its_text_whatever_encoding_it_got() {
        let o = origin(None, Signers::default());
        let long = "x".repeat(300);
        let cases = [
            // 7bit: ASCII, short lines.
            (
                "7bit",
                "Hi there.\nSecond line.\n".to_string(),
                "<p>Hi</p>\n".to_string(),
            ),
            // Quoted-printable: long lines, `=`, trailing blanks, Latin text.
            (
                "quoted-printable",
                format!("{long}\nLine with = sign and trailing space \nÜber straße café\n"),
                format!("<p style=\"color: red\">{long}</p>\t\n<p>naïve</p>"),
            ),
            // Base64: mostly non-Latin text.
            (
                "base64",
                "こんにちは、世界。メールの本文です。\n".repeat(5),
                "<p>你好，世界</p>".repeat(40),
            ),
        ];
        for (encoding, text, html) in cases {
            let r = Rendered {
                text: Some(text.clone()),
                html: Some(html.clone()),
                ..rendered()
            };
            let (_, bytes) = build(&job(), &sender(), r, &o, SystemTime::now()).unwrap();
            assert!(
                String::from_utf8_lossy(&bytes)
                    .split("\r\n")
                    .all(|l| l.len() <= 998),
                "a line over 998 octets"
            );
            let cte = format!("Content-Transfer-Encoding: {encoding}\r\n");
            assert_eq!(
                String::from_utf8_lossy(&bytes).matches(&cte).count(),
                2,
                "both bodies in {encoding}"
            );
            let (t, h) = decoded(&bytes);
            assert_eq!(t.trim_end(), text.trim_end());
            assert_eq!(h.trim_end(), html.trim_end());
        }
    }

    #[test]
    fn the_built_message_is_the_same_whatever_the_line_ends_of_the_bodies() {
        let o = origin(None, Signers::default());
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let with = |text: &str| Rendered {
            text: Some(text.into()),
            html: Some(format!("<p>{text}</p>")),
            ..rendered()
        };
        let strip_boundaries = |b: Vec<u8>| {
            let t = String::from_utf8(b).unwrap();
            t.lines()
                .filter(|l| !l.contains("boundary") && !l.starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (_, lf) = build(&job(), &sender(), with("one\ntwo\n"), &o, now).unwrap();
        let (_, crlf) = build(&job(), &sender(), with("one\r\ntwo\r\n"), &o, now).unwrap();
        assert_eq!(strip_boundaries(lf), strip_boundaries(crlf));
    }

    #[test]
    fn the_envelope_sender_is_the_verp_address_when_a_bounce_domain_is_set() {
        let verp = Verp::new("bounces", "bounce.example.com", vec![b"k".repeat(16)]);
        let o = origin(Some(verp.clone()), Signers::default());
        let (envelope, _) = build(&job(), &sender(), rendered(), &o, SystemTime::now()).unwrap();
        let from = envelope.from().unwrap().to_string();
        assert_eq!(from, verp.address(&job().id));
        assert_eq!(verp.decode(&from), Ok(job().id));
        assert_eq!(
            envelope.to(),
            ["rcpt@example.org".parse::<Address>().unwrap()]
        );
    }

    #[test]
    fn the_envelope_sender_is_the_from_address_without_a_bounce_domain() {
        let o = origin(None, Signers::default());
        let (envelope, bytes) =
            build(&job(), &sender(), rendered(), &o, SystemTime::now()).unwrap();
        assert_eq!(
            envelope.from().unwrap().to_string(),
            "news@mail.example.com"
        );
        assert!(!String::from_utf8_lossy(&bytes).contains("DKIM-Signature"));
    }

    #[test]
    fn a_unicode_recipient_is_in_the_envelope_and_the_to_header_as_utf8() {
        let o = origin(None, Signers::default());
        let mut j = job();
        j.to = "josé@example.org".parse().unwrap();
        j.name = Some("José".into());
        let (envelope, bytes) = build(&j, &sender(), rendered(), &o, SystemTime::now()).unwrap();
        assert_eq!(envelope.to()[0].to_string(), "josé@example.org");
        let text = String::from_utf8(bytes).unwrap();
        // RFC 6532: the address itself is UTF-8 in the header (an encoded
        // word is allowed for the name only).
        assert!(text.contains("<josé@example.org>"), "{text}");
    }

    #[test]
    fn mail_from_a_covered_domain_is_signed_and_other_mail_is_not() {
        let o = origin(None, Signers::new(vec![ed25519("example.com")]));
        let (_, bytes) = build(&job(), &sender(), rendered(), &o, SystemTime::now()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
            "{text}"
        );
        assert!(text.contains("d=example.com;"), "{text}");

        let other = Sender::parse("news@example.net", None).unwrap();
        let (_, bytes) = build(&job(), &other, rendered(), &o, SystemTime::now()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("DKIM-Signature"));
    }

    #[test]
    fn unusable_keys_and_bad_verp_settings_stop_start_up() {
        let mut settings = Settings::default();
        assert!(Origin::from_settings(&settings).is_ok());
        settings.sender.dkim = vec![DkimSettings {
            domain: "example.com".into(),
            selector: "s1".into(),
            algorithm: DkimAlgorithm::RsaSha256,
            key_file: "/nonexistent/mailpipe/dkim.pem".into(),
        }];
        let e = Origin::from_settings(&settings).err().unwrap();
        assert!(
            format!("{e:#}").contains("/nonexistent/mailpipe/dkim.pem"),
            "{e:#}"
        );

        let mut settings = Settings::default();
        settings.bounces.domain = Some("bounce.example.com".into());
        assert!(Origin::from_settings(&settings).is_err(), "no keys");
        settings.bounces.keys = vec!["a key of 16+ chars".into()];
        assert!(Origin::from_settings(&settings).unwrap().verp.is_some());
        settings.bounces.local_part = "x".repeat(verp::MAX_LOCAL_PART_LEN + 1);
        assert!(Origin::from_settings(&settings).is_err());
    }
}

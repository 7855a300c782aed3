//! Builds the MIME message of one recipient: multipart/alternative when both
//! a text and an html body are given, Message-ID from the deterministic
//! message id (a redelivered message keeps its Message-ID), Date, the
//! request's extra headers, and RFC 8058 one-click unsubscribe headers when
//! the request has an unsubscribe URL.

use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use mailpipe_common::message::Job;
use mailpipe_common::template::Rendered;

/// The request-level parts of a message, parsed once per content id.
pub struct Sender {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
}

impl Sender {
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

/// Builds the envelope and the formatted message.
pub fn build(
    job: &Job,
    sender: &Sender,
    rendered: Rendered,
    hostname: &str,
) -> Result<(Envelope, Vec<u8>), String> {
    let to_addr: Address = job.to.parse().map_err(|e| format!("recipient: {e}"))?;
    let to = Mailbox::new(job.name.clone(), to_addr.clone());
    let mut b = Message::builder()
        .from(sender.from.clone())
        .to(to)
        .subject(rendered.subject)
        .message_id(Some(message_id_header(job, hostname)))
        .date_now();
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
    let envelope = Envelope::new(Some(sender.from.email.clone()), vec![to_addr])
        .map_err(|e| format!("envelope: {e}"))?;
    let message = match (rendered.text, rendered.html) {
        (Some(text), Some(html)) => b.multipart(MultiPart::alternative_plain_html(text, html)),
        (Some(text), None) => b.singlepart(SinglePart::plain(text)),
        (None, Some(html)) => b.singlepart(SinglePart::html(html)),
        (None, None) => return Err("message has no body".into()),
    }
    .map_err(|e| format!("building message: {e}"))?;
    Ok((envelope, message.formatted()))
}

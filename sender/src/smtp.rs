//! The SMTP side of the sender: one pooled lettre transport per route, and
//! the translation of lettre's errors into mailpipe's [`Failure`], keeping
//! the server's full reply (basic code, enhanced code, text) for the
//! classifier and for operators.
//!
//! lettre's pool `max_size` bounds idle connections, not concurrency; the
//! sender bounds transactions in flight with its own per-lane semaphores.

use std::error::Error as _;

use lettre::address::Envelope;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mailpipe_common::classify::{ConnectionError, Failure};
use mailpipe_common::config::{SmtpSettings, TlsMode};
use secrecy::ExposeSecret;

/// A relay the sender submits to.
pub struct Route {
    /// `host:port`, as reported in sent records, failures and metrics.
    pub name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

/// The server's positive reply.
pub struct Accepted {
    pub code: u16,
    pub text: String,
}

impl Route {
    /// Builds the pooled transport of a relay.
    pub fn new(smtp: &SmtpSettings, hello_name: &str) -> anyhow::Result<Self> {
        let host = smtp.host.clone();
        let params = || TlsParameters::new(host.clone());
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone());
        let builder = match smtp.tls {
            TlsMode::None => builder.tls(Tls::None),
            TlsMode::Opportunistic => builder.tls(Tls::Opportunistic(params()?)),
            TlsMode::Starttls => builder.tls(Tls::Required(params()?)),
            TlsMode::Implicit => builder.tls(Tls::Wrapper(params()?)),
        };
        let mut builder = builder
            .port(smtp.port)
            .timeout(Some(smtp.timeout))
            .hello_name(ClientId::Domain(hello_name.to_string()))
            .pool_config(
                PoolConfig::new()
                    .max_size(smtp.pool_size)
                    .idle_timeout(smtp.pool_idle),
            );
        if let (Some(user), Some(pass)) = (&smtp.username, &smtp.password) {
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    pass.expose_secret().to_string(),
                ));
        }
        Ok(Self {
            name: format!("{}:{}", smtp.host, smtp.port),
            transport: builder.build(),
        })
    }

    /// Submits one message; the error is the failure as the classifier sees it.
    pub async fn submit(&self, envelope: &Envelope, message: &[u8]) -> Result<Accepted, Failure> {
        match self.transport.send_raw(envelope, message).await {
            Ok(resp) => Ok(Accepted {
                code: resp.code().to_string().parse().unwrap_or(250),
                text: resp.message().collect::<Vec<_>>().join(" "),
            }),
            Err(e) => Err(failure_of(&e)),
        }
    }
}

/// Extracts an RFC 3463 enhanced status code (`4.4.3`) from the start of a reply text.
pub fn enhanced_code(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && (1..=3).contains(&subject.len())
        && (1..=3).contains(&detail.len())
        && subject
            .chars()
            .chain(detail.chars())
            .all(|c| c.is_ascii_digit());
    ok.then(|| word.to_string())
}

fn failure_of(e: &lettre::transport::smtp::Error) -> Failure {
    let detail = {
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(inner) = src {
            let t = inner.to_string();
            if !s.contains(&t) {
                s.push_str(": ");
                s.push_str(&t);
            }
            src = inner.source();
        }
        s
    };
    if let Some(code) = e.status() {
        let text = e.source().map(|s| s.to_string()).unwrap_or_default();
        return Failure::Reply {
            code: code.to_string().parse().unwrap_or(0),
            enhanced: enhanced_code(&text),
            text,
        };
    }
    let error = if e.is_timeout() {
        ConnectionError::Timeout
    } else if e.is_tls() {
        ConnectionError::Tls
    } else {
        let mut kind = ConnectionError::Other;
        let mut src = e.source();
        while let Some(inner) = src {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                kind = match io.kind() {
                    K::ConnectionRefused => ConnectionError::Refused,
                    K::TimedOut => ConnectionError::Timeout,
                    K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::UnexpectedEof => ConnectionError::Disconnected,
                    _ if io.to_string().contains("lookup") => ConnectionError::Dns,
                    _ => ConnectionError::Other,
                };
                break;
            }
            src = inner.source();
        }
        if kind == ConnectionError::Other && detail.contains("incomplete response") {
            ConnectionError::Disconnected
        } else {
            kind
        }
    };
    Failure::Connection { error, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_found_at_the_start_of_the_text() {
        assert_eq!(
            enhanced_code("4.4.3 Routing server failure").as_deref(),
            Some("4.4.3")
        );
        assert_eq!(
            enhanced_code("5.7.606 Access denied").as_deref(),
            Some("5.7.606")
        );
        assert_eq!(enhanced_code("Service not available"), None);
        assert_eq!(enhanced_code("1.2.3 nope"), None);
        assert_eq!(enhanced_code("5.1 short"), None);
    }
}

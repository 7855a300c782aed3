//! The SMTP side of the sender: one connection pool per route (relay), and
//! the translation of lettre's errors into mailpipe's [`Failure`], keeping
//! the server's full reply (basic code, enhanced code, text) for the
//! classifier and for operators.
//!
//! The pool is deadpool's, over lettre's `AsyncSmtpConnection`, rather than
//! lettre's own pool, for two reasons: lettre's `timeout` bounds only the TCP
//! connect, so a server that stops answering mid-transaction would hold a
//! message forever; and a transaction abandoned on our own timeout must
//! never go back to the pool (the next message would read the stale
//! replies). Here every transaction runs under a deadline, and a connection
//! that timed out or failed is taken out of the pool and closed. deadpool's
//! `max_size` also bounds the connections open to the relay.

use std::error::Error as _;
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use mailpipe_common::classify::{ConnectionError, Failure};
use mailpipe_common::config::{RouteSettings, TlsMode};
use secrecy::ExposeSecret;

/// Connects to the first reachable address of `host` with Nagle's
/// algorithm off. The SMTP client writes the end of the data (`.`) apart
/// from the message; with Nagle on, that small write waits for the ACK of
/// the message, which the server delays (~40 ms on Linux) as it has nothing
/// to answer yet: one stall per message.
async fn connect_nodelay(
    host: &str,
    port: u16,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection timed out",
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

/// Why a connection to a relay could not be opened.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The TCP connection itself.
    Tcp(std::io::Error),
    /// The SMTP greeting, EHLO, STARTTLS or AUTH.
    Smtp(lettre::transport::smtp::Error),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Tcp(e) => write!(f, "connecting: {e}"),
            ConnectFailure::Smtp(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnectFailure {}

impl From<lettre::transport::smtp::Error> for ConnectFailure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        ConnectFailure::Smtp(e)
    }
}

/// Creates and checks connections to one relay.
struct SmtpManager {
    host: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
    idle: Duration,
}

impl managed::Manager for SmtpManager {
    type Type = AsyncSmtpConnection;
    type Error = ConnectFailure;

    async fn create(&self) -> Result<AsyncSmtpConnection, Self::Error> {
        let implicit = match self.tls {
            TlsMode::Implicit => self.tls_parameters.clone(),
            _ => None,
        };
        let mut conn = match implicit {
            Some(tls) => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &self.hello,
                    Some(tls),
                    None,
                )
                .await?
            }
            None => {
                let tcp = connect_nodelay(&self.host, self.port, self.timeout)
                    .await
                    .map_err(ConnectFailure::Tcp)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?
            }
        };
        if let Some(params) = &self.tls_parameters {
            match self.tls {
                TlsMode::Starttls => conn.starttls(params.clone(), &self.hello).await?,
                TlsMode::Opportunistic if conn.can_starttls() => {
                    conn.starttls(params.clone(), &self.hello).await?
                }
                _ => {}
            }
        }
        if let Some(c) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c).await?;
        }
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut AsyncSmtpConnection,
        metrics: &Metrics,
    ) -> RecycleResult<Self::Error> {
        if conn.has_broken() {
            return Err(RecycleError::message("connection broke"));
        }
        if metrics.last_used() > self.idle {
            return Err(RecycleError::message("connection idle too long"));
        }
        // NOOP: the server may have closed it meanwhile.
        if !conn.test_connected().await {
            return Err(RecycleError::message("connection closed by the server"));
        }
        Ok(())
    }
}

/// A relay the sender submits to.
pub struct Route {
    /// The route's name, as reported in sent records, failures and metrics.
    pub name: String,
    pool: managed::Pool<SmtpManager>,
    timeout: Duration,
}

/// The server's positive reply.
pub struct Accepted {
    pub code: u16,
    pub text: String,
}

impl Route {
    /// Builds the connection pool of a relay (no connection is opened yet).
    pub fn new(smtp: &RouteSettings, hello_name: &str) -> anyhow::Result<Self> {
        let tls_parameters = match smtp.tls {
            TlsMode::None => None,
            _ => Some(
                TlsParameters::builder(smtp.tls_name.clone().unwrap_or_else(|| smtp.host.clone()))
                    .dangerous_accept_invalid_certs(smtp.accept_invalid_certs)
                    .build()?,
            ),
        };
        let credentials = match (&smtp.username, &smtp.password) {
            (Some(user), Some(pass)) => Some(Credentials::new(
                user.clone(),
                pass.expose_secret().to_string(),
            )),
            _ => None,
        };
        let manager = SmtpManager {
            host: smtp.host.clone(),
            port: smtp.port,
            tls: smtp.tls,
            tls_parameters,
            hello: ClientId::Domain(hello_name.to_string()),
            credentials,
            timeout: smtp.timeout,
            idle: smtp.pool_idle,
        };
        let pool = managed::Pool::builder(manager)
            .max_size(smtp.pool_size.max(1) as usize)
            .runtime(deadpool::Runtime::Tokio1)
            .create_timeout(Some(smtp.timeout))
            .recycle_timeout(Some(smtp.timeout))
            .build()?;
        Ok(Self {
            name: smtp.name.clone(),
            pool,
            timeout: smtp.timeout,
        })
    }

    /// A connection from the pool (a new one if none is idle): taken
    /// before the sending policy is asked, so the time between the policy's
    /// go and the server seeing the message stays short and even.
    pub async fn connection(&self) -> Result<Connection, Failure> {
        match self.pool.get().await {
            Ok(c) => Ok(Connection(c)),
            Err(PoolError::Backend(ConnectFailure::Smtp(e))) => Err(failure_of(&e)),
            Err(PoolError::Backend(ConnectFailure::Tcp(e))) => Err(Failure::Connection {
                error: io_error_kind(&e),
                detail: format!("connecting to {}: {e}", self.name),
            }),
            Err(PoolError::Timeout(_)) => Err(Failure::Connection {
                error: ConnectionError::Timeout,
                detail: format!(
                    "no usable connection to {} within {:?}",
                    self.name, self.timeout
                ),
            }),
            Err(e) => Err(Failure::Connection {
                error: ConnectionError::Other,
                detail: e.to_string(),
            }),
        }
    }

    /// Submits one message on a connection under the transaction deadline;
    /// the error is the failure as the classifier sees it. A connection that
    /// failed or timed out is closed, never returned to the pool.
    pub async fn send(
        &self,
        conn: Connection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Accepted, Failure> {
        let mut conn = conn.0;
        match tokio::time::timeout(self.timeout, conn.send(envelope, message)).await {
            Ok(Ok(resp)) => Ok(Accepted {
                code: resp.code().to_string().parse().unwrap_or(250),
                text: resp.message().collect::<Vec<_>>().join(" "),
            }),
            Ok(Err(e)) => {
                drop(Object::take(conn));
                Err(failure_of(&e))
            }
            Err(_) => {
                drop(Object::take(conn));
                Err(Failure::Connection {
                    error: ConnectionError::Timeout,
                    detail: format!("no reply from {} within {:?}", self.name, self.timeout),
                })
            }
        }
    }
}

/// A pooled connection to a route, returned to the pool when dropped.
pub struct Connection(Object<SmtpManager>);

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

/// How an I/O error failed the connection, for the classifier.
fn io_error_kind(io: &std::io::Error) -> ConnectionError {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => ConnectionError::Refused,
        K::TimedOut => ConnectionError::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            ConnectionError::Disconnected
        }
        K::NotFound => ConnectionError::Dns,
        _ if io.to_string().contains("lookup") => ConnectionError::Dns,
        _ => ConnectionError::Other,
    }
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
                kind = io_error_kind(io);
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

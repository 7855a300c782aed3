//! The SMTP side of the sender: one connection pool per route (relay), and
//! the translation of SMTP errors into mailpipe's [`Failure`], keeping the
//! server's full reply (basic code, enhanced code, text) for the classifier
//! and for operators. The protocol itself is in [`client`].
//!
//! The pool is deadpool's: every transaction runs under a deadline, and a
//! connection that timed out or failed is taken out of the pool and closed
//! (a transaction abandoned half-way must never go back to the pool: the
//! next message would read the stale replies). A transaction the server
//! refused with a reply, every reply read, is reset (RSET) and its
//! connection kept. deadpool's `max_size` also
//! bounds the connections open to the relay.
//!
//! In front of the pool, a gate (`gate.rs`) lets a message use or dial a
//! connection only while the route's learned cap allows: a refused dial
//! (refused, 421 at connect, timed out) lowers the cap to the connections
//! still open, and holds dials back when none is left (`crate::dial`).

mod client;
mod gate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use lettre::address::Envelope;
use mailpipe_common::classify::{ConnectionError, EnhancedCode, Failure};
use mailpipe_common::config::{RouteSettings, TlsMode};
use secrecy::{ExposeSecret, SecretString};
use tokio_rustls::rustls;

use client::{Client, SmtpError, Tls, TlsUse};

#[doc(hidden)]
pub use client::fuzzing;

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

/// A pooled connection idle for longer than this is checked with NOOP
/// before it is used again.
const NOOP_AFTER: Duration = Duration::from_secs(1);

/// Creates and checks connections to one relay.
struct SmtpManager {
    host: String,
    port: u16,
    tls_use: TlsUse,
    tls: Option<Tls>,
    hello: String,
    credentials: Option<(String, SecretString)>,
    timeout: Duration,
    idle: Duration,
}

impl managed::Manager for SmtpManager {
    type Type = Client;
    type Error = SmtpError;

    async fn create(&self) -> Result<Client, SmtpError> {
        let open = async {
            let tcp = connect_nodelay(&self.host, self.port, self.timeout).await?;
            let credentials = self
                .credentials
                .as_ref()
                .map(|(user, password)| (user.as_str(), password.expose_secret()));
            Client::open(
                tcp,
                &self.hello,
                self.tls_use,
                self.tls.as_ref(),
                credentials,
            )
            .await
        };
        match tokio::time::timeout(self.timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(SmtpError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no SMTP session within {:?}", self.timeout),
            ))),
        }
    }

    async fn recycle(&self, conn: &mut Client, metrics: &Metrics) -> RecycleResult<SmtpError> {
        if conn.has_broken() {
            return Err(RecycleError::message("connection broke"));
        }
        let idle = metrics.last_used();
        if idle > self.idle {
            conn.quit().await;
            return Err(RecycleError::message("connection idle too long"));
        }
        // A connection that rested may have been closed by the server
        // meanwhile: NOOP first. One in steady use is not asked, which
        // saves a round trip per message.
        if idle > NOOP_AFTER && !conn.noop().await {
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
    /// Which connections may be used or dialled now.
    gate: Arc<gate::Gate>,
}

/// A connection to use, and the refusal met on the way, if a dial of this
/// message was refused before it got a connection that was open already.
pub struct Connected {
    pub conn: Connection,
    pub refused: Option<Failure>,
}

/// Why a route gave no connection.
#[derive(Debug)]
pub enum Unavailable {
    /// The route is held after a refused dial: nothing was dialled. Until
    /// when, and the refusal that holds it.
    Held { until: Instant, refusal: Failure },
    /// This message's dial failed, and no connection of the route is left:
    /// the route is held from now on.
    Failed(Failure),
}

/// The server's positive reply.
pub struct Accepted {
    pub code: u16,
    pub text: String,
}

impl Route {
    /// Builds the connection pool of a relay (no connection is opened yet);
    /// `hold` is how long dials wait after a refused one left no connection.
    pub fn new(smtp: &RouteSettings, hello_name: &str, hold: Duration) -> anyhow::Result<Self> {
        let tls_use = match smtp.tls {
            TlsMode::None => TlsUse::None,
            TlsMode::Implicit => TlsUse::Implicit,
            TlsMode::Starttls => TlsUse::Required,
            TlsMode::Opportunistic => TlsUse::Opportunistic,
        };
        let tls = match smtp.tls {
            TlsMode::None => None,
            _ => {
                let name = smtp.tls_name.clone().unwrap_or_else(|| smtp.host.clone());
                Some(Tls {
                    config: mailpipe_common::tls::client_config(
                        smtp.ca_file.as_deref(),
                        smtp.accept_invalid_certs,
                    )
                    .map_err(|e| anyhow::anyhow!("TLS of route {}: {e}", smtp.name))?,
                    name: rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|e| anyhow::anyhow!("TLS name {name:?}: {e}"))?,
                })
            }
        };
        let credentials = match (&smtp.username, &smtp.password) {
            (Some(user), Some(pass)) => Some((user.clone(), pass.clone())),
            _ => None,
        };
        let manager = SmtpManager {
            host: smtp.host.clone(),
            port: smtp.port,
            tls_use,
            tls,
            hello: hello_name.to_string(),
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
            gate: gate::Gate::new(smtp.pool_size, hold),
        })
    }

    /// Whether the route is held after a refused dial: until when, and the
    /// refusal that holds it. A message waits for its site's turn only for
    /// a route it may dial.
    pub fn held(&self) -> Option<(Instant, Failure)> {
        let (until, why) = self.gate.held()?;
        Some((until, why.unwrap_or_else(|| self.refusal_unknown())))
    }

    /// A connection from the pool (a new one if none is idle and the
    /// route's cap allows): taken before the sending policy is asked, so
    /// the time between the policy's go and the server seeing the message
    /// stays short and even. A refused dial lowers the cap; while other
    /// connections of the route are in use, the message waits for one of
    /// them instead of failing.
    pub async fn connection(&self) -> Result<Connected, Unavailable> {
        let mut refused = None;
        loop {
            let slot = match self.gate.take().await {
                Ok(slot) => slot,
                Err((until, why)) => {
                    return Err(match (refused, why) {
                        // Held by this message's own refusal.
                        (Some(failure), _) => Unavailable::Failed(failure),
                        (None, why) => Unavailable::Held {
                            until,
                            refusal: why.unwrap_or_else(|| self.refusal_unknown()),
                        },
                    });
                }
            };
            let failure = match self.pool.get().await {
                Ok(c) => {
                    return Ok(Connected {
                        conn: Connection(c, slot),
                        refused,
                    })
                }
                Err(PoolError::Backend(SmtpError::Io(e))) => Failure::Connection {
                    error: io_error_kind(&e),
                    detail: format!("connecting to {}: {e}", self.name),
                },
                Err(PoolError::Backend(e)) => failure_of(e),
                Err(PoolError::Timeout(_)) => Failure::Connection {
                    error: ConnectionError::Timeout,
                    detail: format!(
                        "no usable connection to {} within {:?}",
                        self.name, self.timeout
                    ),
                },
                Err(e) => Failure::Connection {
                    error: ConnectionError::Other,
                    detail: e.to_string(),
                },
            };
            // Connections open besides the one that failed (in use or idle).
            let pooled = self.pool.status().size as u32;
            self.gate.refused(slot, &failure, pooled);
            refused = Some(failure);
        }
    }

    /// What a held route answers when its refusal was not kept.
    fn refusal_unknown(&self) -> Failure {
        Failure::Connection {
            error: ConnectionError::Other,
            detail: format!("{} is held after a refused connection", self.name),
        }
    }

    /// Submits one message on a connection under the transaction deadline.
    /// `mark` (the "data sent" record) runs while DATA is answered and must
    /// succeed before the final dot is sent. A connection the server
    /// refused a transaction on (a 4xx or 5xx reply, reset with RSET) goes
    /// back to the pool; one that failed otherwise, was told 421 or timed
    /// out is closed, never returned to the pool.
    ///
    /// A connection that has carried `per_connection` messages (the site's
    /// MX rule) is closed after this one instead of going back to the pool.
    pub async fn send<E>(
        &self,
        conn: Connection,
        envelope: &Envelope,
        message: &[u8],
        mark: impl std::future::Future<Output = Result<(), E>>,
        per_connection: Option<u32>,
    ) -> Result<Accepted, SendError<E>> {
        // The connection goes back to the pool (declared last, dropped
        // first) before its slot does: the next message in the slot's queue
        // finds it idle and does not dial.
        let Connection(pooled, _slot) = conn;
        let mut conn = pooled;
        let from = envelope.from().map(|a| a.to_string()).unwrap_or_default();
        let to: Vec<String> = envelope.to().iter().map(|a| a.to_string()).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let mut marked: Option<Result<(), E>> = None;
        let hook = async {
            let r = mark.await;
            let ok = r.is_ok();
            marked = Some(r);
            ok
        };
        let sent =
            tokio::time::timeout(self.timeout, conn.send_marked(&from, &to, message, hook)).await;
        let unknown = conn.outcome_unknown();
        // A mark that was written (or may still be) is cleared by the
        // caller once the answer is known.
        let was_marked = !matches!(marked, Some(Err(_)));
        let failure = match sent {
            Ok(Ok(reply)) => {
                self.gate.delivered();
                if per_connection.is_some_and(|n| conn.transactions() >= n) {
                    conn.quit().await;
                    drop(Object::take(conn));
                }
                return Ok(Accepted {
                    code: reply.code,
                    text: reply.text(),
                });
            }
            Ok(Err(SmtpError::Aborted)) => {
                drop(Object::take(conn));
                return match marked {
                    Some(Err(e)) => Err(SendError::Unmarked(e)),
                    _ => Err(SendError::Failed {
                        failure: failure_of(SmtpError::Aborted),
                        marked: true,
                    }),
                };
            }
            Ok(Err(e)) => {
                if conn.has_broken() {
                    drop(Object::take(conn));
                }
                if matches!(&e, SmtpError::Reply(r) if r.code == 421) {
                    self.gate.closed();
                }
                failure_of(e)
            }
            Err(_) => {
                drop(Object::take(conn));
                Failure::Connection {
                    error: ConnectionError::Timeout,
                    detail: format!("no reply from {} within {:?}", self.name, self.timeout),
                }
            }
        };
        Err(if unknown {
            SendError::Unknown(failure)
        } else {
            SendError::Failed {
                failure,
                marked: was_marked && marked.is_some(),
            }
        })
    }
}

/// Why a message was not (known to be) delivered.
#[derive(Debug)]
pub enum SendError<E> {
    /// The server refused it, or the transaction failed before its data
    /// was sent: not delivered. `marked` when the "data sent" mark was
    /// written (the transaction reached DATA) and must now be cleared.
    Failed { failure: Failure, marked: bool },
    /// The data was sent and no answer was read (the connection broke or
    /// timed out after the final dot): the server may have it.
    Unknown(Failure),
    /// The "data sent" mark could not be written: abandoned before the
    /// final dot, nothing delivered.
    Unmarked(E),
}

/// A pooled connection to a route, returned to the pool when dropped, and
/// its slot at the route's gate.
pub struct Connection(Object<SmtpManager>, gate::Slot);

/// Extracts an RFC 3463 enhanced status code (`4.4.3`) from the start of a
/// reply text: the classifier's [`EnhancedCode`] reading, so the sender,
/// the classifier and the DSN parser agree on what a code is.
pub fn enhanced_code(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    word.parse::<EnhancedCode>().ok().map(|c| c.to_string())
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

fn failure_of(e: SmtpError) -> Failure {
    match e {
        SmtpError::Reply(reply) => {
            let text = reply.text();
            Failure::Reply {
                code: reply.code,
                enhanced: enhanced_code(&text),
                text,
            }
        }
        SmtpError::Io(io) => Failure::Connection {
            error: io_error_kind(&io),
            detail: io.to_string(),
        },
        SmtpError::Tls(io) => Failure::Connection {
            error: ConnectionError::Tls,
            detail: format!("TLS: {io}"),
        },
        SmtpError::Protocol(detail) => Failure::Connection {
            error: ConnectionError::Other,
            detail,
        },
        // Said by mailpipe, not by the server: no basic code, and the
        // transient enhanced code defers the message.
        SmtpError::Unsupported { enhanced, detail } => Failure::Reply {
            code: 0,
            enhanced: Some(enhanced.into()),
            text: format!("{enhanced} {detail}"),
        },
        SmtpError::Aborted => Failure::Connection {
            error: ConnectionError::Other,
            detail: SmtpError::Aborted.to_string(),
        },
    }
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
        // The same reading as the classifier's: subjects are 0 to 7.
        assert_eq!(enhanced_code("5.9.1 odd"), None);
        assert_eq!(enhanced_code("4.7.28 slow down").as_deref(), Some("4.7.28"));
    }
}

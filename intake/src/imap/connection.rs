//! The connection to the IMAP server: TCP, TLS (implicit or STARTTLS, as
//! `tls` says) with rustls, the ring provider and the system's roots, and
//! the login.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_imap::error::Error as ProtocolError;
use async_imap::{Client, Session};
use mailpipe_common::config::TlsMode;
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_rustls::TlsConnector;

use super::{within, ImapError, ImapPoll, ImapStream};

/// Connects, secures the connection as `tls` says and logs in.
pub(super) async fn connect(settings: &ImapPoll) -> Result<Session<ImapStream>, ImapError> {
    let imap = &settings.imap;
    let t = settings.timeout;
    let addr = format!("{}:{}", imap.host, imap.port);
    let tcp =
        match tokio::time::timeout(t, TcpStream::connect((imap.host.as_str(), imap.port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(ImapError::Connect { addr, source }),
            Err(_) => {
                return Err(ImapError::Timeout {
                    command: "connect",
                    after: t,
                })
            }
        };
    let stream = match imap.tls {
        TlsMode::Implicit => start_tls(tcp, &imap.host, t).await?,
        _ => ImapStream::Plain(tcp),
    };
    let mut client = Client::new(stream);
    match tokio::time::timeout(t, client.read_response()).await {
        Ok(Ok(Some(_greeting))) => {}
        Ok(Ok(None)) => {
            return Err(ImapError::Command {
                command: "greeting",
                source: ProtocolError::ConnectionLost,
            })
        }
        Ok(Err(e)) => {
            return Err(ImapError::Command {
                command: "greeting",
                source: e.into(),
            })
        }
        Err(_) => {
            return Err(ImapError::Timeout {
                command: "greeting",
                after: t,
            })
        }
    }
    if matches!(imap.tls, TlsMode::Starttls | TlsMode::Opportunistic) {
        match within(
            t,
            "STARTTLS",
            client.run_command_and_check_ok("STARTTLS", None),
        )
        .await
        {
            Ok(()) => {
                // Whatever the server sent after its OK stays behind in the
                // old buffer, as RFC 3501 §6.2.1 wants it discarded.
                let ImapStream::Plain(tcp) = client.into_inner() else {
                    unreachable!("STARTTLS runs on a plain connection")
                };
                client = Client::new(start_tls(tcp, &imap.host, t).await?);
            }
            Err(ImapError::Command { source, .. })
                if imap.tls == TlsMode::Opportunistic
                    && matches!(source, ProtocolError::No(_) | ProtocolError::Bad(_)) =>
            {
                tracing::debug!("the IMAP server has no STARTTLS; going on in plain text");
            }
            Err(ImapError::Command { source, .. }) => return Err(ImapError::StartTls(source)),
            Err(e) => return Err(e),
        }
    }
    let login = client.login(&imap.username, imap.password.expose_secret());
    match tokio::time::timeout(t, login).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((source, _client))) => Err(ImapError::Login {
            user: imap.username.clone(),
            source,
        }),
        Err(_) => Err(ImapError::Timeout {
            command: "LOGIN",
            after: t,
        }),
    }
}

/// The rustls client configuration: ring, the system's roots. Built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, io::Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| mailpipe_common::tls::client_config(None, false))
        .clone()
        .map_err(io::Error::other)
}

async fn start_tls(tcp: TcpStream, host: &str, t: Duration) -> Result<ImapStream, ImapError> {
    let tls_error = |source| ImapError::Tls {
        host: host.to_string(),
        source,
    };
    let config = tls_config().map_err(tls_error)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| tls_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    match tokio::time::timeout(t, TlsConnector::from(config).connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(ImapStream::Tls(Box::new(tls))),
        Ok(Err(e)) => Err(tls_error(e)),
        Err(_) => Err(ImapError::Timeout {
            command: "TLS handshake",
            after: t,
        }),
    }
}

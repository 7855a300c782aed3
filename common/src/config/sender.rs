//! The sender's settings: lanes and leases, how mail leaves (relays with
//! failover, or MX delivery), the SMTP transport, DKIM keys, and what to
//! do with an ambiguous attempt.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::values::duration;
use super::TlsMode;

/// The sender's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderSettings {
    /// Address of the health and metrics endpoint.
    pub listen: String,
    /// SMTP transactions in flight for the transactional lane. Reserved: bulk
    /// traffic never uses these, so transactional mail never waits behind a
    /// campaign.
    pub transactional_concurrency: usize,
    /// SMTP transactions in flight for the bulk lane.
    pub bulk_concurrency: usize,
    /// SMTP transactions in flight for bulk mail due again (retries and
    /// deferrals, queue `send.retry`): beside the bulk lane's, so a retry
    /// runs close to its due time instead of behind a campaign's backlog.
    pub retry_concurrency: usize,
    /// How long a sender holds a message's lease while submitting it; another
    /// replica that receives the same message meanwhile waits. Must exceed the
    /// SMTP timeout.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// Host name used in Message-ID headers and HELO/EHLO.
    pub hostname: String,
    /// How long sent records are kept beyond the message's deadline.
    #[serde(deserialize_with = "duration")]
    pub sent_record_ttl: Duration,
    /// `relay` (default) or `mx`.
    pub mode: DeliveryMode,
    /// Direct delivery settings, for `mode: mx`.
    pub mx: MxSettings,
    /// The relay, when there is one. Ignored when `routes` is not empty.
    pub smtp: SmtpSettings,
    /// Several relays with priorities and weights: the lowest priority
    /// first, spread by weight among equals, failing over to the next
    /// priority when a relay is unreachable or answers 421.
    pub routes: Vec<RouteSettings>,
    /// How long a route (relay or MX address) whose dial was refused, with
    /// no other connection of it open, is held: no dial before then, then
    /// one connection probes.
    #[serde(deserialize_with = "duration")]
    pub route_retry_after: Duration,
    /// On SIGTERM, how long the sender waits for transactions in flight to
    /// finish and be acked; what is left goes back to the queue. Keep it
    /// under the Kubernetes termination grace period and above the SMTP
    /// timeout.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// Longest a message waits in a sender for its site's turn to ask the
    /// policy, a rate or a concurrency limit; a longer wait defers it
    /// through a delay tier instead. A waiting message holds back only its
    /// own site's mail (the lane's capacity in the sender).
    #[serde(deserialize_with = "duration")]
    pub max_throttle_wait: Duration,
    /// DKIM keys by signing domain: a message whose From domain is, or is
    /// below, a listed domain is signed by every key of the most specific
    /// such domain (an RSA and an Ed25519 key of one domain sign side by
    /// side). Mail from other domains goes out unsigned.
    pub dkim: Vec<DkimSettings>,
    /// What a sender does with a recipient whose previous attempt is
    /// ambiguous: the message data was sent but no reply was read (the
    /// sending process died, or the connection broke or timed out after the
    /// final dot), so the server may have accepted it. `resend` (at least
    /// once, as every MTA does), `hold` (parked for an operator, never sent
    /// twice) or `drop` (at most once: `dead` with reason `ambiguous`).
    pub on_ambiguous: OnAmbiguous,
    /// The archive of delivered mail: the exact bytes of every accepted
    /// message published to a RabbitMQ stream (see `archive.rs`).
    pub archive: crate::archive::ArchiveSettings,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9102".into(),
            transactional_concurrency: 8,
            bulk_concurrency: 32,
            retry_concurrency: 8,
            lease: Duration::from_secs(300),
            hostname: "localhost".into(),
            sent_record_ttl: Duration::from_secs(6 * 24 * 3600),
            mode: DeliveryMode::Relay,
            mx: MxSettings::default(),
            smtp: SmtpSettings::default(),
            routes: Vec::new(),
            route_retry_after: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(45),
            max_throttle_wait: Duration::from_secs(10),
            dkim: Vec::new(),
            on_ambiguous: OnAmbiguous::Resend,
            archive: Default::default(),
        }
    }
}

/// `sender.on_ambiguous`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnAmbiguous {
    /// Send it again (a possible duplicate, reported).
    #[default]
    Resend,
    /// Park it in the `ambiguous` queue until an operator releases or
    /// removes it.
    Hold,
    /// Stop it: `dead`, reason `ambiguous`.
    Drop,
}

impl OnAmbiguous {
    pub fn as_str(self) -> &'static str {
        match self {
            OnAmbiguous::Resend => "resend",
            OnAmbiguous::Hold => "hold",
            OnAmbiguous::Drop => "drop",
        }
    }
}

/// One DKIM signing key of `sender.dkim`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    /// The signing domain (`d=`): messages from this domain or its subdomains.
    pub domain: String,
    /// The selector (`s=`): the key is published at `{selector}._domainkey.{domain}`.
    pub selector: String,
    /// `rsa_sha256` (unencrypted PEM, PKCS#1 or PKCS#8, 2048 to 8192 bits) or
    /// `ed25519_sha256` (PKCS#8 PEM, or the 32-byte private key in base64 on
    /// one line).
    #[serde(default = "rsa_sha256")]
    pub algorithm: DkimAlgorithm,
    /// File holding the private key (mount it from a Kubernetes Secret).
    pub key_file: std::path::PathBuf,
}

fn rsa_sha256() -> DkimAlgorithm {
    DkimAlgorithm::RsaSha256
}

/// DKIM signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DkimAlgorithm {
    RsaSha256,
    Ed25519Sha256,
}

/// One relay of `sender.routes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Name in metrics, records and `policy.domains.*.route`.
    pub name: String,
    /// Lower is tried first.
    #[serde(default)]
    pub priority: u32,
    /// Share among routes of the same priority.
    #[serde(default = "one")]
    pub weight: u32,
    /// Rate limit of the route as a whole (all domains), e.g. "500/s".
    #[serde(default)]
    pub rate: Option<crate::ratelimit::Rate>,
    /// Transactions in flight on this route across all senders.
    #[serde(default)]
    pub concurrency: Option<u32>,
    pub host: String,
    pub port: u16,
    #[serde(default = "tls_none")]
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "forty")]
    pub pool_size: u32,
    #[serde(default = "sixty_seconds", deserialize_with = "duration")]
    pub pool_idle: Duration,
    /// PEM file of CA certificates trusted for this relay's certificate,
    /// besides the system's (a relay with a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Name to verify the server's certificate against when `host` is an
    /// address (set by MX delivery, not in config files).
    #[serde(skip)]
    pub tls_name: Option<String>,
    /// Accept any certificate (opportunistic TLS to MX hosts, as MTAs do;
    /// not in config files).
    #[serde(skip)]
    pub accept_invalid_certs: bool,
}

fn one() -> u32 {
    1
}
fn forty() -> u32 {
    40
}
fn tls_none() -> TlsMode {
    TlsMode::None
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}

impl SenderSettings {
    /// The routes in effect: `routes`, or the single `smtp` relay as "default".
    pub fn effective_routes(&self) -> Vec<RouteSettings> {
        if !self.routes.is_empty() {
            return self.routes.clone();
        }
        let s = &self.smtp;
        vec![RouteSettings {
            name: "default".into(),
            priority: 0,
            weight: 1,
            rate: None,
            concurrency: None,
            host: s.host.clone(),
            port: s.port,
            tls: s.tls,
            username: s.username.clone(),
            password: s.password.clone(),
            timeout: s.timeout,
            pool_size: s.pool_size,
            pool_idle: s.pool_idle,
            ca_file: s.ca_file.clone(),
            tls_name: None,
            accept_invalid_certs: false,
        }]
    }
}

/// How the sender reaches recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Through the configured relay(s) (`smtp` or `routes`).
    Relay,
    /// Directly to each recipient domain's MX hosts.
    Mx,
}

/// Direct delivery to MX hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MxSettings {
    /// Port of the MX hosts (25; tests point it elsewhere).
    pub port: u16,
    /// DNS servers as `ip:port`; empty uses the system's resolver configuration.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// `none` or `opportunistic` (STARTTLS when offered, any certificate, as
    /// MTAs do between each other), or `starttls` (required and verified).
    pub tls: TlsMode,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Connections per MX address at most (a host that refuses more
    /// teaches a lower cap).
    pub pool_size: u32,
    #[serde(deserialize_with = "duration")]
    pub pool_idle: Duration,
}

impl Default for MxSettings {
    fn default() -> Self {
        Self {
            port: 25,
            nameservers: Vec::new(),
            tls: TlsMode::Opportunistic,
            timeout: Duration::from_secs(60),
            pool_size: 4,
            pool_idle: Duration::from_secs(30),
        }
    }
}

/// The SMTP relay the sender submits to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// `none`, `opportunistic` (STARTTLS when offered), `starttls` (required)
    /// or `implicit` (SMTPS).
    pub tls: TlsMode,
    pub username: Option<String>,
    /// SMTP AUTH password; never logged.
    pub password: Option<SecretString>,
    /// Deadline of connecting (greeting, EHLO, STARTTLS, AUTH included) and
    /// of one transaction (MAIL FROM to the final reply). A connection that
    /// misses it is closed, never reused.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Connections open to the relay at most (per route). Keep it at least
    /// the sum of the lanes' concurrency, or transactions wait for a connection.
    pub pool_size: u32,
    /// Idle connections are closed after this long.
    #[serde(deserialize_with = "duration")]
    pub pool_idle: Duration,
    /// PEM file of CA certificates trusted for the relay's certificate,
    /// besides the system's (a relay with a private CA).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 2525,
            tls: TlsMode::None,
            username: None,
            password: None,
            timeout: Duration::from_secs(30),
            pool_size: 40,
            pool_idle: Duration::from_secs(60),
            ca_file: None,
        }
    }
}

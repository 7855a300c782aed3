//! Configuration shared by every mailpipe process.
//!
//! One [`Settings`] tree serves all binaries, so a deployment has one config
//! file (a Kubernetes ConfigMap). Sources, later ones winning:
//!
//! 1. built-in defaults that work against local services (RabbitMQ and Redis
//!    on 127.0.0.1, an SMTP capture server on 127.0.0.1:2525);
//! 2. `base.yaml` then `{MAILPIPE_ENV}.yaml` from the directory named by
//!    `MAILPIPE_CONFIG_DIR`, if set;
//! 3. the file named by `--config` / `MAILPIPE_CONFIG`, if given;
//! 4. environment variables `MAILPIPE__SECTION__KEY`, e.g.
//!    `MAILPIPE__SENDER__SMTP__PORT=587`.
//!
//! Unknown keys are refused so a typo does not silently fall back to a
//! default. Secrets are [`SecretString`]s and URLs are redacted before they
//! are logged ([`redact_url`]).

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// All of mailpipe's settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub expander: ExpanderSettings,
    pub sender: SenderSettings,
    pub retrier: RetrierSettings,
    pub quarantine: QuarantineSettings,
    pub classifier: ClassifierSettings,
    pub policy: PolicySettings,
    pub sites: SiteSettings,
    pub bounces: BounceSettings,
}

/// Sites: the mail systems behind recipient domains (see [`crate::sites`]).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SiteSettings {
    /// MX host pattern → site, checked before the shipped rules
    /// (`*.google.com` → google, ...).
    pub rules: Vec<crate::sites::SiteRule>,
    /// MX rules per site, by site name: rate, burst, connections and
    /// messages per connection, shared by every sender replica. A domain's
    /// own limits apply as well: a message waits for both.
    pub limits: std::collections::BTreeMap<String, SiteLimits>,
    /// The controller that adapts each site's allowed rate to the replies
    /// it gets ([`crate::adaptive`]).
    pub adaptive: crate::adaptive::AdaptiveSettings,
    /// An optional day-indexed ceiling per sending domain and site
    /// ([`crate::warmup`]).
    pub warmup: crate::warmup::WarmupSettings,
}

/// The MX rule of one site.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SiteLimits {
    /// Messages per period to the site across all senders, e.g. "300/s".
    pub rate: Option<crate::ratelimit::Rate>,
    /// Messages allowed at once above the rate.
    pub burst: Option<u32>,
    /// Transactions in flight to the site across all senders.
    pub concurrency: Option<u32>,
    /// A connection to the site's hosts is closed after this many messages.
    pub messages_per_connection: Option<u32>,
}

/// RabbitMQ connection and naming.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://` or `amqps://` URL, credentials included (redacted in logs).
    /// For a cluster, the URLs of several nodes separated by commas: a
    /// process starts at a random one and moves to the next when a node
    /// does not answer or its session ends.
    pub url: SecretString,
    /// Prefix of every exchange and queue name, so several installations (or
    /// test runs) can share one broker.
    pub prefix: String,
    /// Deliveries after which the broker dead-letters a message that keeps
    /// crashing its consumer (quorum queue `x-delivery-limit`).
    pub delivery_limit: u32,
    /// Delay before reconnecting after the broker went away (doubles up to 30 s).
    #[serde(deserialize_with = "duration")]
    pub reconnect_delay: Duration,
}

impl AmqpSettings {
    /// The broker nodes' URLs (`url` split at commas).
    pub fn node_urls(&self) -> Vec<String> {
        secrecy::ExposeSecret::expose_secret(&self.url)
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "mailpipe".into(),
            delivery_limit: 10,
            reconnect_delay: Duration::from_millis(500),
        }
    }
}

/// Redis connection and key naming.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL (redacted in logs).
    pub url: SecretString,
    /// Prefix of every key mailpipe writes.
    pub prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379"),
            prefix: "mailpipe".into(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,mailpipe_sender=debug`.
    /// `RUST_LOG` overrides it when set.
    pub filter: String,
    /// Replace email addresses in logged replies with a hash of them.
    pub hash_addresses: bool,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".into(),
            hash_addresses: false,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

/// The expander's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpanderSettings {
    /// Address of the health and metrics endpoint.
    pub listen: String,
    /// Bulk requests (parts) taken from the queue at once. They are
    /// expanded one at a time, in queue order; transactional requests get
    /// 8 more slots on top and are expanded at once, beside a bulk one.
    pub prefetch: u16,
    /// Recipients checked against Redis in one round trip.
    pub batch_size: usize,
    /// Largest request body accepted, in bytes; larger ones are dead-lettered
    /// (submit large campaigns in parts).
    pub max_request_bytes: usize,
    /// Publishes in flight before the expander waits for their confirms.
    pub publish_window: usize,
    /// Recipients of one request carried by one job message of a send lane
    /// (1 = one message per recipient). The broker's work is per message,
    /// so this divides its cost per recipient; each recipient is still
    /// leased, recorded and retried on its own.
    pub jobs_per_message: usize,
    /// Address quality checks at expansion.
    pub quality: QualitySettings,
}

impl Default for ExpanderSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9101".into(),
            prefetch: 2,
            batch_size: 500,
            max_request_bytes: 32 * 1024 * 1024,
            publish_window: 1000,
            jobs_per_message: 50,
            quality: QualitySettings::default(),
        }
    }
}

/// Address quality checks: recipients whose address is valid but will
/// surely fail (`no_mail_host`, `likely_typo`), found at expansion. The
/// DNS servers are the sender's (`sender.mx.nameservers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualitySettings {
    /// The checks a request gets when it does not name its own (its
    /// `quality` field); none by default.
    #[serde(deserialize_with = "quality_checks")]
    pub checks: Vec<crate::quality::QualityCheck>,
    /// What a likely typo does: `flag` (sent, counted as flagged, a
    /// `flagged` event) or `exclude` (excluded as `likely_typo`).
    pub typo_action: crate::quality::TypoAction,
    /// The large providers' domains typos are measured against; a domain on
    /// the list is never a typo.
    pub providers: Vec<String>,
    /// The largest edit distance (insertion, deletion, change, swap of two
    /// neighbours) from a provider's domain that counts as a typo.
    pub typo_distance: usize,
    /// How long one domain's DNS lookup may take; a domain without an
    /// answer by then is not excluded.
    #[serde(deserialize_with = "duration")]
    pub lookup_timeout: Duration,
    /// Domains one expansion looks up at once. Recipients wait only for
    /// their own domain's answer; the others are expanded meanwhile.
    pub lookups_in_flight: usize,
    /// How long an expander reuses an answer about a domain.
    #[serde(deserialize_with = "duration")]
    pub cache_ttl: Duration,
}

impl Default for QualitySettings {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            typo_action: crate::quality::TypoAction::Flag,
            providers: crate::quality::default_providers(),
            typo_distance: 1,
            lookup_timeout: Duration::from_secs(5),
            lookups_in_flight: 64,
            cache_ttl: Duration::from_secs(3600),
        }
    }
}

/// A list of address checks, as a YAML list or as one comma-separated
/// string (an environment variable).
fn quality_checks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<crate::quality::QualityCheck>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<crate::quality::QualityCheck>),
        Text(String),
    }
    match ListOrText::deserialize(d)? {
        ListOrText::List(v) => Ok(v),
        ListOrText::Text(t) => t
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect(),
    }
}

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
    /// Longest a message waits in a sender for a rate or concurrency limit;
    /// a longer wait defers it through a delay tier instead, so one slow
    /// domain never holds the others' messages.
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

/// Asynchronous bounces and complaints (failures reported after delivery): the VERP return path the
/// sender writes and the intake that reads what comes back to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BounceSettings {
    /// The bounce domain. When set, each message's envelope sender is
    /// `{local_part}+{token}@{domain}`, the token naming the message and
    /// signed with `keys[0]`; when not set, the envelope sender is the From
    /// address and bounces are matched by the returned message's headers.
    pub domain: Option<String>,
    /// Local part before the `+token`.
    pub local_part: String,
    /// HMAC keys of the VERP tokens (keep them in a Secret). The first
    /// signs; every one verifies, so a key can be rotated without losing
    /// the bounces of mail sent under the previous one. In an environment
    /// variable: comma-separated.
    #[serde(deserialize_with = "secrets")]
    pub keys: Vec<SecretString>,
    /// The intake's health and metrics endpoint.
    pub listen: String,
    /// The intake's SMTP listener for the bounce domain (the domain's MX
    /// points here); empty disables it.
    pub smtp_listen: String,
    /// Host name in the intake's SMTP greeting.
    pub hostname: String,
    /// Largest mail the intake accepts, in bytes.
    pub max_message_bytes: usize,
    /// Deadline of one SMTP command or of the message data.
    #[serde(deserialize_with = "duration")]
    pub smtp_timeout: Duration,
    /// A mailbox polled over IMAP for bounces and feedback-loop reports.
    pub imap: Option<ImapSettings>,
}

impl Default for BounceSettings {
    fn default() -> Self {
        Self {
            domain: None,
            local_part: "bounces".into(),
            keys: Vec::new(),
            listen: "0.0.0.0:9104".into(),
            smtp_listen: "0.0.0.0:2526".into(),
            hostname: "localhost".into(),
            max_message_bytes: 10 * 1024 * 1024,
            smtp_timeout: Duration::from_secs(60),
            imap: None,
        }
    }
}

/// The IMAP mailbox of `bounces.imap`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSettings {
    pub host: String,
    #[serde(default = "imaps_port")]
    pub port: u16,
    /// `implicit` (IMAPS, the default), `starttls` or `none`.
    #[serde(default = "tls_implicit")]
    pub tls: TlsMode,
    pub username: String,
    /// Set it through `MAILPIPE__BOUNCES__IMAP__PASSWORD` from a Secret.
    #[serde(default = "no_secret")]
    pub password: SecretString,
    #[serde(default = "inbox")]
    pub mailbox: String,
    /// Time between two polls of the mailbox.
    #[serde(default = "sixty_seconds", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// Processed mail is moved here; when not set it is deleted.
    #[serde(default)]
    pub archive_mailbox: Option<String>,
}

fn imaps_port() -> u16 {
    993
}
fn tls_implicit() -> TlsMode {
    TlsMode::Implicit
}
fn no_secret() -> SecretString {
    SecretString::from("")
}
fn inbox() -> String {
    "INBOX".into()
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

/// Sending policy shared by every sender replica (per-domain and per-route
/// rates, concurrency, the circuit breaker and slow-downs).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Limits of every destination domain without its own entry.
    pub default: DomainPolicy,
    /// Per-domain limits and route overrides, e.g. `gmail.com: {rate: 50/s}`.
    pub domains: std::collections::BTreeMap<String, DomainPolicy>,
    pub breaker: BreakerSettings,
    pub slowdown: SlowdownSettings,
}

impl PolicySettings {
    /// The policy of a domain: its own entry over the default, field by field.
    pub fn for_domain(&self, domain: &str) -> DomainPolicy {
        let d = &self.default;
        match self.domains.get(domain) {
            Some(p) => DomainPolicy {
                rate: p.rate.or(d.rate),
                burst: p.burst.or(d.burst),
                concurrency: p.concurrency.or(d.concurrency),
                route: p.route.clone(),
            },
            None => d.clone(),
        }
    }
}

/// Limits for one destination domain.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DomainPolicy {
    /// Messages per period across all senders, e.g. "50/s".
    pub rate: Option<crate::ratelimit::Rate>,
    /// Messages allowed at once above the rate.
    pub burst: Option<u32>,
    /// Transactions in flight to the domain across all senders.
    pub concurrency: Option<u32>,
    /// Send this domain's mail through this route only (by name).
    pub route: Option<String>,
}

/// The domain circuit breaker: a domain whose recent attempts mostly failed is
/// paused for a while, so the sender stops hurting its reputation there.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Sliding window over which attempts and failures are counted.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Attempts in the window before the breaker may open.
    pub min_attempts: u64,
    /// Share of failures (domain- or sender-scope, e.g. blocks) that opens it.
    pub failure_ratio: f64,
    /// How long sending to the domain pauses.
    #[serde(deserialize_with = "duration")]
    pub pause: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            min_attempts: 300,
            failure_ratio: 0.9,
            pause: Duration::from_secs(3 * 3600),
        }
    }
}

/// What a throttling reply (421, 4.7.28, TSS04, ...) does to a domain's rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowdownSettings {
    /// The rate drops to this share at once ...
    pub factor: f64,
    /// ... and recovers linearly to the full rate over this long.
    #[serde(deserialize_with = "duration")]
    pub recovery: Duration,
}

impl Default for SlowdownSettings {
    fn default() -> Self {
        Self {
            factor: 0.5,
            recovery: Duration::from_secs(600),
        }
    }
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9102".into(),
            transactional_concurrency: 8,
            bulk_concurrency: 32,
            lease: Duration::from_secs(300),
            hostname: "localhost".into(),
            sent_record_ttl: Duration::from_secs(6 * 24 * 3600),
            mode: DeliveryMode::Relay,
            mx: MxSettings::default(),
            smtp: SmtpSettings::default(),
            routes: Vec::new(),
            route_retry_after: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(45),
            max_throttle_wait: Duration::from_millis(500),
            dkim: Vec::new(),
            on_ambiguous: OnAmbiguous::Resend,
            archive: Default::default(),
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

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    None,
    Opportunistic,
    Starttls,
    Implicit,
}

/// The retrier's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrierSettings {
    /// Address of the health and metrics endpoint.
    pub listen: String,
    /// Failures processed at once.
    pub prefetch: u16,
    /// The delay tiers: one queue per tier and lane, each with this fixed
    /// TTL. A retry waits in the smallest tier that is at least its delay,
    /// so every delay of the policies below should be a tier.
    #[serde(deserialize_with = "durations")]
    pub tiers: Vec<Duration>,
    /// Spread of each retry delay (0.1 = ±10 %), so the retries of a
    /// campaign that failed at once do not come back at once. Delays no tier
    /// matches are reached by hopping through shorter tiers.
    pub jitter: f64,
    /// Retry schedules per kind of failure.
    pub policies: RetryPolicies,
    /// How often the retrier reads the backlog it exports as metrics: the
    /// depth of every queue, the deferred retries, the paused domains.
    #[serde(deserialize_with = "duration")]
    pub backlog_interval: Duration,
}

/// Which schedule a failure follows (routing, throttling or other soft failures).
///
/// Each policy merges field by field with its own default: setting only
/// `retrier.policies.soft.schedule` keeps the soft policy's `max_attempts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "PartialRetryPolicies")]
pub struct RetryPolicies {
    /// Routing and connection failures (4.4.x, relay unreachable): 1 h, 2 h,
    /// 4 h, 8 h, 24 h.
    pub routing: RetryPolicy,
    /// 421 and rate limiting: exponential 1, 2, 4, 8, 16 min, 5 attempts.
    pub throttled: RetryPolicy,
    /// Other transient failures: 5 attempts in the first 24 h at least an
    /// hour apart, then one a day for 4 days.
    pub soft: RetryPolicy,
}

/// One retry schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay before attempt 2, 3, ...; the last one repeats.
    #[serde(deserialize_with = "durations")]
    pub schedule: Vec<Duration>,
    /// Attempts (including the first) after which the message is
    /// dead-lettered as `exhausted`.
    pub max_attempts: u32,
}

/// [`RetryPolicies`] as written: any policy and any field may be missing.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PartialRetryPolicies {
    routing: PartialRetryPolicy,
    throttled: PartialRetryPolicy,
    soft: PartialRetryPolicy,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct PartialRetryPolicy {
    #[serde(deserialize_with = "some_durations")]
    schedule: Option<Vec<Duration>>,
    max_attempts: Option<u32>,
}

impl PartialRetryPolicy {
    fn over(self, default: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            schedule: self.schedule.unwrap_or(default.schedule),
            max_attempts: self.max_attempts.unwrap_or(default.max_attempts),
        }
    }
}

impl From<PartialRetryPolicies> for RetryPolicies {
    fn from(p: PartialRetryPolicies) -> Self {
        let d = RetryPolicies::default();
        Self {
            routing: p.routing.over(d.routing),
            throttled: p.throttled.over(d.throttled),
            soft: p.soft.over(d.soft),
        }
    }
}

fn some_durations<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
    durations(d).map(Some)
}

impl Default for RetryPolicies {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        let h = |n: u64| Duration::from_secs(3600 * n);
        Self {
            routing: RetryPolicy {
                schedule: vec![h(1), h(2), h(4), h(8), h(24)],
                max_attempts: 6,
            },
            throttled: RetryPolicy {
                schedule: vec![m(1), m(2), m(4), m(8), m(16)],
                max_attempts: 5,
            },
            soft: RetryPolicy {
                schedule: vec![h(1), h(1), h(1), h(1), h(24), h(24), h(24), h(24)],
                max_attempts: 9,
            },
        }
    }
}

impl Default for RetrierSettings {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        let h = |n: u64| Duration::from_secs(3600 * n);
        Self {
            listen: "0.0.0.0:9103".into(),
            prefetch: 32,
            tiers: vec![m(1), m(2), m(4), m(8), m(16), h(1), h(2), h(4), h(8), h(24)],
            jitter: 0.1,
            policies: RetryPolicies::default(),
            backlog_interval: Duration::from_secs(15),
        }
    }
}

/// Address quarantine: addresses that failed for good (or too often) are not
/// sent to until the quarantine expires.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuarantineSettings {
    /// Recipient-scope soft failures after which an address is quarantined.
    pub threshold: u32,
    /// How long a quarantine lasts (hard bounces, repeated soft failures).
    #[serde(deserialize_with = "duration")]
    pub expiry: Duration,
    /// How long a `mailbox_full` quarantine lasts: the address becomes
    /// valid again after that.
    #[serde(deserialize_with = "duration")]
    pub mailbox_full_expiry: Duration,
    /// How long soft-failure counters are kept without a new failure.
    #[serde(deserialize_with = "duration")]
    pub counter_ttl: Duration,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        Self {
            threshold: 5,
            expiry: Duration::from_secs(365 * 24 * 3600),
            mailbox_full_expiry: Duration::from_secs(30 * 24 * 3600),
            counter_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Failure classification rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierSettings {
    /// Operator rule files (YAML, same format as the shipped defaults),
    /// applied before the kept rows of the qualification table and the
    /// defaults.
    pub rules_files: Vec<std::path::PathBuf>,
    /// How often a worker checks whether operators changed the kept rows
    /// of the qualification table (one Redis GET of a version number), and
    /// so how soon it classifies with them.
    #[serde(deserialize_with = "duration")]
    pub kept_rules_poll: Duration,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        Self {
            rules_files: Vec::new(),
            kept_rules_poll: Duration::from_secs(2),
        }
    }
}

impl Settings {
    /// Loads settings from the layered sources described in the module docs.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Ok(dir) = std::env::var("MAILPIPE_CONFIG_DIR") {
            let dir = Path::new(&dir);
            builder = builder.add_source(config::File::from(dir.join("base.yaml")).required(false));
            if let Ok(env) = std::env::var("MAILPIPE_ENV") {
                builder = builder.add_source(
                    config::File::from(dir.join(format!("{env}.yaml"))).required(false),
                );
            }
        }
        let env_file = std::env::var("MAILPIPE_CONFIG").ok();
        if let Some(path) = file.map(Path::to_path_buf).or(env_file.map(Into::into)) {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("MAILPIPE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks invariants that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bounces.domain.is_some() && self.bounces.keys.is_empty() {
            return Err(ConfigError::Invalid(
                "bounces.domain is set but bounces.keys is empty: VERP tokens need a signing key"
                    .into(),
            ));
        }
        if self
            .bounces
            .keys
            .iter()
            .any(|k| secrecy::ExposeSecret::expose_secret(k).len() < 16)
        {
            return Err(ConfigError::Invalid(
                "bounces.keys: every key needs at least 16 characters".into(),
            ));
        }
        let q = &self.expander.quality;
        if q.typo_distance > 3 || q.lookups_in_flight == 0 || q.lookup_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "expander.quality: typo_distance is at most 3, lookups_in_flight at least 1 and lookup_timeout longer than 0".into(),
            ));
        }
        if let Some(p) = q.providers.iter().find(|p| {
            crate::rules::normalize_domain(p).as_deref() != Ok(p.as_str()) || !p.contains('.')
        }) {
            return Err(ConfigError::Invalid(format!(
                "expander.quality.providers: {p:?} is not a lowercase ASCII domain"
            )));
        }
        let r = &self.retrier;
        if r.tiers.is_empty() {
            return Err(ConfigError::Invalid("retrier.tiers is empty".into()));
        }
        if !(0.0..=0.5).contains(&r.jitter) {
            return Err(ConfigError::Invalid(
                "retrier.jitter must be between 0 and 0.5".into(),
            ));
        }
        if self.classifier.kept_rules_poll.is_zero() {
            return Err(ConfigError::Invalid(
                "classifier.kept_rules_poll must be longer than 0".into(),
            ));
        }
        if r.backlog_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "retrier.backlog_interval must be longer than 0".into(),
            ));
        }
        let p = &r.policies;
        for (name, policy) in [
            ("routing", &p.routing),
            ("throttled", &p.throttled),
            ("soft", &p.soft),
        ] {
            if policy.schedule.is_empty() || policy.max_attempts == 0 {
                return Err(ConfigError::Invalid(format!(
                    "retrier.policies.{name} needs a schedule and max_attempts >= 1"
                )));
            }
        }

        if self.sender.lease <= self.sender.smtp.timeout {
            return Err(ConfigError::Invalid(
                "sender.lease must be longer than sender.smtp.timeout".into(),
            ));
        }
        let names: std::collections::BTreeSet<_> =
            self.sender.routes.iter().map(|r| r.name.as_str()).collect();
        if names.len() != self.sender.routes.len() {
            return Err(ConfigError::Invalid(
                "sender.routes names must be unique".into(),
            ));
        }
        for (domain, p) in &self.policy.domains {
            if let Some(route) = &p.route {
                if !self
                    .sender
                    .effective_routes()
                    .iter()
                    .any(|r| &r.name == route)
                {
                    return Err(ConfigError::Invalid(format!(
                        "policy.domains.{domain}.route names an unknown route {route:?}"
                    )));
                }
            }
        }
        let b = &self.policy.breaker;
        if !(0.0..=1.0).contains(&b.failure_ratio)
            || !(0.0..=1.0).contains(&self.policy.slowdown.factor)
        {
            return Err(ConfigError::Invalid(
                "policy.breaker.failure_ratio and policy.slowdown.factor must be between 0 and 1"
                    .into(),
            ));
        }
        self.sites.adaptive.check().map_err(ConfigError::Invalid)?;
        self.sites.warmup.check().map_err(ConfigError::Invalid)?;
        if self.sender.bulk_concurrency == 0 || self.sender.transactional_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "sender concurrency must be at least 1 per lane".into(),
            ));
        }
        Ok(())
    }
}

/// What a worker binary's command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum WorkerArgs {
    /// Run, with the configuration file given by `--config FILE`, if any.
    Run(Option<std::path::PathBuf>),
    /// Print this (help or version) and exit successfully.
    Print(String),
    /// A usage error: print this and exit with code 2.
    Usage(String),
}

/// Reads a worker binary's arguments (without the program name). A worker
/// takes only `--config FILE`; `--help` and `--version` answer and exit
/// instead of starting the worker, and anything else is a usage error.
pub fn parse_worker_args(
    name: &str,
    about: &str,
    args: impl IntoIterator<Item = String>,
) -> WorkerArgs {
    let mut config = None;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return WorkerArgs::Print(worker_help(name, about)),
            "-V" | "--version" => {
                return WorkerArgs::Print(format!("{name} {}\n", crate::metrics::this_version()))
            }
            "--config" => match args.next() {
                Some(v) => config = Some(v.into()),
                None => return WorkerArgs::Usage(format!("{name}: --config needs a file\n")),
            },
            other => match other.strip_prefix("--config=") {
                Some(v) => config = Some(v.into()),
                None => {
                    return WorkerArgs::Usage(format!(
                        "{name}: unexpected argument {other:?}\n\nUsage: {name} [--config FILE]\nFor more information, try '--help'.\n"
                    ))
                }
            },
        }
    }
    WorkerArgs::Run(config)
}

fn worker_help(name: &str, about: &str) -> String {
    format!(
        "{about}

Usage: {name} [--config FILE]

Options:
  --config FILE  YAML configuration file (or MAILPIPE_CONFIG=FILE); the
                 defaults apply to whatever it leaves out. With
                 MAILPIPE_CONFIG_DIR=DIR, DIR/base.yaml and
                 DIR/$MAILPIPE_ENV.yaml are read first
  -h, --help     Print this help and exit
  -V, --version  Print the version and exit

Every setting can also be given in the environment as MAILPIPE__SECTION__FIELD,
for example MAILPIPE__AMQP__URL or MAILPIPE__SENDER__CONCURRENCY.
The process serves /metrics, /healthz and /readyz on its `listen` address and
stops gracefully on SIGTERM or ctrl-c.
"
    )
}

/// The `--config FILE` argument of a worker binary, if given; answers
/// `--help` and `--version` and exits, and exits with code 2 on anything
/// else (see [`parse_worker_args`]).
pub fn worker_config_arg(name: &str, about: &str) -> Option<std::path::PathBuf> {
    match parse_worker_args(name, about, std::env::args().skip(1)) {
        WorkerArgs::Run(config) => config,
        WorkerArgs::Print(text) => {
            print!("{text}");
            std::process::exit(0)
        }
        WorkerArgs::Usage(text) => {
            eprint!("{text}");
            std::process::exit(2)
        }
    }
}

/// Replaces the password of a URL with `***` for logging.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Parses `"30s"`, `"5m"`, `"250ms"` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw).map_err(|e| format!("invalid duration {raw:?}: {e}"))
}

/// Formats a duration the way config files write it (`"1h"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(u64),
    Text(String),
}

impl RawDuration {
    fn into_duration(self) -> Result<Duration, String> {
        match self {
            RawDuration::Secs(s) => Ok(Duration::from_secs(s)),
            RawDuration::Text(t) => parse_duration(&t),
        }
    }
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    RawDuration::deserialize(d)?
        .into_duration()
        .map_err(serde::de::Error::custom)
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<RawDuration>),
        Text(String),
    }
    let items = match ListOrText::deserialize(d)? {
        ListOrText::List(items) => items,
        // Environment variables arrive as one string: "1m,2m,4m".
        ListOrText::Text(t) => t
            .split(',')
            .map(|s| RawDuration::Text(s.to_string()))
            .collect(),
    };
    items
        .into_iter()
        .map(|r| r.into_duration().map_err(serde::de::Error::custom))
        .collect()
}

/// A list of secrets, or one comma-separated string (environment variables).
fn secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    let items = match ListOrText::deserialize(d)? {
        ListOrText::List(items) => items,
        ListOrText::Text(t) => t.split(',').map(str::to_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
        .collect())
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_partial_override_of_a_nested_policy_keeps_the_other_defaults() {
        // Same layering as Settings::load, with the override as YAML text
        // (an environment variable becomes the same nested map).
        let load = |yaml: &str| -> Settings {
            config::Config::builder()
                .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
                .build()
                .unwrap()
                .try_deserialize()
                .unwrap()
        };
        let d = RetryPolicies::default();
        let s = load("retrier:\n  policies:\n    soft:\n      schedule: [10s, 20s]\n");
        let p = &s.retrier.policies;
        let secs = |v: &[Duration]| v.iter().map(|d| d.as_secs()).collect::<Vec<_>>();
        assert_eq!(secs(&p.soft.schedule), vec![10, 20]);
        assert_eq!(p.soft.max_attempts, d.soft.max_attempts);
        assert_eq!(secs(&p.routing.schedule), secs(&d.routing.schedule));
        assert_eq!(p.throttled.max_attempts, d.throttled.max_attempts);

        let s = load("retrier:\n  policies:\n    throttled:\n      max_attempts: 2\n");
        let p = &s.retrier.policies;
        assert_eq!(p.throttled.max_attempts, 2);
        assert_eq!(secs(&p.throttled.schedule), secs(&d.throttled.schedule));
        assert_eq!(p.soft.max_attempts, d.soft.max_attempts);

        // Unknown keys are still refused.
        let bad = config::Config::builder()
            .add_source(config::File::from_str(
                "retrier:\n  policies:\n    soft:\n      max_atempts: 2\n",
                config::FileFormat::Yaml,
            ))
            .build()
            .unwrap()
            .try_deserialize::<Settings>();
        assert!(bad.is_err());
    }

    #[test]
    fn a_worker_answers_help_and_version_and_refuses_unknown_arguments() {
        let parse = |args: &[&str]| {
            parse_worker_args("mailpipe-x", "about", args.iter().map(|a| a.to_string()))
        };
        let kind = |w: WorkerArgs| match w {
            WorkerArgs::Run(c) => format!("run {c:?}"),
            WorkerArgs::Print(t) if t.contains("Usage:") => "help".to_string(),
            WorkerArgs::Print(t) => format!("print {}", t.trim()),
            WorkerArgs::Usage(_) => "usage error".to_string(),
        };
        let version = format!("print mailpipe-x {}", crate::metrics::this_version());
        let table: &[(&[&str], &str)] = &[
            (&[], "run None"),
            (&["--config", "a.yaml"], "run Some(\"a.yaml\")"),
            (&["--config=b.yaml"], "run Some(\"b.yaml\")"),
            (&["--help"], "help"),
            (&["-h"], "help"),
            (&["--config", "a.yaml", "--help"], "help"),
            (&["--version"], &version),
            (&["-V"], &version),
            (&["--config"], "usage error"),
            (&["--verbose"], "usage error"),
            (&["run"], "usage error"),
        ];
        for (args, expected) in table {
            assert_eq!(kind(parse(args)), *expected, "{args:?}");
        }
    }

    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn redact_url_hides_the_password_only() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn durations_parse_from_text_and_numbers() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn yaml_overrides_defaults_and_unknown_keys_are_refused() {
        let yaml = "sender:\n  smtp:\n    port: 587\n    timeout: 10s\nretrier:\n  tiers: [1s, 2s]\n  policies:\n    soft: {schedule: [1s], max_attempts: 2}\n";
        let s: Settings = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(s.sender.smtp.port, 587);
        assert_eq!(s.sender.smtp.timeout, Duration::from_secs(10));
        assert_eq!(s.retrier.tiers.len(), 2);
        assert_eq!(s.retrier.policies.soft.max_attempts, 2);
        assert_eq!(s.retrier.policies.routing.max_attempts, 6);
        assert_eq!(s.amqp.prefix, "mailpipe");
        assert!(serde_yaml::from_str::<Settings>("sender:\n  smtpp: {}\n").is_err());
    }

    #[test]
    fn the_shipped_base_config_matches_the_defaults() {
        let shipped: Settings =
            serde_yaml::from_str(include_str!("../../deploy/config/base.yaml")).unwrap();
        shipped.validate().unwrap();
        let d = Settings::default();
        assert_eq!(format!("{shipped:?}"), format!("{d:?}"));
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let mut s = Settings::default();
        s.sender.smtp.password = Some(SecretString::from("hunter2"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"));
        assert!(!dbg.contains("guest:guest"));
    }
}

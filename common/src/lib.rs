//! The shared vocabulary of mailpipe.
//!
//! Every binary (expander, sender, retrier) and the operator CLI speak through
//! these types: the wire format of requests and jobs ([`message`]), the broker
//! topology ([`topology`]), configuration ([`config`]), start-up plumbing
//! ([`telemetry`], [`shutdown`], [`http`]), the pure decision core
//! ([`address`], [`template`], [`classify`]) and, behind the default `redis`
//! feature, the shared Redis state ([`store`]).

pub mod adaptive;
pub mod address;
pub mod amqp;
pub mod archive;
pub mod backlog;
pub mod bounce;
#[cfg(feature = "redis")]
pub mod calls;
pub mod classify;
pub mod config;
#[cfg(feature = "dns")]
pub mod dns;
pub mod durability;
pub mod http;
#[cfg(feature = "redis")]
pub mod live_rules;
pub mod message;
pub mod metrics;
#[cfg(feature = "redis")]
pub mod policy;
pub mod quality;
#[cfg(feature = "redis")]
pub mod queue_ops;
pub mod ratelimit;
pub mod retry;
pub mod rules;
pub mod shutdown;
#[cfg(feature = "redis")]
pub mod sitecontrol;
pub mod sites;
#[cfg(feature = "redis")]
pub mod sitestate;
#[cfg(feature = "redis")]
pub mod slowdown;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod topology;
pub mod verp;
pub mod warmup;
pub mod worker;

#[cfg(feature = "redis")]
pub mod store;

/// Seconds since the Unix epoch, the one clock format mailpipe puts on the wire.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch, for latency measurements across processes.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

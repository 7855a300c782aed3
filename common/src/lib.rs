//! The worker runtime of mailpipe.
//!
//! Every binary (expander, sender, retrier, intake) and the operator CLI
//! start through it: configuration ([`config`]), the broker's connections
//! and topology ([`amqp`], [`topology`], [`worker`]), start-up plumbing
//! ([`telemetry`], [`shutdown`], [`http`], [`metrics`], [`tls`]) and, behind
//! the `dns` feature, the lookups of mail hosts ([`dns`]). The pure decision
//! core lives in the `mailpipe-core` crate (no I/O dependency); its modules
//! ([`message`], [`address`], [`template`], [`classify`], [`bounce`], ...)
//! are re-exported here at their old paths. The Redis state is the
//! `mailpipe-state` crate.

pub use mailpipe_core::{
    adaptive, address, archive, bounce, message, quality, ratelimit, retry, rules, sites, template,
    verp, warmup,
};

pub mod amqp;
pub mod backlog;
pub mod classify;
pub mod config;
#[cfg(feature = "dns")]
pub mod dns;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod worker;

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

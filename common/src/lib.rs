//! The shared vocabulary of mailpipe.
//!
//! Every binary (expander, sender, retrier) and the operator CLI speak through
//! these types: the broker topology ([`topology`]), configuration
//! ([`config`]), start-up plumbing ([`telemetry`], [`shutdown`], [`http`]),
//! and, behind the default `redis` feature, the shared Redis state
//! ([`store`]). The pure decision core lives in the `mailpipe-core` crate
//! (no I/O dependency); its modules ([`message`], [`address`], [`template`],
//! [`classify`], [`bounce`], ...) are re-exported here at their old paths.

pub use mailpipe_core::{
    adaptive, address, archive, bounce, message, quality, ratelimit, rules, sites, template, warmup,
};

pub mod amqp;
pub mod backlog;
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
pub mod metrics;
#[cfg(feature = "redis")]
pub mod policy;
#[cfg(feature = "redis")]
pub mod queue_ops;
pub mod retry;
pub mod shutdown;
#[cfg(feature = "redis")]
pub mod sitecontrol;
#[cfg(feature = "redis")]
pub mod sitestate;
#[cfg(feature = "redis")]
pub mod slowdown;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod verp;
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

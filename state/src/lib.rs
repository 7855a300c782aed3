//! The Redis state of mailpipe: what the workers and the CLI remember
//! between messages and across processes.
//!
//! The one way to open Redis, single or behind Sentinels ([`connection`]),
//! the store and its key families ([`store`], key table in `store/mod.rs`),
//! the sender's per-message script ([`calls`]), the sending policy (breaker,
//! pauses, throttles: [`policy`]) and its slow-downs ([`slowdown`]), the
//! adaptive sites' state and control ([`sitestate`], [`sitecontrol`]), the
//! operators' moves of queued messages ([`queue_ops`], which also speaks to
//! the broker), the classifier that follows the kept rows of the
//! qualification table ([`live_rules`]), the check that Redis keeps its
//! writes ([`durability`]) and the Redis half of a worker's start
//! ([`worker`]). Each Lua script lives beside the Rust that calls it.
//!
//! Decisions that need no Redis are in `mailpipe-core`; the worker runtime
//! (configuration, broker, telemetry, HTTP, metrics) is `mailpipe-common`.
//! Imports between the modules go one way: `store` ← `policy` ← `calls`.

// The vocabulary these modules speak, named at the crate root so that
// `crate::config`, `crate::message`, ... read as they did in
// `mailpipe-common`. Not re-exported.
use mailpipe_common::{amqp, classify, config, topology, unix_now, unix_now_ms};
use mailpipe_core::{adaptive, message, ratelimit, rules};

pub mod calls;
pub mod connection;
pub mod durability;
mod keyset;
pub mod live_rules;
pub mod policy;
pub mod queue_ops;
pub mod sitecontrol;
pub mod sitestate;
pub mod slowdown;
pub mod store;
pub mod worker;

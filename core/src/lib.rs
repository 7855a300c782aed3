//! The pure core of mailpipe: what every room decides without doing I/O.
//!
//! The wire format of requests and jobs ([`message`]), recipient addresses
//! ([`address`]), message templates ([`template`]), the SMTP failure
//! classifier ([`classify`]), the exclusion rules of recipients ([`rules`]),
//! the bounce and feedback-report parser ([`bounce`]), the retrier's
//! decision ([`retry`]), VERP return paths ([`verp`]), the adaptive rate
//! controller's decision ([`adaptive`]), and the vocabulary of rates
//! ([`ratelimit`]), sites ([`sites`]), address quality checks ([`quality`]),
//! warm-up schedules ([`warmup`]), the archive stream's settings
//! ([`archive`]), durations as settings write them ([`duration`]) and
//! transport security ([`tls_mode`]). The settings sections these
//! decisions take (`retrier.*`, `bounces.*`) are defined beside them.
//! Nothing here opens a socket, reads a file or needs an async runtime;
//! `mailpipe-common` re-exports each module at its old path and adds the
//! worker runtime; `mailpipe-state` holds the Redis state.

pub mod adaptive;
pub mod address;
pub mod archive;
pub mod bounce;
pub mod classify;
pub mod duration;
pub mod message;
pub mod quality;
pub mod ratelimit;
pub mod retry;
pub mod rules;
pub mod sites;
pub mod template;
pub mod tls_mode;
pub mod verp;
pub mod warmup;

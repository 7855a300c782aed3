//! The pure core of mailpipe: what every room decides without doing I/O.
//!
//! The wire format of requests and jobs ([`message`]), recipient addresses
//! ([`address`]), message templates ([`template`]), the SMTP failure
//! classifier ([`classify`]), the exclusion rules of recipients ([`rules`]),
//! the bounce and feedback-report parser ([`bounce`]), the adaptive rate
//! controller's decision ([`adaptive`]), and the vocabulary of rates
//! ([`ratelimit`]), sites ([`sites`]), address quality checks ([`quality`]),
//! warm-up schedules ([`warmup`]), the archive stream's settings
//! ([`archive`]) and durations as settings write them ([`duration`]).
//! Nothing here opens a socket, reads a file or needs an async runtime;
//! `mailpipe-common` re-exports each module at its old path and adds the
//! Redis state and the worker runtime.

pub mod adaptive;
pub mod address;
pub mod archive;
pub mod bounce;
pub mod classify;
pub mod duration;
pub mod message;
pub mod quality;
pub mod ratelimit;
pub mod rules;
pub mod sites;
pub mod template;
pub mod warmup;

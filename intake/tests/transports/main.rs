//! The intake's transports against real peers: the SMTP listener driven by
//! lettre, raw TCP scripts and Postfix's `smtp-source`; the IMAP poller
//! against a throwaway Dovecot (`mailpipe_tests::dovecot`). One binary, as
//! z2p's `tests/api/main.rs`.

mod helpers;
mod imap;
mod smtp;

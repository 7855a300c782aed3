//! The IMAP poller.

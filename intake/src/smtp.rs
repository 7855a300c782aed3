//! The SMTP listener of the bounce domain.

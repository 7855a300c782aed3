//! Logging set-up: human-readable or JSON lines, filtered by the configured
//! directive or `RUST_LOG`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, TelemetrySettings};

static HASH_ADDRESSES: AtomicBool = AtomicBool::new(false);

/// Replaces every email address in a text bound for the logs with a short
/// hash of it (`addr:1a2b3c4d5e6f`) when `telemetry.hash_addresses` is on:
/// the same address always gives the same hash, so logs stay searchable
/// without holding recipients' addresses. Server replies quote addresses,
/// so every reply or failure text goes through here before it is logged.
pub fn scrub(text: &str) -> Cow<'_, str> {
    if !HASH_ADDRESSES.load(Ordering::Relaxed) {
        return Cow::Borrowed(text);
    }
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
            .expect("valid address pattern")
    });
    re.replace_all(text, |c: &regex::Captures<'_>| {
        let h = crate::message::sha256_hex(c[0].to_ascii_lowercase().as_bytes());
        format!("addr:{}", &h[..12])
    })
}

/// Installs the global `tracing` subscriber for a binary. Safe to call more
/// than once (later calls are ignored), which tests rely on.
pub fn init(settings: &TelemetrySettings) {
    HASH_ADDRESSES.store(settings.hash_addresses, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(settings.filter.clone()));
    // Colours only for a person at a terminal: escape codes in a log file
    // or a log collector are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Installs a subscriber for tests: warnings, or `info` with `TEST_LOG` set.
pub fn init_for_tests() {
    // Warnings always (a failed test shows why a worker reconnected or
    // returned a message); everything from `info` with TEST_LOG set.
    let default = if std::env::var_os("TEST_LOG").is_some() {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = fmt().with_env_filter(filter).with_test_writer().try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hashes_addresses_only_when_asked() {
        let text = "550 5.1.1 <Bob@Example.com>: Recipient address rejected";
        assert_eq!(scrub(text), text);
        HASH_ADDRESSES.store(true, Ordering::Relaxed);
        let out = scrub(text).into_owned();
        HASH_ADDRESSES.store(false, Ordering::Relaxed);
        assert!(!out.contains("Bob@Example.com"), "{out}");
        assert!(out.starts_with("550 5.1.1 <addr:"), "{out}");
        assert!(out.ends_with(">: Recipient address rejected"));
    }
}

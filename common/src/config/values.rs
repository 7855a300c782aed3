//! How values are written in config files and environment variables:
//! durations (`"30s"`, a bare number of seconds, comma-separated lists; the
//! parsers live in `mailpipe_core::duration`), and URLs redacted before
//! they are logged. The list of secrets of `bounces.keys` is read with its
//! section, in `mailpipe_core::verp`.

pub(crate) use mailpipe_core::duration::duration;
pub use mailpipe_core::duration::{format_duration, parse_duration};

/// Replaces the password of a URL with `***` for logging.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_the_password_only() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}

//! The expander's metrics and the events that update them: one struct per
//! event, whose `emit()` counts it (and writes its log line, when the event
//! has one). The families are built in [`ExpanderMetrics`] with the
//! expander's own registry; the shared plumbing (process registry, dead
//! letters) is `mailpipe_common::metrics`.

use std::collections::BTreeMap;

use mailpipe_common::metrics::{counter, dead_letters, process_registry, register, WorkerMetrics};
use mailpipe_common::quality::MailHost;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Registry};

/// The expander's families.
#[derive(Clone)]
pub struct ExpanderMetrics {
    registry: Registry,
    /// Requests consumed, by outcome (`expanded`, `invalid`, `replayed`).
    requests: IntCounterVec,
    /// Recipients of expanded requests, by outcome (`accepted` or an exclusion reason).
    recipients: IntCounterVec,
    /// Time to expand one request (part).
    expand_seconds: Histogram,
    /// Requests refused whole, by reason.
    dead: IntCounterVec,
    /// DNS lookups of domains' mail hosts (the `no_mail_host` check), by
    /// answer (`found`, `missing`, `unknown`); answers from the expander's
    /// cache are not lookups.
    mail_host_lookups: IntCounterVec,
}

impl WorkerMetrics for ExpanderMetrics {
    fn new() -> Self {
        let registry = process_registry();
        let requests = counter(
            &registry,
            "mailpipe_requests_total",
            "Bulk requests consumed, by outcome",
            &["outcome"],
        );
        let recipients = counter(
            &registry,
            "mailpipe_recipients_total",
            "Recipients of expanded requests, by outcome",
            &["outcome"],
        );
        let expand_seconds = register(
            &registry,
            Histogram::with_opts(HistogramOpts::new(
                "mailpipe_expand_seconds",
                "Time to expand one request (part)",
            ))
            .expect("valid metric"),
        );
        let dead = dead_letters(&registry);
        let mail_host_lookups = counter(
            &registry,
            "mailpipe_mail_host_lookups_total",
            "DNS lookups of domains' mail hosts for the no_mail_host check, by answer",
            &["answer"],
        );
        // The common series start at zero, so every family is exported from
        // the start (dashboards and alerts see 0, not "no data").
        for o in ["expanded", "invalid", "replayed"] {
            requests.with_label_values(&[o]);
        }
        for a in ["found", "missing", "unknown"] {
            mail_host_lookups.with_label_values(&[a]);
        }
        recipients.with_label_values(&["accepted"]);
        dead.with_label_values(&["invalid_request"]);
        Self {
            registry,
            requests,
            recipients,
            expand_seconds,
            dead,
            mail_host_lookups,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn dead_letters(&self) -> &IntCounterVec {
        &self.dead
    }
}

/// A request delivery was handled (whatever became of it): its time.
pub(crate) struct RequestHandled {
    pub seconds: f64,
}

impl RequestHandled {
    pub(crate) fn emit(self, m: &ExpanderMetrics) {
        m.expand_seconds.observe(self.seconds);
    }
}

/// A request (part) was expanded: its accepted recipients and those
/// excluded, by reason.
pub(crate) struct RequestExpanded<'a> {
    pub accepted: u64,
    pub excluded: &'a BTreeMap<String, u64>,
}

impl RequestExpanded<'_> {
    pub(crate) fn emit(self, m: &ExpanderMetrics) {
        m.requests.with_label_values(&["expanded"]).inc();
        m.recipients
            .with_label_values(&["accepted"])
            .inc_by(self.accepted);
        for (reason, n) in self.excluded {
            m.recipients
                .with_label_values(&[reason.as_str()])
                .inc_by(*n);
        }
    }
}

/// A request (part) expanded before came again; nothing was published.
pub(crate) struct RequestReplayed;

impl RequestReplayed {
    pub(crate) fn emit(self, m: &ExpanderMetrics) {
        m.requests.with_label_values(&["replayed"]).inc();
    }
}

/// A request was refused whole and dead-lettered with its reason.
pub(crate) struct RequestRejected {
    pub reason: &'static str,
}

impl RequestRejected {
    pub(crate) fn emit(self, m: &ExpanderMetrics) {
        m.requests.with_label_values(&["invalid"]).inc();
        mailpipe_common::metrics::DeadLettered {
            reason: self.reason,
        }
        .emit(m);
    }
}

/// The DNS answered a lookup of a domain's mail host (the `no_mail_host`
/// check). A lookup without an answer is logged: its recipients are not
/// excluded.
pub(crate) struct MailHostAnswered<'a> {
    pub domain: &'a str,
    pub answer: &'a MailHost,
}

impl MailHostAnswered<'_> {
    pub(crate) fn emit(self, m: &ExpanderMetrics) {
        let domain = self.domain;
        let label = match self.answer {
            MailHost::Missing(_) => "missing",
            MailHost::Unknown(why) => {
                tracing::warn!(%domain, %why, "no answer about the domain's mail host; its recipients are not excluded");
                "unknown"
            }
            _ => "found",
        };
        m.mail_host_lookups.with_label_values(&[label]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_common::metrics::value;

    #[test]
    fn an_expanded_request_counts_its_accepted_and_excluded_recipients() {
        let m = ExpanderMetrics::new();
        let excluded = BTreeMap::from([
            ("duplicate".to_string(), 3),
            ("invalid_address".to_string(), 1),
        ]);
        RequestExpanded {
            accepted: 10,
            excluded: &excluded,
        }
        .emit(&m);
        RequestReplayed.emit(&m);
        RequestRejected {
            reason: "invalid_request",
        }
        .emit(&m);
        RequestHandled { seconds: 0.5 }.emit(&m);
        let r = m.registry();
        let recipients = |o| value(r, "mailpipe_recipients_total", &[("outcome", o)]);
        assert_eq!(recipients("accepted"), Some(10.0));
        assert_eq!(recipients("duplicate"), Some(3.0));
        assert_eq!(recipients("invalid_address"), Some(1.0));
        let requests = |o| value(r, "mailpipe_requests_total", &[("outcome", o)]);
        assert_eq!(requests("expanded"), Some(1.0));
        assert_eq!(requests("replayed"), Some(1.0));
        assert_eq!(requests("invalid"), Some(1.0));
        assert_eq!(
            value(
                r,
                "mailpipe_dead_letters_total",
                &[("reason", "invalid_request")]
            ),
            Some(1.0)
        );
        assert_eq!(value(r, "mailpipe_expand_seconds", &[]), Some(1.0));
    }

    #[test]
    fn a_mail_host_answer_is_counted_by_what_it_said() {
        let m = ExpanderMetrics::new();
        let unknown = MailHost::Unknown("timed out".into());
        let missing = MailHost::Missing("null MX");
        for answer in [&unknown, &MailHost::Found, &unknown, &missing] {
            MailHostAnswered {
                domain: "example.com",
                answer,
            }
            .emit(&m);
        }
        let r = m.registry();
        let lookups = |a| value(r, "mailpipe_mail_host_lookups_total", &[("answer", a)]);
        assert_eq!(lookups("unknown"), Some(2.0));
        assert_eq!(lookups("found"), Some(1.0));
        assert_eq!(lookups("missing"), Some(1.0));
    }
}

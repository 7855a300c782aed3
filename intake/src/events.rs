//! The intake's metrics and the events that update them: one struct per
//! event, whose `emit()` counts it and writes the log line the event has
//! (if any). The families are built in [`IntakeMetrics`] with the intake's
//! own registry; the shared plumbing (process registry, dead letters, the
//! kept rules' version) is `mailpipe_common::metrics`.

use mailpipe_common::metrics::{
    counter, dead_letters, kept_rules_version, process_registry, WorkerMetrics,
};
use prometheus::{IntCounterVec, IntGauge, Registry};

use crate::Source;

/// The bounce intake's families.
#[derive(Clone)]
pub struct IntakeMetrics {
    registry: Registry,
    /// Mails taken, by source (`smtp`, `imap`) and outcome (`bounced`,
    /// `delayed`, `complained`, `auto_reply`, `duplicate`, `unmatched`,
    /// `unrecognized`, `forged`, `ignored`, and `refused_forged`: a
    /// recipient refused in the SMTP session because its VERP token does
    /// not verify).
    intake: IntCounterVec,
    /// Mails set aside in the dead-letter queue, by reason (`intake_*`).
    dead: IntCounterVec,
    /// The kept rows' version the intake classifies with.
    kept_rules_version: IntGauge,
}

impl WorkerMetrics for IntakeMetrics {
    fn new() -> Self {
        let registry = process_registry();
        let intake = counter(
            &registry,
            "mailpipe_intake_mails_total",
            "Mails taken by the bounce intake, by source and outcome",
            &["source", "outcome"],
        );
        let dead = dead_letters(&registry);
        for source in ["smtp", "imap"] {
            for o in ["bounced", "complained", "unmatched", "forged"] {
                intake.with_label_values(&[source, o]);
            }
        }
        intake.with_label_values(&["smtp", "refused_forged"]);
        dead.with_label_values(&["intake_unmatched"]);
        let kept_rules_version = kept_rules_version(&registry);
        Self {
            registry,
            intake,
            dead,
            kept_rules_version,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn dead_letters(&self) -> &IntCounterVec {
        &self.dead
    }
}

impl IntakeMetrics {
    /// The gauge of the kept rows' version, for the live classifier.
    pub fn kept_rules_version(&self) -> &IntGauge {
        &self.kept_rules_version
    }
}

/// A mail was taken (its outcome is durable): counted by source and
/// outcome.
pub(crate) struct MailTaken<'a> {
    pub source: Source,
    pub outcome: &'a str,
}

impl MailTaken<'_> {
    pub(crate) fn emit(self, m: &IntakeMetrics) {
        m.intake
            .with_label_values(&[self.source.as_str(), self.outcome])
            .inc();
    }
}

/// The SMTP listener refused a recipient whose VERP token does not verify:
/// forged, or signed with a key this intake does not have (the sender's and
/// the intake's `bounces.keys` differ).
pub(crate) struct ForgedAddressRefused<'a> {
    pub address: &'a str,
}

impl ForgedAddressRefused<'_> {
    pub(crate) fn emit(self, m: &IntakeMetrics) {
        let address = self.address;
        tracing::warn!(%address, "bounce address with a token that does not verify refused");
        m.intake
            .with_label_values(&["smtp", "refused_forged"])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_common::metrics::value;

    #[test]
    fn mails_are_counted_by_source_and_outcome() {
        let m = IntakeMetrics::new();
        MailTaken {
            source: Source::Imap,
            outcome: "bounced",
        }
        .emit(&m);
        MailTaken {
            source: Source::Smtp,
            outcome: "auto_reply",
        }
        .emit(&m);
        ForgedAddressRefused {
            address: "bounces+forged@example.com",
        }
        .emit(&m);
        let r = m.registry();
        let mails = |source, outcome| {
            value(
                r,
                "mailpipe_intake_mails_total",
                &[("source", source), ("outcome", outcome)],
            )
        };
        assert_eq!(mails("imap", "bounced"), Some(1.0));
        assert_eq!(mails("smtp", "bounced"), Some(0.0));
        assert_eq!(mails("smtp", "auto_reply"), Some(1.0));
        assert_eq!(mails("smtp", "refused_forged"), Some(1.0));
        assert_eq!(mails("imap", "refused_forged"), None);
    }
}

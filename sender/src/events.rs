//! The sender's metrics and the events that update them: one struct per
//! event, whose `emit()` counts it and writes the log line the event has
//! (if any). The families are built in [`SenderMetrics`] with the sender's
//! own registry; the shared plumbing (process registry, dead letters, the
//! kept rules' version) is `mailpipe_common::metrics`.
//!
//! Over 500 lines: every family of the sender and every event that updates
//! them, one short struct each, with the tests that read each count back
//! (nearly a third of the file).

use std::time::Duration;

use mailpipe_common::adaptive::{Action, Phase};
use mailpipe_common::classify::Failure;
use mailpipe_common::config::OnAmbiguous;
use mailpipe_common::message::{Job, Lane};
use mailpipe_common::metrics::{
    counter, dead_letters, kept_rules_version, process_registry, register, WorkerMetrics,
};
use mailpipe_common::telemetry::scrub;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The sender's families.
#[derive(Clone)]
pub struct SenderMetrics {
    registry: Registry,
    /// Recipients taken from a lane, by lane and outcome: `sent` and
    /// `failed` are SMTP attempts; `duplicate`, `held`, `ambiguous_held`, `removed`,
    /// `returned`, `not_due`, `throttled`, `paused`, `suspended` (a
    /// reputation block at an adaptive site) and the dead-letter
    /// reasons (`expired`, `render_failed`, ...) are not.
    deliveries: IntCounterVec,
    /// SMTP transaction time, from taking the connection to the final reply.
    smtp_seconds: HistogramVec,
    /// Transactions per route (relay) and outcome (`sent`, `failed`,
    /// `unavailable`): which relay route each message took.
    routes: IntCounterVec,
    /// Domains paused by the breaker (counter of openings).
    breaker_openings: IntCounterVec,
    /// Messages currently being processed, by lane.
    in_flight: IntGaugeVec,
    /// Records published to the dead-letter queue, by reason.
    dead: IntCounterVec,
    /// By lane, the newest time (Unix seconds) at which a message this
    /// sender took had entered the lane, or 0 before it took any: the head
    /// of the lane entered later (see `mailpipe_common::backlog`).
    lane_entered: GaugeVec,
    /// Recipients taken with less than a fifth of their validity period
    /// left, by lane and attempt (`first`, `retry`).
    near_deadline: IntCounterVec,
    /// Ambiguous attempts (data sent, no reply read), by what was done
    /// (`resend`, `hold`, `drop`).
    ambiguous: IntCounterVec,
    /// The kept rows' version the sender classifies with.
    kept_rules_version: IntGauge,
    /// Changes of a site's adaptive state this sender made, by site and
    /// action (`started`, `raised`, `cut`, `suspended`, `resumed`, ...).
    site_changes: IntCounterVec,
    /// Messages tried again by the sender after a throttling reply, by site.
    site_throttled_retries: IntCounterVec,
    /// A site's allowed rate (messages per second), as this sender last
    /// stepped it.
    site_allowed_rate: GaugeVec,
    /// A site's adaptive state (0 probing, 1 steady, 2 throttled,
    /// 3 suspended), as this sender last stepped it.
    site_state: IntGaugeVec,
}

impl SenderMetrics {
    /// Starts the series of every route at zero, so dashboards and alerts
    /// see every route (`labels`: the routes' metric labels).
    pub fn start_routes<'a>(&self, labels: impl IntoIterator<Item = &'a str>) {
        for name in labels {
            for outcome in ["sent", "failed", "unavailable"] {
                self.routes.with_label_values(&[name, outcome]);
            }
        }
    }

    /// The gauge of the kept rows' version, for the live classifier.
    pub fn kept_rules_version(&self) -> &IntGauge {
        &self.kept_rules_version
    }

    /// The gauge of the messages being processed in `lane`.
    pub(crate) fn in_flight(&self, lane: Lane) -> IntGauge {
        self.in_flight.with_label_values(&[lane.as_str()])
    }
}

impl WorkerMetrics for SenderMetrics {
    fn new() -> Self {
        let registry = process_registry();
        let deliveries = counter(
            &registry,
            "mailpipe_deliveries_total",
            "Recipients taken from a send lane, by lane and outcome (sent and failed are SMTP attempts)",
            &["lane", "outcome"],
        );
        let smtp_seconds = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "mailpipe_smtp_transaction_seconds",
                    "Duration of SMTP transactions, by lane",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                &["lane"],
            )
            .expect("valid metric"),
        );
        let routes = counter(
            &registry,
            "mailpipe_route_transactions_total",
            "SMTP transactions per route and outcome",
            &["route", "outcome"],
        );
        let breaker_openings = counter(
            &registry,
            "mailpipe_domain_pauses_total",
            "Domains paused by the circuit breaker, by reason",
            &["reason"],
        );
        let in_flight = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "mailpipe_in_flight_messages",
                    "Messages being processed, by lane",
                ),
                &["lane"],
            )
            .expect("valid metric"),
        );
        let dead = dead_letters(&registry);
        let lane_entered = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "mailpipe_lane_entered_timestamp_seconds",
                    "Newest time (Unix seconds) at which a message this sender took had entered its lane (0: none taken yet); the head of the lane entered later",
                ),
                &["lane"],
            )
            .expect("valid metric"),
        );
        let near_deadline = counter(
            &registry,
            "mailpipe_recipients_near_deadline_total",
            "Recipients taken from a lane with less than a fifth of their validity period left, by lane and attempt (first, retry)",
            &["lane", "attempt"],
        );
        for lane in ["transactional", "bulk"] {
            for o in ["sent", "failed", "duplicate"] {
                deliveries.with_label_values(&[lane, o]);
            }
            smtp_seconds.with_label_values(&[lane]);
            in_flight.with_label_values(&[lane]);
            lane_entered.with_label_values(&[lane]);
            for attempt in ["first", "retry"] {
                near_deadline.with_label_values(&[lane, attempt]);
            }
        }
        let ambiguous = counter(
            &registry,
            "mailpipe_ambiguous_total",
            "Recipients whose attempt was ambiguous (the data was sent and no reply read: they may have the message), by what was done (resend, hold, drop)",
            &["action"],
        );
        for action in ["resend", "hold", "drop"] {
            ambiguous.with_label_values(&[action]);
        }
        breaker_openings.with_label_values(&["breaker"]);
        dead.with_label_values(&["expired"]);
        let kept_rules_version = kept_rules_version(&registry);
        let site_changes = counter(
            &registry,
            "mailpipe_site_changes_total",
            "Changes of a site's adaptive sending state, by site and action (started, raised, cut, suspended, resumed, steadied, capped)",
            &["site", "action"],
        );
        let site_throttled_retries = counter(
            &registry,
            "mailpipe_site_throttled_retries_total",
            "Messages this sender tried again itself, at the site's cut rate, after a throttling reply at an adaptive site (sites.adaptive.throttled_retries), by site",
            &["site"],
        );
        let site_allowed_rate = register(
            &registry,
            GaugeVec::new(
                Opts::new(
                    "mailpipe_site_allowed_rate",
                    "The adaptive rate a site allows now, messages per second",
                ),
                &["site"],
            )
            .expect("valid metric"),
        );
        let site_state = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "mailpipe_site_state",
                    "A site's adaptive state: 0 probing, 1 steady, 2 throttled, 3 suspended",
                ),
                &["site"],
            )
            .expect("valid metric"),
        );
        Self {
            site_changes,
            site_throttled_retries,
            site_allowed_rate,
            site_state,
            kept_rules_version,
            ambiguous,
            registry,
            deliveries,
            smtp_seconds,
            routes,
            breaker_openings,
            in_flight,
            dead,
            lane_entered,
            near_deadline,
        }
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn dead_letters(&self) -> &IntCounterVec {
        &self.dead
    }
}

/// The jobs of a lane message were taken to be sent (`due_ms`: its
/// due-time header, for a retry): when the message entered the lane, and
/// whether its recipients are close to their deadline. The jobs of one
/// lane message share their request's times and attempt.
pub(crate) struct LaneMessageTaken<'a> {
    pub jobs: &'a [Job],
    pub due_ms: Option<i64>,
}

impl LaneMessageTaken<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        let Some(first) = self.jobs.first() else {
            return;
        };
        let now_ms = mailpipe_common::unix_now_ms();
        let lane = first.lane.as_str();
        let entered = mailpipe_common::backlog::entered_lane_ms(first.created, self.due_ms, now_ms)
            as f64
            / 1000.0;
        // One task consumes each lane: no other writer between get and set.
        let gauge = m.lane_entered.with_label_values(&[lane]);
        if entered > gauge.get() {
            gauge.set(entered);
        }
        if mailpipe_common::backlog::deadline_close(first.created, first.deadline, now_ms / 1000) {
            let attempt = if first.attempt == 0 { "first" } else { "retry" };
            m.near_deadline
                .with_label_values(&[lane, attempt])
                .inc_by(self.jobs.len() as u64);
        }
    }
}

/// An SMTP transaction ended (whatever its reply), after `seconds`.
pub(crate) struct SmtpTransactionEnded {
    pub lane: Lane,
    pub seconds: f64,
}

impl SmtpTransactionEnded {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.smtp_seconds
            .with_label_values(&[self.lane.as_str()])
            .observe(self.seconds);
    }
}

/// A route took a message (`route`: its metric label).
pub(crate) struct RouteSent<'a> {
    pub route: &'a str,
}

impl RouteSent<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.routes.with_label_values(&[self.route, "sent"]).inc();
    }
}

/// A route's server refused a message for a reason about the destination
/// (`route`: its metric label).
pub(crate) struct RouteFailed<'a> {
    pub route: &'a str,
}

impl RouteFailed<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.routes.with_label_values(&[self.route, "failed"]).inc();
    }
}

/// A route did not take the message (it is away); the next one is tried.
pub(crate) struct RouteUnavailable<'a> {
    /// The route's name (a relay, or an MX host), for the log.
    pub route: &'a str,
    /// Its metric label.
    pub label: &'a str,
    pub failure: &'a Failure,
}

impl RouteUnavailable<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.routes
            .with_label_values(&[self.label, "unavailable"])
            .inc();
        tracing::warn!(route = %self.route, failure = %scrub(&self.failure.to_string()), "route unavailable; trying the next one");
    }
}

/// The breaker paused sending to a domain (its failure ratio went over the
/// threshold) for `pause`.
pub(crate) struct DomainPaused<'a> {
    pub domain: &'a str,
    pub pause: Duration,
}

impl DomainPaused<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.breaker_openings.with_label_values(&["breaker"]).inc();
        let (domain, pause) = (self.domain, self.pause);
        tracing::warn!(%domain, pause = ?pause, "failure ratio over the threshold: sending to the domain is paused");
    }
}

/// What became of a recipient taken from a lane, or of a lane message
/// passed on unopened (`not_due`), by its outcome label.
pub(crate) struct RecipientSettled {
    pub lane: Lane,
    pub outcome: &'static str,
}

impl RecipientSettled {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.deliveries
            .with_label_values(&[self.lane.as_str(), self.outcome])
            .inc();
    }
}

/// An attempt was ambiguous (the data was sent and no reply read): the
/// recipient may have the message already; `action` says what is done.
pub(crate) struct AmbiguousAttempt<'a> {
    pub message: &'a str,
    pub action: OnAmbiguous,
    pub detail: &'a str,
}

impl AmbiguousAttempt<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        let (action, detail) = (self.action.as_str(), self.detail);
        m.ambiguous.with_label_values(&[action]).inc();
        tracing::warn!(message = %self.message, action, %detail, "ambiguous attempt: the recipient may have the message already");
    }
}

/// This sender stepped a site's adaptive rate (stored): the site's rate
/// and state now.
pub(crate) struct SiteStepped<'a> {
    pub site: &'a str,
    pub rate: f64,
    pub phase: Phase,
}

impl SiteStepped<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.site_allowed_rate
            .with_label_values(&[self.site])
            .set(self.rate);
        m.site_state
            .with_label_values(&[self.site])
            .set(self.phase.code());
    }
}

/// A message met a throttling reply at an adaptive site and is tried
/// again by the sender, at the site's cut rate.
pub(crate) struct SiteThrottledRetry<'a> {
    pub site: &'a str,
}

impl SiteThrottledRetry<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        m.site_throttled_retries
            .with_label_values(&[self.site])
            .inc();
    }
}

/// The step changed a site's adaptive state: a warning when the site
/// pushes back (a cut, a suspension), else a line at info.
pub(crate) struct SiteChanged<'a> {
    pub site: &'a str,
    pub action: Action,
    pub phase: Phase,
    pub rate: f64,
    /// Why the site was cut or suspended (none otherwise).
    pub reason: Option<&'a str>,
}

impl SiteChanged<'_> {
    pub(crate) fn emit(self, m: &SenderMetrics) {
        let site = self.site;
        m.site_changes
            .with_label_values(&[site, self.action.as_str()])
            .inc();
        match self.action {
            Action::Cut | Action::Suspended => tracing::warn!(
                %site, action = self.action.as_str(), rate = self.rate,
                reason = self.reason.unwrap_or(""),
                "the site pushes back: its allowed rate changes"
            ),
            _ => {
                tracing::info!(%site, action = self.action.as_str(), state = self.phase.as_str(), rate = self.rate, "site rate")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailpipe_common::metrics::{labels, series, value};

    #[test]
    fn a_taken_lane_message_moves_the_entry_time_forward_only_and_counts_recipients_near_their_deadline(
    ) {
        let m = SenderMetrics::new();
        let now = mailpipe_common::unix_now();
        let day = 86_400;
        let batch = |created: i64, deadline: i64, attempt: u32, n: usize| {
            let job = Job {
                v: mailpipe_common::message::JOB_SCHEMA_VERSION,
                id: "m".into(),
                request: "r".into(),
                tenant: None,
                campaign: None,
                lane: Lane::Bulk,
                content: "c".into(),
                to: "a@example.com".parse().unwrap(),
                name: None,
                vars: Default::default(),
                created,
                deadline,
                attempt,
                last_reason: None,
                retries: None,
            };
            vec![job; n]
        };
        let entered = |m: &SenderMetrics| {
            series(m.registry(), "mailpipe_lane_entered_timestamp_seconds")
                .into_iter()
                .find(|(l, _)| l == &labels(&[("lane", "bulk")]))
                .map(|(_, v)| v)
        };
        let near = |m: &SenderMetrics, attempt: &str| {
            m.near_deadline.with_label_values(&["bulk", attempt]).get()
        };
        let taken = |jobs: &[Job], due_ms| LaneMessageTaken { jobs, due_ms }.emit(&m);
        assert_eq!(entered(&m), Some(0.0));
        // A first attempt accepted a minute ago, valid five days.
        taken(&batch(now - 60, now + 5 * day, 0, 50), None);
        assert_eq!(entered(&m), Some((now - 60) as f64));
        // A retry due 10 s ago: it entered the lane then.
        let due = (now - 10) * 1000;
        taken(&batch(now - 2 * day, now + 3 * day, 2, 1), Some(due));
        assert_eq!(entered(&m), Some((now - 10) as f64));
        // An older message after it does not move the time back.
        taken(&batch(now - 3600, now + 5 * day, 0, 1), None);
        assert_eq!(entered(&m), Some((now - 10) as f64));
        assert_eq!((near(&m, "first"), near(&m, "retry")), (0, 0));
        // Accepted 4.5 days ago, valid 5 days: 20 recipients close to
        // their deadline, on their first attempt; then a retry.
        taken(&batch(now - 9 * day / 2, now + day / 2, 0, 20), None);
        taken(&batch(now - 9 * day / 2, now + day / 2, 3, 1), Some(due));
        assert_eq!((near(&m, "first"), near(&m, "retry")), (20, 1));
    }

    #[test]
    fn route_events_count_under_the_route_s_label_and_outcome() {
        let m = SenderMetrics::new();
        m.start_routes(["relay-a", "relay-b"]);
        RouteSent { route: "relay-a" }.emit(&m);
        RouteSent { route: "relay-a" }.emit(&m);
        RouteFailed { route: "relay-b" }.emit(&m);
        let failure = Failure::Connection {
            error: mailpipe_common::classify::ConnectionError::Other,
            detail: "refused".into(),
        };
        RouteUnavailable {
            route: "mx1.example.com",
            label: "mx",
            failure: &failure,
        }
        .emit(&m);
        let r = m.registry();
        let routes = |route, outcome| {
            value(
                r,
                "mailpipe_route_transactions_total",
                &[("route", route), ("outcome", outcome)],
            )
        };
        assert_eq!(routes("relay-a", "sent"), Some(2.0));
        assert_eq!(routes("relay-a", "failed"), Some(0.0));
        assert_eq!(routes("relay-b", "failed"), Some(1.0));
        assert_eq!(routes("relay-b", "unavailable"), Some(0.0));
        assert_eq!(routes("mx", "unavailable"), Some(1.0));
        assert_eq!(routes("mx1.example.com", "unavailable"), None);
    }

    #[test]
    fn outcomes_pauses_ambiguity_and_site_steps_are_counted_with_their_labels() {
        let m = SenderMetrics::new();
        RecipientSettled {
            lane: Lane::Transactional,
            outcome: "sent",
        }
        .emit(&m);
        RecipientSettled {
            lane: Lane::Bulk,
            outcome: "not_due",
        }
        .emit(&m);
        SmtpTransactionEnded {
            lane: Lane::Bulk,
            seconds: 0.2,
        }
        .emit(&m);
        DomainPaused {
            domain: "example.com",
            pause: Duration::from_secs(60),
        }
        .emit(&m);
        AmbiguousAttempt {
            message: "m",
            action: OnAmbiguous::Hold,
            detail: "timed out after the data",
        }
        .emit(&m);
        SiteStepped {
            site: "example.com",
            rate: 2.5,
            phase: Phase::Throttled,
        }
        .emit(&m);
        SiteChanged {
            site: "example.com",
            action: Action::Cut,
            phase: Phase::Throttled,
            rate: 2.5,
            reason: Some("throttled"),
        }
        .emit(&m);
        let r = m.registry();
        let deliveries = |lane, outcome| {
            value(
                r,
                "mailpipe_deliveries_total",
                &[("lane", lane), ("outcome", outcome)],
            )
        };
        assert_eq!(deliveries("transactional", "sent"), Some(1.0));
        assert_eq!(deliveries("bulk", "not_due"), Some(1.0));
        assert_eq!(deliveries("bulk", "sent"), Some(0.0));
        let smtp = "mailpipe_smtp_transaction_seconds";
        assert_eq!(value(r, smtp, &[("lane", "bulk")]), Some(1.0));
        assert_eq!(value(r, smtp, &[("lane", "transactional")]), Some(0.0));
        let pauses = "mailpipe_domain_pauses_total";
        assert_eq!(value(r, pauses, &[("reason", "breaker")]), Some(1.0));
        let ambiguous = "mailpipe_ambiguous_total";
        assert_eq!(value(r, ambiguous, &[("action", "hold")]), Some(1.0));
        assert_eq!(value(r, ambiguous, &[("action", "resend")]), Some(0.0));
        let site = [("site", "example.com")];
        assert_eq!(value(r, "mailpipe_site_allowed_rate", &site), Some(2.5));
        assert_eq!(value(r, "mailpipe_site_state", &site), Some(2.0));
        assert_eq!(
            value(
                r,
                "mailpipe_site_changes_total",
                &[("site", "example.com"), ("action", "cut")]
            ),
            Some(1.0)
        );
    }
}

//! Prometheus metrics of mailpipe. Each process builds one [`Metrics`] with
//! its own registry (so tests running several pipelines in one process do not
//! mix their counts) and serves it on `/metrics`. Labels are bounded: lanes,
//! outcomes and reasons are closed sets; no label carries an address or id.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Every metric family mailpipe exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests consumed by the expander, by outcome (`expanded`, `invalid`).
    pub requests: IntCounterVec,
    /// Recipients of expanded requests, by outcome (`accepted` or an exclusion reason).
    pub recipients: IntCounterVec,
    /// Delivery attempts by lane and outcome (`sent`, `failed`, `duplicate`, `render_error`).
    pub deliveries: IntCounterVec,
    /// SMTP transaction time, from taking the connection to the final reply.
    pub smtp_seconds: HistogramVec,
    /// Jobs handled by the retrier by decision (`retry`, `dead`) and reason.
    pub retries: IntCounterVec,
    /// Records published to the dead-letter queue, by reason.
    pub dead: IntCounterVec,
    /// Transactions per route (relay) and outcome (`sent`, `failed`,
    /// `unavailable`): which relay route each message took.
    pub routes: IntCounterVec,
    /// Domains paused by the breaker (counter of openings).
    pub breaker_openings: IntCounterVec,
    /// Messages currently being processed, by lane.
    pub in_flight: IntGaugeVec,
    /// Time to expand one request.
    pub expand_seconds: Histogram,
    /// Mails taken by the bounce intake, by source (`smtp`, `imap`) and
    /// outcome (`bounced`, `delayed`, `complained`, `auto_reply`,
    /// `duplicate`, `unmatched`, `unrecognized`, `forged`, `ignored`, and
    /// `refused_forged`: a recipient refused in the SMTP session because
    /// its VERP token does not verify).
    pub intake: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "mailpipe_requests_total",
                "Bulk requests consumed, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let recipients = IntCounterVec::new(
            Opts::new(
                "mailpipe_recipients_total",
                "Recipients of expanded requests, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let deliveries = IntCounterVec::new(
            Opts::new(
                "mailpipe_deliveries_total",
                "Delivery attempts, by lane and outcome",
            ),
            &["lane", "outcome"],
        )
        .expect("valid metric");
        let smtp_seconds = HistogramVec::new(
            HistogramOpts::new(
                "mailpipe_smtp_transaction_seconds",
                "Duration of SMTP transactions, by lane",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["lane"],
        )
        .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "mailpipe_retrier_decisions_total",
                "Failed attempts handled by the retrier, by decision and reason",
            ),
            &["decision", "reason"],
        )
        .expect("valid metric");
        let dead = IntCounterVec::new(
            Opts::new(
                "mailpipe_dead_letters_total",
                "Records published to the dead-letter queue, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let routes = IntCounterVec::new(
            Opts::new(
                "mailpipe_route_transactions_total",
                "SMTP transactions per route and outcome",
            ),
            &["route", "outcome"],
        )
        .expect("valid metric");
        let breaker_openings = IntCounterVec::new(
            Opts::new(
                "mailpipe_domain_pauses_total",
                "Domains paused by the circuit breaker, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "mailpipe_in_flight_messages",
                "Messages being processed, by lane",
            ),
            &["lane"],
        )
        .expect("valid metric");
        let expand_seconds = Histogram::with_opts(HistogramOpts::new(
            "mailpipe_expand_seconds",
            "Time to expand one request (part)",
        ))
        .expect("valid metric");
        let intake = IntCounterVec::new(
            Opts::new(
                "mailpipe_intake_mails_total",
                "Mails taken by the bounce intake, by source and outcome",
            ),
            &["source", "outcome"],
        )
        .expect("valid metric");
        for c in [
            &intake,
            &requests,
            &recipients,
            &deliveries,
            &retries,
            &dead,
            &routes,
            &breaker_openings,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(smtp_seconds.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(expand_seconds.clone()))
            .expect("unique metric");
        // Create the common series at zero, so every family is exported from
        // the start (dashboards and alerts see 0, not "no data").
        for o in ["expanded", "invalid", "replayed"] {
            requests.with_label_values(&[o]);
        }
        recipients.with_label_values(&["accepted"]);
        for lane in ["transactional", "bulk"] {
            for o in ["sent", "failed", "duplicate"] {
                deliveries.with_label_values(&[lane, o]);
            }
            smtp_seconds.with_label_values(&[lane]);
            in_flight.with_label_values(&[lane]);
        }
        for d in ["retry", "dead"] {
            retries.with_label_values(&[d, "undefined"]);
        }
        dead.with_label_values(&["exhausted"]);
        breaker_openings.with_label_values(&["breaker"]);
        for source in ["smtp", "imap"] {
            for o in ["bounced", "complained", "unmatched", "forged"] {
                intake.with_label_values(&[source, o]);
            }
        }
        intake.with_label_values(&["smtp", "refused_forged"]);
        Self {
            intake,
            registry,
            requests,
            recipients,
            deliveries,
            smtp_seconds,
            retries,
            dead,
            routes,
            breaker_openings,
            in_flight,
            expand_seconds,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

//! Address quality during one expansion: `likely_typo` from the domain
//! alone, `no_mail_host` from a DNS lookup per domain.
//!
//! A recipient whose domain's answer is not known yet waits here while the
//! expansion goes on with the recipients of other domains; it joins a later
//! screening batch once its domain answered, in the order it came (so of
//! two spellings of one address the first is still the one sent). Each
//! domain is looked up at most once per expansion (and per `cache_ttl` by
//! the process), `lookups_in_flight` domains at a time.

use std::collections::{HashMap, VecDeque};

/// The per-domain maps are asked once or twice per recipient: foldhash's
/// fast hasher (seeded per process) instead of SipHash.
type DomainMap<V> = foldhash::HashMap<String, V>;
use std::sync::Arc;

use mailpipe_common::address::EmailAddress;
use mailpipe_common::config::QualitySettings;
use mailpipe_common::dns::MailHosts;
use mailpipe_common::message::Recipient;
use mailpipe_common::quality::{likely_typo, MailHost, QualityCheck, TypoAction};
use mailpipe_state::store::{ScreenVerdict, Screened};
use tokio::task::JoinSet;

use crate::events::{ExpanderMetrics, MailHostAnswered};

/// A recipient entry that was admitted, on its way to screening.
pub(crate) struct Admitted {
    /// Its position in the part.
    pub index: usize,
    pub address: EmailAddress,
    pub recipient: Recipient,
    /// Its address key.
    pub key: String,
    /// Excluded already (a rule, an address check); screening records it.
    pub excluded: Option<Screened>,
    /// The provider domain its domain resembles (a likely typo): flagged
    /// when it is sent, told in the event when it is excluded for it.
    pub typo_of: Option<String>,
}

/// The address checks of one expansion.
pub(crate) struct Checks {
    settings: QualitySettings,
    typo: bool,
    /// `None` when the request does not ask for `no_mail_host` (or the
    /// process has no resolver).
    hosts: Option<Arc<MailHosts>>,
    /// This expansion's verdict on each domain's spelling: the provider it
    /// resembles, if any.
    typos: DomainMap<Option<String>>,
    /// This expansion's answers about mail hosts.
    answers: DomainMap<MailHost>,
    waiting: HashMap<String, Vec<Admitted>>,
    queued: VecDeque<String>,
    in_flight: JoinSet<(String, MailHost)>,
    /// Counts the lookups (`mailpipe_mail_host_lookups_total{answer}`).
    metrics: ExpanderMetrics,
}

impl Checks {
    /// The checks `asked` (the request's, or the configured ones).
    pub(crate) fn new(
        asked: &[QualityCheck],
        settings: &QualitySettings,
        hosts: Option<&Arc<MailHosts>>,
        metrics: &ExpanderMetrics,
    ) -> Self {
        let wants = |c| asked.contains(&c);
        Self {
            settings: settings.clone(),
            typo: wants(QualityCheck::LikelyTypo),
            hosts: hosts.filter(|_| wants(QualityCheck::NoMailHost)).cloned(),
            typos: DomainMap::default(),
            answers: DomainMap::default(),
            waiting: HashMap::new(),
            queued: VecDeque::new(),
            in_flight: JoinSet::new(),
            metrics: metrics.clone(),
        }
    }

    /// Whether any check is on.
    pub(crate) fn any(&self) -> bool {
        self.typo || self.hosts.is_some()
    }

    /// Checks a recipient that no rule excluded: `Some` when it is decided
    /// (screen it now), `None` when it waits for its domain's answer (it
    /// comes back from [`Self::released`] or [`Self::next_released`]).
    pub(crate) fn check(&mut self, mut r: Admitted) -> Option<Admitted> {
        // Per recipient this is a look-up or two in maps keyed by domain;
        // a domain's string is copied only the first time it is seen.
        if self.typo {
            let domain = r.address.domain();
            let typo_of = match self.typos.get(domain) {
                Some(known) => known.clone(),
                None => {
                    let settings = &self.settings;
                    let found = likely_typo(domain, &settings.providers, settings.typo_distance)
                        .map(str::to_string);
                    self.typos.insert(domain.to_string(), found.clone());
                    found
                }
            };
            let exclude = typo_of.is_some() && self.settings.typo_action == TypoAction::Exclude;
            r.typo_of = typo_of;
            if exclude {
                r.excluded = Some(Screened::new(ScreenVerdict::LikelyTypo));
                return Some(r);
            }
        }
        let Some(hosts) = &self.hosts else {
            return Some(r);
        };
        let domain = r.address.domain();
        if let Some(answer) = self.answers.get(domain) {
            return Some(apply(r, answer));
        }
        if let Some(answer) = hosts.cached(domain) {
            self.answers.insert(domain.to_string(), answer.clone());
            return Some(apply(r, &answer));
        }
        let domain = domain.to_string();
        let first = !self.waiting.contains_key(&domain);
        self.waiting.entry(domain.clone()).or_default().push(r);
        if first {
            self.queued.push_back(domain);
            self.start_queued();
        }
        None
    }

    fn start_queued(&mut self) {
        while self.in_flight.len() < self.settings.lookups_in_flight.max(1) {
            let (Some(domain), Some(hosts)) = (self.queued.pop_front(), self.hosts.clone()) else {
                return;
            };
            self.in_flight.spawn(async move {
                let answer = hosts.lookup(&domain).await;
                (domain, answer)
            });
        }
    }

    fn answered(&mut self, domain: String, answer: MailHost, out: &mut Vec<Admitted>) {
        MailHostAnswered {
            domain: &domain,
            answer: &answer,
        }
        .emit(&self.metrics);
        for r in self.waiting.remove(&domain).unwrap_or_default() {
            out.push(apply(r, &answer));
        }
        self.answers.insert(domain, answer);
    }

    /// The waiting recipients whose domains answered meanwhile (never waits).
    pub(crate) fn released(&mut self) -> Vec<Admitted> {
        let mut out = Vec::new();
        while let Some(done) = self.in_flight.try_join_next() {
            if let Ok((domain, answer)) = done {
                self.answered(domain, answer, &mut out);
            }
        }
        self.start_queued();
        out.sort_by_key(|r| r.index);
        out
    }

    /// Waits for the next domain to answer and hands back its recipients
    /// (with any others that answered meanwhile); empty when none waits.
    pub(crate) async fn next_released(&mut self) -> Vec<Admitted> {
        let mut out = Vec::new();
        if let Some(Ok((domain, answer))) = self.in_flight.join_next().await {
            self.answered(domain, answer, &mut out);
        }
        out.extend(self.released());
        if self.in_flight.is_empty() && self.queued.is_empty() {
            // A lookup task that failed to finish leaves its recipients
            // waiting: nothing is known about their domain.
            let stranded: Vec<String> = self.waiting.keys().cloned().collect();
            for domain in stranded {
                let unknown = MailHost::Unknown("the lookup did not finish".into());
                self.answered(domain, unknown, &mut out);
            }
        }
        out.sort_by_key(|r| r.index);
        out
    }

    /// Whether recipients still wait for an answer.
    pub(crate) fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// A recipient given its domain's answer: excluded when the domain has no
/// mail host (a flagged typo then is not flagged: it is not sent).
fn apply(mut r: Admitted, answer: &MailHost) -> Admitted {
    if matches!(answer, MailHost::Missing(_)) {
        r.excluded = Some(Screened::new(ScreenVerdict::NoMailHost));
        r.typo_of = None;
    }
    r
}

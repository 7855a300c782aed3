//! The classifier a worker uses, kept up to date with the rows operators
//! keep in the qualification table, without a restart.
//!
//! [`LiveClassifier`] holds the current [`Classifier`]: the operator's
//! rules files (read once at start), the kept rows, the shipped defaults
//! ([`crate::classify::compile_classifier`], the pure part). Its watcher is
//! only an I/O shell: every `classifier.kept_rules_poll` (2 s by default) it
//! reads the version of the kept rows (`{p}:bounces:version`, one GET, which
//! every `mailpipe bounces qualify` or `ignore` of a kept row raises) and,
//! when it changed, reads the kept rows and compiles a new classifier, which
//! later failures see. Polling a counter is cheaper and simpler to keep
//! right than a pub/sub subscription that must be re-established after
//! every Redis reconnect, and a qualification is not urgent to the second.
//!
//! When the kept rows do not compile (a pattern broken by hand in Redis),
//! the worker keeps classifying with what it had and logs why, once per
//! version.

use std::sync::{Arc, RwLock};

use prometheus::IntGauge;
use tokio_util::sync::CancellationToken;

use crate::classify::{compile_classifier, read_rules_files, Classification, Classifier, Failure};
use crate::config::ClassifierSettings;
use crate::store::Store;

/// The current classifier, shared by the tasks of a worker. Cheap to clone.
#[derive(Clone)]
pub struct LiveClassifier {
    /// The classifier in use, and the kept rows' version it was built with.
    current: Arc<RwLock<(Classifier, u64)>>,
}

impl From<Classifier> for LiveClassifier {
    /// A classifier that never changes (kept rows left out).
    fn from(classifier: Classifier) -> Self {
        Self {
            current: Arc::new(RwLock::new((classifier, 0))),
        }
    }
}

impl LiveClassifier {
    /// Reads the operator's rules files (an error if one does not compile),
    /// applies the kept rows as they are now, and watches them until
    /// `shutdown`. `gauge` shows the version in use.
    pub async fn start(
        settings: &ClassifierSettings,
        store: Store,
        gauge: IntGauge,
        shutdown: CancellationToken,
    ) -> anyhow::Result<LiveClassifier> {
        let files = read_rules_files(settings)?;
        let live = LiveClassifier::from(compile_classifier(&files, &[])?);
        let mut watch = Watch {
            live: live.clone(),
            files,
            store,
            gauge,
            tried: None,
            failing: false,
        };
        watch.check().await;
        let every = settings.kept_rules_poll;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => watch.check().await,
                }
            }
        });
        Ok(live)
    }

    /// The classifier in use now.
    pub fn current(&self) -> Classifier {
        match self.current.read() {
            Ok(c) => c.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// The kept rows' version in use (0: none applied).
    pub fn version(&self) -> u64 {
        match self.current.read() {
            Ok(c) => c.1,
            Err(poisoned) => poisoned.into_inner().1,
        }
    }

    /// Classifies one failure with the classifier in use now (see
    /// [`Classifier::classify_for`]).
    pub fn classify_for(&self, failure: &Failure, recipient: Option<&str>) -> Classification {
        self.current().classify_for(failure, recipient)
    }

    /// Classifies one failure, without a recipient.
    pub fn classify(&self, failure: &Failure) -> Classification {
        self.classify_for(failure, None)
    }

    fn replace(&self, classifier: Classifier, version: u64) {
        let mut c = match self.current.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *c = (classifier, version);
    }
}

/// The watcher's state.
struct Watch {
    live: LiveClassifier,
    /// The operator's rules files as read at start.
    files: Vec<(String, String)>,
    store: Store,
    gauge: IntGauge,
    /// The last version read and compiled (applied or not), so a version
    /// that does not compile is tried (and logged) once.
    tried: Option<u64>,
    /// Whether the last look at Redis failed (logged once until it works).
    failing: bool,
}

impl Watch {
    /// One look: applies the kept rows when their version changed.
    async fn check(&mut self) {
        let version = match self.store.kept_rules_version().await {
            Ok(v) => v,
            Err(e) => return self.unreachable(e),
        };
        if self.tried == Some(version) {
            return self.reachable();
        }
        let (version, rules) = match self.store.kept_rules().await {
            Ok(read) => read,
            Err(e) => return self.unreachable(e),
        };
        self.reachable();
        self.tried = Some(version);
        match compile_classifier(&self.files, &rules) {
            Ok(classifier) => {
                self.live.replace(classifier, version);
                self.gauge.set(version as i64);
                tracing::info!(
                    version,
                    kept = rules.len(),
                    "classifying with the kept rows of the qualification table"
                );
            }
            Err(e) => {
                tracing::error!(version, error.cause_chain = %format!("{e:#}"), error.message = %e, "the kept rows of the qualification table do not compile; classifying as before");
            }
        }
    }

    fn unreachable(&mut self, e: crate::store::StoreError) {
        if !self.failing {
            tracing::warn!(error.cause_chain = %format!("{e:#}"), error.message = %e, "cannot read the kept rows of the qualification table; classifying as before");
        }
        self.failing = true;
    }

    fn reachable(&mut self) {
        if self.failing {
            tracing::info!("reading the kept rows of the qualification table again");
        }
        self.failing = false;
    }
}

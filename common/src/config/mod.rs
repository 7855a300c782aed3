//! Configuration shared by every mailpipe process.
//!
//! One [`Settings`] tree serves all binaries, so a deployment has one config
//! file (a Kubernetes ConfigMap). Sources, later ones winning:
//!
//! 1. built-in defaults that work against local services (RabbitMQ and Redis
//!    on 127.0.0.1, an SMTP capture server on 127.0.0.1:2525);
//! 2. `base.yaml` then `{MAILPIPE_ENV}.yaml` from the directory named by
//!    `MAILPIPE_CONFIG_DIR`, if set;
//! 3. the file named by `--config` / `MAILPIPE_CONFIG`, if given;
//! 4. environment variables `MAILPIPE__SECTION__KEY`, e.g.
//!    `MAILPIPE__SENDER__SMTP__PORT=587`.
//!
//! Unknown keys are refused so a typo does not silently fall back to a
//! default. Secrets are [`SecretString`](secrecy::SecretString)s and URLs
//! are redacted before they are logged ([`redact_url`]).

mod connections;
mod expander;
mod failures;
mod policy;
mod sender;
mod sites;
mod telemetry;
mod values;
mod worker_args;

use std::path::Path;

use serde::Deserialize;

pub use connections::{
    AmqpSettings, ClusterSettings, RedisSettings, RedisTopology, SentinelSettings,
    DEFAULT_REDIS_URL,
};
pub use expander::{ExpanderSettings, QualitySettings};
pub use failures::{ClassifierSettings, QuarantineSettings};
pub use policy::{BreakerSettings, DomainPolicy, PolicySettings, SlowdownSettings};
pub use sender::{
    DeliveryMode, DkimAlgorithm, DkimSettings, MxSettings, OnAmbiguous, RouteSettings,
    SenderSettings, SmtpSettings,
};
pub use sites::{SiteLimits, SiteSettings};
pub use telemetry::{LogFormat, TelemetrySettings};
pub use values::{format_duration, parse_duration, redact_url};
pub use worker_args::{parse_worker_args, worker_config_arg, WorkerArgs};
// Sections the pure core decides with, kept beside those decisions.
pub use mailpipe_core::retry::{RetrierSettings, RetryPolicies, RetryPolicy};
pub use mailpipe_core::tls_mode::TlsMode;
pub use mailpipe_core::verp::{BounceSettings, ImapSettings};

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// All of mailpipe's settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub telemetry: TelemetrySettings,
    pub expander: ExpanderSettings,
    pub sender: SenderSettings,
    pub retrier: RetrierSettings,
    pub quarantine: QuarantineSettings,
    pub classifier: ClassifierSettings,
    pub policy: PolicySettings,
    pub sites: SiteSettings,
    pub bounces: BounceSettings,
}

impl Settings {
    /// Loads settings from the layered sources described in the module docs.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Ok(dir) = std::env::var("MAILPIPE_CONFIG_DIR") {
            let dir = Path::new(&dir);
            builder = builder.add_source(config::File::from(dir.join("base.yaml")).required(false));
            if let Ok(env) = std::env::var("MAILPIPE_ENV") {
                builder = builder.add_source(
                    config::File::from(dir.join(format!("{env}.yaml"))).required(false),
                );
            }
        }
        let env_file = std::env::var("MAILPIPE_CONFIG").ok();
        if let Some(path) = file.map(Path::to_path_buf).or(env_file.map(Into::into)) {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("MAILPIPE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks invariants that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.topology().map_err(ConfigError::Invalid)?;
        if self.bounces.domain.is_some() && self.bounces.keys.is_empty() {
            return Err(ConfigError::Invalid(
                "bounces.domain is set but bounces.keys is empty: VERP tokens need a signing key"
                    .into(),
            ));
        }
        if self
            .bounces
            .keys
            .iter()
            .any(|k| secrecy::ExposeSecret::expose_secret(k).len() < 16)
        {
            return Err(ConfigError::Invalid(
                "bounces.keys: every key needs at least 16 characters".into(),
            ));
        }
        let q = &self.expander.quality;
        if q.typo_distance > 3 || q.lookups_in_flight == 0 || q.lookup_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "expander.quality: typo_distance is at most 3, lookups_in_flight at least 1 and lookup_timeout longer than 0".into(),
            ));
        }
        if let Some(p) = q.providers.iter().find(|p| {
            crate::rules::normalize_domain(p).as_deref() != Ok(p.as_str()) || !p.contains('.')
        }) {
            return Err(ConfigError::Invalid(format!(
                "expander.quality.providers: {p:?} is not a lowercase ASCII domain"
            )));
        }
        let r = &self.retrier;
        if r.tiers.is_empty() {
            return Err(ConfigError::Invalid("retrier.tiers is empty".into()));
        }
        if !(0.0..=0.5).contains(&r.jitter) {
            return Err(ConfigError::Invalid(
                "retrier.jitter must be between 0 and 0.5".into(),
            ));
        }
        if self.classifier.kept_rules_poll.is_zero() {
            return Err(ConfigError::Invalid(
                "classifier.kept_rules_poll must be longer than 0".into(),
            ));
        }
        if r.backlog_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "retrier.backlog_interval must be longer than 0".into(),
            ));
        }
        let p = &r.policies;
        for (name, policy) in [
            ("routing", &p.routing),
            ("throttled", &p.throttled),
            ("soft", &p.soft),
        ] {
            if policy.schedule.is_empty() || policy.max_attempts == 0 {
                return Err(ConfigError::Invalid(format!(
                    "retrier.policies.{name} needs a schedule and max_attempts >= 1"
                )));
            }
        }

        if self.sender.lease <= self.sender.smtp.timeout {
            return Err(ConfigError::Invalid(
                "sender.lease must be longer than sender.smtp.timeout".into(),
            ));
        }
        let names: std::collections::BTreeSet<_> =
            self.sender.routes.iter().map(|r| r.name.as_str()).collect();
        if names.len() != self.sender.routes.len() {
            return Err(ConfigError::Invalid(
                "sender.routes names must be unique".into(),
            ));
        }
        for (domain, p) in &self.policy.domains {
            if let Some(route) = &p.route {
                if !self
                    .sender
                    .effective_routes()
                    .iter()
                    .any(|r| &r.name == route)
                {
                    return Err(ConfigError::Invalid(format!(
                        "policy.domains.{domain}.route names an unknown route {route:?}"
                    )));
                }
            }
        }
        let b = &self.policy.breaker;
        if !(0.0..=1.0).contains(&b.failure_ratio)
            || !(0.0..=1.0).contains(&self.policy.slowdown.factor)
        {
            return Err(ConfigError::Invalid(
                "policy.breaker.failure_ratio and policy.slowdown.factor must be between 0 and 1"
                    .into(),
            ));
        }
        self.sites.adaptive.check().map_err(ConfigError::Invalid)?;
        self.sites.warmup.check().map_err(ConfigError::Invalid)?;
        let sender = &self.sender;
        if sender.bulk_concurrency == 0
            || sender.transactional_concurrency == 0
            || sender.retry_concurrency == 0
        {
            return Err(ConfigError::Invalid(
                "sender concurrency must be at least 1 per lane (transactional_concurrency, bulk_concurrency, retry_concurrency)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn yaml_overrides_defaults_and_unknown_keys_are_refused() {
        let yaml = "sender:\n  smtp:\n    port: 587\n    timeout: 10s\nretrier:\n  tiers: [1s, 2s]\n  policies:\n    soft: {schedule: [1s], max_attempts: 2}\n";
        let s: Settings = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(s.sender.smtp.port, 587);
        assert_eq!(s.sender.smtp.timeout, Duration::from_secs(10));
        assert_eq!(s.retrier.tiers.len(), 2);
        assert_eq!(s.retrier.policies.soft.max_attempts, 2);
        assert_eq!(s.retrier.policies.routing.max_attempts, 6);
        assert_eq!(s.amqp.prefix, "mailpipe");
        assert!(serde_yaml::from_str::<Settings>("sender:\n  smtpp: {}\n").is_err());
    }

    #[test]
    fn the_shipped_base_config_matches_the_defaults() {
        let shipped: Settings =
            serde_yaml::from_str(include_str!("../../../deploy/config/base.yaml")).unwrap();
        shipped.validate().unwrap();
        let d = Settings::default();
        assert_eq!(format!("{shipped:?}"), format!("{d:?}"));
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let mut s = Settings::default();
        s.sender.smtp.password = Some(SecretString::from("hunter2"));
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"));
        assert!(!dbg.contains("guest:guest"));
    }

    #[test]
    fn a_partial_override_of_a_nested_policy_keeps_the_other_defaults() {
        // Same layering as Settings::load, with the override as YAML text
        // (an environment variable becomes the same nested map).
        let load = |yaml: &str| -> Settings {
            config::Config::builder()
                .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
                .build()
                .unwrap()
                .try_deserialize()
                .unwrap()
        };
        let d = super::RetryPolicies::default();
        let s = load("retrier:\n  policies:\n    soft:\n      schedule: [10s, 20s]\n");
        let p = &s.retrier.policies;
        let secs = |v: &[Duration]| v.iter().map(|d| d.as_secs()).collect::<Vec<_>>();
        assert_eq!(secs(&p.soft.schedule), vec![10, 20]);
        assert_eq!(p.soft.max_attempts, d.soft.max_attempts);
        assert_eq!(secs(&p.routing.schedule), secs(&d.routing.schedule));
        assert_eq!(p.throttled.max_attempts, d.throttled.max_attempts);

        let s = load("retrier:\n  policies:\n    throttled:\n      max_attempts: 2\n");
        let p = &s.retrier.policies;
        assert_eq!(p.throttled.max_attempts, 2);
        assert_eq!(secs(&p.throttled.schedule), secs(&d.throttled.schedule));
        assert_eq!(p.soft.max_attempts, d.soft.max_attempts);

        // Unknown keys are still refused.
        let bad = config::Config::builder()
            .add_source(config::File::from_str(
                "retrier:\n  policies:\n    soft:\n      max_atempts: 2\n",
                config::FileFormat::Yaml,
            ))
            .build()
            .unwrap()
            .try_deserialize::<Settings>();
        assert!(bad.is_err());
    }
}

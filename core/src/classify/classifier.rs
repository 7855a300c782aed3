//! The [`Classifier`]: rules compiled once (defaults plus operator files),
//! then queried with [`Classifier::classify`] for each [`Failure`].
//!
//! Order of evaluation for a failure:
//! 1. the rules, highest-precedence file first (the last operator file added,
//!    ..., the first operator file, then the kept rows of the qualification
//!    table, then the defaults), each file in its own order; the first rule
//!    whose conditions all hold decides;
//! 2. otherwise the fallback table (same precedence), by reply class and,
//!    for entries marked `names_sender`, whether the text names the sending
//!    side (an IP address, "sender", "your server", HELO, or, with
//!    [`Classifier::classify_for`], an address other than the recipient's);
//! 3. otherwise a built-in catch-all (`undefined`, soft, retry, no quarantine).
//!
//! All patterns live in one case-insensitive `RegexSet`, run once per failure;
//! the `normalized` patterns (kept rows) in a second one, run over the
//! failure's normalized line only when there are any.

use std::fmt;
use std::sync::{Arc, OnceLock};

use super::enhanced::{find_enhanced, leading_code, EnhancedCode};
use super::kept::{kept_rules_yaml, qualification_text, KeptRule};
use super::reply::is_transient;
use super::rules::{self, CompiledRule, CompiledRules, Output, RulesError, RulesFile};
use super::sender_side::names_sender_side;
use super::types::{
    Classification, ConnectionError, Failure, FailureType, Quarantine, Reason, Scope,
};
use super::DEFAULT_RULES;

/// Name under which the embedded default rules report errors.
const DEFAULT_FILE: &str = "default.yaml";
/// Name under which the kept rows of the qualification table report errors.
const KEPT_FILE: &str = "kept rows";

/// Used when neither a rule nor a fallback entry applies.
const LAST_RESORT: Output = Output {
    kind: FailureType::Soft,
    reason: Reason::Undefined,
    retry: true,
    quarantine: Quarantine::None,
    scope: Scope::Recipient,
};

/// Classifies delivery failures. Cheap to clone (the compiled rules are shared).
#[derive(Clone)]
pub struct Classifier {
    /// The compiled rules, shared between clones.
    inner: Arc<CompiledRules>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("rules", &self.inner.rules.len())
            .field("patterns", &self.inner.set.len())
            .field("fallback", &self.inner.fallback.len())
            .finish()
    }
}

impl Default for Classifier {
    /// The embedded default rules (`rules/default.yaml`), compiled on first use
    /// and shared by every later call.
    fn default() -> Self {
        static DEFAULT: OnceLock<Classifier> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Classifier::builder()
                    .build()
                    .expect("the embedded default rules (rules/default.yaml) must compile")
            })
            .clone()
    }
}

/// Collects rule sources for a [`Classifier`].
#[derive(Debug)]
pub struct ClassifierBuilder {
    /// Whether the embedded default rules are included.
    defaults: bool,
    /// Operator sources in the order added (lowest precedence first).
    sources: Vec<(String, RulesFile)>,
    /// The kept rows of the qualification table, between the operator
    /// sources and the defaults.
    kept: Option<RulesFile>,
}

impl ClassifierBuilder {
    /// Add an operator rules file (YAML text). `name` (typically its path)
    /// appears in error messages. Files added later take precedence over files
    /// added earlier; all of them take precedence over the defaults.
    pub fn add_yaml(mut self, name: impl Into<String>, yaml: &str) -> Result<Self, RulesError> {
        let name = name.into();
        let parsed = rules::parse_file(&name, yaml)?;
        self.sources.push((name, parsed));
        Ok(self)
    }

    /// Add the rows operators kept in the qualification table: they decide
    /// after every operator file and before the defaults. A rule of an
    /// operator file with a kept row's name (`kept:{id}`, as
    /// `mailpipe bounces export-rules` writes them) replaces it.
    pub fn kept(mut self, rules: &[KeptRule]) -> Result<Self, RulesError> {
        self.kept = Some(rules::parse_file(KEPT_FILE, &kept_rules_yaml(rules))?);
        Ok(self)
    }

    /// Leave the embedded default rules out (operator files only).
    pub fn without_defaults(mut self) -> Self {
        self.defaults = false;
        self
    }

    /// Compile every source into a classifier.
    pub fn build(self) -> Result<Classifier, RulesError> {
        let mut ordered: Vec<(String, RulesFile)> = self.sources.into_iter().rev().collect();
        if let Some(kept) = self.kept {
            ordered.push((KEPT_FILE.to_string(), kept));
        }
        if self.defaults {
            ordered.push((
                DEFAULT_FILE.to_string(),
                rules::parse_file(DEFAULT_FILE, DEFAULT_RULES)?,
            ));
        }
        Ok(Classifier {
            inner: Arc::new(rules::compile(&ordered)?),
        })
    }
}

/// What a rule is checked against.
enum Subject<'a> {
    /// A reply, with its enhanced code resolved (field or text).
    Reply {
        /// Basic code (0 when unknown).
        code: u16,
        /// Enhanced code, if any.
        enhanced: Option<EnhancedCode>,
        /// Reply text.
        text: &'a str,
    },
    /// A connection failure.
    Connection {
        /// Its kind.
        error: ConnectionError,
        /// Transport detail.
        detail: &'a str,
    },
}

impl Classifier {
    /// A builder starting from the default rules.
    pub fn builder() -> ClassifierBuilder {
        ClassifierBuilder {
            defaults: true,
            sources: Vec::new(),
            kept: None,
        }
    }

    /// The default rules plus operator files (YAML texts); later sources take
    /// precedence over earlier ones, all over the defaults. Sources are named
    /// `operator[0]`, `operator[1]`, ... in errors.
    pub fn from_yaml_sources(sources: &[&str]) -> Result<Classifier, RulesError> {
        sources
            .iter()
            .enumerate()
            .try_fold(Classifier::builder(), |b, (i, yaml)| {
                b.add_yaml(format!("operator[{i}]"), yaml)
            })?
            .build()
    }

    /// Names of the compiled rules, in evaluation order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.inner.rules.iter().map(|r| r.name.as_str())
    }

    /// Classify one failure.
    pub fn classify(&self, failure: &Failure) -> Classification {
        self.classify_for(failure, None)
    }

    /// Classify one failure of a delivery to `recipient` (when known): an
    /// unclassified reply that names another address than the recipient's
    /// is about the sending side, not about the recipient.
    pub fn classify_for(&self, failure: &Failure, recipient: Option<&str>) -> Classification {
        let subject = match failure {
            Failure::Reply {
                code,
                enhanced,
                text,
            } => {
                let enhanced = enhanced
                    .as_deref()
                    .and_then(|e| e.parse::<EnhancedCode>().ok())
                    .or_else(|| leading_code(text).map(|(e, _)| e))
                    .or_else(|| find_enhanced(text, *code));
                Subject::Reply {
                    code: *code,
                    enhanced,
                    text,
                }
            }
            Failure::Connection { error, detail } => Subject::Connection {
                error: *error,
                detail,
            },
        };
        let (haystack, transient, class) = match &subject {
            Subject::Reply {
                code,
                enhanced,
                text,
            } => {
                let transient = is_transient(*code, *enhanced);
                (*text, transient, reply_class(*code, *enhanced, transient))
            }
            Subject::Connection { detail, .. } => (*detail, false, None),
        };
        let matched = self.inner.set.matches(haystack);
        // The normalized line only when a rule looks at it (kept rows).
        let normalized = (!self.inner.normalized.is_empty())
            .then(|| self.inner.normalized.matches(&qualification_text(failure)));
        for rule in &self.inner.rules {
            let pattern_ok = rule.pattern.is_none_or(|i| matched.matched(i));
            let normalized_ok = rule
                .normalized
                .is_none_or(|i| normalized.as_ref().is_some_and(|m| m.matched(i)));
            if pattern_ok && normalized_ok && conditions_hold(rule, &subject) {
                let output = match rule.transient {
                    Some(t) if transient => t,
                    _ => rule.output,
                };
                return finish(output, Some(rule.name.clone()));
            }
        }
        let names_sender = std::cell::OnceCell::new();
        let output = self
            .inner
            .fallback
            .iter()
            .find(|f| {
                (f.class.is_none() || f.class == class)
                    && (!f.names_sender
                        || *names_sender.get_or_init(|| match &subject {
                            Subject::Reply { text, .. } => names_sender_side(text, recipient),
                            Subject::Connection { .. } => false,
                        }))
            })
            .map(|f| f.output)
            .unwrap_or(LAST_RESORT);
        finish(output, None)
    }
}

/// The class the fallback table is keyed on: 4 when the reply is transient
/// (4xx basic code or 4.x.x enhanced code), else the basic code's first
/// digit, or the enhanced class when there is no basic code.
fn reply_class(code: u16, enhanced: Option<EnhancedCode>, transient: bool) -> Option<u8> {
    if transient {
        Some(4)
    } else if code == 0 {
        enhanced.map(|e| e.class)
    } else {
        u8::try_from(code / 100).ok()
    }
}

fn conditions_hold(rule: &CompiledRule, subject: &Subject<'_>) -> bool {
    match subject {
        // A rule on the normalized line alone sees connection failures too
        // (their line is `connection <kind>: <detail>`).
        Subject::Connection { .. } if rule.kinds.is_empty() => {
            rule.normalized.is_some() && rule.codes.is_empty() && rule.enhanced.is_empty()
        }
        Subject::Connection { error, .. } => rule.kinds.contains(error),
        Subject::Reply { code, enhanced, .. } => {
            rule.kinds.is_empty()
                && (rule.codes.is_empty() || rule.codes.iter().any(|c| c.matches(*code)))
                && (rule.enhanced.is_empty()
                    || enhanced.is_some_and(|e| rule.enhanced.iter().any(|p| p.matches(e))))
        }
    }
}

fn finish(output: Output, rule: Option<String>) -> Classification {
    Classification {
        kind: output.kind,
        reason: output.reason,
        retry: output.retry,
        quarantine: output.quarantine,
        scope: output.scope,
        rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(raw: &str) -> Failure {
        Failure::from_reply_text(raw)
    }

    #[test]
    fn classifier_is_shareable_across_threads() {
        fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
        assert_shareable::<Classifier>();
        let c = Classifier::default();
        let handle = std::thread::spawn(move || c.classify(&reply("552 5.2.2 full")).reason);
        assert_eq!(handle.join().expect("thread"), Reason::MailboxFull);
    }

    #[test]
    fn module_doc_example_holds() {
        use super::super::normalize;
        let classifier = Classifier::default();
        let failure = Failure::from_reply_text("552 5.2.2 <bob@example.com>: Mailbox full");
        let verdict = classifier.classify(&failure);
        assert_eq!(verdict.reason, Reason::MailboxFull);
        assert_eq!(verdict.kind, FailureType::Soft);
        assert_eq!(verdict.quarantine, Quarantine::Count);
        assert_eq!(
            normalize("552 5.2.2 <bob@example.com>: Mailbox full"),
            "552 5.2.2 <*>: Mailbox full"
        );
    }

    #[test]
    fn default_rules_compile() {
        let c = Classifier::builder()
            .build()
            .expect("default rules compile");
        assert!(c.rule_names().count() > 50);
        assert!(format!("{c:?}").contains("rules"));
        // Default is shared, not recompiled.
        let a = Classifier::default();
        let b = Classifier::default();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
    }

    #[test]
    fn operator_rule_overrides_default() {
        let operator = r#"
rules:
  - name: acme_mailbox_closed
    pattern: 'mailbox closed by acme'
    type: hard
    reason: account_disabled
    retry: false
    quarantine: immediate
    scope: recipient
  # Same name as a default rule: replaces it.
  - name: user_unknown_text
    pattern: 'user unknown'
    code: 5xx
    type: soft
    reason: user_unknown
    retry: false
    quarantine: count
    scope: recipient
"#;
        let c = Classifier::from_yaml_sources(&[operator]).expect("compiles");
        let got = c.classify(&reply("550 5.2.1 Mailbox closed by ACME"));
        assert_eq!(got.reason, Reason::AccountDisabled);
        assert_eq!(got.kind, FailureType::Hard);
        assert_eq!(got.quarantine, Quarantine::Immediate);
        assert_eq!(got.rule.as_deref(), Some("acme_mailbox_closed"));

        let got = c.classify(&reply("550 User unknown"));
        assert_eq!(got.quarantine, Quarantine::Count);
        assert_eq!(got.rule.as_deref(), Some("user_unknown_text"));
        assert_eq!(
            c.rule_names().filter(|n| *n == "user_unknown_text").count(),
            1
        );

        // The default still applies where the operator says nothing.
        let default = Classifier::default().classify(&reply("550 User unknown"));
        assert_eq!(default.quarantine, Quarantine::Immediate);
    }

    #[test]
    fn later_operator_files_take_precedence_and_can_disable_rules() {
        let first = "rules:\n  - name: mine\n    pattern: zzz\n    type: soft\n    reason: mailbox_full\n    retry: true\n    quarantine: count\n    scope: recipient\n";
        let second = "rules:\n  - name: theirs\n    pattern: zzz\n    type: soft\n    reason: rate_limited\n    retry: true\n    quarantine: none\n    scope: domain\ndisable: [code_421]\n";
        let c = Classifier::builder()
            .add_yaml("first.yaml", first)
            .and_then(|b| b.add_yaml("second.yaml", second))
            .and_then(ClassifierBuilder::build)
            .expect("compiles");
        let got = c.classify(&reply("550 zzz"));
        assert_eq!(got.rule.as_deref(), Some("theirs"));
        assert!(c.rule_names().all(|n| n != "code_421"));
        let got = c.classify(&reply(
            "421 Service not available, closing transmission channel",
        ));
        assert_eq!(got.rule, None);
        assert_eq!(got.reason, Reason::Undefined);
    }

    #[test]
    fn builder_errors_name_the_file() {
        let err = Classifier::builder()
            .add_yaml("/etc/mailpipe/rules.yaml", "rules: [ {name: x")
            .expect_err("bad yaml");
        assert!(
            err.to_string().contains("/etc/mailpipe/rules.yaml"),
            "{err}"
        );
        let err = Classifier::from_yaml_sources(&[
            "rules:\n  - name: bad\n    pattern: '['\n    type: soft\n    reason: undefined\n    retry: true\n    quarantine: none\n    scope: recipient\n",
        ])
        .expect_err("bad regex");
        assert!(err.to_string().contains("operator[0]"), "{err}");
        assert!(err.to_string().contains("bad"), "{err}");
    }

    #[test]
    fn without_defaults_uses_the_last_resort() {
        let c = Classifier::builder()
            .without_defaults()
            .build()
            .expect("empty classifier");
        assert_eq!(c.rule_names().count(), 0);
        let got = c.classify(&reply("550 5.1.1 user unknown"));
        assert_eq!(got.reason, Reason::Undefined);
        assert_eq!(got.rule, None);
        assert!(got.retry);
        assert_eq!(got.quarantine, Quarantine::None);
    }

    #[test]
    fn enhanced_code_given_as_a_field_or_only_in_the_text() {
        let c = Classifier::default();
        // Sender built the failure without extracting the enhanced code.
        let f = Failure::Reply {
            code: 552,
            enhanced: None,
            text: "5.2.2 Mailbox full".into(),
        };
        assert_eq!(c.classify(&f).reason, Reason::MailboxFull);
        // A leading code in the text counts even when its class differs.
        let f = Failure::Reply {
            code: 550,
            enhanced: None,
            text: "4.2.2 Mailbox over quota".into(),
        };
        let got = c.classify(&f);
        assert_eq!((got.reason, got.retry), (Reason::MailboxFull, true));
        // An unparseable enhanced field falls back to the text.
        let f = Failure::Reply {
            code: 550,
            enhanced: Some("bogus".into()),
            text: "Requested action not taken: 5.1.1 mailbox unavailable".into(),
        };
        assert_eq!(c.classify(&f).reason, Reason::UserUnknown);
    }

    #[test]
    fn transient_enhanced_code_under_permanent_basic_code_is_transient() {
        let c = Classifier::default();
        let got = c.classify(&reply("550 4.0.99 something odd"));
        assert_eq!(got.rule, None);
        assert!(got.retry);
        assert_eq!(got.quarantine, Quarantine::None);
        let got = c.classify(&reply("550 5.0.99 something odd"));
        assert!(!got.retry);
        assert_eq!(got.quarantine, Quarantine::Count);
    }
}

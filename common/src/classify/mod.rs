//! SMTP failure classifier (pure, no I/O).
//!
//! Turns what went wrong in one delivery attempt — a negative SMTP reply or a
//! connection failure ([`Failure`]) — into a [`Classification`]: failure type
//! (hard / soft / ignored), [`Reason`], whether to retry, what to do with the
//! recipient address ([`Quarantine`]) and whom the failure is about
//! ([`Scope`]), plus the name of the rule that decided (`None` when only the
//! basic-code fallback applied: such texts are "to qualify").
//!
//! - [`parse_reply`] / [`Failure::from_reply_text`] read raw replies (RFC 5321
//!   basic code, RFC 3463 enhanced code, multi-line, code only in the text).
//! - [`Classifier`] holds the ordered rules of `rules/default.yaml` (embedded
//!   as [`DEFAULT_RULES`]) and of operator files, compiled once; operator
//!   rules take precedence. The rules file documents every decision and the
//!   fallback table.
//! - [`normalize`] blanks out variable parts (addresses, ids, numbers, dates,
//!   IPs) so that identical failures aggregate for qualification.
//!
//! Example (exercised by the `module_doc_example_holds` unit test; not a
//! doctest because the module's crate path depends on where it lives):
//!
//! ```text
//! let classifier = Classifier::default();
//! let failure = Failure::from_reply_text("552 5.2.2 <bob@example.com>: Mailbox full");
//! let verdict = classifier.classify(&failure);
//! assert_eq!(verdict.reason, Reason::MailboxFull);
//! assert_eq!(verdict.kind, FailureType::Soft);
//! assert_eq!(verdict.quarantine, Quarantine::Count);
//! assert_eq!(normalize("552 5.2.2 <bob@example.com>: Mailbox full"), "552 5.2.2 <*>: Mailbox full");
//! ```

mod classifier;
mod normalize;
mod reply;
mod rules;
mod sender_side;
mod types;

#[cfg(test)]
mod corpus;

pub use classifier::{Classifier, ClassifierBuilder};
pub use normalize::{normalize, PLACEHOLDER};
pub use reply::{parse_reply, EnhancedCode, ParseEnhancedCodeError, SmtpReply};
pub use rules::RulesError;
pub use types::{
    Classification, ConnectionError, DomainEffect, Failure, FailureType, Quarantine, Reason, Scope,
};

/// Compiles the shipped classification rules plus the operator's rules
/// files (`classifier.rules_files`), which every worker and the CLI load
/// the same way.
pub fn build_classifier(
    settings: &crate::config::ClassifierSettings,
) -> anyhow::Result<Classifier> {
    use anyhow::Context as _;
    let mut builder = Classifier::builder();
    for path in &settings.rules_files {
        let yaml = std::fs::read_to_string(path)
            .with_context(|| format!("reading rules file {}", path.display()))?;
        builder = builder
            .add_yaml(path.display().to_string(), &yaml)
            .with_context(|| format!("compiling rules file {}", path.display()))?;
    }
    Ok(builder.build()?)
}

/// The default rules file (`rules/default.yaml`), embedded at build time.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.yaml");

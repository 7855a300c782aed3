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
//!   as [`DEFAULT_RULES`]), of operator files and of the rows operators kept
//!   in the qualification table ([`KeptRule`]), compiled once; operator
//!   files take precedence, then kept rows. The rules file documents every
//!   decision and the fallback table.
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
mod enhanced;
mod kept;
mod normalize;
mod reply;
mod rules;
mod sender_side;
mod types;

#[cfg(test)]
mod corpus;

pub use classifier::{Classifier, ClassifierBuilder};
pub use enhanced::{EnhancedCode, ParseEnhancedCodeError};
pub use kept::{
    default_quarantine, default_retry, kept_rules_yaml, qualification_text, KeptRule,
    KEPT_RULE_PREFIX,
};
pub use normalize::{normalize, PLACEHOLDER};
pub use reply::{parse_reply, SmtpReply};
pub use rules::RulesError;
pub use types::{
    Classification, ConnectionError, DomainEffect, Failure, FailureType, Quarantine, Reason, Scope,
};

/// The classifier of the operator's rules files (name and YAML text, as
/// `mailpipe_common::classify::read_rules_files` reads them), then the kept
/// rows of the qualification table, then the shipped defaults: the precedence every worker and the CLI apply.
pub fn compile_classifier(
    files: &[(String, String)],
    kept: &[KeptRule],
) -> Result<Classifier, RulesError> {
    let mut builder = Classifier::builder();
    for (name, yaml) in files {
        builder = builder.add_yaml(name.clone(), yaml)?;
    }
    if !kept.is_empty() {
        builder = builder.kept(kept)?;
    }
    builder.build()
}

/// The default rules file (`rules/default.yaml`), embedded at build time.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.yaml");

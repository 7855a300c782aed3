//! Kept rows: failure texts an operator qualified from the qualification
//! table (`mailpipe bounces qualify`), as classification rules.
//!
//! A kept row matches a failure by the failure's qualification text
//! ([`qualification_text`]: the normalized reply line, codes included, the
//! text `mailpipe bounces` shows), exactly by default, or by a pattern the
//! operator wrote. Its rule is named `kept:{row id}`, so a classification
//! says which row decided.
//!
//! Kept rows are compiled through the rules-file format itself: the
//! classifier compiles [`kept_rules_yaml`], the very text
//! `mailpipe bounces export-rules` writes, with the `normalized` condition.
//! A team that puts the export under version control and lists it in
//! `classifier.rules_files` therefore gets the same classification (the
//! file's rules have the same names, so they replace the kept rows'
//! instead of doubling them).

use serde::{Deserialize, Serialize};

use super::normalize::normalize;
use super::types::{Failure, FailureType, Quarantine, Reason, Scope};

/// Prefix of a kept row's rule name, before the row's id.
pub const KEPT_RULE_PREFIX: &str = "kept:";

/// The text a failure is counted under in the qualification table, and that
/// kept rows are matched against: its reply line (basic code, enhanced
/// code, text; or `connection <kind>: <detail>`), normalized.
pub fn qualification_text(failure: &Failure) -> String {
    normalize(&failure.to_string())
}

/// One kept row, as a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRule {
    /// The row's id in the qualification table.
    pub id: String,
    /// Case-insensitive regex over a failure's [`qualification_text`]; by
    /// default the row's own text, exactly ([`KeptRule::exact`]).
    pub pattern: String,
    /// Hard, soft or ignored.
    #[serde(rename = "type")]
    pub kind: FailureType,
    pub reason: Reason,
    pub retry: bool,
    pub quarantine: Quarantine,
    pub scope: Scope,
}

impl KeptRule {
    /// The rule's name: `kept:{id}`.
    pub fn name(&self) -> String {
        format!("{KEPT_RULE_PREFIX}{}", self.id)
    }

    /// The pattern that matches exactly one normalized text.
    pub fn exact(text: &str) -> String {
        format!("^{}$", regex::escape(text))
    }
}

/// What a kept row does to the address when the operator does not say:
/// nothing for an ignored failure, a block aimed at the sender, a message
/// too large, or a failure about the domain or the sender; otherwise a hard
/// failure quarantines at once and a soft one counts toward the threshold.
pub fn default_quarantine(kind: FailureType, reason: Reason, scope: Scope) -> Quarantine {
    match (kind, reason, scope) {
        (FailureType::Ignored, ..) | (_, Reason::Refused | Reason::MessageTooLarge, _) => {
            Quarantine::None
        }
        (_, _, Scope::Domain | Scope::Sender) => Quarantine::None,
        (FailureType::Hard, ..) => Quarantine::Immediate,
        (FailureType::Soft, ..) => Quarantine::Count,
    }
}

/// Whether a kept row is retried when the operator does not say: only a
/// soft failure is.
pub fn default_retry(kind: FailureType) -> bool {
    kind == FailureType::Soft
}

/// One rule of a rules file, as written (the fields a kept row uses).
#[derive(Serialize)]
struct RuleOut<'a> {
    name: String,
    normalized: &'a str,
    #[serde(rename = "type")]
    kind: FailureType,
    reason: Reason,
    retry: bool,
    quarantine: Quarantine,
    scope: Scope,
}

#[derive(Serialize)]
struct FileOut<'a> {
    rules: Vec<RuleOut<'a>>,
}

/// The kept rows as a rules file (the format of `classifier.rules_files`),
/// in the order given.
pub fn kept_rules_yaml(rules: &[KeptRule]) -> String {
    let file = FileOut {
        rules: rules
            .iter()
            .map(|r| RuleOut {
                name: r.name(),
                normalized: &r.pattern,
                kind: r.kind,
                reason: r.reason,
                retry: r.retry,
                quarantine: r.quarantine,
                scope: r.scope,
            })
            .collect(),
    };
    let body = serde_yaml::to_string(&file).unwrap_or_default();
    format!(
        "# Kept rows of the qualification table (`mailpipe bounces export-rules`).\n\
         # Each rule matches a failure's normalized reply line (`normalized`);\n\
         # its name is the row's id. Listed in classifier.rules_files, these\n\
         # rules take precedence over the kept rows they were exported from.\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;

    fn kept(id: &str, text: &str) -> KeptRule {
        KeptRule {
            id: id.into(),
            pattern: KeptRule::exact(text),
            kind: FailureType::Hard,
            reason: Reason::UserUnknown,
            retry: false,
            quarantine: Quarantine::Immediate,
            scope: Scope::Recipient,
        }
    }

    #[test]
    fn the_qualification_text_of_a_reply_and_of_its_raw_line_are_the_same() {
        let raw = "550 5.0.0 <ann@example.com>: not on the guest list (id 84a7f)";
        let failure = Failure::from_reply_text(raw);
        assert_eq!(qualification_text(&failure), normalize(raw));
        assert_eq!(
            qualification_text(&failure),
            "550 5.0.0 <*>: not on the guest list (id #xxx#)"
        );
        let other =
            Failure::from_reply_text("550 5.0.0 <bob@example.org>: not on the guest list (id 9c)");
        assert_eq!(qualification_text(&other), qualification_text(&failure));
        // The sender keeps the server's text, enhanced code included.
        let sent = Failure::Reply {
            code: 550,
            enhanced: Some("5.0.0".into()),
            text: "5.0.0 <ann@example.com>: not on the guest list (id 84a7f)".into(),
        };
        assert_eq!(qualification_text(&sent), qualification_text(&failure));
    }

    #[test]
    fn a_kept_row_decides_after_the_operator_s_files_and_before_the_defaults() {
        let text = "550 5.0.0 <*>: not on the guest list (id #xxx#)";
        let guest =
            Failure::from_reply_text("550 5.0.0 <ann@example.com>: not on the guest list (id 1)");
        let rows = [kept("0a1b2c3d4e5f6a7b", text)];

        // Without the row: the fallback, to qualify.
        let before = Classifier::default().classify(&guest);
        assert_eq!(before.rule, None);

        let c = Classifier::builder()
            .kept(&rows)
            .and_then(|b| b.build())
            .expect("compiles");
        let got = c.classify(&guest);
        assert_eq!(got.rule.as_deref(), Some("kept:0a1b2c3d4e5f6a7b"));
        assert_eq!(
            (got.kind, got.reason, got.retry, got.quarantine, got.scope),
            (
                FailureType::Hard,
                Reason::UserUnknown,
                false,
                Quarantine::Immediate,
                Scope::Recipient
            )
        );
        // Exact: another text is left to the other rules.
        let near = Failure::from_reply_text("550 5.0.0 <ann@example.com>: not on the guest list");
        assert_eq!(c.classify(&near).rule, None);
        // A kept row does not override the defaults' rules for other texts.
        let unknown = Failure::from_reply_text("550 5.1.1 <ann@example.com>: User unknown");
        assert_eq!(
            c.classify(&unknown).rule,
            Classifier::default().classify(&unknown).rule
        );

        // An operator file's rule for the same text decides before it.
        let file = "rules:\n  - name: guests\n    pattern: 'guest list'\n    type: soft\n    reason: refused\n    retry: false\n    quarantine: none\n    scope: sender\n";
        let c = Classifier::builder()
            .add_yaml("mine.yaml", file)
            .and_then(|b| b.kept(&rows))
            .and_then(|b| b.build())
            .expect("compiles");
        assert_eq!(c.classify(&guest).rule.as_deref(), Some("guests"));

        // And the kept row decides before a default rule that would match.
        let mailbox = "552 5.2.2 <*>: Mailbox full";
        let c = Classifier::builder()
            .kept(&[kept("ffff000011112222", mailbox)])
            .and_then(|b| b.build())
            .expect("compiles");
        let full = Failure::from_reply_text("552 5.2.2 <bob@example.com>: Mailbox full");
        assert_eq!(
            c.classify(&full).rule.as_deref(),
            Some("kept:ffff000011112222")
        );
    }

    #[test]
    fn an_operator_pattern_matches_every_text_it_covers_and_connection_failures_too() {
        let mut rule = kept("1111222233334444", "");
        rule.pattern = "not on the guest list".into();
        let mut conn = kept("5555666677778888", "");
        conn.pattern = "^connection refused: .*firewall".into();
        conn.kind = FailureType::Soft;
        conn.reason = Reason::Unreachable;
        conn.retry = true;
        conn.quarantine = Quarantine::None;
        conn.scope = Scope::Domain;
        let c = Classifier::builder()
            .kept(&[rule, conn])
            .and_then(|b| b.build())
            .expect("compiles");
        for raw in [
            "550 5.0.0 <ann@example.com>: not on the guest list (id 1)",
            "550 Not on the guest list",
        ] {
            let got = c.classify(&Failure::from_reply_text(raw));
            assert_eq!(got.rule.as_deref(), Some("kept:1111222233334444"), "{raw}");
        }
        let refused = Failure::connection(
            crate::classify::ConnectionError::Refused,
            "blocked by the site's firewall",
        );
        let got = c.classify(&refused);
        assert_eq!(got.rule.as_deref(), Some("kept:5555666677778888"));
        assert_eq!(got.reason, Reason::Unreachable);
    }

    #[test]
    fn the_export_compiles_as_an_operator_file_to_the_same_classification() {
        let text = "550 5.0.0 <*>: not on the guest list (id #xxx#)";
        let mut soft = kept("abcdefabcdefabcd", "");
        soft.pattern = "(?i)try the side door".into();
        soft.kind = FailureType::Soft;
        soft.reason = Reason::MailboxFull;
        soft.retry = true;
        soft.quarantine = Quarantine::Count;
        let rows = [kept("0a1b2c3d4e5f6a7b", text), soft];
        let live = Classifier::builder()
            .kept(&rows)
            .and_then(|b| b.build())
            .expect("compiles");
        let yaml = kept_rules_yaml(&rows);
        let imported = Classifier::builder()
            .add_yaml("kept.yaml", &yaml)
            .and_then(|b| b.build())
            .expect("the export is a valid rules file");
        // Both: imported and still kept (the file's rules replace the rows').
        let both = Classifier::builder()
            .add_yaml("kept.yaml", &yaml)
            .and_then(|b| b.kept(&rows))
            .and_then(|b| b.build())
            .expect("compiles");
        assert_eq!(
            both.rule_names().filter(|n| n.starts_with("kept:")).count(),
            2
        );
        for raw in [
            "550 5.0.0 <ann@example.com>: not on the guest list (id 1)",
            "452 4.2.2 please try the side door",
            "550 5.1.1 <ann@example.com>: User unknown",
            "421 4.7.0 try again later",
        ] {
            let f = Failure::from_reply_text(raw);
            assert_eq!(imported.classify(&f), live.classify(&f), "{raw}");
            assert_eq!(both.classify(&f), live.classify(&f), "{raw}");
        }
        assert!(yaml.contains("name: kept:0a1b2c3d4e5f6a7b"), "{yaml}");
    }

    #[test]
    fn defaults_of_a_qualification_follow_type_reason_and_scope() {
        use FailureType::*;
        let table = [
            (
                Hard,
                Reason::UserUnknown,
                Scope::Recipient,
                Quarantine::Immediate,
            ),
            (
                Soft,
                Reason::MailboxFull,
                Scope::Recipient,
                Quarantine::Count,
            ),
            (Hard, Reason::Refused, Scope::Recipient, Quarantine::None),
            (
                Hard,
                Reason::MessageTooLarge,
                Scope::Sender,
                Quarantine::None,
            ),
            (Soft, Reason::RateLimited, Scope::Domain, Quarantine::None),
            (Hard, Reason::InvalidDomain, Scope::Domain, Quarantine::None),
            (
                Ignored,
                Reason::AutoReply,
                Scope::Recipient,
                Quarantine::None,
            ),
        ];
        for (kind, reason, scope, want) in table {
            assert_eq!(
                default_quarantine(kind, reason, scope),
                want,
                "{kind} {reason} {scope}"
            );
        }
        assert!(default_retry(Soft));
        assert!(!default_retry(Hard));
        assert!(!default_retry(Ignored));
    }
}

//! Rule files: the YAML schema, its validation and its compilation into an
//! ordered rule list plus one case-insensitive [`RegexSet`] holding every
//! pattern (evaluated once per classified failure).
//!
//! File layout (every key optional):
//!
//! ```yaml
//! rules:            # ordered; the first rule whose conditions all hold wins
//!   - name: gmail_receiving_rate          # unique, used in `Classification::rule`
//!     pattern: 'receiving mail at a rate' # regex over the reply text / connection detail
//!     enhanced: '4.2.1'                   # or a list; `4.4.*`, `*.2.2`, `5.7.606-649`
//!     code: 450                           # or a list; `4xx`, `55x`
//!     kind: timeout                       # connection failures only (or a list)
//!     normalized: '^550 5\.0\.0 <\*>: no$'  # regex over the normalized line
//!                                         # (`classify::qualification_text`)
//!     type: soft                          # hard | soft | ignored
//!     reason: rate_limited
//!     retry: true
//!     quarantine: none                    # immediate | count | none
//!     scope: domain                       # recipient | domain | sender
//!     transient: { type: soft, retry: true }  # overrides when the reply is transient
//! fallback:         # when no rule matched; first entry whose conditions fit wins
//!   - class: 5                            # 4, 5, ... or absent for "anything"
//!     names_sender: true                  # only when the text names the sending
//!                                         # side (optional; see `Classifier`)
//!     type: soft
//!     reason: undefined
//!     retry: false
//!     quarantine: count
//!     scope: recipient
//! disable: [rule_name]  # drop rules of lower-precedence files by name
//! ```
//!
//! The schema is in `schema.rs`, the code and enhanced-code conditions in
//! `patterns.rs`, the errors in `error.rs`; this file compiles the files.

mod error;
mod patterns;
mod schema;

use std::collections::HashSet;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use super::types::{ConnectionError, FailureType, Quarantine, Reason, Scope};

pub use error::RulesError;
pub(crate) use patterns::{CodePattern, EnhancedPattern};
pub(crate) use schema::{parse_file, RulesFile};
use schema::{CodeValue, PartialOutput, RuleDef};

/// Size limit handed to the regex compiler (the whole set is one program).
const REGEX_SIZE_LIMIT: usize = 64 << 20;
/// The decision part of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Output {
    /// Failure type.
    pub kind: FailureType,
    /// Reason.
    pub reason: Reason,
    /// Whether to retry.
    pub retry: bool,
    /// What happens to the recipient.
    pub quarantine: Quarantine,
    /// Whom the failure is about.
    pub scope: Scope,
}

impl Output {
    fn apply(self, over: &PartialOutput) -> Output {
        Output {
            kind: over.failure_type.unwrap_or(self.kind),
            reason: over.reason.unwrap_or(self.reason),
            retry: over.retry.unwrap_or(self.retry),
            quarantine: over.quarantine.unwrap_or(self.quarantine),
            scope: over.scope.unwrap_or(self.scope),
        }
    }

    /// Invariants every decision keeps, whatever file it comes from.
    fn check(&self) -> Result<(), String> {
        if matches!(self.reason, Reason::Refused | Reason::MessageTooLarge)
            && self.quarantine != Quarantine::None
        {
            return Err(format!(
                "reason `{}` must never quarantine the recipient (quarantine: none)",
                self.reason
            ));
        }
        if self.kind == FailureType::Ignored && self.quarantine != Quarantine::None {
            return Err("type `ignored` must not quarantine (quarantine: none)".into());
        }
        Ok(())
    }
}
/// A rule ready for matching.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    /// Unique name.
    pub name: String,
    /// Index of the rule's pattern in the [`RegexSet`].
    pub pattern: Option<usize>,
    /// Enhanced-code patterns (any of); empty for no condition.
    pub enhanced: Vec<EnhancedPattern>,
    /// Basic-code patterns (any of); empty for no condition.
    pub codes: Vec<CodePattern>,
    /// Connection error kinds (any of); empty for reply rules.
    pub kinds: Vec<ConnectionError>,
    /// Index of the rule's `normalized` pattern in
    /// [`CompiledRules::normalized`].
    pub normalized: Option<usize>,
    /// Decision.
    pub output: Output,
    /// Decision when the reply is transient (already merged with `output`).
    pub transient: Option<Output>,
}

/// A fallback entry ready for matching.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CompiledFallback {
    /// Reply class it applies to; `None` for any failure.
    pub class: Option<u8>,
    /// Applies only to replies whose text names the sending side.
    pub names_sender: bool,
    /// Decision.
    pub output: Output,
}

/// Every source merged in precedence order.
#[derive(Debug)]
pub(crate) struct CompiledRules {
    /// Rules in evaluation order.
    pub rules: Vec<CompiledRule>,
    /// Every rule pattern, indexed by `CompiledRule::pattern`.
    pub set: RegexSet,
    /// Every `normalized` pattern, indexed by `CompiledRule::normalized`
    /// (empty when no rule has one: the normalized line is then not computed).
    pub normalized: RegexSet,
    /// Fallback entries in evaluation order.
    pub fallback: Vec<CompiledFallback>,
}
/// Merge sources given highest precedence first, and compile them.
///
/// A rule of a lower-precedence source is dropped when a higher-precedence
/// source defines a rule with the same name (it is replaced) or lists it in
/// `disable`.
pub(crate) fn compile(sources: &[(String, RulesFile)]) -> Result<CompiledRules, RulesError> {
    let mut taken: HashSet<&str> = HashSet::new();
    let mut disabled: Vec<(&str, &str, bool)> = Vec::new(); // (file, rule, hit)
    let mut rules = Vec::new();
    let mut patterns: Vec<&str> = Vec::new();
    let mut pattern_owner: Vec<(&str, &str)> = Vec::new();
    let mut normalized: Vec<&str> = Vec::new();
    let mut normalized_owner: Vec<(&str, &str)> = Vec::new();
    let mut fallback = Vec::new();

    for (file, parsed) in sources {
        let mut own: HashSet<&str> = HashSet::new();
        for def in &parsed.rules {
            let name = def.name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(invalid(
                    file,
                    &def.name,
                    "a rule needs a name without spaces",
                ));
            }
            if !own.insert(name) {
                return Err(RulesError::Duplicate {
                    file: file.clone(),
                    rule: name.to_string(),
                });
            }
            let mut compiled = compile_rule(file, def)?;
            if taken.contains(name) {
                continue; // replaced by a higher-precedence file
            }
            if let Some(entry) = disabled.iter_mut().find(|(_, rule, _)| *rule == name) {
                entry.2 = true;
                continue;
            }
            if let Some(pattern) = &def.pattern {
                compiled.pattern = Some(patterns.len());
                patterns.push(pattern);
                pattern_owner.push((file, name));
            }
            if let Some(pattern) = &def.normalized {
                compiled.normalized = Some(normalized.len());
                normalized.push(pattern);
                normalized_owner.push((file, name));
            }
            rules.push(compiled);
        }
        taken.extend(own);
        for (i, def) in parsed.fallback.iter().enumerate() {
            let output = Output {
                kind: def.failure_type,
                reason: def.reason,
                retry: def.retry,
                quarantine: def.quarantine,
                scope: def.scope,
            };
            output
                .check()
                .map_err(|message| invalid(file, &format!("fallback[{i}]"), &message))?;
            fallback.push(CompiledFallback {
                class: def.class,
                names_sender: def.names_sender,
                output,
            });
        }
        for name in &parsed.disable {
            disabled.push((file, name.trim(), false));
        }
    }
    if let Some((file, rule, _)) = disabled.iter().find(|(_, _, hit)| !hit) {
        return Err(RulesError::UnknownDisabled {
            file: file.to_string(),
            rule: rule.to_string(),
        });
    }

    Ok(CompiledRules {
        rules,
        set: regex_set(&patterns, &pattern_owner)?,
        normalized: regex_set(&normalized, &normalized_owner)?,
        fallback,
    })
}

/// One case-insensitive set of `patterns`; `owners` name each one's file
/// and rule for the error.
fn regex_set(patterns: &[&str], owners: &[(&str, &str)]) -> Result<RegexSet, RulesError> {
    RegexSetBuilder::new(patterns)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| {
            // Name the culprit when one pattern alone fails.
            for (pattern, (file, rule)) in patterns.iter().zip(owners) {
                if let Err(error) = single(pattern) {
                    return RulesError::Pattern {
                        file: file.to_string(),
                        rule: rule.to_string(),
                        error,
                    };
                }
            }
            RulesError::RegexSet(error)
        })
}

fn single(pattern: &str) -> Result<regex::Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn invalid(file: &str, rule: &str, message: &str) -> RulesError {
    RulesError::Invalid {
        file: file.to_string(),
        rule: rule.to_string(),
        message: message.to_string(),
    }
}

fn compile_rule(file: &str, def: &RuleDef) -> Result<CompiledRule, RulesError> {
    let name = def.name.trim();
    let condition_error =
        |field: &'static str, value: String, message: String| RulesError::Condition {
            file: file.to_string(),
            rule: name.to_string(),
            field,
            value,
            message,
        };
    for (field, pattern) in [("pattern", &def.pattern), ("normalized", &def.normalized)] {
        let Some(pattern) = pattern else { continue };
        if pattern.trim().is_empty() {
            return Err(invalid(file, name, &format!("`{field}` is empty")));
        }
        // Checked here so that the error names the rule; the set is built later.
        single(pattern).map_err(|error| RulesError::Pattern {
            file: file.to_string(),
            rule: name.to_string(),
            error,
        })?;
    }
    let enhanced = match &def.enhanced {
        None => Vec::new(),
        Some(list) => list
            .clone_strings()
            .into_iter()
            .map(|s| EnhancedPattern::parse(&s).map_err(|m| condition_error("enhanced", s, m)))
            .collect::<Result<_, _>>()?,
    };
    let codes = match &def.code {
        None => Vec::new(),
        Some(list) => list
            .iter()
            .map(|v| {
                CodePattern::parse(v).map_err(|m| {
                    let shown = match v {
                        CodeValue::Number(n) => n.to_string(),
                        CodeValue::Text(s) => s.clone(),
                    };
                    condition_error("code", shown, m)
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let kinds: Vec<ConnectionError> = def
        .kind
        .as_ref()
        .map(|k| k.iter().copied().collect())
        .unwrap_or_default();
    if def.pattern.is_none()
        && def.normalized.is_none()
        && enhanced.is_empty()
        && codes.is_empty()
        && kinds.is_empty()
    {
        return Err(invalid(
            file,
            name,
            "a rule needs at least one condition (pattern, normalized, enhanced, code or kind)",
        ));
    }
    let has_reply_conditions = !enhanced.is_empty() || !codes.is_empty();
    if !kinds.is_empty() && has_reply_conditions {
        return Err(invalid(
            file,
            name,
            "`kind` (connection failures) cannot be combined with `code` or `enhanced`",
        ));
    }
    let output = Output {
        kind: def.failure_type,
        reason: def.reason,
        retry: def.retry,
        quarantine: def.quarantine,
        scope: def.scope,
    };
    output.check().map_err(|m| invalid(file, name, &m))?;
    let transient = match &def.transient {
        None => None,
        Some(over) => {
            if !kinds.is_empty() {
                return Err(invalid(
                    file,
                    name,
                    "`transient` applies to replies, not to connection failures",
                ));
            }
            let merged = output.apply(over);
            merged
                .check()
                .map_err(|m| invalid(file, name, &format!("in `transient`: {m}")))?;
            Some(merged)
        }
    };
    Ok(CompiledRule {
        name: name.to_string(),
        pattern: None,
        enhanced,
        codes,
        kinds,
        normalized: None,
        output,
        transient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_one(yaml: &str) -> Result<CompiledRules, RulesError> {
        let parsed = parse_file("test.yaml", yaml)?;
        compile(&[("test.yaml".to_string(), parsed)])
    }

    const OUT: &str = "type: soft\n    reason: undefined\n    retry: true\n    quarantine: none\n    scope: recipient";
    #[test]
    fn invalid_regex_names_file_and_rule() {
        let err = compile_one(&format!(
            "rules:\n  - name: broken\n    pattern: '(unclosed'\n    {OUT}\n"
        ))
        .expect_err("must fail");
        let msg = err.to_string();
        assert!(matches!(err, RulesError::Pattern { .. }), "{msg}");
        assert!(msg.contains("test.yaml") && msg.contains("broken"), "{msg}");
    }

    #[test]
    fn invalid_enhanced_and_code_name_the_rule() {
        let err = compile_one(&format!(
            "rules:\n  - name: bad_enh\n    enhanced: '9.1.1'\n    {OUT}\n"
        ))
        .expect_err("must fail");
        assert!(
            matches!(&err, RulesError::Condition { rule, field: "enhanced", .. } if rule == "bad_enh"),
            "{err}"
        );
        let err = compile_one(&format!(
            "rules:\n  - name: bad_code\n    code: '5x'\n    {OUT}\n"
        ))
        .expect_err("must fail");
        assert!(
            matches!(&err, RulesError::Condition { rule, field: "code", .. } if rule == "bad_code"),
            "{err}"
        );
    }

    #[test]
    fn schema_errors_are_reported() {
        // Unknown field.
        let err = compile_one(&format!(
            "rules:\n  - name: typo\n    patern: 'x'\n    {OUT}\n"
        ))
        .expect_err("must fail");
        assert!(matches!(err, RulesError::Yaml { .. }), "{err}");
        // Unknown reason.
        let err = compile_one(
            "rules:\n  - name: r\n    code: 550\n    type: soft\n    reason: nope\n    retry: true\n    quarantine: none\n    scope: recipient\n",
        )
        .expect_err("must fail");
        assert!(matches!(err, RulesError::Yaml { .. }), "{err}");
        // No condition.
        let err =
            compile_one(&format!("rules:\n  - name: empty\n    {OUT}\n")).expect_err("must fail");
        assert!(matches!(err, RulesError::Invalid { .. }), "{err}");
        // kind with code.
        let err = compile_one(&format!(
            "rules:\n  - name: mixed\n    kind: timeout\n    code: 421\n    {OUT}\n"
        ))
        .expect_err("must fail");
        assert!(matches!(err, RulesError::Invalid { .. }), "{err}");
        // Duplicate names.
        let err = compile_one(&format!(
            "rules:\n  - name: a\n    code: 550\n    {OUT}\n  - name: a\n    code: 551\n    {OUT}\n"
        ))
        .expect_err("must fail");
        assert!(matches!(err, RulesError::Duplicate { .. }), "{err}");
        // Disable of an unknown rule.
        let err = compile_one("disable: [ghost]\n").expect_err("must fail");
        assert!(matches!(err, RulesError::UnknownDisabled { .. }), "{err}");
    }

    #[test]
    fn refused_may_not_quarantine() {
        let err = compile_one(
            "rules:\n  - name: bad\n    pattern: spam\n    type: hard\n    reason: refused\n    retry: false\n    quarantine: immediate\n    scope: sender\n",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("never quarantine"), "{err}");
        let err = compile_one(
            "rules:\n  - name: bad\n    pattern: big\n    type: hard\n    reason: message_too_large\n    retry: false\n    quarantine: none\n    scope: sender\n    transient: { quarantine: count }\n",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("transient"), "{err}");
        let err = compile_one(
            "fallback:\n  - type: ignored\n    reason: auto_reply\n    retry: false\n    quarantine: count\n    scope: recipient\n",
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("fallback[0]"), "{err}");
    }

    #[test]
    fn empty_source_is_an_empty_rule_file() {
        let compiled = compile_one("  \n").expect("empty is fine");
        assert!(compiled.rules.is_empty());
        assert!(compiled.fallback.is_empty());
    }
}

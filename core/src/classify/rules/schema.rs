//! The YAML schema of a rules file, as read (see the layout in `mod.rs`).

use serde::Deserialize;

use super::RulesError;
use crate::classify::types::{ConnectionError, FailureType, Quarantine, Reason, Scope};

/// One parsed rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RulesFile {
    /// Ordered rules.
    #[serde(default)]
    pub(super) rules: Vec<RuleDef>,
    /// Fallback table, tried when no rule matched.
    #[serde(default)]
    pub(super) fallback: Vec<FallbackDef>,
    /// Names of lower-precedence rules to drop.
    #[serde(default)]
    pub(super) disable: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list of values, any of which may match.
    Many(Vec<T>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CodeValue {
    /// Exact code written as a number: `550`.
    Number(u16),
    /// Code written as text, possibly with `x` wildcards: `"5xx"`.
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleDef {
    /// Unique name, reported in `Classification::rule`.
    pub(super) name: String,
    /// Case-insensitive regex over the reply text or connection detail.
    #[serde(default)]
    pub(super) pattern: Option<String>,
    /// Enhanced-code patterns, any of which may match.
    #[serde(default)]
    pub(super) enhanced: Option<OneOrMany<String>>,
    /// Basic-code patterns, any of which may match.
    #[serde(default)]
    pub(super) code: Option<OneOrMany<CodeValue>>,
    /// Connection error kinds (connection-failure rules only).
    #[serde(default)]
    pub(super) kind: Option<OneOrMany<ConnectionError>>,
    /// Case-insensitive regex over the failure's normalized line
    /// ([`crate::classify::qualification_text`]): how kept rows of the qualification
    /// table match. Alone, it applies to replies and connection failures.
    #[serde(default)]
    pub(super) normalized: Option<String>,
    /// Output: failure type.
    #[serde(rename = "type")]
    pub(super) failure_type: FailureType,
    /// Output: reason.
    pub(super) reason: Reason,
    /// Output: retry.
    pub(super) retry: bool,
    /// Output: quarantine.
    pub(super) quarantine: Quarantine,
    /// Output: scope.
    pub(super) scope: Scope,
    /// Outputs replaced when the reply is transient.
    #[serde(default)]
    pub(super) transient: Option<PartialOutput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartialOutput {
    /// Replacement failure type.
    #[serde(default, rename = "type")]
    pub(super) failure_type: Option<FailureType>,
    /// Replacement reason.
    #[serde(default)]
    pub(super) reason: Option<Reason>,
    /// Replacement retry.
    #[serde(default)]
    pub(super) retry: Option<bool>,
    /// Replacement quarantine.
    #[serde(default)]
    pub(super) quarantine: Option<Quarantine>,
    /// Replacement scope.
    #[serde(default)]
    pub(super) scope: Option<Scope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FallbackDef {
    /// Reply class (4, 5, ...) this entry applies to; absent for any failure.
    #[serde(default)]
    pub(super) class: Option<u8>,
    /// When true, the entry applies only to replies whose text names the
    /// sending side (an IP address, "sender", "your server", an address other
    /// than the recipient...).
    #[serde(default)]
    pub(super) names_sender: bool,
    /// Output: failure type.
    #[serde(rename = "type")]
    pub(super) failure_type: FailureType,
    /// Output: reason.
    pub(super) reason: Reason,
    /// Output: retry.
    pub(super) retry: bool,
    /// Output: quarantine.
    pub(super) quarantine: Quarantine,
    /// Output: scope.
    pub(super) scope: Scope,
}
/// Parse one YAML source.
pub(crate) fn parse_file(file: &str, yaml: &str) -> Result<RulesFile, RulesError> {
    // An empty document is an empty rule file.
    if yaml.trim().is_empty() {
        return Ok(RulesFile {
            rules: Vec::new(),
            fallback: Vec::new(),
            disable: Vec::new(),
        });
    }
    serde_yaml::from_str(yaml).map_err(|error| RulesError::Yaml {
        file: file.to_string(),
        error,
    })
}
impl<T> OneOrMany<T> {
    pub(super) fn iter(&self) -> std::slice::Iter<'_, T> {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t).iter(),
            OneOrMany::Many(v) => v.iter(),
        }
    }
}

impl OneOrMany<String> {
    pub(super) fn clone_strings(&self) -> Vec<String> {
        self.iter().cloned().collect()
    }
}

//! Why a rules file could not be loaded.

/// A rule file could not be loaded; every variant names the file and, where
/// it applies, the rule.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file is not valid YAML or does not follow the schema.
    #[error("rules file `{file}`: {error}")]
    Yaml {
        /// Name given for the file.
        file: String,
        /// What the YAML parser said.
        #[source]
        error: serde_yaml::Error,
    },
    /// A rule's `pattern` is not a valid regular expression.
    #[error("rules file `{file}`, rule `{rule}`: invalid pattern: {error}")]
    Pattern {
        /// Name given for the file.
        file: String,
        /// Name of the rule.
        rule: String,
        /// What the regex compiler said.
        #[source]
        error: regex::Error,
    },
    /// A rule's `enhanced` or `code` condition cannot be read.
    #[error("rules file `{file}`, rule `{rule}`: invalid {field} `{value}`: {message}")]
    Condition {
        /// Name given for the file.
        file: String,
        /// Name of the rule.
        rule: String,
        /// `enhanced` or `code`.
        field: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// A rule breaks a rule of the schema (no condition, forbidden combination, broken invariant).
    #[error("rules file `{file}`, rule `{rule}`: {message}")]
    Invalid {
        /// Name given for the file.
        file: String,
        /// Name of the rule (or `fallback[N]`).
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// Two rules of one file share a name.
    #[error("rules file `{file}`: duplicate rule name `{rule}`")]
    Duplicate {
        /// Name given for the file.
        file: String,
        /// The repeated name.
        rule: String,
    },
    /// `disable` names a rule that no lower-precedence file defines.
    #[error("rules file `{file}`: `disable` names unknown rule `{rule}`")]
    UnknownDisabled {
        /// Name given for the file.
        file: String,
        /// The name that matched nothing.
        rule: String,
    },
    /// The patterns compiled one by one but not together.
    #[error("compiling the rule patterns together: {0}")]
    RegexSet(#[source] regex::Error),
}

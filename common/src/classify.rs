//! SMTP failure classifier: the pure classifier of `mailpipe-core`
//! ([`mailpipe_core::classify`], re-exported here whole) plus the loader of
//! the operator's rules files named in the configuration, which reads files
//! and so lives on this side.

pub use mailpipe_core::classify::*;

/// Compiles the shipped classification rules plus the operator's rules
/// files (`classifier.rules_files`), which every worker and the CLI load
/// the same way.
pub fn build_classifier(
    settings: &crate::config::ClassifierSettings,
) -> anyhow::Result<Classifier> {
    Ok(compile_classifier(&read_rules_files(settings)?, &[])?)
}

/// The operator's rules files (`classifier.rules_files`), read: (name,
/// YAML text) in the order configured. Read once at start, so that
/// recompiling with new kept rows does not pick up a half-edited file.
pub fn read_rules_files(
    settings: &crate::config::ClassifierSettings,
) -> anyhow::Result<Vec<(String, String)>> {
    use anyhow::Context as _;
    settings
        .rules_files
        .iter()
        .map(|path| {
            let yaml = std::fs::read_to_string(path)
                .with_context(|| format!("reading rules file {}", path.display()))?;
            Ok((path.display().to_string(), yaml))
        })
        .collect()
}

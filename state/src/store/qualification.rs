//! The qualification table: every failure text, normalized, counted, and
//! what operators made of it (`mailpipe bounces`).
//!
//! Keys: `{p}:bounce:{id}` (hash, one row: its texts, counts, its
//! classification and qualification), `{p}:bounces` (zset, row ids by
//! count), `{p}:bounces:kept` (set, the ids of the rows operators kept,
//! which are classification rules) and `{p}:bounces:version` (counter,
//! raised whenever the set of kept rules changes; the workers watch it).
//!
//! A row is `to_qualify` when no rule classified its text the first time,
//! `keep` when a rule did, or when an operator qualified it (then it is a
//! rule itself: [`BounceEntry::kept_rule`]), `ignore` when an operator
//! set it aside.
//!
//! Over 500 lines: the table's four scripts, the Rust that invokes them and
//! the tests that read the rows back (a quarter of the file) stay together.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{op, Store, StoreError};
use crate::classify::{
    default_quarantine, default_retry, qualification_text, Classification, Failure, FailureType,
    KeptRule, Quarantine, Reason, Scope, KEPT_RULE_PREFIX,
};

pub(super) const COUNT_LUA: &str = r#"
-- KEYS[1] entry hash, KEYS[2] index zset; ARGV: 1 id, 2 normalized text,
-- 3 raw text, 4 reason, 5 type, 6 rule ('' = none), 7 now, 8 cap
redis.call('HSETNX', KEYS[1], 'text', ARGV[2])
redis.call('HSETNX', KEYS[1], 'first', ARGV[3])
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[7])
redis.call('HSETNX', KEYS[1], 'reason', ARGV[4])
redis.call('HSETNX', KEYS[1], 'type', ARGV[5])
redis.call('HSETNX', KEYS[1], 'rule', ARGV[6])
if ARGV[6] == '' then
  redis.call('HSETNX', KEYS[1], 'qualification', 'to_qualify')
else
  redis.call('HSETNX', KEYS[1], 'qualification', 'keep')
end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[7])
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if count < tonumber(ARGV[8]) then
  count = redis.call('HINCRBY', KEYS[1], 'count', 1)
end
redis.call('ZADD', KEYS[2], count, ARGV[1])
return count
"#;

/// An operator keeps a row as a rule: -1 when the row does not exist (then
/// nothing is written), else the new version of the kept rules.
const KEEP_LUA: &str = r#"
-- KEYS[1] entry hash, KEYS[2] kept set, KEYS[3] version; ARGV: 1 id,
-- 2 type, 3 reason, 4 retry, 5 quarantine, 6 scope, 7 pattern ('' = the
-- text, exactly), 8 by, 9 now, 10 rule name
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'qualification', 'keep', 'type', ARGV[2],
  'reason', ARGV[3], 'retry', ARGV[4], 'quarantine', ARGV[5], 'scope', ARGV[6],
  'pattern', ARGV[7], 'qualified_by', ARGV[8], 'qualified_at', ARGV[9],
  'rule', ARGV[10])
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('INCR', KEYS[3])
"#;

/// An operator ignores a row: -1 when it does not exist, else the version
/// of the kept rules (raised when the row was one).
const IGNORE_LUA: &str = r#"
-- KEYS[1] entry hash, KEYS[2] kept set, KEYS[3] version; ARGV: 1 id, 2 by,
-- 3 now, 4 the row's rule name
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'qualification', 'ignore', 'qualified_by', ARGV[2],
  'qualified_at', ARGV[3])
if redis.call('HGET', KEYS[1], 'rule') == ARGV[4] then
  redis.call('HSET', KEYS[1], 'rule', '')
end
if redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  return redis.call('INCR', KEYS[3])
end
return tonumber(redis.call('GET', KEYS[3]) or '0')
"#;

/// An operator resets a row's count: -1 when it does not exist, else 0.
const RESET_LUA: &str = r#"
-- KEYS[1] entry hash, KEYS[2] index zset; ARGV: 1 id, 2 by, 3 now
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'count', 0, 'reset_by', ARGV[2], 'reset_at', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 0
"#;

/// Occurrences of one bounce text are counted up to this (the qualification table
/// shows "at least" beyond it).
pub const QUALIFICATION_CAP: u64 = 100_000;

/// The id of the row of a normalized text: stable, so `mailpipe bounces`
/// prints the same id for the same text in every installation.
pub fn row_id(normalized: &str) -> String {
    crate::message::sha256_hex(normalized.as_bytes())[..16].to_string()
}

/// Where a row of the qualification table stands; the names are those the
/// scripts store in its `qualification` field (and the JSON's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualificationState {
    /// No rule classified its text the first time, and no operator has
    /// qualified it yet.
    #[default]
    ToQualify,
    /// A rule classified it, or an operator kept it (then it is a rule).
    Keep,
    /// An operator set it aside.
    Ignore,
}

impl QualificationState {
    pub fn as_str(self) -> &'static str {
        match self {
            QualificationState::ToQualify => "to_qualify",
            QualificationState::Keep => "keep",
            QualificationState::Ignore => "ignore",
        }
    }
}

/// The state a script stored; anything else (a row without the field)
/// reads as not qualified yet.
impl From<&str> for QualificationState {
    fn from(name: &str) -> Self {
        match name {
            "keep" => QualificationState::Keep,
            "ignore" => QualificationState::Ignore,
            _ => QualificationState::ToQualify,
        }
    }
}

impl PartialEq<&str> for QualificationState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for QualificationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the bounce qualification table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceEntry {
    pub id: String,
    /// Normalized text (variable parts replaced by `#xxx#`, addresses by `*`).
    pub text: String,
    /// The first raw text seen.
    pub first: String,
    pub count: u64,
    pub reason: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Rule that classified it (`kept:{id}` once an operator kept it);
    /// empty when none did.
    pub rule: String,
    pub qualification: QualificationState,
    pub first_seen: i64,
    pub last_seen: i64,
    /// What an operator decided (empty until one did): retried or not,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
    /// what happens to the address,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quarantine: String,
    /// whom the failure is about,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// and the pattern over normalized texts the row matches (empty: its
    /// own text, exactly).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    /// Who qualified (kept or ignored) the row, and when (0: nobody).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub qualified_by: String,
    #[serde(default)]
    pub qualified_at: i64,
    /// Who last reset the count, and when (0: never).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reset_by: String,
    #[serde(default)]
    pub reset_at: i64,
}

impl BounceEntry {
    fn from_fields(id: String, f: &BTreeMap<String, String>) -> BounceEntry {
        let get = |k: &str| f.get(k).cloned().unwrap_or_default();
        let num = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or_default();
        BounceEntry {
            id,
            text: get("text"),
            first: get("first"),
            count: num("count") as u64,
            reason: get("reason"),
            kind: get("type"),
            rule: get("rule"),
            qualification: QualificationState::from(get("qualification").as_str()),
            first_seen: num("first_seen"),
            last_seen: num("last_seen"),
            retry: f.get("retry").and_then(|v| v.parse().ok()),
            quarantine: get("quarantine"),
            scope: get("scope"),
            pattern: get("pattern"),
            qualified_by: get("qualified_by"),
            qualified_at: num("qualified_at"),
            reset_by: get("reset_by"),
            reset_at: num("reset_at"),
        }
    }

    /// The row as a classification rule: only a row an operator kept (a
    /// row kept because a shipped or file rule classified it is that
    /// rule's, not a rule of its own; an ignored row is no rule at all).
    /// `None` too for a row whose stored decision does not read back.
    pub fn kept_rule(&self) -> Option<KeptRule> {
        if self.qualification != QualificationState::Keep || self.qualified_at == 0 {
            return None;
        }
        let kind: FailureType = parse(&self.kind)?;
        let reason: Reason = parse(&self.reason)?;
        let scope: Scope = parse(&self.scope)?;
        let quarantine: Quarantine = parse(&self.quarantine)?;
        Some(KeptRule {
            id: self.id.clone(),
            pattern: if self.pattern.is_empty() {
                KeptRule::exact(&self.text)
            } else {
                self.pattern.clone()
            },
            kind,
            reason,
            retry: self.retry.unwrap_or(default_retry(kind)),
            quarantine,
            scope,
        })
    }
}

fn parse<T: DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// What an operator decides about a row (`mailpipe bounces qualify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualification {
    pub kind: FailureType,
    pub reason: Reason,
    pub scope: Scope,
    /// `None`: [`default_retry`].
    pub retry: Option<bool>,
    /// `None`: [`default_quarantine`].
    pub quarantine: Option<Quarantine>,
    /// A regex over normalized texts; `None`: the row's own text, exactly.
    pub pattern: Option<String>,
}

impl Qualification {
    /// The rule the row becomes (for checking it compiles before it is kept).
    pub fn rule(&self, row: &BounceEntry) -> KeptRule {
        KeptRule {
            id: row.id.clone(),
            pattern: self
                .pattern
                .clone()
                .unwrap_or_else(|| KeptRule::exact(&row.text)),
            kind: self.kind,
            reason: self.reason,
            retry: self.retry.unwrap_or(default_retry(self.kind)),
            quarantine: self.quarantine.unwrap_or(default_quarantine(
                self.kind,
                self.reason,
                self.scope,
            )),
            scope: self.scope,
        }
    }
}

/// The kept rules in the order they apply: qualified first, first (ties
/// by id). Rows that are not kept rules are left out.
pub fn kept_rules_of(rows: &[BounceEntry]) -> Vec<KeptRule> {
    let mut kept: Vec<(&BounceEntry, KeptRule)> = rows
        .iter()
        .filter_map(|r| Some((r, r.kept_rule()?)))
        .collect();
    kept.sort_by(|(a, _), (b, _)| (a.qualified_at, &a.id).cmp(&(b.qualified_at, &b.id)));
    kept.into_iter().map(|(_, rule)| rule).collect()
}

impl Store {
    /// Counts one failure in the qualification table (`mailpipe bounces`),
    /// under its [`qualification_text`], with how it was classified.
    pub async fn count_failure_text(
        &self,
        failure: &Failure,
        class: &Classification,
        now: i64,
    ) -> Result<u64, StoreError> {
        let raw = failure.to_string();
        let normalized = qualification_text(failure);
        let id = row_id(&normalized);
        let mut c = self.conn.clone();
        self.count_text
            .key(self.key(&["bounce", &id]))
            .key(self.key(&["bounces"]))
            .arg(&id)
            .arg(&normalized)
            .arg(&raw)
            .arg(class.reason.as_str())
            .arg(class.kind.as_str())
            .arg(class.rule.as_deref().unwrap_or(""))
            .arg(now)
            .arg(QUALIFICATION_CAP)
            .invoke_async(&mut c)
            .await
            .map_err(op("count failure text"))
    }

    /// The qualification table, most frequent first.
    pub async fn bounces(&self, limit: usize) -> Result<Vec<BounceEntry>, StoreError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c
            .zrevrange(self.key(&["bounces"]), 0, limit.max(1) as isize - 1)
            .await
            .map_err(op("bounces"))?;
        self.bounce_rows(ids).await
    }

    /// One row of the table; `None` for an unknown id.
    pub async fn bounce(&self, id: &str) -> Result<Option<BounceEntry>, StoreError> {
        let rows = self.bounce_rows(vec![id.to_string()]).await?;
        Ok(rows.into_iter().next().filter(|r| !r.text.is_empty()))
    }

    async fn bounce_rows(&self, ids: Vec<String>) -> Result<Vec<BounceEntry>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.key(&["bounce", id]));
        }
        let mut c = self.conn.clone();
        let fields: Vec<BTreeMap<String, String>> =
            pipe.query_async(&mut c).await.map_err(op("bounce rows"))?;
        Ok(ids
            .into_iter()
            .zip(fields)
            .map(|(id, f)| BounceEntry::from_fields(id, &f))
            .collect())
    }

    /// Keeps a row as a classification rule, with the operator's decision;
    /// `None` (nothing written) for an unknown id, else the new version of
    /// the kept rules.
    pub async fn keep_bounce(
        &self,
        row: &BounceEntry,
        q: &Qualification,
        by: &str,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let rule = q.rule(row);
        let mut c = self.conn.clone();
        let v: i64 = redis::Script::new(KEEP_LUA)
            .key(self.key(&["bounce", &row.id]))
            .key(self.key(&["bounces", "kept"]))
            .key(self.key(&["bounces", "version"]))
            .arg(&row.id)
            .arg(rule.kind.as_str())
            .arg(rule.reason.as_str())
            .arg(rule.retry.to_string())
            .arg(rule.quarantine.as_str())
            .arg(rule.scope.as_str())
            .arg(q.pattern.as_deref().unwrap_or(""))
            .arg(by)
            .arg(now)
            .arg(rule.name())
            .invoke_async(&mut c)
            .await
            .map_err(op("keep bounce"))?;
        Ok(u64::try_from(v).ok())
    }

    /// Sets a row aside (`ignore`): it is no rule and waits for nobody.
    /// `None` (nothing written) for an unknown id, else the version of the
    /// kept rules.
    pub async fn ignore_bounce(
        &self,
        id: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<u64>, StoreError> {
        let mut c = self.conn.clone();
        let v: i64 = redis::Script::new(IGNORE_LUA)
            .key(self.key(&["bounce", id]))
            .key(self.key(&["bounces", "kept"]))
            .key(self.key(&["bounces", "version"]))
            .arg(id)
            .arg(by)
            .arg(now)
            .arg(format!("{KEPT_RULE_PREFIX}{id}"))
            .invoke_async(&mut c)
            .await
            .map_err(op("ignore bounce"))?;
        Ok(u64::try_from(v).ok())
    }

    /// Resets a row's count to 0; `false` (nothing written) for an unknown id.
    pub async fn reset_bounce(&self, id: &str, by: &str, now: i64) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let v: i64 = redis::Script::new(RESET_LUA)
            .key(self.key(&["bounce", id]))
            .key(self.key(&["bounces"]))
            .arg(id)
            .arg(by)
            .arg(now)
            .invoke_async(&mut c)
            .await
            .map_err(op("reset bounce"))?;
        Ok(v == 0)
    }

    /// The version of the kept rules: raised by every change to them.
    pub async fn kept_rules_version(&self) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<u64> = c
            .get(self.key(&["bounces", "version"]))
            .await
            .map_err(op("kept rules version"))?;
        Ok(v.unwrap_or(0))
    }

    /// The kept rules, with the version read before them (a change made
    /// while they are read raises the version again, so a watcher reads
    /// them once more).
    pub async fn kept_rules(&self) -> Result<(u64, Vec<KeptRule>), StoreError> {
        let version = self.kept_rules_version().await?;
        let mut c = self.conn.clone();
        let ids: Vec<String> = c
            .smembers(self.key(&["bounces", "kept"]))
            .await
            .map_err(op("kept rules"))?;
        let rows = self.bounce_rows(ids).await?;
        Ok((version, kept_rules_of(&rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{compile_classifier, Classifier};

    const TEXT: &str = "550 5.0.0 <*>: not on the guest list";

    fn row(text: &str, qualification: &str) -> BounceEntry {
        BounceEntry {
            id: row_id(text),
            text: text.into(),
            first: text.replace('*', "ann@example.com"),
            count: 3,
            reason: "undefined".into(),
            kind: "soft".into(),
            qualification: qualification.into(),
            ..Default::default()
        }
    }

    /// A row as the operator's `qualify` leaves it.
    fn kept(text: &str, at: i64) -> BounceEntry {
        BounceEntry {
            kind: "hard".into(),
            reason: "user_unknown".into(),
            retry: Some(false),
            quarantine: "immediate".into(),
            scope: "recipient".into(),
            rule: format!("kept:{}", row_id(text)),
            qualified_by: "ops".into(),
            qualified_at: at,
            ..row(text, "keep")
        }
    }

    #[test]
    fn a_row_s_state_reads_back_as_the_scripts_store_it() {
        use QualificationState::*;
        for q in [ToQualify, Keep, Ignore] {
            assert_eq!(QualificationState::from(q.as_str()), q);
            assert_eq!(serde_json::to_value(q).unwrap(), q.as_str());
        }
        assert_eq!(QualificationState::from(""), ToQualify);
    }

    #[test]
    fn ignore_keeps_a_row_out_of_the_rules() {
        let kept_row = kept(TEXT, 10);
        // The same decision, then ignored: no rule any more.
        let ignored = BounceEntry {
            qualification: "ignore".into(),
            ..kept("421 4.7.0 <*>: come back tomorrow", 11)
        };
        // Kept because a shipped rule classified it: that rule's, not a row's.
        let by_rule = BounceEntry {
            rule: "user_unknown_text".into(),
            ..row("550 5.1.1 <*>: User unknown", "keep")
        };
        let waiting = row("550 5.0.0 <*>: who are you", "to_qualify");
        let rows = [ignored.clone(), kept_row.clone(), by_rule, waiting];

        assert!(ignored.kept_rule().is_none());
        let rules = kept_rules_of(&rows);
        assert_eq!(
            rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec![kept_row.id.as_str()]
        );

        // The classifier of those rows: the kept text is the row's; the
        // ignored text is classified by the other rules, as without it.
        let c = compile_classifier(&[], &rules).expect("compiles");
        let guest = Failure::from_reply_text("550 5.0.0 <bob@example.com>: not on the guest list");
        let got = c.classify(&guest);
        assert_eq!(got.rule, Some(format!("kept:{}", kept_row.id)));
        assert_eq!(got.reason, Reason::UserUnknown);
        let tomorrow = Failure::from_reply_text("421 4.7.0 <bob@example.com>: come back tomorrow");
        assert_eq!(qualification_text(&tomorrow), ignored.text);
        assert_eq!(
            c.classify(&tomorrow),
            Classifier::default().classify(&tomorrow)
        );
        assert!(c.classify(&tomorrow).rule.as_deref() != Some(&*format!("kept:{}", ignored.id)));
    }

    #[test]
    fn kept_rules_apply_in_the_order_they_were_qualified_and_read_back_the_operator_s_decision() {
        let mut later = kept("550 5.0.0 <*>: later", 20);
        later.pattern = "guest".into();
        later.kind = "soft".into();
        later.reason = "mailbox_full".into();
        later.retry = None;
        later.quarantine = "count".into();
        let first = kept(TEXT, 10);
        let rules = kept_rules_of(&[later.clone(), first.clone()]);
        assert_eq!(rules[0].id, first.id);
        assert_eq!(rules[0].pattern, KeptRule::exact(TEXT));
        assert_eq!(rules[1].pattern, "guest");
        // No stored retry: the default of its type.
        assert!(rules[1].retry);
        assert_eq!(rules[1].quarantine, Quarantine::Count);
        // A decision that does not read back is no rule.
        let broken = BounceEntry {
            reason: "nonsense".into(),
            ..kept("550 x", 5)
        };
        assert!(broken.kept_rule().is_none());
    }

    #[test]
    fn a_qualification_fills_in_retry_and_quarantine_from_its_type() {
        let r = row(TEXT, "to_qualify");
        let q = Qualification {
            kind: FailureType::Hard,
            reason: Reason::UserUnknown,
            scope: Scope::Recipient,
            retry: None,
            quarantine: None,
            pattern: None,
        };
        let rule = q.rule(&r);
        assert_eq!(rule.name(), format!("kept:{}", r.id));
        assert_eq!(rule.pattern, KeptRule::exact(TEXT));
        assert!(!rule.retry);
        assert_eq!(rule.quarantine, Quarantine::Immediate);
        let soft = Qualification {
            kind: FailureType::Soft,
            scope: Scope::Domain,
            retry: Some(false),
            ..q
        };
        let rule = soft.rule(&r);
        assert!(!rule.retry);
        assert_eq!(rule.quarantine, Quarantine::None);
    }

    #[test]
    fn a_row_id_is_the_same_for_the_same_normalized_text() {
        assert_eq!(row_id(TEXT), row_id(TEXT));
        assert_eq!(row_id(TEXT).len(), 16);
        assert_ne!(row_id(TEXT), row_id("550 5.0.0 <*>: other"));
    }
}

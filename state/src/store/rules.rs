//! Exclusion rules and their named lists (`{p}:rules`, `{p}:rulelist:{name}`,
//! `{p}:rulelists`, `{p}:rules:version`). Every change raises the version,
//! so an expander that compiled the rules knows, from one number, when to
//! load them again.

use std::collections::BTreeMap;

use redis::AsyncCommands;

use super::{op, Store, StoreError};
use crate::rules::{ListMembers, Rule, RuleMatch};

/// Everything the expander compiles rules from, at one version.
#[derive(Debug, Clone, Default)]
pub struct RulesSnapshot {
    pub version: u64,
    /// Every stored rule (enabled or not), by name.
    pub rules: Vec<Rule>,
    /// The members of every list an enabled rule refers to.
    pub lists: ListMembers,
}

impl Store {
    fn rules_key(&self) -> String {
        self.key(&["rules"])
    }

    fn rules_version_key(&self) -> String {
        self.key(&["rules", "version"])
    }

    fn rule_list_key(&self, list: &str) -> String {
        self.key(&["rulelist", list])
    }

    /// The rules' version: raised by every change to a rule or a list.
    pub async fn rules_version(&self) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let v: Option<u64> = c
            .get(self.rules_version_key())
            .await
            .map_err(op("rules version"))?;
        Ok(v.unwrap_or(0))
    }

    /// Every stored rule, sorted by name, with the version they are at.
    pub async fn rules(&self) -> Result<(u64, Vec<Rule>), StoreError> {
        let mut c = self.conn.clone();
        let (version, raw): (Option<u64>, BTreeMap<String, String>) = redis::pipe()
            .atomic()
            .get(self.rules_version_key())
            .hgetall(self.rules_key())
            .query_async(&mut c)
            .await
            .map_err(op("load rules"))?;
        let rules = raw
            .into_iter()
            .map(|(name, json)| {
                serde_json::from_str::<Rule>(&json).map_err(|e| StoreError::Corrupt {
                    what: "exclusion rule",
                    detail: format!("{name}: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((version.unwrap_or(0), rules))
    }

    /// The rules and the lists their enabled rules refer to, for compiling.
    pub async fn rules_snapshot(&self) -> Result<RulesSnapshot, StoreError> {
        let (version, rules) = self.rules().await?;
        let mut lists = ListMembers::new();
        for r in rules.iter().filter(|r| r.enabled) {
            if let RuleMatch::List(name) = &r.matches {
                if !lists.contains_key(name) {
                    lists.insert(name.clone(), self.rule_list_members(name).await?);
                }
            }
        }
        Ok(RulesSnapshot {
            version,
            rules,
            lists,
        })
    }

    /// One stored rule.
    pub async fn rule(&self, name: &str) -> Result<Option<Rule>, StoreError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c
            .hget(self.rules_key(), name)
            .await
            .map_err(op("get rule"))?;
        raw.map(|json| {
            serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                what: "exclusion rule",
                detail: format!("{name}: {e}"),
            })
        })
        .transpose()
    }

    /// Stores a rule (already normalized). Without `replace`, a rule of the
    /// same name is kept and `false` returned.
    pub async fn put_rule(&self, rule: &Rule, replace: bool) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let json = serde_json::to_string(rule).unwrap_or_default();
        let stored: bool = if replace {
            let _: i64 = c
                .hset(self.rules_key(), &rule.name, json)
                .await
                .map_err(op("put rule"))?;
            true
        } else {
            c.hset_nx(self.rules_key(), &rule.name, json)
                .await
                .map_err(op("put rule"))?
        };
        if stored {
            self.bump_rules_version().await?;
        }
        Ok(stored)
    }

    /// Removes a rule; `false` when there was none of that name.
    pub async fn remove_rule(&self, name: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = c
            .hdel(self.rules_key(), name)
            .await
            .map_err(op("remove rule"))?;
        if n > 0 {
            self.bump_rules_version().await?;
        }
        Ok(n > 0)
    }

    async fn bump_rules_version(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .incr(self.rules_version_key(), 1)
            .await
            .map_err(op("rules version"))?;
        Ok(())
    }

    /// Replaces a list's members at once (entries already normalized): an
    /// expander sees the old list or the new one, never half of it.
    pub async fn replace_rule_list(
        &self,
        list: &str,
        entries: &[String],
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let key = self.rule_list_key(list);
        let loading = format!("{key}:loading:{}", uuid::Uuid::new_v4().simple());
        for chunk in entries.chunks(10_000) {
            let _: i64 = c.sadd(&loading, chunk).await.map_err(op("load list"))?;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        if entries.is_empty() {
            pipe.del(&key).ignore();
        } else {
            pipe.rename(&loading, &key).ignore();
        }
        let _: () = pipe
            .sadd(self.key(&["rulelists"]), list)
            .ignore()
            .incr(self.rules_version_key(), 1)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("replace list"))?;
        Ok(())
    }

    /// Removes a list; `false` when there was none of that name.
    pub async fn remove_rule_list(&self, list: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let (_, known): (i64, i64) = redis::pipe()
            .atomic()
            .del(self.rule_list_key(list))
            .srem(self.key(&["rulelists"]), list)
            .incr(self.rules_version_key(), 1)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("remove list"))?;
        Ok(known > 0)
    }

    /// The names of the imported lists with their sizes, sorted.
    pub async fn rule_lists(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut c = self.conn.clone();
        let mut names: Vec<String> = c
            .smembers(self.key(&["rulelists"]))
            .await
            .map_err(op("rule lists"))?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let size: u64 = c
                .scard(self.rule_list_key(&n))
                .await
                .map_err(op("rule list size"))?;
            out.push((n, size));
        }
        Ok(out)
    }

    /// Whether a list was imported (an empty import counts).
    pub async fn rule_list_exists(&self, list: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.sismember(self.key(&["rulelists"]), list)
            .await
            .map_err(op("rule list"))
    }

    /// A list's members, sorted.
    pub async fn rule_list_members(&self, list: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        let mut members: Vec<String> = c
            .smembers(self.rule_list_key(list))
            .await
            .map_err(op("rule list members"))?;
        members.sort();
        Ok(members)
    }
}

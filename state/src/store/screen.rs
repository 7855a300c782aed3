//! Screening recipients during expansion (`{p}:req:{rid}:rcpts`,
//! `{p}:req:{rid}:audience`, `{p}:coalesce:…`): one script decides each
//! recipient's verdict against the request's earlier parts, the address
//! lists, quarantine, the exclusion the expander decided before (a rule, an
//! address check), the control group, coalescing and the audience limit.

use std::time::Duration;

use super::{op, Store, StoreError};

/// Screening of one recipient during expansion.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Canonical address key.
    pub address: String,
    /// Position in the request, `part:index`; identifies a replay.
    pub position: String,
    pub message_id: String,
    /// Already decided to be in the control group (deterministic, computed by the caller).
    pub control_group: bool,
    /// Excluded by the expander already (an exclusion rule, an address
    /// check): the script records it as the recipient's verdict unless an
    /// earlier verdict (a duplicate, the denylist, quarantine) stands.
    pub excluded: Option<Screened>,
}

/// One recipient's verdict, with the rule that excluded it when the verdict
/// is [`ScreenVerdict::ExcludedByRule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screened {
    pub verdict: ScreenVerdict,
    pub rule: Option<String>,
}

impl Screened {
    pub fn new(verdict: ScreenVerdict) -> Self {
        Self {
            verdict,
            rule: None,
        }
    }

    /// Excluded by the rule `name`.
    pub fn by_rule(name: &str) -> Self {
        Self {
            verdict: ScreenVerdict::ExcludedByRule,
            rule: Some(name.to_string()),
        }
    }

    /// As the script stores and answers it: the verdict's name, then
    /// `:rule` for a rule's exclusion (rule names have no `:` or `|`).
    pub fn encode(&self) -> String {
        match &self.rule {
            Some(r) => format!("{}:{r}", self.verdict.as_str()),
            None => self.verdict.as_str().to_string(),
        }
    }

    /// What [`Self::encode`] wrote.
    pub fn decode(raw: &str) -> Option<Self> {
        let (name, rule) = match raw.split_once(':') {
            Some((n, r)) => (n, Some(r.to_string())),
            None => (raw, None),
        };
        let verdict = ScreenVerdict::parse(name)?;
        if rule.is_some() != (verdict == ScreenVerdict::ExcludedByRule) {
            return None;
        }
        Some(Self { verdict, rule })
    }
}

/// What a screening call answers: one verdict per candidate, and the
/// version of the exclusion rules at that moment (so the expander knows,
/// without asking again, when to load them anew).
#[derive(Debug, Clone, Default)]
pub struct Screening {
    pub verdicts: Vec<Screened>,
    pub rules_version: u64,
}

/// What screening made of one recipient; the script answers with the
/// names of [`ScreenVerdict::as_str`], which are also the exclusion
/// reasons in status counts and `excluded` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScreenVerdict {
    /// Goes out.
    Accepted,
    /// Already in the request (an earlier part or position).
    Duplicate,
    /// On the denylist.
    Denylisted,
    /// Quarantined and not allowlisted.
    Quarantined,
    /// Held back as the request's control group.
    ControlGroup,
    /// Got a message of the same coalescing key within its window.
    Coalesced,
    /// Beyond the request's audience limit.
    TargetSizeLimited,
    /// Named by an exclusion rule (the rule's name goes with it).
    ExcludedByRule,
    /// Its domain has no mail host: no MX and no address, or a null MX.
    NoMailHost,
    /// Its domain looks like a typo of a large provider's.
    LikelyTypo,
}

impl ScreenVerdict {
    pub const ALL: [ScreenVerdict; 10] = [
        ScreenVerdict::Accepted,
        ScreenVerdict::Duplicate,
        ScreenVerdict::Denylisted,
        ScreenVerdict::Quarantined,
        ScreenVerdict::ControlGroup,
        ScreenVerdict::Coalesced,
        ScreenVerdict::TargetSizeLimited,
        ScreenVerdict::ExcludedByRule,
        ScreenVerdict::NoMailHost,
        ScreenVerdict::LikelyTypo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScreenVerdict::Accepted => "accepted",
            ScreenVerdict::Duplicate => "duplicate",
            ScreenVerdict::Denylisted => "denylisted",
            ScreenVerdict::Quarantined => "quarantined",
            ScreenVerdict::ControlGroup => "control_group",
            ScreenVerdict::Coalesced => "coalesced",
            ScreenVerdict::TargetSizeLimited => "target_size_limited",
            ScreenVerdict::ExcludedByRule => crate::rules::EXCLUDED_BY_RULE,
            ScreenVerdict::NoMailHost => "no_mail_host",
            ScreenVerdict::LikelyTypo => "likely_typo",
        }
    }

    /// The verdict the script named, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == name)
    }
}

/// Per-request screening options.
#[derive(Debug, Clone, Default)]
pub struct ScreenOptions {
    pub max_audience: Option<u64>,
    /// `(tenant, key, window)` of a coalescing request.
    pub coalesce: Option<(String, String, Duration)>,
    /// How long the request's keys live.
    pub ttl: Duration,
}

pub(super) const SCREEN_LUA: &str = r#"
-- KEYS[1] rcpts hash, KEYS[2] audience counter, KEYS[3] denylist,
-- KEYS[4] allowlist, KEYS[5] the exclusion rules' version, then per
-- recipient its quarantine key and, when coalescing, its coalescing key
-- ARGV[1] max audience (0 = none), ARGV[2] ttl seconds, ARGV[3] 1 when
-- coalescing, ARGV[4] coalesce window seconds,
-- then groups of 5: address, position, message id, control group flag,
-- the exclusion decided before ('' = none: a rule's or an address check's)
-- Answers one verdict per recipient, then the exclusion rules' version.
local max = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local coalescing = ARGV[3] == '1'
local cwindow = tonumber(ARGV[4])
local per = 1
if coalescing then per = 2 end
local out = {}
for i = 5, #ARGV, 5 do
  local addr, pos, mid, cg, pre = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local k = 6 + (i - 5) / 5 * per
  local verdict
  -- Claimed as accepted at once (the usual verdict, one command); a
  -- recipient seen before keeps its first verdict, and any other verdict
  -- overwrites the claim below.
  if redis.call('HSETNX', KEYS[1], addr, pos .. '|accepted') == 0 then
    local prev = redis.call('HGET', KEYS[1], addr)
    local sep = string.find(prev, '|', 1, true)
    if string.sub(prev, 1, sep - 1) == pos then
      verdict = string.sub(prev, sep + 1)
    else
      verdict = 'duplicate'
    end
  else
    if redis.call('SISMEMBER', KEYS[3], addr) == 1 then
      verdict = 'denylisted'
    elseif redis.call('EXISTS', KEYS[k]) == 1
        and redis.call('SISMEMBER', KEYS[4], addr) == 0 then
      verdict = 'quarantined'
    elseif pre ~= '' then
      -- 'excluded_by_rule:NAME', 'no_mail_host' or 'likely_typo'
      verdict = pre
    elseif cg == '1' then
      verdict = 'control_group'
    else
      verdict = 'accepted'
      if coalescing then
        local ckey = KEYS[k + 1]
        if not redis.call('SET', ckey, mid, 'NX', 'EX', cwindow) then
          if redis.call('GET', ckey) ~= mid then verdict = 'coalesced' end
        end
      end
      if verdict == 'accepted' and max > 0 then
        if redis.call('INCR', KEYS[2]) > max then verdict = 'target_size_limited' end
      end
    end
    if verdict ~= 'accepted' then
      redis.call('HSET', KEYS[1], addr, pos .. '|' .. verdict)
    end
  end
  out[#out + 1] = verdict
end
redis.call('EXPIRE', KEYS[1], ttl)
if max > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
out[#out + 1] = redis.call('GET', KEYS[5]) or '0'
return out
"#;

impl Store {
    /// Screens a batch of recipients: deduplication across the whole request
    /// (replays of the same position keep their first verdict), denylist,
    /// quarantine, the exclusion decided before, control group, coalescing
    /// and audience limit. Answers one verdict per candidate (`accepted` or
    /// an exclusion reason) and the exclusion rules' version.
    pub async fn screen(
        &self,
        request: &str,
        candidates: &[Candidate],
        opts: &ScreenOptions,
    ) -> Result<Screening, StoreError> {
        if candidates.is_empty() {
            return Ok(Screening {
                verdicts: Vec::new(),
                rules_version: self.rules_version().await?,
            });
        }
        let mut inv = self.screen.prepare_invoke();
        inv.key(self.key(&["req", request, "rcpts"]))
            .key(self.key(&["req", request, "audience"]))
            .key(self.key(&["denylist"]))
            .key(self.key(&["allowlist"]))
            .key(self.key(&["rules", "version"]))
            .arg(opts.max_audience.unwrap_or(0))
            .arg(opts.ttl.as_secs().max(1));
        let scope = opts
            .coalesce
            .as_ref()
            .map(|(tenant, key, _)| format!("{tenant}:{key}"));
        match &opts.coalesce {
            Some((_, _, window)) => {
                inv.arg(1).arg(window.as_secs().max(1));
            }
            None => {
                inv.arg(0).arg(0);
            }
        }
        for c in candidates {
            inv.key(self.key(&["quarantine", &c.address]));
            if let Some(scope) = &scope {
                inv.key(self.key(&["coalesce", scope, &c.address]));
            }
            inv.arg(&c.address)
                .arg(&c.position)
                .arg(&c.message_id)
                .arg(if c.control_group { "1" } else { "0" })
                .arg(
                    c.excluded
                        .as_ref()
                        .map(Screened::encode)
                        .unwrap_or_default(),
                );
        }
        let mut c = self.conn.clone();
        let mut names: Vec<String> = inv
            .invoke_async(&mut c)
            .await
            .map_err(op("screen recipients"))?;
        let version = names.pop().unwrap_or_default();
        let corrupt = |n: &str| StoreError::Corrupt {
            what: "screening verdict",
            detail: format!("{n:?}"),
        };
        Ok(Screening {
            rules_version: version.parse().map_err(|_| corrupt(&version))?,
            verdicts: names
                .iter()
                .map(|n| Screened::decode(n).ok_or_else(|| corrupt(n)))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdicts the expander decides before screening and passes in.
    const PASSED_IN: [ScreenVerdict; 3] = [
        ScreenVerdict::ExcludedByRule,
        ScreenVerdict::NoMailHost,
        ScreenVerdict::LikelyTypo,
    ];

    #[test]
    fn every_verdict_is_one_the_script_gives_and_reads_back() {
        for v in ScreenVerdict::ALL {
            assert_eq!(ScreenVerdict::parse(v.as_str()), Some(v));
            assert!(
                PASSED_IN.contains(&v) || SCREEN_LUA.contains(&format!("'{}'", v.as_str())),
                "the script never answers {}",
                v.as_str()
            );
            assert!(
                SCREEN_LUA.contains(v.as_str()),
                "the script does not name {}",
                v.as_str()
            );
        }
        assert_eq!(ScreenVerdict::parse("Accepted"), None);
        assert_eq!(ScreenVerdict::parse(""), None);
    }

    #[test]
    fn a_verdict_and_its_rule_read_back_as_the_script_stores_them() {
        let table = [
            (Screened::new(ScreenVerdict::Accepted), "accepted"),
            (Screened::new(ScreenVerdict::NoMailHost), "no_mail_host"),
            (
                Screened::by_rule("role-admin"),
                "excluded_by_rule:role-admin",
            ),
        ];
        for (s, raw) in table {
            assert_eq!(s.encode(), raw);
            assert_eq!(Screened::decode(raw), Some(s));
        }
        assert_eq!(
            Screened::decode("excluded_by_rule"),
            None,
            "a rule exclusion names its rule"
        );
        assert_eq!(Screened::decode("denylisted:x"), None);
        assert_eq!(Screened::decode("nonsense"), None);
    }
}

//! Screening recipients during expansion (`{p}:req:{rid}:rcpts`,
//! `{p}:req:{rid}:audience`, `{p}:coalesce:…`): one script decides each
//! recipient's verdict against the request's earlier parts, the address
//! lists, quarantine, the control group, coalescing and the audience limit.

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
}

impl ScreenVerdict {
    pub const ALL: [ScreenVerdict; 7] = [
        ScreenVerdict::Accepted,
        ScreenVerdict::Duplicate,
        ScreenVerdict::Denylisted,
        ScreenVerdict::Quarantined,
        ScreenVerdict::ControlGroup,
        ScreenVerdict::Coalesced,
        ScreenVerdict::TargetSizeLimited,
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
-- KEYS[1] rcpts hash, KEYS[2] audience counter
-- ARGV[1] prefix, ARGV[2] max audience (0 = none), ARGV[3] ttl seconds,
-- ARGV[4] coalesce scope ('' = none), ARGV[5] coalesce window seconds,
-- then groups of 4: address, position, message id, control group flag
local prefix = ARGV[1]
local max = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local cscope = ARGV[4]
local cwindow = tonumber(ARGV[5])
local out = {}
for i = 6, #ARGV, 4 do
  local addr, pos, mid, cg = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
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
    if redis.call('SISMEMBER', prefix .. ':denylist', addr) == 1 then
      verdict = 'denylisted'
    elseif redis.call('EXISTS', prefix .. ':quarantine:' .. addr) == 1
        and redis.call('SISMEMBER', prefix .. ':allowlist', addr) == 0 then
      verdict = 'quarantined'
    elseif cg == '1' then
      verdict = 'control_group'
    else
      verdict = 'accepted'
      if cscope ~= '' then
        local ckey = prefix .. ':coalesce:' .. cscope .. ':' .. addr
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
return out
"#;

impl Store {
    /// Screens a batch of recipients: deduplication across the whole request
    /// (replays of the same position keep their first verdict), denylist,
    /// quarantine, control group, coalescing and audience limit. Returns one
    /// verdict per candidate: `accepted` or an exclusion reason.
    pub async fn screen(
        &self,
        request: &str,
        candidates: &[Candidate],
        opts: &ScreenOptions,
    ) -> Result<Vec<ScreenVerdict>, StoreError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.screen.prepare_invoke();
        inv.key(self.key(&["req", request, "rcpts"]))
            .key(self.key(&["req", request, "audience"]))
            .arg(&self.prefix)
            .arg(opts.max_audience.unwrap_or(0))
            .arg(opts.ttl.as_secs().max(1));
        match &opts.coalesce {
            Some((tenant, key, window)) => {
                inv.arg(format!("{tenant}:{key}"))
                    .arg(window.as_secs().max(1));
            }
            None => {
                inv.arg("").arg(0);
            }
        }
        for c in candidates {
            inv.arg(&c.address)
                .arg(&c.position)
                .arg(&c.message_id)
                .arg(if c.control_group { "1" } else { "0" });
        }
        let mut c = self.conn.clone();
        let names: Vec<String> = inv
            .invoke_async(&mut c)
            .await
            .map_err(op("screen recipients"))?;
        names
            .iter()
            .map(|n| {
                ScreenVerdict::parse(n).ok_or_else(|| StoreError::Corrupt {
                    what: "screening verdict",
                    detail: format!("{n:?}"),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_is_one_the_script_gives_and_reads_back() {
        for v in ScreenVerdict::ALL {
            assert_eq!(ScreenVerdict::parse(v.as_str()), Some(v));
            assert!(
                SCREEN_LUA.contains(&format!("'{}'", v.as_str())),
                "the script never answers {}",
                v.as_str()
            );
        }
        assert_eq!(ScreenVerdict::parse("Accepted"), None);
        assert_eq!(ScreenVerdict::parse(""), None);
    }
}

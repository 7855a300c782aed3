//! Screening recipients during expansion (`{p}:req:{rid}:rcpts:{n}`,
//! `{p}:req:{rid}:audience`, `{p}:coalesce:…`): one script decides each
//! recipient's verdict against the request's earlier parts, the address
//! lists, quarantine, the exclusion the expander decided before (a rule, an
//! address check), the control group, coalescing and the audience limit.
//!
//! A request's verdicts are kept in buckets, `{p}:req:{rid}:rcpts:{n}` for
//! `n` in `0..buckets`, an address in bucket [`rcpt_bucket`]: hashes of
//! about [`RCPTS_PER_BUCKET`] fields, small enough that Redis keeps them as
//! listpacks (about 45 B a recipient where one hash of a whole campaign is
//! a hash table of about 98 B a recipient). The number of buckets is fixed
//! by the request's first screened part and kept in the request's hash
//! (`rcpt_buckets`, [`Store::rcpt_buckets`]), so that every part of the
//! request finds an address in the same bucket. A request whose screening
//! began in the single hash `{p}:req:{rid}:rcpts` (a version before the
//! buckets, or a request of one recipient) keeps using it: its bucket count
//! is 0. An earlier expander knows only the single hash: when it and a
//! newer one expand parts of the same request, an address repeated across
//! their parts is not found a duplicate. Its message still goes once (both
//! jobs have the same message id, and the first one's terminal record
//! stops the second), but the request counts it accepted twice and shows
//! it pending for ever: upgrade expanders while no multi-part request is
//! being expanded, or all at once.

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
    /// The request's verdict buckets ([`Store::rcpt_buckets`]); 0: the
    /// single hash `{p}:req:{rid}:rcpts`.
    pub buckets: u32,
}

/// The recipients a verdict bucket is sized for: half of Redis's default
/// `hash-max-listpack-entries` (128), so that a part larger than the first
/// one (up to twice as large on average) still leaves its buckets listpacks.
pub const RCPTS_PER_BUCKET: u64 = 64;

/// The most buckets a request gets (a request of some 4 million
/// recipients has as many as it needs).
pub const MAX_RCPT_BUCKETS: u64 = 65_536;

/// The bucket count a request's first screened part proposes: enough for
/// [`RCPTS_PER_BUCKET`] recipients a bucket if every part is as large as
/// this one, at least 1. [`Store::rcpt_buckets`] keeps the first proposal.
pub fn rcpt_bucket_count(parts_total: u32, part_recipients: usize) -> u32 {
    let n = u64::from(parts_total.max(1)) * part_recipients as u64;
    n.div_ceil(RCPTS_PER_BUCKET).clamp(1, MAX_RCPT_BUCKETS) as u32
}

/// The bucket of an address among `buckets` (FNV-1a of the address key:
/// the same in every version and process, spread evenly).
pub fn rcpt_bucket(address: &str, buckets: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in address.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(buckets.max(1))) as u32
}

/// A stored verdict (`position|verdict`, or in a bucket just `position` for
/// an accepted recipient) without its position.
pub fn stored_verdict(value: &str) -> &str {
    value.split_once('|').map_or("accepted", |(_, v)| v)
}

/// KEYS: the request hash, the request's single verdict hash. ARGV: the
/// proposed bucket count. Answers the request's bucket count: the one
/// stored, else 0 when the single hash already holds verdicts (a part
/// screened by a version before the buckets), else the proposal, stored.
pub(super) const RCPT_BUCKETS_LUA: &str = r#"
local n = redis.call('HGET', KEYS[1], 'rcpt_buckets')
if n then return tonumber(n) end
if redis.call('EXISTS', KEYS[2]) == 1 then n = 0 else n = tonumber(ARGV[1]) end
redis.call('HSET', KEYS[1], 'rcpt_buckets', n)
return n
"#;

pub(super) const SCREEN_LUA: &str = r#"
-- KEYS[1] audience counter, KEYS[2] denylist, KEYS[3] allowlist, KEYS[4]
-- the exclusion rules' version, then the verdict hashes (each once) and
-- per recipient its quarantine key and, when coalescing, its coalescing
-- key (declared once each too)
-- ARGV[1] max audience (0 = none), ARGV[2] ttl seconds, ARGV[3] 1 when
-- coalescing, ARGV[4] coalesce window seconds, ARGV[5] 1 when an accepted
-- verdict is stored as its position alone (the buckets), 0 as
-- 'position|accepted' (the single hash),
-- then groups of 8: address, position, message id, control group flag,
-- the exclusion decided before ('' = none: a rule's or an address check's),
-- the positions in KEYS of its verdict hash, quarantine key and coalescing
-- key (0 when not coalescing)
-- Answers one verdict per recipient, then the exclusion rules' version.
local max = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local coalescing = ARGV[3] == '1'
local cwindow = tonumber(ARGV[4])
local claim = '|accepted'
if ARGV[5] == '1' then claim = '' end
local out = {}
local touched, hashes = {}, {}
for i = 6, #ARGV, 8 do
  local addr, pos, mid, cg, pre = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local h, q, ck = KEYS[tonumber(ARGV[i+5])], KEYS[tonumber(ARGV[i+6])], tonumber(ARGV[i+7])
  if not touched[h] then
    touched[h] = true
    hashes[#hashes + 1] = h
  end
  local verdict
  -- Claimed as accepted at once (the usual verdict, one command); a
  -- recipient seen before keeps its first verdict, and any other verdict
  -- overwrites the claim below.
  if redis.call('HSETNX', h, addr, pos .. claim) == 0 then
    local prev = redis.call('HGET', h, addr)
    local sep = string.find(prev, '|', 1, true)
    local at, was = prev, 'accepted'
    if sep then at, was = string.sub(prev, 1, sep - 1), string.sub(prev, sep + 1) end
    if at == pos then
      verdict = was
    else
      verdict = 'duplicate'
    end
  else
    if redis.call('SISMEMBER', KEYS[2], addr) == 1 then
      verdict = 'denylisted'
    elseif redis.call('EXISTS', q) == 1
        and redis.call('SISMEMBER', KEYS[3], addr) == 0 then
      verdict = 'quarantined'
    elseif pre ~= '' then
      -- 'excluded_by_rule:NAME', 'no_mail_host' or 'likely_typo'
      verdict = pre
    elseif cg == '1' then
      verdict = 'control_group'
    else
      verdict = 'accepted'
      if coalescing then
        local ckey = KEYS[ck]
        if not redis.call('SET', ckey, mid, 'NX', 'EX', cwindow) then
          if redis.call('GET', ckey) ~= mid then verdict = 'coalesced' end
        end
      end
      if verdict == 'accepted' and max > 0 then
        if redis.call('INCR', KEYS[1]) > max then verdict = 'target_size_limited' end
      end
    end
    if verdict ~= 'accepted' then
      redis.call('HSET', h, addr, pos .. '|' .. verdict)
    end
  end
  out[#out + 1] = verdict
end
for _, h in ipairs(hashes) do redis.call('EXPIRE', h, ttl) end
if max > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
out[#out + 1] = redis.call('GET', KEYS[4]) or '0'
return out
"#;

impl Store {
    /// The verdict hash of `address` in a request of `buckets` buckets (0:
    /// the single hash).
    pub(crate) fn rcpts_key(&self, request: &str, address: &str, buckets: u32) -> String {
        if buckets == 0 {
            return self.key(&["req", request, "rcpts"]);
        }
        let n = rcpt_bucket(address, buckets).to_string();
        self.key(&["req", request, "rcpts", &n])
    }

    /// A request's verdict bucket count: the one its first screened part
    /// stored, else `proposed` ([`rcpt_bucket_count`]) stored now, or 0
    /// (the single hash) when a version before the buckets began screening
    /// the request. Every part of a request screens with the same count.
    pub async fn rcpt_buckets(&self, request: &str, proposed: u32) -> Result<u32, StoreError> {
        let mut c = self.conn.clone();
        let n: u32 = redis::Script::new(RCPT_BUCKETS_LUA)
            .key(self.key(&["req", request]))
            .key(self.key(&["req", request, "rcpts"]))
            .arg(proposed.max(1))
            .invoke_async(&mut c)
            .await
            .map_err(op("recipient buckets"))?;
        Ok(n)
    }

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
        let mut keys = crate::keyset::KeySet::with_fixed([
            self.key(&["req", request, "audience"]),
            self.key(&["denylist"]),
            self.key(&["allowlist"]),
            self.key(&["rules", "version"]),
        ]);
        inv.arg(opts.max_audience.unwrap_or(0))
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
        inv.arg(if opts.buckets > 0 { 1 } else { 0 });
        for c in candidates {
            let hash = keys.one(self.rcpts_key(request, &c.address, opts.buckets));
            let quarantine = keys.one(self.key(&["quarantine", &c.address]));
            let coalesce = match &scope {
                Some(scope) => keys.one(self.key(&["coalesce", scope, &c.address])),
                None => 0,
            };
            inv.arg(&c.address)
                .arg(&c.position)
                .arg(&c.message_id)
                .arg(if c.control_group { "1" } else { "0" })
                .arg(
                    c.excluded
                        .as_ref()
                        .map(Screened::encode)
                        .unwrap_or_default(),
                )
                .arg(hash)
                .arg(quarantine)
                .arg(coalesce);
        }
        for key in keys.keys() {
            inv.key(key);
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
    fn a_request_gets_a_bucket_for_every_64_recipients_it_may_have() {
        // (parts, recipients of the first screened part, buckets)
        let table = [
            (1, 0, 1),
            (1, 1, 1),
            (1, 64, 1),
            (1, 65, 2),
            (1, 100_000, 1563),
            (0, 100, 2),
            (10, 10_000, 1563),
            (3, 1, 1),
            (1000, 100_000, 65_536),
        ];
        for (parts, recipients, want) in table {
            assert_eq!(
                rcpt_bucket_count(parts, recipients),
                want,
                "{parts} parts of {recipients}"
            );
        }
    }

    #[test]
    fn an_address_always_falls_in_the_same_bucket_and_buckets_fill_evenly() {
        // Fixed across versions: a request screened in parts by two
        // versions must find an address where the other put it.
        assert_eq!(rcpt_bucket("user1@example.com", 1563), 71);
        assert_eq!(rcpt_bucket("user1@example.com", 1), 0);
        assert_eq!(rcpt_bucket("anything", 0), 0);
        let buckets = 1563;
        let mut sizes = vec![0u32; buckets as usize];
        for i in 0..100_000 {
            sizes[rcpt_bucket(&format!("user{i}@bench.example"), buckets) as usize] += 1;
        }
        let largest = *sizes.iter().max().unwrap();
        assert!(
            largest <= 128,
            "the largest of {buckets} buckets holds {largest} of 100,000 addresses"
        );
    }

    #[test]
    fn a_stored_verdict_reads_the_same_in_both_layouts() {
        for (stored, verdict) in [
            ("1:5|accepted", "accepted"),
            ("1:5", "accepted"),
            ("2:7|duplicate", "duplicate"),
            ("1:0|excluded_by_rule:roles", "excluded_by_rule:roles"),
        ] {
            assert_eq!(stored_verdict(stored), verdict, "{stored}");
        }
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

//! The Redis calls a sender makes for every message — its gate and lease,
//! the sending policy's verdict, its terminal record — as one script that
//! serves any mix of them in one round trip, in order.
//!
//! A busy sender has dozens of messages in flight, each at its own step; it
//! gathers whatever they ask at the moment and sends it as one
//! [`Store::calls`](crate::store::Store::calls). One script for all three
//! kinds means one round trip, and one script invocation on the server, for
//! all of them, where three scripts would need three.
//! [`Store::record_done`](crate::store::Store::record_done), which the
//! retrier and the operator CLI use too, is the same script with one call.
//!
//! This module builds on [`crate::store`] (its types and connection) and
//! on [`crate::policy`]'s ask and verdict; neither of them imports it.
//!
//! Over 500 lines: the script (some 300 lines of Lua) and the Rust that
//! writes its arguments and reads its answers change together, so they stay
//! in one file.

use std::sync::LazyLock;
use std::time::Duration;

use crate::keyset::KeySet;
use crate::policy::{Ask, Verdict};
use crate::store::{
    key_of, DoneRecord, DoneWrite, Gate, GateRequest, MarkRequest, Store, StoreError,
};

const CALLS_LUA: &str = r#"
-- Every key is declared in KEYS, each once (crate::keyset): KEYS 1 the
-- deferred index, 2 its info hash, 3 the index of sites, then groups of
-- keys that the calls name by the position of their first key:
--   message  done, lease, dot (a gate's, a terminal record's) (M)
--   request  req, req:deferred, cancelled, held       (R)
--   domain   pause, limit, slow, conc, tat            (D)
--   site     site:pause, site:limit, site:ctl, site:conc, site:tat (S)
--   route    rconc, rtat (0: the route has no limits) (T)
--   domain counts  the breaker's minute bucket, seen  (C)
--   site counts    site:seen, site:domains            (Z)
-- ARGV: 1 lease ttl ms, 2 breaker window s, 3 time constant ms of the
-- decaying attempt counts (crate::slowdown), 4 now in Unix ms ('' = the
-- server's clock, which every sender shares), then the calls, each a tag
-- and its fields:
--   g  message, request, retried (1/0), owner, M, R
--      the message's terminal record, its campaign's operator flags, and
--      its lease, taken atomically with the check that nothing ended it;
--      answers status (0 leased, 1 done, 2 cancelled, 3 held, 4 leased by
--      another, 5 leased but a delivery left its "data sent" mark)
--      and value (the record, the lease's ms left, or the mark's owner)
--   m  owner, ttl s, the position of the message's dot key
--      "data sent, awaiting reply", written before the final dot; answers 1
--   a  domain, route, domain interval ms (0 none), domain burst, domain
--      concurrency (0 none), route interval ms (0 none), route
--      concurrency (0 none), lease id, site, the site's MX rule: interval
--      ms (0 none), burst (0 none), concurrency (0 none), messages per
--      connection (0 none), 1 when the site's adaptive rate applies, the
--      position of the warm-up count's key (0 none: sending domain, site,
--      day), its cap, ms until its day ends, the longest the message may
--      still wait for a rate (ms), D, S, T
--      whether and when the message may go; answers status (0 go, 1 wait,
--      2 paused), ms (for go: until its reserved time, to be waited out
--      without asking again; for wait and paused: how long), 1 if
--      concurrency leases were taken, and the site's messages per
--      connection (0 none)
--      A message held back only by rates reserves its place: the rates'
--      next free time within its longest wait is taken for it at once, so
--      waiting messages do not ask again and go in the order they asked.
--      Its attempt is not counted here: the caller counts the messages that
--      went and adds them with an `n` call.
--   n  domain, site, count, C, Z
--      count attempts that went to the domain at the site (the breaker's
--      minute bucket, the decaying attempt counts, the index of sites);
--      a sender adds up its attempts and counts them a few times a second
--      and before it counts any failure; answers 1
--   d  request, record, ttl s, position of the address's soft-failure
--      counter a delivery resets (0 none), request counters to raise
--      (space-separated), M, R
--      the terminal record, counted only when new; answers 1 if new. The
--      message's lease and "data sent" mark go with it, whoever holds
--      them: once a record exists every gate answers it before it looks
--      at a lease, so a lease left until it expires would only hold memory
-- What does not change within one call is read once: a campaign's flags,
-- a domain's pause and run-time limits, the server's clock; a rate's place
-- is read once and written once per call, however many messages take one;
-- counters are raised once per request and field, breaker attempts and the
-- decaying attempt count once per domain.
local ttl, window, tau = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local now = tonumber(ARGV[4])
local flags, pauses, overrides, slows = {}, {}, {}, {}
local spauses, soverrides, srates, warms = {}, {}, {}, {}
local attempts, touched, count_keys = {}, {}, {}
local site_attempts, sites_touched, site_keys, site_domains = {}, {}, {}, {}
local counts, order = {}, {}
local tats, tat_keys, tat_taken = {}, {}, {}
local wait
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
end
-- GCRA: a rate's theoretical arrival time (never before now), nil without
-- a rate; a message may go once `tat - interval * (burst - 1)` is reached.
-- Read once per call: the places this call takes are kept in `tats`.
local function tat_of(key, interval)
  if interval <= 0 then return nil end
  local tat = tats[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key) or '0')
    tats[key] = tat
  end
  if tat < now then tat = now end
  return tat
end
local function earliest(at, tat, interval, burst)
  if not tat then return at end
  return math.max(at, tat - interval * math.max(burst - 1, 0))
end
-- Takes the rate's place for a message that goes at `at` (written once,
-- at the end of the call).
local function reserve(key, tat, interval, at)
  if not tat then return end
  if not tat_taken[key] then
    tat_taken[key] = true
    tat_keys[#tat_keys + 1] = key
  end
  tats[key] = math.max(tat, at) + interval
end
-- A domain's interval under its slow-down (key: the domain's slow-down):
-- its limit's, or without one the base the slow-down measured, divided by
-- the factor of the moment.
local function slowed(domain, key, dint)
  local sl = slows[domain]
  if sl == nil then
    sl = redis.call('HMGET', key, 'factor', 'since', 'until', 'base')
    slows[domain] = sl
  end
  if not sl[1] then return dint end
  local base = dint
  if base <= 0 then base = tonumber(sl[4]) or 0 end
  if base <= 0 then return dint end
  local f = tonumber(sl[1])
  local since, untl = tonumber(sl[2]), tonumber(sl[3])
  if not (now < untl and untl > since) then return dint end
  f = f + (1 - f) * (now - since) / (untl - since)
  if f > 0.01 then return base / f end
  return base * 100
end
local function room(key, limit)
  if limit <= 0 then return end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= limit then wait = math.max(wait, 20) end
end

local function gate(mid, req, retried, owner, m, r)
  local rkey, rz = KEYS[r], KEYS[r + 1]
  -- Taken again: out of the deferred index (a retry, or a message a
  -- sender deferred, which its request's index names).
  if retried == '1' or redis.call('ZSCORE', rz, mid) then
    unindex_deferred(KEYS[1], KEYS[2], rkey, rz, req, mid)
  end
  local done = redis.call('GET', KEYS[m])
  if done then return '1', done end
  local flag = flags[req]
  if not flag then
    local cancelled, held = KEYS[r + 2], KEYS[r + 3]
    flag = '0'
    if redis.call('EXISTS', cancelled, held) > 0 then
      if redis.call('EXISTS', cancelled) == 1 then flag = '2' else flag = '3' end
    end
    flags[req] = flag
  end
  if flag ~= '0' then return flag, '' end
  local lease = KEYS[m + 1]
  local taken = redis.call('SET', lease, owner, 'NX', 'PX', ttl)
  -- The same delivery again (after a Redis error): it still holds the lease.
  if not taken and redis.call('GET', lease) == owner then
    redis.call('PEXPIRE', lease, ttl)
    taken = true
  end
  if not taken then return '4', tostring(redis.call('PTTL', lease)) end
  -- A mark left by any delivery (this one too, when Redis failed after its
  -- dot) means an answer was never recorded.
  local mark = redis.call('GET', KEYS[m + 2])
  if mark then return '5', mark end
  return '0', ''
end

local function acquire(domain, route, dint, dburst, dconc, rint, rconc, lease, site,
    sint, sburst, sconc, sper, adaptive, wkey, wcap, wleft, maxwait, d, s, r)
  clock()
  local paused = pauses[domain]
  if paused == nil then
    paused = redis.call('PTTL', KEYS[d])
    pauses[domain] = paused
  end
  if paused > 0 then return 2, paused, 0, 0 end
  -- The site: its pause (an operator's, or the controller's suspension),
  -- its MX rule (run-time over configured) and its adaptive rate.
  local spaused = spauses[site]
  if spaused == nil then
    spaused = redis.call('PTTL', KEYS[s])
    spauses[site] = spaused
  end
  if spaused > 0 then return 2, spaused, 0, 0 end
  -- Warm-up: past the day's cap, the message waits for the next day.
  local wcount
  if wkey > 0 then
    wcount = warms[wkey]
    if wcount == nil then wcount = tonumber(redis.call('GET', KEYS[wkey]) or '0') end
    warms[wkey] = wcount
    if wcount >= tonumber(wcap) then return 1, tonumber(wleft), 0, 0 end
  end
  local sov = soverrides[site]
  if sov == nil then
    sov = redis.call('HMGET', KEYS[s + 1], 'interval_ms', 'burst', 'concurrency', 'per_connection')
    soverrides[site] = sov
  end
  sint = tonumber(sov[1]) or tonumber(sint)
  sburst = tonumber(sov[2]) or tonumber(sburst)
  sconc = tonumber(sov[3]) or tonumber(sconc)
  sper = tonumber(sov[4]) or tonumber(sper)
  if adaptive == '1' then
    local srate = srates[site]
    if srate == nil then
      srate = tonumber(redis.call('HGET', KEYS[s + 2], 'rate')) or 0
      srates[site] = srate
    end
    if srate > 0 and 1000 / srate > sint then sint = 1000 / srate end
  end
  -- Without a burst of its own, a site takes a tenth of a second's worth.
  if sburst <= 0 and sint > 0 then sburst = math.max(1, math.floor(100 / sint)) end
  local ov = overrides[domain]
  if ov == nil then
    ov = redis.call('HMGET', KEYS[d + 1], 'interval_ms', 'burst', 'concurrency')
    overrides[domain] = ov
  end
  dint = tonumber(ov[1]) or tonumber(dint)
  dconc = tonumber(ov[3]) or tonumber(dconc)
  rint, rconc = tonumber(rint), tonumber(rconc)
  local leased = 0
  local at = now
  dint = slowed(domain, KEYS[d + 2], dint)
  -- Without any limit there is nothing to spend: only the attempt counts.
  if dint > 0 or dconc > 0 or rint > 0 or rconc > 0 or sint > 0 or sconc > 0 then
    dburst = tonumber(ov[2]) or tonumber(dburst)
    wait = 0
    local dcon, rcon, scon = KEYS[d + 3], KEYS[r], KEYS[s + 3]
    room(dcon, dconc)
    room(rcon, rconc)
    room(scon, sconc)
    if wait > 0 then return 1, math.ceil(wait), 0, 0 end
    local dkey, rkey, skey = KEYS[d + 4], KEYS[r + 1], KEYS[s + 4]
    local dtat, rtat, stat = tat_of(dkey, dint), tat_of(rkey, rint), tat_of(skey, sint)
    at = earliest(earliest(earliest(now, dtat, dint, dburst), rtat, rint, 1), stat, sint, sburst)
    if at - now > tonumber(maxwait) then return 1, math.ceil(at - now), 0, 0 end
    reserve(dkey, dtat, dint, at)
    reserve(rkey, rtat, rint, at)
    reserve(skey, stat, sint, at)
    local lttl = tonumber(ttl)
    if sconc > 0 then
      redis.call('ZADD', scon, now + lttl, lease)
      redis.call('PEXPIRE', scon, lttl)
      leased = 1
    end
    if dconc > 0 then
      redis.call('ZADD', dcon, now + lttl, lease)
      redis.call('PEXPIRE', dcon, lttl)
      leased = 1
    end
    if rconc > 0 then
      redis.call('ZADD', rcon, now + lttl, lease)
      redis.call('PEXPIRE', rcon, lttl)
      leased = 1
    end
  end
  if wkey > 0 then
    warms[wkey] = wcount + 1
    redis.call('INCR', KEYS[wkey])
    redis.call('PEXPIRE', KEYS[wkey], 172800000)
  end
  return 0, math.ceil(at - now), leased, sper
end

local function count(domain, site, n, c, z)
  clock()
  n = tonumber(n) or 0
  if n <= 0 then return end
  if not attempts[domain] then
    attempts[domain] = 0
    touched[#touched + 1] = domain
    count_keys[domain] = c
  end
  attempts[domain] = attempts[domain] + n
  if not site_attempts[site] then
    site_attempts[site] = 0
    sites_touched[#sites_touched + 1] = site
    site_keys[site] = z
  end
  site_attempts[site] = site_attempts[site] + n
  site_domains[site .. '\0' .. domain] = {site, domain}
end

local function done(req, record, rttl, reset, counters, m, r)
  -- The answer is recorded: the attempt is no longer in doubt, and the
  -- lease no longer guards anything.
  redis.call('DEL', KEYS[m + 1], KEYS[m + 2])
  if not redis.call('SET', KEYS[m], record, 'NX', 'EX', rttl) then return '0' end
  for field in string.gmatch(counters, '%S+') do
    local k = req .. '\0' .. field
    if not counts[k] then
      counts[k] = 0
      order[#order + 1] = {KEYS[r], field, k}
    end
    counts[k] = counts[k] + 1
  end
  if reset > 0 then redis.call('DEL', KEYS[reset]) end
  return '1'
end

local i = 5
while i <= #ARGV do
  local tag = ARGV[i]
  if tag == 'g' then
    local status, value = gate(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]))
    out[#out + 1] = status
    out[#out + 1] = value
    i = i + 7
  elseif tag == 'a' then
    local status, ms, leased, per = acquire(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10],
      ARGV[i + 11], ARGV[i + 12], ARGV[i + 13], ARGV[i + 14], tonumber(ARGV[i + 15]),
      ARGV[i + 16], ARGV[i + 17], ARGV[i + 18], tonumber(ARGV[i + 19]),
      tonumber(ARGV[i + 20]), tonumber(ARGV[i + 21]))
    out[#out + 1] = tostring(status)
    out[#out + 1] = tostring(ms)
    out[#out + 1] = tostring(leased)
    out[#out + 1] = tostring(per)
    i = i + 22
  elseif tag == 'm' then
    redis.call('SET', KEYS[tonumber(ARGV[i + 3])], ARGV[i + 1], 'EX', ARGV[i + 2])
    out[#out + 1] = '1'
    i = i + 4
  elseif tag == 'n' then
    count(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]))
    out[#out + 1] = '1'
    i = i + 6
  elseif tag == 'd' then
    out[#out + 1] = done(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]),
      ARGV[i + 5], tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]))
    i = i + 8
  else
    return redis.error_reply('mailpipe calls: unknown call ' .. tostring(tag))
  end
end
for _, key in ipairs(tat_keys) do
  local tat = tats[key]
  redis.call('SET', key, tostring(tat), 'PX', math.ceil(tat - now) + 1000)
end
for _, domain in ipairs(touched) do
  local ck = count_keys[domain]
  local bucket = KEYS[ck]
  redis.call('HINCRBY', bucket, 'a', attempts[domain])
  redis.call('EXPIRE', bucket, window + 120)
  -- The decaying count: c at t, counted since f.
  local seen = KEYS[ck + 1]
  local s = redis.call('HMGET', seen, 'c', 't', 'f')
  local c, t, f = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
  if c and t and f then c = c * math.exp(-math.max(now - t, 0) / tau) else c, f = 0, now end
  redis.call('HSET', seen, 'c', tostring(c + attempts[domain]), 't', tostring(now), 'f', tostring(f))
  redis.call('PEXPIRE', seen, tau * 6)
end
-- Sites: the decaying attempt count, the index of sites by last attempt,
-- and the domains seen at each (for operators), kept a day.
for _, site in ipairs(sites_touched) do
  local seen = KEYS[site_keys[site]]
  local s = redis.call('HMGET', seen, 'c', 't', 'f')
  local c, t, f = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
  if c and t and f then c = c * math.exp(-math.max(now - t, 0) / tau) else c, f = 0, now end
  redis.call('HSET', seen, 'c', tostring(c + site_attempts[site]), 't', tostring(now), 'f', tostring(f))
  redis.call('PEXPIRE', seen, 86400000)
  redis.call('ZADD', KEYS[3], now, site)
end
for _, sd in pairs(site_domains) do
  local key = KEYS[site_keys[sd[1]] + 1]
  redis.call('SADD', key, sd[2])
  redis.call('PEXPIRE', key, 86400000)
end
for _, c in ipairs(order) do
  redis.call('HINCRBY', c[1], c[2], counts[c[3]])
end
return out
"#;

/// One call of [`Store::calls`](crate::store::Store::calls).
#[derive(Debug, Clone)]
pub enum Call {
    /// Check a message and take its lease.
    Gate(GateRequest),
    /// Ask the sending policy whether a message may go now.
    Acquire(Ask),
    /// Write a terminal record.
    Done(DoneWrite),
    /// Mark a message "data sent, awaiting reply".
    Mark(MarkRequest),
    /// Count attempts that went to a domain: its breaker's and its site's
    /// attempt counts ([`Call::Acquire`] does not count them).
    Attempts(AttemptCount),
}

/// Attempts of messages that went to `domain` at `site`, counted by a
/// sender and added to the shared counts in one [`Call::Attempts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptCount {
    pub domain: String,
    pub site: String,
    pub count: u64,
}

/// The answer to a [`Call`], of the same kind.
#[derive(Debug, Clone)]
pub enum Answer {
    Gate(Gate),
    Acquire(Verdict),
    /// Whether the record is new (and was counted).
    Done(bool),
    Mark,
    Attempts,
}

/// The keys of one call of the script, each declared once, in the groups
/// the script reads ([`CALLS_LUA`]'s header).
struct CallKeys<'a> {
    set: KeySet,
    prefix: &'a str,
    /// The minute of the breaker's bucket that attempts are counted in.
    minute: i64,
}

impl<'a> CallKeys<'a> {
    fn new(prefix: &'a str, now_ms: Option<i64>) -> Self {
        let key = |parts: &[&str]| key_of(prefix, parts);
        Self {
            set: KeySet::with_fixed([
                key(&["deferred"]),
                key(&["deferred", "info"]),
                key(&["sites"]),
            ]),
            prefix,
            minute: now_ms.unwrap_or_else(crate::unix_now_ms).div_euclid(60_000),
        }
    }

    fn key(&self, parts: &[&str]) -> String {
        key_of(self.prefix, parts)
    }

    /// A message's keys: a gate's, and a terminal record's.
    fn message(&mut self, mid: &str) -> usize {
        let p = self.prefix;
        self.set.group(&format!("message\0{mid}"), || {
            [
                key_of(p, &["done", mid]),
                key_of(p, &["lease", mid]),
                key_of(p, &["dot", mid]),
            ]
        })
    }

    /// A mark's key.
    fn mark(&mut self, mid: &str) -> usize {
        let dot = self.key(&["dot", mid]);
        self.set.one(dot)
    }

    fn request(&mut self, req: &str) -> usize {
        let p = self.prefix;
        self.set.group(&format!("request\0{req}"), || {
            [
                key_of(p, &["req", req]),
                key_of(p, &["req", req, "deferred"]),
                key_of(p, &["cancelled", req]),
                key_of(p, &["held", req]),
            ]
        })
    }

    fn domain(&mut self, domain: &str) -> usize {
        let p = self.prefix;
        self.set.group(&format!("domain\0{domain}"), || {
            [
                key_of(p, &["pause", domain]),
                key_of(p, &["limit", domain]),
                key_of(p, &["slow", domain]),
                key_of(p, &["conc", domain]),
                key_of(p, &["tat", domain]),
            ]
        })
    }

    fn site(&mut self, site: &str) -> usize {
        let p = self.prefix;
        self.set.group(&format!("site\0{site}"), || {
            [
                key_of(p, &["site", "pause", site]),
                key_of(p, &["site", "limit", site]),
                key_of(p, &["site", "ctl", site]),
                key_of(p, &["site", "conc", site]),
                key_of(p, &["site", "tat", site]),
            ]
        })
    }

    fn route(&mut self, route: &str) -> usize {
        let p = self.prefix;
        self.set.group(&format!("route\0{route}"), || {
            [key_of(p, &["rconc", route]), key_of(p, &["rtat", route])]
        })
    }

    fn domain_counts(&mut self, domain: &str) -> usize {
        let p = self.prefix;
        let minute = self.minute.to_string();
        self.set.group(&format!("counts\0{domain}"), || {
            [
                key_of(p, &["brk", domain, &minute]),
                key_of(p, &["seen", domain]),
            ]
        })
    }

    fn site_counts(&mut self, site: &str) -> usize {
        let p = self.prefix;
        self.set.group(&format!("site counts\0{site}"), || {
            [
                key_of(p, &["site", "seen", site]),
                key_of(p, &["site", "domains", site]),
            ]
        })
    }
}

/// Appends the script's keys and arguments for `calls`.
pub(crate) fn arguments(
    inv: &mut redis::ScriptInvocation<'_>,
    prefix: &str,
    calls: &[Call],
    lease: Duration,
    breaker_window: Duration,
    now_ms: Option<i64>,
) {
    let ms = |d: Option<Duration>| d.map(|i| i.as_secs_f64() * 1000.0).unwrap_or(0.0);
    let mut keys = CallKeys::new(prefix, now_ms);
    inv.arg(lease.as_millis().max(1) as u64)
        .arg(breaker_window.as_secs())
        .arg(crate::slowdown::SEEN_TAU_MS)
        .arg(now_ms.map(|t| t.to_string()).unwrap_or_default());
    for call in calls {
        match call {
            Call::Gate(g) => {
                inv.arg("g")
                    .arg(&g.message)
                    .arg(&g.request)
                    .arg(if g.retried { "1" } else { "0" })
                    .arg(&g.owner)
                    .arg(keys.message(&g.message))
                    .arg(keys.request(&g.request));
            }
            Call::Acquire(a) => {
                inv.arg("a")
                    .arg(&a.domain)
                    .arg(&a.route.name)
                    .arg(ms(a.limits.rate.map(|r| r.interval())))
                    .arg(a.limits.burst.unwrap_or(1))
                    .arg(a.limits.concurrency.unwrap_or(0))
                    .arg(ms(a.route.interval))
                    .arg(a.route.concurrency.unwrap_or(0))
                    .arg(&a.lease_id)
                    .arg(&a.site)
                    .arg(ms(a.site_limits.rate.map(|r| r.interval())))
                    .arg(a.site_limits.burst.unwrap_or(0))
                    .arg(a.site_limits.concurrency.unwrap_or(0))
                    .arg(a.site_limits.messages_per_connection.unwrap_or(0))
                    .arg(if a.adaptive { "1" } else { "0" });
                match &a.warmup {
                    Some(w) => inv
                        .arg({
                            let warm = keys.key(&["warm", &w.key]);
                            keys.set.one(warm)
                        })
                        .arg(w.cap)
                        .arg(w.day_left.as_millis() as u64),
                    None => inv.arg(0).arg(0).arg(0),
                };
                inv.arg(a.max_wait.as_millis() as u64)
                    .arg(keys.domain(&a.domain))
                    .arg(keys.site(&a.site))
                    .arg(
                        if a.route.interval.is_some_and(|i| !i.is_zero())
                            || a.route.concurrency.unwrap_or(0) > 0
                        {
                            keys.route(&a.route.name)
                        } else {
                            0
                        },
                    );
            }
            Call::Mark(m) => {
                inv.arg("m")
                    .arg(&m.owner)
                    .arg(m.ttl.as_secs().max(1))
                    .arg(keys.mark(&m.message));
            }
            Call::Attempts(n) => {
                inv.arg("n")
                    .arg(&n.domain)
                    .arg(&n.site)
                    .arg(n.count)
                    .arg(keys.domain_counts(&n.domain))
                    .arg(keys.site_counts(&n.site));
            }
            Call::Done(d) => {
                let reset = match d.reset_address.as_deref() {
                    Some(addr) if !addr.is_empty() => {
                        let errors = keys.key(&["errors", addr]);
                        keys.set.one(errors)
                    }
                    _ => 0,
                };
                inv.arg("d")
                    .arg(&d.record.request)
                    .arg(d.record.encode())
                    .arg(d.ttl.as_secs().max(1))
                    .arg(reset)
                    .arg(&d.counters)
                    .arg(keys.message(&d.message))
                    .arg(keys.request(&d.record.request));
            }
        }
    }
    for key in keys.set.keys() {
        inv.key(key);
    }
}

/// Reads the script's flat reply as one answer per call.
pub(crate) fn answers(calls: &[Call], reply: Vec<String>) -> Result<Vec<Answer>, StoreError> {
    let wanted: usize = calls
        .iter()
        .map(|c| match c {
            Call::Gate(_) => 2,
            Call::Acquire(_) => 4,
            Call::Done(_) | Call::Mark(_) | Call::Attempts(_) => 1,
        })
        .sum();
    if reply.len() != wanted {
        return Err(StoreError::Corrupt {
            what: "calls reply",
            detail: format!(
                "{} values for {} calls ({wanted} expected)",
                reply.len(),
                calls.len()
            ),
        });
    }
    let mut values = reply.iter().map(String::as_str);
    let mut next = || values.next().unwrap_or_default();
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        out.push(match call {
            Call::Gate(_) => {
                let (status, value) = (next(), next());
                let mut gate = Gate::default();
                match status {
                    "0" => {}
                    "1" => gate.done = Some(DoneRecord::decode(value)?),
                    "2" => gate.cancelled = true,
                    "3" => gate.held = true,
                    "5" => gate.ambiguous = Some(value.to_string()),
                    _ => {
                        let ms = value.parse::<i64>().unwrap_or(0).max(1);
                        gate.lease_wait = Some(Duration::from_millis(ms as u64));
                    }
                }
                Answer::Gate(gate)
            }
            Call::Acquire(a) => {
                let (status, ms, leased, per) = (next(), next(), next(), next());
                let d = Duration::from_millis(ms.parse::<i64>().unwrap_or(0).max(0) as u64);
                Answer::Acquire(match status {
                    "0" => Verdict::Go {
                        lease: (leased == "1").then(|| a.lease_id.clone()),
                        per_connection: per.parse::<u32>().ok().filter(|n| *n > 0),
                        after: d,
                    },
                    "2" => Verdict::Paused(d),
                    _ => Verdict::Wait(d),
                })
            }
            Call::Done(_) => Answer::Done(next() == "1"),
            Call::Mark(_) => {
                next();
                Answer::Mark
            }
            Call::Attempts(_) => {
                next();
                Answer::Attempts
            }
        });
    }
    Ok(out)
}

/// The calls script, hashed once per process.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{}\n{CALLS_LUA}",
        crate::store::INDEX_FUNCTIONS_LUA
    ))
});

impl Store {
    /// Runs any mix of the per-message calls of a sender in one round trip,
    /// in order ([`crate::calls`]); the answers come back in the order of
    /// `calls`. `lease` is the ttl of message and concurrency leases,
    /// `breaker_window` the domain breaker's window.
    pub async fn calls(
        &self,
        calls: &[Call],
        lease: Duration,
        breaker_window: Duration,
    ) -> Result<Vec<Answer>, StoreError> {
        self.calls_at(calls, lease, breaker_window, None).await
    }

    /// [`Self::calls`] at a given time (Unix ms) instead of the server's
    /// clock, which every sender shares: for tests of the script's
    /// decisions with time passed in.
    pub async fn calls_at(
        &self,
        calls: &[Call],
        lease: Duration,
        breaker_window: Duration,
        now_ms: Option<i64>,
    ) -> Result<Vec<Answer>, StoreError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = SCRIPT.prepare_invoke();
        arguments(
            &mut inv,
            self.prefix(),
            calls,
            lease,
            breaker_window,
            now_ms,
        );
        let mut c = self.connection();
        let reply: Vec<String> =
            inv.invoke_async(&mut c)
                .await
                .map_err(|source| StoreError::Redis {
                    op: "calls",
                    source,
                })?;
        answers(calls, reply)
    }

    /// Records a terminal state; returns `false` when the message already had
    /// one (then nothing is counted). `counters` are the request-hash fields
    /// to raise, e.g. `["sent"]` or `["dead", "dead:user_unknown"]`.
    pub async fn record_done(
        &self,
        message: &str,
        record: &DoneRecord,
        counters: &[&str],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let new = self
            .record_done_many(&[DoneWrite {
                message: message.to_string(),
                record: record.clone(),
                counters: counters.join(" "),
                reset_address: None,
                ttl,
            }])
            .await?;
        Ok(new.first().copied().unwrap_or(false))
    }

    /// Records the terminal states of many messages in one round trip;
    /// for each, whether its record is new (only new records are counted).
    pub async fn record_done_many(&self, writes: &[DoneWrite]) -> Result<Vec<bool>, StoreError> {
        let calls: Vec<Call> = writes.iter().cloned().map(Call::Done).collect();
        let answers = self.calls(&calls, Duration::ZERO, Duration::ZERO).await?;
        Ok(answers
            .into_iter()
            .filter_map(|a| match a {
                Answer::Done(new) => Some(new),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RouteLimits;
    use crate::store::DoneRecord;

    fn calls() -> Vec<Call> {
        vec![
            Call::Gate(GateRequest {
                message: "m1".into(),
                request: "r".into(),
                retried: false,
                owner: "o".into(),
            }),
            Call::Acquire(Ask {
                domain: "example.com".into(),
                site: "example.com".into(),
                limits: Default::default(),
                site_limits: Default::default(),
                adaptive: false,
                warmup: None,
                route: RouteLimits::default(),
                lease_id: "o:m1".into(),
                max_wait: Duration::from_millis(500),
            }),
            Call::Done(DoneWrite::sent(
                "m0",
                DoneRecord::default(),
                "a@example.com",
                Duration::from_secs(60),
            )),
            Call::Gate(GateRequest {
                message: "m2".into(),
                request: "r".into(),
                retried: true,
                owner: "o".into(),
            }),
            Call::Attempts(AttemptCount {
                domain: "example.com".into(),
                site: "example.com".into(),
                count: 3,
            }),
        ]
    }

    #[test]
    fn a_mixed_reply_is_read_as_one_answer_per_call_in_order() {
        let reply = ["0", "", "0", "7", "1", "50", "1", "4", "1500", "1"]
            .map(String::from)
            .to_vec();
        let answers = answers(&calls(), reply).unwrap();
        assert!(
            matches!(&answers[0], Answer::Gate(g) if g.lease_wait.is_none() && g.done.is_none())
        );
        assert!(
            matches!(&answers[1], Answer::Acquire(Verdict::Go { lease: Some(l), per_connection: Some(50), after }) if l == "o:m1" && *after == Duration::from_millis(7))
        );
        assert!(matches!(answers[2], Answer::Done(true)));
        assert!(
            matches!(&answers[3], Answer::Gate(g) if g.lease_wait == Some(Duration::from_millis(1500)))
        );
        assert!(matches!(answers[4], Answer::Attempts));
    }

    #[test]
    fn a_reply_of_the_wrong_length_is_an_error_not_a_guess() {
        let reply = ["0", "", "0", "0"].map(String::from).to_vec();
        assert!(matches!(
            answers(&calls(), reply),
            Err(StoreError::Corrupt { .. })
        ));
    }
}

//! mailpipe's shared state in Redis.
//!
//! Keys (all under the configured prefix `{p}`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `{p}:content:{id}` | string | a request's templates (JSON), content-addressed |
//! | `{p}:req:{rid}` | hash | request metadata and terminal-state counters |
//! | `{p}:req:{rid}:parts` | hash | per part: the expansion counts (JSON), written once the part is fully published |
//! | `{p}:req:{rid}:rcpts:{n}` | hash | the request's screening verdicts in buckets (`screen.rs`): address → `position` (accepted) or `position|verdict`, deduplication across parts, replay-safe; the number of buckets in `{p}:req:{rid}` (`rcpt_buckets`) |
//! | `{p}:req:{rid}:rcpts` | hash | address → `position|verdict`: the verdicts of a request of one recipient, or of one whose screening began before the buckets |
//! | `{p}:req:{rid}:audience` | string | recipients accepted so far (for `max_audience`) |
//! | `{p}:requests` | zset | request ids by creation time |
//! | `{p}:done:{mid}` | string | a message's terminal state (sent record with route and reply, dead, removed), compact (`DoneRecord::encode`; JSON from earlier versions is read too) |
//! | `{p}:lease:{mid}` | string | the sender replica currently submitting the message; removed with the terminal record |
//! | `{p}:dot:{mid}` | string | "data sent, awaiting reply": the delivery that is about to send (or sent) the final dot and has not recorded the answer |
//! | `{p}:ambiguous:{mid}` | string | the message had an ambiguous attempt (counted once) |
//! | `{p}:coalesce:{tenant}:{key}:{addr}` | string | message id that used the coalescing window |
//! | `{p}:quarantine:{addr}` | string | quarantine record (JSON) |
//! | `{p}:quarantined` | zset | quarantined addresses by expiry time (index for listing) |
//! | `{p}:denylist` / `{p}:allowlist` | set | addresses |
//! | `{p}:errors:{addr}` | hash | soft-failure counter of an address |
//! | `{p}:held:{rid}` / `{p}:cancelled:{rid}` | string | campaign held / cancelled by an operator |
//! | `{p}:deferred` + `{p}:deferred:info` | zset + hash | deferred messages by due time, with what operators see (request, domain, why: `retry`, `paused`, `throttled`) |
//! | `{p}:req:{rid}:deferred` | zset | the request's deferred messages by due time; `{p}:req:{rid}` counts them per why and domain (`waiting:{why}:{domain}`) and counts every deferral (`deferrals`) |
//! | `{p}:history:{mid}` | list | a message's failed attempts (JSON), for `mailpipe queue show` |
//! | `{p}:bounced:{mid}` / `{p}:complained:{mid}` / `{p}:unsubscribed:{mid}` | string | an asynchronous bounce / complaint / unsubscribe request for a sent message was counted (once) |
//! | `{p}:intake:unprocessed` | list | the latest mails the intake could not use, and why (JSON, capped) |
//! | `{p}:rules` | hash | exclusion rule name → rule (JSON) |
//! | `{p}:rulelist:{name}` / `{p}:rulelists` | set / set | a named list's entries (addresses, domains) / the lists' names |
//! | `{p}:rules:version` | string | raised by every change to a rule or list (expanders reload on a change) |
//! | `{p}:bounce:{id}` | hash | one row of the qualification table: normalized and first text, count, classification, qualification and who qualified it |
//! | `{p}:bounces` | zset | row ids of the qualification table by count |
//! | `{p}:bounces:kept` / `{p}:bounces:version` | set / counter | rows operators kept (classification rules), and the version of that set the workers watch |
//!
//! Every counter is written idempotently: expansion counts are stored per
//! part (overwritten by a replay, never added twice), and terminal states are
//! counted only by the `SET NX` that creates `{p}:done:{mid}`. That is what
//! lets `mailpipe status` agree with the SMTP server after crashes and
//! redeliveries.
//!
//! Every script declares every key it touches in `KEYS`: the Rust that
//! calls it builds the names (`key_of`, gathered once each by
//! `crate::keyset`), never the Lua. In a Redis Cluster every key starts
//! with the prefix as a hash tag (`{p}` is `{mailpipe}`,
//! `RedisSettings::key_prefix`): all of mailpipe's keys are in one slot,
//! on one master, so that every script and pipeline below runs there as on
//! a single Redis. The cluster then brings failover, not capacity. To
//! spread the keys over the masters, every call's keys must share a tag of
//! their own (request, domain or site, address) instead. What each call
//! touches today (`{mid}` a message, `{rid}` a request, `{d}` a domain,
//! `{s}` a site, `{a}` an address; "global" one key for the installation):
//!
//! | call | keys | what keeps them from one tag |
//! |---|---|---|
//! | `calls` gate (`crate::calls`) | `deferred`, `deferred:info`; `done`/`lease`/`dot:{mid}`; `req:{rid}`, `req:{rid}:deferred`, `cancelled`/`held:{rid}` | the global deferred index; message keys named by the message alone |
//! | `calls` ask | `pause`/`limit`/`slow`/`conc`/`tat:{d}`; `site:pause`/`limit`/`ctl`/`conc`/`tat:{s}`; `rconc`/`rtat:{route}`; `warm:{key}` | one atomic reservation over a domain's, its site's and a route's rates |
//! | `calls` attempts | `brk:{d}:{minute}`, `seen:{d}`; `site:seen`/`site:domains:{s}`; `sites` | the global index of sites |
//! | `calls` record | `done`/`lease`/`dot:{mid}`; `req:{rid}`; `errors:{a}` | the address's counter reset with the record |
//! | `calls` mark, `RELEASE_LUA` | `dot:{mid}` / `lease:{mid}` | none |
//! | one `calls` invocation | the above, for dozens of messages, requests and domains | must be split by slot, one invocation per slot, pipelined per node |
//! | `SCREEN_LUA` | `req:{rid}:rcpts:{n}` (or `rcpts`), `req:{rid}:audience`; `denylist`, `allowlist`, `rules:version`; `quarantine:{a}`, `coalesce:{scope}:{a}` per recipient | global address lists; per-address keys read in the request's call |
//! | `FAILURE_LUA` | `errors:{a}`, `quarantine:{a}`; `counted:{mid}:{n}`; `allowlist`, `quarantined` | global allowlist and quarantine index |
//! | `BREAKER_LUA` | `pause:{d}`, `brk:{d}:*`; `paused` | the global index of paused domains |
//! | `PAUSED_LUA` (listing) | `paused`; `pause`/`pausenote:{d}` of many domains | reads across domains (could be per-domain reads) |
//! | `SLOW_LUA` | `slow`/`seen`/`limit:{d}` | none |
//! | `MARK_LUA` (feedback) | `bounced`/`complained`/`unsubscribed:{mid}`; `req:{rid}` | message keys named by the message alone |
//! | `RESOLVE_AMBIGUOUS_LUA`, `UNDO_DEAD_LUA` | `dot`/`ambiguous`/`history`/`done:{mid}`; `req:{rid}` | the same |
//! | parking scripts (`campaigns.rs`) | `parking`/`parking_closed:{rid}`, `req:{rid}`; `parked` | the global set of parked campaigns |
//! | `INDEX_LUA`, `STOP_LUA`, `DEFER_LUA` | `deferred`, `deferred:info`; `req:{rid}`, `req:{rid}:deferred`; `history`/`lease:{mid}` | the global deferred index |
//! | `SET_TERMINAL_LUA`, request counters | `req:{rid}` | none |
//! | request metadata (atomic pipeline) | `req:{rid}`; `requests` | the global request index |
//! | qualification scripts | `bounce:{id}`; `bounces`, `bounces:kept`, `bounces:version` | global, rare: can keep one tag of their own |
//! | site control (`STEP_LUA`, `APPLY_LUA`) | `site:ctl`/`counts`/`limit`/`pause`/`log:{s}`; `site:paused` | the global index of paused sites |
//! | exclusion rules (atomic pipelines) | `rules`, `rulelist:*`, `rulelists`, `rules:version` | global, rare: can keep one tag of their own |
//! | `campaign recipients` (`MGET`) | `done:{mid}` of many messages | none (the client splits an `MGET` by slot) |
//!
//! Beyond tags in these names, that needs:
//!
//! * Per-message keys (`done`, `lease`, `dot`, `history`, ...) are found by
//!   the message id alone: the intake matches a bounce by the Message-ID or
//!   the VERP token, which carry no request id. Tagging them by request
//!   needs the request id in those tokens (and a fallback for mail sent
//!   before), or the gate and the record split from the request's counters.
//! * The gate, a deferral and a stop move a message in the global deferred
//!   index (`{p}:deferred`, `{p}:deferred:info`) in the same script as its
//!   request's counts: the index must be sharded or updated apart.
//! * A policy ask reserves the domain's, the site's and the route's rate
//!   places atomically: their keys must share a tag (the site's, since a
//!   domain belongs to one site at a time) or the reservation go in steps.
//! * The client's cluster connection refuses a pipeline whose keys span
//!   slots (not only nodes): every pipeline groups its commands per slot.
//! * Renamed keys need a migration: a rolling upgrade that no longer finds
//!   a message's `done` record would send a redelivered message again.
//!
//! Memory per recipient. A campaign leaves about 340 bytes of Redis memory
//! per recipient for its validity period plus `sender.sent_record_ttl`
//! (`scripts/bench-memory`, 100,000 recipients at one domain, all sent):
//! the terminal record `{p}:done:{mid}` about 232 B (`MEMORY USAGE`: its
//! key name, the key's object and dictionary entry, a compact value of
//! ~100 B), its expiry entry and its share of the key space's tables about
//! 67 B, and the request's screening verdicts about 40 B (buckets of about
//! 64 fields, listpacks: the address and the position; one hash of the
//! whole campaign was a hash table of about 98 B a recipient). Leases and
//! "data sent" marks go with the record; failure keys (`counted`,
//! `errors`, `history`, `ambiguous`) exist only for recipients that failed.
//! Getting to about 120 B needs no key per recipient at all:
//!
//! * Records in per-request hashes of at most 128 fields (a bucket by the
//!   recipient's index or message id) and values of at most 64 bytes (the
//!   request, its campaign and lane are known from the key and the
//!   request's metadata; the recipient, route and reply stay), so that
//!   Redis keeps them as listpacks (~70 B a record; a longer value turns
//!   the bucket into a hash table unless `hash-max-listpack-value` is
//!   raised), and one expiry per bucket replaces one per record.
//! * The message id alone no longer finds such a record: the intake
//!   matches bounces by the Message-ID and the VERP token, so both must
//!   carry the request (and the bucket), and every reader (the gate, the
//!   record, the intake, `queue show`, the undo of a dead state) must fall
//!   back to `{p}:done:{mid}` for as long as a record of an earlier
//!   version can live (the longest validity plus the grace), or a
//!   redelivered message would be sent again.
//! * Done for the screening verdicts (`screen.rs`): buckets by address,
//!   their number fixed at the request's first screened part and kept in
//!   its hash, read by `campaign recipients` and `campaign recount` bucket
//!   by bucket.
//!
//! The lease and the mark can stay per message: they live only while the
//! message is in flight.
//!
//! One file per key family, each adding its methods to [`Store`]:
//! `requests.rs` (content, request metadata and counters, `mailpipe
//! status`), `screen.rs` (screening recipients), `done.rs` (terminal
//! records, leases, locks), `campaigns.rs` (operator flags, parking),
//! `deferred.rs` (the deferred index, histories), `addresses.rs` (failure
//! counters, quarantine, address lists), `rules.rs` (exclusion rules and
//! their lists), `qualification.rs` (the qualification table and the rows
//! operators kept as rules) and `feedback.rs` (asynchronous bounces and
//! complaints, the intake's
//! unprocessed mails). The per-message calls of a sender, terminal records
//! included, are [`crate::calls`], which builds on this module (never the
//! other way round).

use std::time::Duration;

use redis::AsyncCommands;

use crate::connection::RedisConnection;

use crate::config::RedisSettings;

mod addresses;
mod campaigns;
mod deferred;
mod done;
mod feedback;
mod qualification;
mod recipients;
mod requests;
mod rules;
mod screen;

pub use addresses::{AddressState, FailureCount, RecipientFailure};
pub use campaigns::{CampaignFlag, PARKING_GUARD};
pub(crate) use deferred::INDEX_FUNCTIONS_LUA;
pub use deferred::{Deferral, RequestDeferred, DECISION_AMBIGUOUS, WHY_PAUSED, WHY_RETRY};
pub use done::{DoneRecord, DoneState, DoneWrite, Gate, GateRequest, MarkRequest};
pub use qualification::{
    kept_rules_of, row_id, BounceEntry, Qualification, QualificationState, QUALIFICATION_CAP,
};
pub use recipients::TerminalCounts;
pub use requests::{HoldNote, PartCounts, Refusal, RequestMeta, RequestStatus, REFUSED_REQUEST};
pub use rules::RulesSnapshot;
pub use screen::{
    rcpt_bucket, rcpt_bucket_count, stored_verdict, Candidate, ScreenOptions, ScreenVerdict,
    Screened, Screening, MAX_RCPT_BUCKETS, RCPTS_PER_BUCKET,
};

/// A Redis failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis {op}: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A call that ran for several callers at once failed; each caller gets
    /// its description.
    #[error("{0}")]
    Shared(String),
}

fn op(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { op, source }
}

fn unix_now_str() -> String {
    crate::unix_now().to_string()
}

/// Keys one `SCAN` call walks ([`Store::scan_keys`]): enough to finish a
/// walk of a million keys in a thousand round trips, few enough that one
/// call stays short for the other clients.
pub const SCAN_COUNT: u32 = 1000;

/// `text` with the characters special to Redis glob patterns (`*?[]\`)
/// escaped, to put a name into a `SCAN ... MATCH` pattern literally.
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The key `{prefix}:{part}:{part}...`.
pub(crate) fn key_of(prefix: &str, parts: &[&str]) -> String {
    let mut k =
        String::with_capacity(prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.push_str(prefix);
    for p in parts {
        k.push(':');
        k.push_str(p);
    }
    k
}

/// Handle to mailpipe's Redis state. Cheap to clone: one multiplexed
/// connection that reconnects by itself (to the new master after a
/// Sentinel failover, [`crate::connection`]).
#[derive(Clone)]
pub struct Store {
    conn: RedisConnection,
    prefix: String,
    screen: std::sync::Arc<redis::Script>,
    mark: std::sync::Arc<redis::Script>,
    release: std::sync::Arc<redis::Script>,
    failure: std::sync::Arc<redis::Script>,
    count_text: std::sync::Arc<redis::Script>,
}

impl Store {
    /// Connects (fails fast when Redis is unreachable; callers retry):
    /// a single Redis or the master behind Sentinels, as `redis.url` or
    /// `redis.sentinel` say ([`crate::connection::open`]).
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let conn = crate::connection::open(settings)
            .await
            .map_err(op("connect"))?;
        Ok(Self {
            conn,
            prefix: settings.key_prefix(),
            screen: std::sync::Arc::new(redis::Script::new(screen::SCREEN_LUA)),
            mark: std::sync::Arc::new(redis::Script::new(feedback::MARK_LUA)),
            release: std::sync::Arc::new(redis::Script::new(done::RELEASE_LUA)),
            failure: std::sync::Arc::new(redis::Script::new(addresses::FAILURE_LUA)),
            count_text: std::sync::Arc::new(redis::Script::new(qualification::COUNT_LUA)),
        })
    }

    /// Connects, retrying with backoff until Redis answers; `None` on
    /// shutdown. A Redis that answers but cannot be used as configured (a
    /// configuration error, such as a node of a Redis Cluster) is an error:
    /// retrying would not mend it.
    pub async fn connect_with_retry(
        settings: &RedisSettings,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Option<Self>, StoreError> {
        let mut delay = Duration::from_millis(200);
        loop {
            match Self::connect(settings).await {
                Ok(s) => return Ok(Some(s)),
                Err(StoreError::Redis { op, source })
                    if source.kind() == redis::ErrorKind::InvalidClientConfig =>
                {
                    return Err(StoreError::Redis { op, source });
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "cannot connect to Redis"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, parts: &[&str]) -> String {
        key_of(&self.prefix, parts)
    }

    /// A connection for commands this module does not wrap.
    pub fn connection(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(op("ping"))?;
        Ok(())
    }

    /// Every key matching the glob `pattern` (a full key name, prefix
    /// included), by `SCAN` with `MATCH`, all pages: never `KEYS`, which
    /// blocks every client of a large Redis while it walks the key space.
    /// Each `SCAN` call walks about [`SCAN_COUNT`] keys; the whole walk is
    /// still proportional to the key space, so keep it to operator commands
    /// and prefer an index kept by the writer. A key that exists for the
    /// whole walk is returned once; one created or deleted meanwhile may be
    /// missing.
    pub async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        let mut cursor = 0u64;
        let mut keys = std::collections::BTreeSet::new();
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut c)
                .await
                .map_err(op("scan"))?;
            // SCAN may return a key twice (when the table is rehashed).
            keys.extend(page);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// What follows `prefix` in the keys that start with it (found by
    /// [`Self::scan_keys`]): the names an operator's listing shows, e.g.
    /// the domains of `{p}:limit:{domain}`.
    pub async fn names_after(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = self.scan_keys(&format!("{}*", glob_escape(prefix))).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_string))
            .collect())
    }

    /// Whether a key (under the prefix) exists.
    pub async fn exists(&self, key: &[&str]) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.exists(self.key(key)).await.map_err(op("exists"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glob_escape_makes_names_literal_in_a_match_pattern() {
        for (name, escaped) in [
            ("example.com", "example.com"),
            ("a*b", "a\\*b"),
            ("a?b[c]", "a\\?b\\[c\\]"),
            ("back\\slash", "back\\\\slash"),
        ] {
            assert_eq!(super::glob_escape(name), escaped, "{name}");
        }
    }

    #[test]
    fn tls_redis_urls_are_understood() {
        assert!(redis::Client::open("rediss://cache.example:6380/0").is_ok());
        assert!(redis::Client::open("redis://127.0.0.1:6379").is_ok());
    }
}

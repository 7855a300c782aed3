//! What is known about a recipient address: its soft-failure counter
//! (`{p}:errors:{addr}`), its quarantine (`{p}:quarantine:{addr}`, indexed in
//! `{p}:quarantined`) and the deny- and allowlists.

use std::time::Duration;

use redis::AsyncCommands;

use super::{op, Store, StoreError};

pub(super) const FAILURE_LUA: &str = r#"
-- KEYS[1] error counter hash, KEYS[2] quarantine key, KEYS[3] counted marker,
-- KEYS[4] allowlist set, KEYS[5] quarantine index (zset address -> expiry)
-- ARGV: 1 address, 2 reason, 3 immediate (1/0), 4 threshold, 5 expiry s,
--       6 counter ttl s, 7 now, 8 detail
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[6]) then return {-1, 0} end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return {0, 0} end
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('HSETNX', KEYS[1], 'first', ARGV[7])
redis.call('HSET', KEYS[1], 'last', ARGV[7], 'reason', ARGV[2], 'detail', ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[3] == '1' or count >= tonumber(ARGV[4]) then
  local record = cjson.encode({
    reason = ARGV[2], count = count,
    first = tonumber(redis.call('HGET', KEYS[1], 'first')),
    last = tonumber(ARGV[7]), detail = ARGV[8],
    expires = tonumber(ARGV[7]) + tonumber(ARGV[5]), source = 'delivery'})
  redis.call('SET', KEYS[2], record, 'EX', ARGV[5])
  redis.call('ZADD', KEYS[5], tonumber(ARGV[7]) + tonumber(ARGV[5]), ARGV[1])
  return {count, 1}
end
return {count, 0}
"#;

/// What [`Store::record_recipient_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCount {
    /// This failure (message and attempt) was counted before; nothing changed.
    AlreadyCounted,
    /// The address is allowlisted: never counted, never quarantined.
    Allowlisted,
    /// Counted; `quarantined` tells whether the address is now quarantined.
    Counted { count: u64, quarantined: bool },
}

/// A recipient-scope failure to count against an address.
#[derive(Debug, Clone)]
pub struct RecipientFailure<'a> {
    pub address: &'a str,
    pub message_id: &'a str,
    pub attempt: u32,
    pub reason: &'a str,
    /// Quarantine now (hard bounce) instead of at the threshold.
    pub immediate: bool,
    pub threshold: u32,
    /// How long a resulting quarantine lasts.
    pub expiry: Duration,
    pub counter_ttl: Duration,
    pub detail: &'a str,
    pub now: i64,
}

impl<'a> RecipientFailure<'a> {
    /// The failure `class` describes, counted against `address` under the
    /// quarantine settings; `None` when it is not about the recipient (a
    /// block aimed at the sender, a domain problem) or never quarantines.
    pub fn of(
        address: &'a str,
        message_id: &'a str,
        attempt: u32,
        class: &crate::classify::Classification,
        settings: &crate::config::QuarantineSettings,
        detail: &'a str,
        now: i64,
    ) -> Option<Self> {
        use crate::classify::{Quarantine, Reason, Scope};
        if class.scope != Scope::Recipient || class.quarantine == Quarantine::None {
            return None;
        }
        Some(Self {
            address,
            message_id,
            attempt,
            reason: class.reason.as_str(),
            immediate: class.quarantine == Quarantine::Immediate,
            threshold: settings.threshold,
            expiry: if class.reason == Reason::MailboxFull {
                settings.mailbox_full_expiry
            } else {
                settings.expiry
            },
            counter_ttl: settings.counter_ttl,
            detail,
            now,
        })
    }
}

/// What counting a failure left its address in
/// ([`Store::count_against_recipient`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressState {
    /// Not quarantined: the failure did not count, the address is
    /// allowlisted, or it is under the threshold.
    Open,
    /// This failure quarantined it, after `count` counted failures.
    QuarantinedNow { count: u64 },
    /// Quarantined already: this failure had been counted before (a
    /// redelivered failure record or report).
    QuarantinedBefore,
}

impl Store {
    /// Counts a failure against its address, for the retrier and the
    /// intake alike: `failure` is what [`RecipientFailure::of`] made of it
    /// (`None`: it does not count). Raises the address's counter or
    /// quarantines it, once per message and attempt, and says what the
    /// address is now.
    pub async fn count_against_recipient(
        &self,
        failure: Option<&RecipientFailure<'_>>,
    ) -> Result<AddressState, StoreError> {
        let Some(f) = failure else {
            return Ok(AddressState::Open);
        };
        Ok(match self.record_recipient_failure(f).await? {
            FailureCount::Counted {
                quarantined: true,
                count,
            } => AddressState::QuarantinedNow { count },
            FailureCount::AlreadyCounted => match self.quarantine(f.address).await? {
                Some(_) => AddressState::QuarantinedBefore,
                None => AddressState::Open,
            },
            FailureCount::Counted { .. } | FailureCount::Allowlisted => AddressState::Open,
        })
    }

    /// Counts a recipient-scope failure against an address (once per message
    /// and attempt) and quarantines the address when the failure is hard or
    /// the count reaches the threshold. Allowlisted addresses are skipped.
    pub async fn record_recipient_failure(
        &self,
        f: &RecipientFailure<'_>,
    ) -> Result<FailureCount, StoreError> {
        let mut c = self.conn.clone();
        let (count, quarantined): (i64, i64) = self
            .failure
            .key(self.key(&["errors", f.address]))
            .key(self.key(&["quarantine", f.address]))
            .key(self.key(&["counted", f.message_id, &f.attempt.to_string()]))
            .key(self.key(&["allowlist"]))
            .key(self.key(&["quarantined"]))
            .arg(f.address)
            .arg(f.reason)
            .arg(if f.immediate { "1" } else { "0" })
            .arg(f.threshold)
            .arg(f.expiry.as_secs().max(1))
            .arg(f.counter_ttl.as_secs().max(1))
            .arg(f.now)
            .arg(f.detail)
            .invoke_async(&mut c)
            .await
            .map_err(op("record recipient failure"))?;
        Ok(match count {
            -1 => FailureCount::AlreadyCounted,
            0 => FailureCount::Allowlisted,
            n => FailureCount::Counted {
                count: n as u64,
                quarantined: quarantined == 1,
            },
        })
    }

    /// Soft-failure count of an address.
    pub async fn failure_count(&self, address: &str) -> Result<u64, StoreError> {
        let mut c = self.conn.clone();
        let n: Option<u64> = c
            .hget(self.key(&["errors", address]), "count")
            .await
            .map_err(op("failure count"))?;
        Ok(n.unwrap_or(0))
    }

    /// The quarantine record of an address (JSON), if quarantined.
    pub async fn quarantine(&self, address: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let mut c = self.conn.clone();
        let raw: Option<String> = c
            .get(self.key(&["quarantine", address]))
            .await
            .map_err(op("quarantine"))?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Quarantines an address by hand (source `operator`).
    pub async fn quarantine_add(
        &self,
        address: &str,
        reason: &str,
        expiry: Duration,
    ) -> Result<(), StoreError> {
        let now = crate::unix_now();
        let record = serde_json::json!({
            "reason": reason, "count": 0, "first": now, "last": now,
            "detail": "added by an operator", "expires": now + expiry.as_secs() as i64,
            "source": "operator",
        });
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .set_ex(
                self.key(&["quarantine", address]),
                record.to_string(),
                expiry.as_secs().max(1),
            )
            .ignore()
            .zadd(
                self.key(&["quarantined"]),
                address,
                now + expiry.as_secs() as i64,
            )
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("quarantine add"))?;
        Ok(())
    }

    /// Lifts an address's quarantine and resets its counter; `false` if it
    /// was not quarantined.
    pub async fn quarantine_remove(&self, address: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let (n,): (i64,) = redis::pipe()
            .del(self.key(&["quarantine", address]))
            .zrem(self.key(&["quarantined"]), address)
            .ignore()
            .del(self.key(&["errors", address]))
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("quarantine remove"))?;
        Ok(n == 1)
    }

    /// Quarantined addresses with their records (expired entries are pruned).
    pub async fn quarantine_list(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut c = self.conn.clone();
        let index = self.key(&["quarantined"]);
        let _: i64 = c
            .zrembyscore(&index, "-inf", crate::unix_now())
            .await
            .map_err(op("quarantine prune"))?;
        let addrs: Vec<String> = c
            .zrange(&index, 0, limit.max(1) as isize - 1)
            .await
            .map_err(op("quarantine list"))?;
        let mut out = Vec::new();
        for a in addrs {
            if let Some(r) = self.quarantine(&a).await? {
                out.push((a, r));
            }
        }
        Ok(out)
    }

    /// Adds addresses to the denylist or allowlist (`list` is `denylist` or
    /// `allowlist`); returns how many were new.
    pub async fn list_add(&self, list: &str, addresses: &[String]) -> Result<u64, StoreError> {
        if addresses.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        c.sadd(self.key(&[list]), addresses)
            .await
            .map_err(op("list add"))
    }

    /// Removes addresses from the denylist or allowlist.
    pub async fn list_remove(&self, list: &str, addresses: &[String]) -> Result<u64, StoreError> {
        if addresses.is_empty() {
            return Ok(0);
        }
        let mut c = self.conn.clone();
        c.srem(self.key(&[list]), addresses)
            .await
            .map_err(op("list remove"))
    }

    /// Every address on the denylist or allowlist, sorted (read with SSCAN,
    /// so a large list never blocks Redis).
    pub async fn list_members(&self, list: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&[list]);
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(op("list members"))?;
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether an address is on the denylist or allowlist.
    pub async fn list_contains(&self, list: &str, address: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.sismember(self.key(&[list]), address)
            .await
            .map_err(op("list contains"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Classification, FailureType, Quarantine, Reason, Scope};
    use crate::config::QuarantineSettings;

    fn class(reason: Reason, scope: Scope, quarantine: Quarantine) -> Classification {
        Classification {
            kind: FailureType::Soft,
            reason,
            retry: true,
            quarantine,
            scope,
            rule: None,
        }
    }

    #[test]
    fn only_failures_about_the_recipient_count_against_its_address() {
        let settings = QuarantineSettings::default();
        let year = settings.expiry;
        let month = settings.mailbox_full_expiry;
        // (class, counted: Some((immediate, expiry)) or None)
        let table = [
            (
                class(Reason::UserUnknown, Scope::Recipient, Quarantine::Immediate),
                Some((true, year)),
            ),
            (
                class(Reason::AccountDisabled, Scope::Recipient, Quarantine::Count),
                Some((false, year)),
            ),
            (
                class(Reason::MailboxFull, Scope::Recipient, Quarantine::Count),
                Some((false, month)),
            ),
            (
                class(Reason::MailboxFull, Scope::Recipient, Quarantine::None),
                None,
            ),
            // Blocks aimed at the sender and domain trouble never count.
            (
                class(Reason::Refused, Scope::Sender, Quarantine::Immediate),
                None,
            ),
            (
                class(Reason::Unreachable, Scope::Domain, Quarantine::Count),
                None,
            ),
        ];
        for (class, want) in table {
            let got = RecipientFailure::of(
                "bob@example.com",
                "m1",
                2,
                &class,
                &settings,
                "550 no",
                1_000,
            );
            assert_eq!(
                got.as_ref().map(|f| (f.immediate, f.expiry)),
                want,
                "{:?} {:?} {:?}",
                class.reason,
                class.scope,
                class.quarantine
            );
            if let Some(f) = got {
                assert_eq!(f.reason, class.reason.as_str());
                assert_eq!(
                    (f.attempt, f.now, f.threshold),
                    (2, 1_000, settings.threshold)
                );
                assert_eq!(f.counter_ttl, settings.counter_ttl);
            }
        }
    }
}

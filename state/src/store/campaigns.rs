//! Operators' campaign flags (`{p}:held:{rid}`, `{p}:cancelled:{rid}`) and
//! the parking of held campaigns' messages (`{p}:parking:{rid}`,
//! `{p}:parking_closed:{rid}`, `{p}:parked`).

use std::time::Duration;

use redis::AsyncCommands;

use super::{op, unix_now_str, Store, StoreError};

/// How long a parking in progress (or a parking queue being deleted) holds
/// the other side back at most, should its process die in between.
pub const PARKING_GUARD: Duration = Duration::from_secs(120);

/// KEYS: parking counter, closed mark. ARGV: guard (ms).
const BEGIN_PARKING_LUA: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// KEYS: parking counter, parked set. ARGV: request.
const END_PARKING_LUA: &str = r#"
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// KEYS: parking counter, closed mark. ARGV: guard (ms).
const CLOSE_PARKING_LUA: &str = r#"
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return 0 end
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"#;

/// KEYS: closed mark. The mark counts its closers (an operator's release
/// and the retrier's sweep may close the same queue at once): it is lifted
/// when the last of them reopens.
const REOPEN_PARKING_LUA: &str = r#"
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// An operator's flag on a campaign; its name is its key's
/// (`{p}:{flag}:{rid}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignFlag {
    /// `mailpipe campaign hold`: senders park its messages.
    Held,
    /// `mailpipe campaign cancel` (or `queue purge --campaign`): what is
    /// left ends as removed.
    Cancelled,
}

impl CampaignFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignFlag::Held => "held",
            CampaignFlag::Cancelled => "cancelled",
        }
    }
}

impl Store {
    /// Sets or clears an operator flag on a campaign.
    pub async fn set_campaign_flag(
        &self,
        request: &str,
        flag: CampaignFlag,
        on: bool,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&[flag.as_str(), request]);
        if on {
            let _: () = c
                .set_ex(key, unix_now_str(), ttl.as_secs().max(1))
                .await
                .map_err(op("set campaign flag"))?;
        } else {
            let _: i64 = c.del(key).await.map_err(op("clear campaign flag"))?;
        }
        Ok(())
    }

    /// Whether an operator flag is set on a campaign.
    pub async fn campaign_flag(
        &self,
        request: &str,
        flag: CampaignFlag,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        c.exists(self.key(&[flag.as_str(), request]))
            .await
            .map_err(op("campaign flag"))
    }

    /// Notes that a held campaign has parked messages (for the sweeper that
    /// moves them back once the campaign is released or cancelled).
    pub async fn mark_parked(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .sadd(self.key(&["parked"]), request)
            .await
            .map_err(op("mark parked"))?;
        Ok(())
    }

    /// Announces that a sender is about to park messages of a held campaign
    /// in its `held.<request>` queue. `false` while the retrier's sweeper is
    /// deleting that queue ([`Self::close_parking`]): the caller must then
    /// not publish there (the sender returns those jobs to their lane, where
    /// they are screened again). Each `true` must be followed by
    /// [`Self::end_parking`]; a sender that dies in between holds the queue
    /// back from deletion for [`PARKING_GUARD`] at most.
    pub async fn begin_parking(&self, request: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(BEGIN_PARKING_LUA)
            .key(self.key(&["parking", request]))
            .key(self.key(&["parking_closed", request]))
            .arg(PARKING_GUARD.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(op("begin parking"))?;
        Ok(n == 1)
    }

    /// Ends [`Self::begin_parking`] once the parked messages are confirmed
    /// by the broker, and marks the campaign as having parked messages (for
    /// the sweeper that moves them back once the campaign is released).
    pub async fn end_parking(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(END_PARKING_LUA)
            .key(self.key(&["parking", request]))
            .key(self.key(&["parked"]))
            .arg(request)
            .invoke_async(&mut c)
            .await
            .map_err(op("end parking"))?;
        Ok(())
    }

    /// Closes a campaign's parking queue to senders before it is deleted:
    /// `false` when a sender is parking into it right now (delete later).
    /// Quorum queues cannot be deleted "if empty", so this fence is what
    /// keeps a message confirmed into the queue from being deleted with it.
    /// Lasts until [`Self::reopen_parking`] or [`PARKING_GUARD`].
    pub async fn close_parking(&self, request: &str) -> Result<bool, StoreError> {
        let mut c = self.conn.clone();
        let n: i64 = redis::Script::new(CLOSE_PARKING_LUA)
            .key(self.key(&["parking", request]))
            .key(self.key(&["parking_closed", request]))
            .arg(PARKING_GUARD.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(op("close parking"))?;
        Ok(n == 1)
    }

    /// Records (or, with `None`, clears) why an operator holds a campaign,
    /// shown by `mailpipe status` and `campaign list`.
    pub async fn set_hold_note(
        &self,
        request: &str,
        note: Option<&super::HoldNote>,
    ) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&["req", request]);
        let _: i64 = match note {
            Some(n) => c
                .hset(key, "hold", serde_json::to_string(n).unwrap_or_default())
                .await
                .map_err(op("hold note"))?,
            None => c.hdel(key, "hold").await.map_err(op("hold note"))?,
        };
        Ok(())
    }

    /// Lifts [`Self::close_parking`] (once every closer has reopened).
    pub async fn reopen_parking(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(REOPEN_PARKING_LUA)
            .key(self.key(&["parking_closed", request]))
            .invoke_async(&mut c)
            .await
            .map_err(op("reopen parking"))?;
        Ok(())
    }

    /// Campaigns that have (or had) parked messages.
    pub async fn parked(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        c.smembers(self.key(&["parked"]))
            .await
            .map_err(op("parked"))
    }

    /// Forgets a campaign's parked queue.
    pub async fn unmark_parked(&self, request: &str) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .srem(self.key(&["parked"]), request)
            .await
            .map_err(op("unmark parked"))?;
        Ok(())
    }
}

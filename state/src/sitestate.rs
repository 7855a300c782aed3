//! The sites senders attempted lately, as operators see them: each site's
//! attempt rate, the domains met there and when it was last attempted. The
//! calls script keeps them (`{p}:sites`, a sorted set of sites by last
//! attempt; `{p}:site:seen:{site}`, a decaying attempt count;
//! `{p}:site:domains:{site}`, the domains), each for a day.

use redis::AsyncCommands;
use serde::Serialize;

use crate::policy::Policy;
use crate::slowdown::{decayed_rate, SEEN_TAU_MS};
use crate::store::StoreError;

/// How long a site stays listed after its last attempt.
const LISTED_MS: i64 = 86_400_000;

/// One site as `mailpipe site list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SiteSeen {
    pub site: String,
    /// Recipient domains attempted at the site in the last day.
    pub domains: u64,
    /// Attempts per second lately (the last ten seconds or so).
    pub rate_per_second: f64,
    /// Last attempt, Unix ms.
    pub last_ms: i64,
}

fn op(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { op, source }
}

impl Policy {
    /// The sites attempted in the last day, the latest first.
    pub async fn sites_seen(&self) -> Result<Vec<SiteSeen>, StoreError> {
        let mut c = self.store().connection();
        let now = crate::unix_now_ms();
        let index = self.key(&["sites"]);
        let _: i64 = c
            .zrembyscore(&index, "-inf", now - LISTED_MS)
            .await
            .map_err(op("sites"))?;
        let listed: Vec<(String, i64)> = c
            .zrevrange_withscores(&index, 0, -1)
            .await
            .map_err(op("sites"))?;
        let mut out = Vec::with_capacity(listed.len());
        for (site, last_ms) in listed {
            out.push(self.site_seen(&site, last_ms, now).await?);
        }
        Ok(out)
    }

    /// One site, `None` when it was not attempted in the last day.
    pub async fn site_seen_now(&self, site: &str) -> Result<Option<SiteSeen>, StoreError> {
        let mut c = self.store().connection();
        let last: Option<i64> = c
            .zscore(self.key(&["sites"]), site)
            .await
            .map_err(op("site"))?;
        let now = crate::unix_now_ms();
        match last {
            Some(last) if last > now - LISTED_MS => {
                Ok(Some(self.site_seen(site, last, now).await?))
            }
            _ => Ok(None),
        }
    }

    /// The domains attempted at a site in the last day, sorted.
    pub async fn site_domains(&self, site: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.store().connection();
        let mut d: Vec<String> = c
            .smembers(self.key(&["site", "domains", site]))
            .await
            .map_err(op("site domains"))?;
        d.sort();
        Ok(d)
    }

    async fn site_seen(&self, site: &str, last_ms: i64, now: i64) -> Result<SiteSeen, StoreError> {
        let mut c = self.store().connection();
        let (count, t, f): (Option<f64>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.key(&["site", "seen", site]))
            .arg("c")
            .arg("t")
            .arg("f")
            .query_async(&mut c)
            .await
            .map_err(op("site"))?;
        let domains: u64 = c
            .scard(self.key(&["site", "domains", site]))
            .await
            .map_err(op("site"))?;
        let rate = match (count, t, f) {
            (Some(count), Some(t), Some(f)) => decayed_rate(count, t, f, now, SEEN_TAU_MS as f64),
            _ => 0.0,
        };
        Ok(SiteSeen {
            site: site.to_string(),
            domains,
            rate_per_second: rate,
            last_ms,
        })
    }
}

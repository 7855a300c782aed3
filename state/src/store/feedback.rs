//! What comes back about sent mail: asynchronous bounces, complaints and
//! unsubscribes counted once per message (`{p}:bounced:{mid}`, …), and the
//! mails the intake could not use (`{p}:intake:unprocessed`). The
//! qualification table is `qualification.rs`.

use std::time::Duration;

use redis::AsyncCommands;

use super::{op, Store, StoreError};

pub(super) const MARK_LUA: &str = r#"
-- KEYS[1] a marker key, KEYS[2] request hash; ARGV[1] value, ARGV[2] ttl
-- seconds, ARGV[3..] counter fields to raise when the marker is new
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  for i = 3, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
  return 1
end
return 0
"#;

impl Store {
    /// Counts an asynchronous bounce of a sent message, once per message:
    /// `false` when it was counted before (a bounce delivered twice, or a
    /// second report for the same message).
    pub async fn record_bounce(
        &self,
        message: &str,
        request: &str,
        reason: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let field = format!("bounced:{reason}");
        self.mark_once(&["bounced", message], request, reason, &[&field], ttl)
            .await
    }

    /// Counts a complaint (feedback-loop report) about a sent message, once
    /// per message.
    pub async fn record_complaint(
        &self,
        message: &str,
        request: &str,
        feedback_type: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.mark_once(
            &["complained", message],
            request,
            feedback_type,
            &["complained"],
            ttl,
        )
        .await
    }

    /// Counts an unsubscribe request about a sent message, once per message.
    pub async fn record_unsubscribe(
        &self,
        message: &str,
        request: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = ["unsubscribed", message];
        self.mark_once(&key, request, "unsubscribed", &["unsubscribed"], ttl)
            .await
    }

    async fn mark_once(
        &self,
        key: &[&str],
        request: &str,
        value: &str,
        counters: &[&str],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut inv = self.mark.prepare_invoke();
        inv.key(self.key(key))
            .key(self.key(&["req", request]))
            .arg(value)
            .arg(ttl.as_secs().max(1));
        for f in counters {
            inv.arg(*f);
        }
        let mut c = self.conn.clone();
        let n: i64 = inv.invoke_async(&mut c).await.map_err(op("mark once"))?;
        Ok(n == 1)
    }

    /// Keeps a mail the intake could not use (JSON: why, where from, the
    /// start of the mail), newest first, at most `keep` of them.
    pub async fn record_unprocessed(&self, json: &str, keep: usize) -> Result<(), StoreError> {
        let key = self.key(&["intake", "unprocessed"]);
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .lpush(&key, json)
            .ignore()
            .ltrim(&key, 0, keep.max(1) as isize - 1)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(op("record unprocessed"))?;
        Ok(())
    }

    /// The latest mails the intake could not use, newest first.
    pub async fn unprocessed(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        c.lrange(
            self.key(&["intake", "unprocessed"]),
            0,
            limit.max(1) as isize - 1,
        )
        .await
        .map_err(op("unprocessed"))
    }
}

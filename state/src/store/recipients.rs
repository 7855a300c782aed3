//! A request's recipients one by one, as `mailpipe campaign recipients`
//! shows them: each address's screening verdict (`{p}:req:{rid}:rcpts`)
//! and, for the accepted ones, the message's terminal record
//! (`{p}:done:{mid}`). Read in batches; nothing here is on a hot path.

use super::{op, DoneRecord, Store, StoreError};

/// Records read per round trip.
const BATCH: usize = 500;

impl Store {
    /// Every address of a request with its screening verdict as stored
    /// (`accepted`, `duplicate`, `excluded_by_rule:NAME`, ...), sorted by
    /// address. Empty for an unknown request.
    pub async fn request_recipients(
        &self,
        request: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut c = self.conn.clone();
        let key = self.key(&["req", request, "rcpts"]);
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut c)
                .await
                .map_err(op("recipients"))?;
            for (address, value) in page {
                let verdict = value
                    .split_once('|')
                    .map(|(_, v)| v.to_string())
                    .unwrap_or(value);
                out.push((address, verdict));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        Ok(out)
    }

    /// The terminal records of several messages, in order (`None`: no
    /// record, or one that cannot be read).
    pub async fn done_many(
        &self,
        messages: &[String],
    ) -> Result<Vec<Option<DoneRecord>>, StoreError> {
        let mut c = self.conn.clone();
        let mut out = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|m| self.key(&["done", m])).collect();
            let raw: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .map_err(op("done records"))?;
            out.extend(
                raw.into_iter()
                    .map(|r| r.and_then(|r| serde_json::from_str(&r).ok())),
            );
        }
        Ok(out)
    }
}

//! The compiled templates of the requests being sent, by content id: read
//! from Redis and compiled on a request's first message, shared by all its
//! recipients after that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mailpipe_common::message::Content;
use mailpipe_common::template::Compiled;
use mailpipe_state::store::{Store, StoreError};

use crate::mime;

/// Content entries kept compiled; beyond this the cache starts over (a
/// sender rarely works on more than a few campaigns at once).
const CONTENT_CACHE: usize = 512;

/// Compiled templates of one request, shared by all its recipients.
pub(crate) struct Prepared {
    pub(crate) compiled: Compiled,
    /// The From and Reply-To mailboxes, parsed once.
    pub(crate) sender: mime::Sender,
}

/// Compiled content by id.
pub(crate) struct ContentCache {
    /// A std mutex: held only to look up or insert, never across an await.
    entries: Mutex<HashMap<String, Arc<Prepared>>>,
    /// Most entries kept.
    cap: usize,
}

impl ContentCache {
    pub(crate) fn new() -> Self {
        Self::with_capacity(CONTENT_CACHE)
    }

    fn with_capacity(cap: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            cap,
        }
    }

    /// The compiled content `id`, read from the store on a miss. Redis
    /// errors are the outer error (try again); content that is missing or
    /// cannot be compiled is the inner one (the message cannot be sent).
    pub(crate) async fn get(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Result<Arc<Prepared>, String>, StoreError> {
        let json = if self.is_cached(id) {
            None
        } else {
            store.get_content(id).await?
        };
        Ok(self.prepare(id, json))
    }

    fn is_cached(&self, id: &str) -> bool {
        self.entries
            .lock()
            .map(|c| c.contains_key(id))
            .unwrap_or(false)
    }

    /// The cached entry of `id`, or the one compiled from `json` (the
    /// stored content, `None` if Redis has none).
    fn prepare(&self, id: &str, json: Option<String>) -> Result<Arc<Prepared>, String> {
        if let Some(p) = self.entries.lock().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(p);
        }
        let json = json.ok_or_else(|| "content is missing from Redis (expired?)".to_string())?;
        let content: Content =
            serde_json::from_str(&json).map_err(|e| format!("stored content unreadable: {e}"))?;
        let compiled = Compiled::compile(&content).map_err(|e| e.to_string())?;
        let sender = mime::Sender::parse(&content.from, content.reply_to.as_deref())?;
        let p = Arc::new(Prepared { compiled, sender });
        if let Ok(mut cache) = self.entries.lock() {
            if cache.len() >= self.cap {
                cache.clear();
            }
            cache.insert(id.to_string(), p.clone());
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(from: &str) -> Option<String> {
        Some(format!(
            r#"{{"from":"{from}","subject":"Hi {{{{ name }}}}","text":"Hello"}}"#
        ))
    }

    #[test]
    fn content_is_compiled_once_then_served_from_the_cache() {
        let cache = ContentCache::new();
        let first = cache.prepare("c1", json("a@example.com")).unwrap();
        assert!(cache.is_cached("c1"));
        // A hit needs no stored content.
        let again = cache.prepare("c1", None).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn content_that_cannot_be_used_is_a_reason_not_a_panic() {
        let cache = ContentCache::new();
        let cases = [
            (None, "content is missing from Redis"),
            (Some("{".to_string()), "stored content unreadable"),
            (json("not an address"), ""),
        ];
        for (stored, starts) in cases {
            let Err(why) = cache.prepare("c", stored.clone()) else {
                panic!("{stored:?} should not compile");
            };
            assert!(why.starts_with(starts), "{stored:?}: {why}");
            assert!(!why.is_empty());
            assert!(!cache.is_cached("c"));
        }
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = ContentCache::with_capacity(2);
        cache.prepare("a", json("a@example.com")).unwrap();
        cache.prepare("b", json("a@example.com")).unwrap();
        assert!(cache.is_cached("a") && cache.is_cached("b"));
        cache.prepare("c", json("a@example.com")).unwrap();
        assert!(!cache.is_cached("a") && !cache.is_cached("b"));
        assert!(cache.is_cached("c"));
    }
}

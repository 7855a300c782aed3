//! The exclusion rules as this expander holds them: loaded from Redis when
//! their version changes (every screening call answers the version, so
//! noticing a change costs no round trip of its own) and compiled once per
//! tenant and lane until then, or until a compiled rule expires.

use std::collections::HashMap;
use std::sync::Arc;

use mailpipe_common::message::Lane;
use mailpipe_common::rules::RuleSet;
use mailpipe_state::store::{RulesSnapshot, Store, StoreError};

/// Compiled sets kept (one per tenant and lane seen); beyond this many
/// the cache starts over, so many tenants do not grow it without end.
const MAX_COMPILED: usize = 1024;

/// The loaded rules and what was compiled from them.
#[derive(Default)]
struct Loaded {
    /// `None` before the first load.
    snapshot: Option<Arc<RulesSnapshot>>,
    compiled: HashMap<(Option<String>, Lane), Arc<RuleSet>>,
}

/// The rules of one expander process.
#[derive(Default)]
pub(crate) struct Rules {
    // A tokio mutex: loading holds it across the Redis calls, so two
    // expansions that notice a change load the rules once.
    loaded: tokio::sync::Mutex<Loaded>,
}

impl Rules {
    /// The rules that apply to a request of `tenant` in `lane` at `now`,
    /// given the rules' current `version` (as Redis last answered it).
    pub(crate) async fn for_request(
        &self,
        store: &Store,
        version: u64,
        tenant: Option<&str>,
        lane: Lane,
        now: i64,
    ) -> Result<Arc<RuleSet>, StoreError> {
        let mut loaded = self.loaded.lock().await;
        let stale = loaded
            .snapshot
            .as_ref()
            .is_none_or(|s| s.version != version);
        if stale {
            let snapshot = store.rules_snapshot().await?;
            tracing::info!(
                version = snapshot.version,
                rules = snapshot.rules.len(),
                lists = snapshot.lists.len(),
                "exclusion rules loaded"
            );
            *loaded = Loaded {
                snapshot: Some(Arc::new(snapshot)),
                compiled: HashMap::new(),
            };
        }
        let key = (tenant.map(str::to_string), lane);
        if let Some(set) = loaded.compiled.get(&key) {
            if !set.expired(now) {
                return Ok(set.clone());
            }
        }
        let snapshot = loaded.snapshot.clone().unwrap_or_default();
        let set = Arc::new(RuleSet::compile(
            &snapshot.rules,
            &snapshot.lists,
            tenant,
            lane,
            now,
        ));
        if loaded.compiled.len() >= MAX_COMPILED {
            loaded.compiled.clear();
        }
        loaded.compiled.insert(key, set.clone());
        Ok(set)
    }
}

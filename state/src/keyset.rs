//! The keys a script call declares in `KEYS`, each named once.
//!
//! A script that serves many calls at once (the sender's calls, a batch's
//! screening) touches keys that several of its calls share: the same
//! request's hash, the same domain's rate. Every key it touches is declared
//! in `KEYS`, never built in Lua, so that Redis (and a cluster's client)
//! knows which keys a call reads and writes. [`KeySet`] gathers them, each
//! once, and answers the 1-based position the script reads it at
//! (`KEYS[n]`), which the call's arguments carry.
//!
//! Keys are added in groups: the keys of one thing (a message, a request, a
//! domain) sit side by side, so a call passes one position, the group's
//! first, and the script reads the others at fixed offsets from it. A group
//! is known by an id its caller gives: adding it again answers the same
//! position. Only the keys a call may touch are declared (each costs the
//! server an argument to read).

use std::collections::HashMap;

/// The keys of one script call, in the order the script reads them.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<String>,
    /// A key added alone → its 1-based position.
    positions: HashMap<String, usize>,
    /// A group's id → the 1-based position of its first key.
    groups: HashMap<String, usize>,
}

impl KeySet {
    /// A set whose first keys are `fixed` (positions 1, 2, ...), keys every
    /// call of the script declares.
    pub(crate) fn with_fixed(fixed: impl IntoIterator<Item = String>) -> Self {
        let mut set = Self::default();
        for key in fixed {
            set.one(key);
        }
        set
    }

    /// The position of a group of keys (its first key's), adding the group
    /// when `id` is new; `keys` builds the group and is called only then.
    /// The caller names a group by what it holds (a kind and a name, e.g.
    /// a message's gate keys), so two groups that start with the same key
    /// but hold different keys after it stay apart.
    pub(crate) fn group<const N: usize>(
        &mut self,
        id: &str,
        keys: impl FnOnce() -> [String; N],
    ) -> usize {
        if let Some(&at) = self.groups.get(id) {
            return at;
        }
        let at = self.keys.len() + 1;
        self.groups.insert(id.to_string(), at);
        self.keys.extend(keys());
        at
    }

    /// The position of one key, added when new.
    pub(crate) fn one(&mut self, key: String) -> usize {
        if let Some(&at) = self.positions.get(&key) {
            return at;
        }
        let at = self.keys.len() + 1;
        self.positions.insert(key.clone(), at);
        self.keys.push(key);
        at
    }

    /// The keys, in order, for `KEYS`.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::KeySet;

    #[test]
    fn a_group_added_twice_is_declared_once_at_the_same_position() {
        let mut set = KeySet::with_fixed(["p:deferred".to_string()]);
        let req = |r: &str| [format!("p:req:{r}"), format!("p:req:{r}:deferred")];
        let a = set.group("request\0a", || req("a"));
        let b = set.group("request\0b", || req("b"));
        let again = set.group("request\0a", || -> [String; 2] {
            unreachable!("known already")
        });
        let one = set.one("p:errors:x".into());
        assert_eq!((a, b, again, one), (2, 4, 2, 6));
        assert_eq!(set.one("p:deferred".into()), 1);
        // Another group of the same first key is another group.
        assert_eq!(set.group("other\0a", || ["p:req:a".to_string()]), 7);
        assert_eq!(
            set.keys(),
            [
                "p:deferred",
                "p:req:a",
                "p:req:a:deferred",
                "p:req:b",
                "p:req:b:deferred",
                "p:errors:x",
                "p:req:a"
            ]
        );
    }

    /// No process walks the key space with `KEYS`, which blocks every
    /// client of a large Redis while it runs (and in a cluster sees one
    /// node): listings use an index kept by the writer, or `SCAN`
    /// (`Store::scan_keys`). Checked in every crate that talks to Redis:
    /// `cmd("KEYS")`, the client's `.keys(pattern)` and `redis.call('KEYS'`
    /// in Lua.
    #[test]
    fn no_process_walks_the_key_space_with_keys() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files: Vec<_> = [
            "state", "common", "core", "ctl", "expander", "sender", "retrier", "intake",
        ]
        .iter()
        .map(|c| root.join(c).join("src"))
        .collect();
        // Spelled in pieces, so that this test does not find itself.
        let command = format!("CMD(\"{}\")", "KEYS");
        let lua = format!("CALL('{}'", "KEYS");
        let method = format!(".{}(", "keys");
        let mut checked = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                let upper = line.to_ascii_uppercase();
                let keys_call = line
                    .match_indices(&method)
                    .any(|(at, m)| !line[at + m.len()..].starts_with(')'));
                assert!(
                    !upper.contains(&command) && !upper.contains(&lua) && !keys_call,
                    "{}:{}: KEYS walks the whole key space: {line}",
                    path.display(),
                    n + 1
                );
            }
            checked += 1;
        }
        assert!(checked > 100, "only {checked} files read");
    }

    /// Every `redis.call` of every script in this crate names its key by a
    /// variable or `KEYS[...]`, never by a name it joins (`..`) from the
    /// prefix or the arguments: the keys a script touches are the ones it
    /// declares.
    #[test]
    fn no_script_builds_a_key_name() {
        let mut files = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut checked = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let Some(at) = line.find("redis.call('") else {
                    continue;
                };
                // The command's first argument: after `'CMD', ` up to the
                // next comma or the call's closing parenthesis.
                let rest = &line[at + "redis.call('".len()..];
                let Some(comma) = rest.find("', ") else {
                    continue;
                };
                let first = &rest[comma + 3..];
                let first = &first[..first.find([',', ')']).unwrap_or(first.len())];
                assert!(
                    !first.contains(".."),
                    "{}:{}: a key name built in Lua: {line}",
                    path.display(),
                    n + 1
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} calls found");
    }
}

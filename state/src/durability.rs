//! Whether the Redis a worker writes to keeps its writes across a restart,
//! checked once at start-up ([`crate::worker::start`]).
//!
//! mailpipe's guarantees rest on Redis remembering what it was told: the
//! sent record of each message (without it a redelivered message is sent
//! again), the quarantine and the deny list (without them a quarantined
//! recipient is mailed again), the campaign counts. A Redis with neither an
//! append-only file (AOF) nor RDB snapshots comes back empty after a
//! restart, so a worker refuses to start against one unless
//! `redis.allow_volatile` says that is meant (a throwaway test Redis).
//!
//! Redis is asked with `CONFIG GET appendonly` and `CONFIG GET save`. Some
//! managed services rename or forbid `CONFIG`; then `INFO persistence`
//! answers whether AOF is on, but not whether snapshots are scheduled (only
//! whether one was taken since the server started). What cannot be told is
//! reported as [`Persistence::Unknown`]: the worker logs a warning and
//! starts, since refusing a Redis whose persistence is merely hidden would
//! lock out those services.
//!
//! The reading is parsed by pure functions and the decision is
//! [`decide`], a function of the reading and the setting; the Redis calls
//! are [`read`].

/// What Redis said about its persistence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// Known from `source` (`CONFIG GET` or `INFO persistence`).
    Known {
        /// The append-only file is on.
        aof: bool,
        /// RDB snapshots are scheduled (`save` is not empty), or, read from
        /// `INFO`, one was taken since the server started.
        rdb: bool,
        source: &'static str,
    },
    /// Neither `CONFIG GET` nor `INFO persistence` told; why.
    Unknown { why: String },
}

/// How a worker goes on after the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// AOF or RDB is on.
    Persistent { aof: bool, rdb: bool },
    /// Neither is on and `redis.allow_volatile` allows it: log a warning.
    VolatileAllowed,
    /// Persistence could not be read: log a warning.
    Unknown { why: String },
}

/// The refusal to start against a Redis that forgets its writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Redis keeps no data across a restart ({read_with} says appendonly is off and no RDB snapshots are scheduled). \
     A Redis that forgets its writes on restart forgets which messages were sent, so they would be sent twice, \
     and which recipients are quarantined. Turn on AOF (appendonly yes) or RDB snapshots (save \"3600 1 300 100\"), \
     or set redis.allow_volatile: true (MAILPIPE__REDIS__ALLOW_VOLATILE=true) to start anyway"
)]
pub struct VolatileRedis {
    /// Where the reading came from (`CONFIG GET`, `INFO persistence`).
    pub read_with: &'static str,
}

/// Whether a worker may start, given what Redis said and
/// `redis.allow_volatile`.
pub fn decide(
    persistence: &Persistence,
    allow_volatile: bool,
) -> Result<Durability, VolatileRedis> {
    match persistence {
        Persistence::Known { aof, rdb, .. } if *aof || *rdb => Ok(Durability::Persistent {
            aof: *aof,
            rdb: *rdb,
        }),
        Persistence::Known { .. } if allow_volatile => Ok(Durability::VolatileAllowed),
        Persistence::Known { source, .. } => Err(VolatileRedis { read_with: source }),
        Persistence::Unknown { why } => Ok(Durability::Unknown { why: why.clone() }),
    }
}

/// The reading of `CONFIG GET appendonly` and `CONFIG GET save` (their
/// values: `yes`/`no`, and the save points such as `3600 1 300 100`, empty
/// when snapshots are off).
pub fn from_config(appendonly: &str, save: &str) -> Persistence {
    Persistence::Known {
        aof: appendonly.trim().eq_ignore_ascii_case("yes"),
        rdb: !save.trim().is_empty(),
        source: "CONFIG GET",
    }
}

/// The reading of `INFO persistence`: `aof_enabled:1` is AOF; a snapshot
/// taken or running since the server started (`rdb_saves`, Redis 7, or
/// `rdb_last_bgsave_time_sec` not -1, or `rdb_bgsave_in_progress:1`) counts
/// as RDB. With AOF off and no snapshot seen, whether snapshots are
/// scheduled cannot be told from `INFO`: unknown.
pub fn from_info(info: &str) -> Persistence {
    let field = |name: &str| {
        info.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k == name).then(|| v.trim().to_string())
        })
    };
    let Some(aof) = field("aof_enabled") else {
        return Persistence::Unknown {
            why: "INFO persistence has no aof_enabled field".into(),
        };
    };
    let aof = aof == "1";
    let snapshot_seen = field("rdb_saves").is_some_and(|v| v != "0")
        || field("rdb_last_bgsave_time_sec").is_some_and(|v| v != "-1")
        || field("rdb_bgsave_in_progress").is_some_and(|v| v == "1");
    if aof || snapshot_seen {
        Persistence::Known {
            aof,
            rdb: snapshot_seen,
            source: "INFO persistence",
        }
    } else {
        Persistence::Unknown {
            why: "CONFIG is not available and INFO persistence shows AOF off and no snapshot since the server started; whether snapshots are scheduled cannot be told".into(),
        }
    }
}

/// Asks Redis (the master, behind Sentinels): `CONFIG GET`, else `INFO
/// persistence`, else unknown.
pub async fn read(store: &crate::store::Store) -> Persistence {
    let mut c = store.connection();
    async fn config_get(
        c: &mut crate::connection::RedisConnection,
        name: &str,
    ) -> Result<String, String> {
        let reply: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(c)
            .await
            .map_err(|e| e.to_string())?;
        reply
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no {name} in the answer"))
    }
    let config_error = match config_get(&mut c, "appendonly").await {
        Ok(appendonly) => match config_get(&mut c, "save").await {
            Ok(save) => return from_config(&appendonly, &save),
            Err(e) => e,
        },
        Err(e) => e,
    };
    match redis::cmd("INFO")
        .arg("persistence")
        .query_async::<String>(&mut c)
        .await
    {
        Ok(info) => match from_info(&info) {
            Persistence::Unknown { why } => Persistence::Unknown {
                why: format!("{why} (CONFIG GET: {config_error})"),
            },
            known => known,
        },
        Err(info_error) => Persistence::Unknown {
            why: format!(
                "neither CONFIG GET ({config_error}) nor INFO persistence ({info_error}) answered"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(aof: bool, rdb: bool) -> Persistence {
        Persistence::Known {
            aof,
            rdb,
            source: "CONFIG GET",
        }
    }

    #[test]
    fn a_worker_refuses_a_redis_without_aof_or_rdb_unless_allowed() {
        let unknown = Persistence::Unknown {
            why: "CONFIG renamed".into(),
        };
        let persistent = |aof, rdb| Ok(Durability::Persistent { aof, rdb });
        let refused = Err(VolatileRedis {
            read_with: "CONFIG GET",
        });
        // (what Redis said, redis.allow_volatile, verdict)
        let table = [
            (known(true, true), false, persistent(true, true)),
            (known(true, false), false, persistent(true, false)),
            (known(false, true), false, persistent(false, true)),
            (known(true, false), true, persistent(true, false)),
            (known(false, false), false, refused.clone()),
            (known(false, false), true, Ok(Durability::VolatileAllowed)),
            (
                unknown.clone(),
                false,
                Ok(Durability::Unknown {
                    why: "CONFIG renamed".into(),
                }),
            ),
            (
                unknown,
                true,
                Ok(Durability::Unknown {
                    why: "CONFIG renamed".into(),
                }),
            ),
        ];
        for (reading, allow, expected) in table {
            assert_eq!(
                decide(&reading, allow),
                expected,
                "{reading:?}, allow_volatile {allow}"
            );
        }
    }

    #[test]
    fn the_refusal_says_what_is_at_stake_and_how_to_fix_it() {
        let text = decide(&known(false, false), false).unwrap_err().to_string();
        for needed in [
            "sent twice",
            "quarantined",
            "appendonly yes",
            "redis.allow_volatile",
            "MAILPIPE__REDIS__ALLOW_VOLATILE",
        ] {
            assert!(text.contains(needed), "{needed:?} missing from: {text}");
        }
    }

    #[test]
    fn config_values_read_as_aof_and_rdb() {
        // (appendonly, save, aof, rdb)
        let table = [
            ("no", "", false, false),
            ("no", "3600 1 300 100 60 10000", false, true),
            ("yes", "", true, false),
            ("yes", "900 1", true, true),
            ("no", "  ", false, false),
        ];
        for (appendonly, save, aof, rdb) in table {
            assert_eq!(
                from_config(appendonly, save),
                known(aof, rdb),
                "{appendonly:?} {save:?}"
            );
        }
    }

    #[test]
    fn info_persistence_tells_aof_and_snapshots_seen_but_not_a_schedule() {
        let info = |aof: &str, saves: &str, bgsave_time: &str| {
            format!(
                "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_time_sec:{bgsave_time}\r\nrdb_saves:{saves}\r\naof_enabled:{aof}\r\n"
            )
        };
        let from_info_known = |aof, rdb| Persistence::Known {
            aof,
            rdb,
            source: "INFO persistence",
        };
        assert_eq!(
            from_info(&info("1", "0", "-1")),
            from_info_known(true, false)
        );
        assert_eq!(
            from_info(&info("0", "3", "0")),
            from_info_known(false, true)
        );
        assert_eq!(from_info(&info("1", "0", "1")), from_info_known(true, true));
        assert!(matches!(
            from_info(&info("0", "0", "-1")),
            Persistence::Unknown { .. }
        ));
        assert!(matches!(
            from_info("# Persistence\r\nloading:0\r\n"),
            Persistence::Unknown { .. }
        ));
    }
}

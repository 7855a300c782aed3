//! A site's controller state, as kept in Redis (`{p}:site:ctl:{site}`), and
//! its phases.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Where a site's controller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Probing,
    Steady,
    Throttled,
    Suspended,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Probing,
        Phase::Steady,
        Phase::Throttled,
        Phase::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Probing => "probing",
            Phase::Steady => "steady",
            Phase::Throttled => "throttled",
            Phase::Suspended => "suspended",
        }
    }

    /// The value of the state gauge.
    pub fn code(self) -> i64 {
        match self {
            Phase::Probing => 0,
            Phase::Steady => 1,
            Phase::Throttled => 2,
            Phase::Suspended => 3,
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A site's controller state (kept in Redis, `{p}:site:ctl:{site}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteControl {
    pub phase: Phase,
    /// The allowed rate, messages per second.
    pub rate: f64,
    /// The rate that last held (a used step without throttling), 0 none.
    pub held_rate: f64,
    /// When it held, Unix ms.
    pub held_at_ms: i64,
    /// Probing rises quickly up to this (the history's rate), 0 none.
    pub target: f64,
    /// The last step, Unix ms.
    pub last_step_ms: i64,
    /// Start of the window the next rise is judged on, and what it sent.
    pub window_ms: i64,
    pub window_sent: u64,
    /// The last cut, Unix ms (0 none).
    pub cut_at_ms: i64,
    /// The rate the last cut came from (0 none): a steady site that holds
    /// above it for `reprobe_after` used steps probes again.
    pub cut_from: f64,
    /// Used steps in a row without throttling at or above `cut_from`.
    pub calm: u32,
    /// Reputation blocks in a row.
    pub blocks: u32,
    /// End of a suspension, Unix ms.
    pub until_ms: i64,
    /// The reply behind the last cut or suspension.
    pub reason: String,
}

impl SiteControl {
    /// The fields of its Redis hash.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("phase", self.phase.as_str().to_string()),
            ("rate", self.rate.to_string()),
            ("held_rate", self.held_rate.to_string()),
            ("held_at", self.held_at_ms.to_string()),
            ("target", self.target.to_string()),
            ("last_step", self.last_step_ms.to_string()),
            ("window", self.window_ms.to_string()),
            ("window_sent", self.window_sent.to_string()),
            ("cut_at", self.cut_at_ms.to_string()),
            ("cut_from", self.cut_from.to_string()),
            ("calm", self.calm.to_string()),
            ("blocks", self.blocks.to_string()),
            ("until", self.until_ms.to_string()),
            ("reason", self.reason.clone()),
        ]
    }

    /// Reads the hash back; `None` when it holds no state.
    pub fn from_fields(f: &HashMap<String, String>) -> Option<SiteControl> {
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<f64>().ok());
        let int = |k: &str| num(k).map(|v| v as i64).unwrap_or(0);
        Some(SiteControl {
            phase: Phase::parse(f.get("phase")?)?,
            rate: num("rate")?,
            held_rate: num("held_rate").unwrap_or(0.0),
            held_at_ms: int("held_at"),
            target: num("target").unwrap_or(0.0),
            last_step_ms: int("last_step"),
            window_ms: int("window"),
            window_sent: int("window_sent").max(0) as u64,
            cut_at_ms: int("cut_at"),
            cut_from: num("cut_from").unwrap_or(0.0),
            calm: int("calm").clamp(0, u32::MAX as i64) as u32,
            blocks: int("blocks").clamp(0, u32::MAX as i64) as u32,
            until_ms: int("until"),
            reason: f.get("reason").cloned().unwrap_or_default(),
        })
    }
}

//! Warm-up: a new sending domain (or a new relay's domain) earns its
//! reputation at each provider by sending little at first. An optional
//! day-indexed ceiling caps what each sending domain (the From domain)
//! sends to each site per day: day 1 at most 1,000, day 2 at most 2,000,
//! ..., and from some day on no cap at all.
//!
//! Day 1 is `sites.warmup.start` (a date, the same for every sending
//! domain) or else the first message the sending domain sent to the site.
//! The calls script counts the messages of each (sending domain, site,
//! day) and defers what is past the day's cap until the day ends; which
//! day it is and its cap are decided here ([`warmup_day`], [`warmup_cap`]).

use serde::Deserialize;

const DAY_MS: i64 = 86_400_000;

/// From `day` on (until the next entry), at most `cap` messages a day per
/// sending domain and site; without a cap, none.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WarmupDay {
    pub day: u32,
    #[serde(default)]
    pub cap: Option<u64>,
}

/// `sites.warmup`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WarmupSettings {
    /// The ceilings by day, days increasing from 1; empty: no warm-up.
    pub schedule: Vec<WarmupDay>,
    /// Day 1 for every sending domain, `YYYY-MM-DD` (UTC); unset: each
    /// sending domain's first message to each site.
    pub start: Option<String>,
    /// The sending domains that warm up; empty: every one.
    pub domains: Vec<String>,
}

impl WarmupSettings {
    /// Why the settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let mut last = 0;
        for d in &self.schedule {
            if d.day <= last {
                return Err(format!(
                    "sites.warmup.schedule: days start at 1 and increase (day {} after day {last})",
                    d.day
                ));
            }
            last = d.day;
        }
        if let Some(s) = &self.start {
            date_ms(s)
                .ok_or_else(|| format!("sites.warmup.start: {s:?} is not a YYYY-MM-DD date"))?;
        }
        Ok(())
    }

    /// Whether mail from `sending_domain` warms up.
    pub fn applies_to(&self, sending_domain: &str) -> bool {
        !self.schedule.is_empty()
            && (self.domains.is_empty()
                || self
                    .domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(sending_domain)))
    }

    /// Day 1 from the configuration, Unix ms.
    pub fn start_ms(&self) -> Option<i64> {
        self.start.as_deref().and_then(date_ms)
    }
}

/// The warm-up day (1 on the start day) at `now_ms`.
pub fn warmup_day(start_ms: i64, now_ms: i64) -> u32 {
    ((now_ms - start_ms).max(0) / DAY_MS + 1).min(u32::MAX as i64) as u32
}

/// When the warm-up day ends, Unix ms.
pub fn day_ends_ms(start_ms: i64, day: u32) -> i64 {
    start_ms + day as i64 * DAY_MS
}

/// The cap of a day: the last entry at or before it (the first entry before
/// the schedule starts); `None`: no cap.
pub fn warmup_cap(schedule: &[WarmupDay], day: u32) -> Option<u64> {
    schedule
        .iter()
        .rev()
        .find(|d| d.day <= day)
        .or(schedule.first())
        .and_then(|d| d.cap)
}

/// `YYYY-MM-DD` (UTC midnight) as Unix ms.
pub fn date_ms(s: &str) -> Option<i64> {
    let mut parts = s.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Vec<WarmupDay> {
        [
            (1, Some(1_000)),
            (2, Some(2_000)),
            (5, Some(10_000)),
            (30, None),
        ]
        .into_iter()
        .map(|(day, cap)| WarmupDay { day, cap })
        .collect()
    }

    #[test]
    fn each_day_has_the_cap_of_the_last_entry_before_it_and_none_past_the_schedule() {
        let s = schedule();
        let table = [
            (1, Some(1_000)),
            (2, Some(2_000)),
            (3, Some(2_000)),
            (4, Some(2_000)),
            (5, Some(10_000)),
            (29, Some(10_000)),
            (30, None),
            (400, None),
        ];
        for (day, cap) in table {
            assert_eq!(warmup_cap(&s, day), cap, "day {day}");
        }
        assert_eq!(warmup_cap(&[], 1), None);
    }

    #[test]
    fn days_count_from_the_start_and_end_a_day_later() {
        let start = date_ms("2026-12-01").unwrap();
        assert_eq!(start, 1_796_083_200_000);
        let table = [
            (start, 1),
            (start + DAY_MS - 1, 1),
            (start + DAY_MS, 2),
            (start + 29 * DAY_MS + 5, 30),
            // Before the start: day 1.
            (start - 5, 1),
        ];
        for (now, day) in table {
            assert_eq!(warmup_day(start, now), day, "{now}");
        }
        assert_eq!(day_ends_ms(start, 1), start + DAY_MS);
        assert_eq!(date_ms("1970-01-01"), Some(0));
        assert_eq!(date_ms("2000-03-01"), Some(951_868_800_000));
        for bad in ["2026-13-01", "2026-12", "yesterday", "2026-12-32"] {
            assert_eq!(date_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_schedule_must_increase_and_applies_to_its_domains() {
        let mut w = WarmupSettings {
            schedule: schedule(),
            start: Some("2026-12-01".into()),
            domains: vec!["News.Example".into()],
        };
        assert!(w.check().is_ok());
        assert!(w.applies_to("news.example"));
        assert!(!w.applies_to("other.example"));
        w.domains.clear();
        assert!(w.applies_to("other.example"));
        w.schedule.swap(0, 1);
        assert!(w.check().is_err());
        w.schedule = schedule();
        w.start = Some("soon".into());
        assert!(w.check().is_err());
        assert!(!WarmupSettings::default().applies_to("any.example"));
    }
}

//! Where pending recipients wait, as `status`, `queue list` and `queue
//! summary` show it: in a send lane (or being sent, or parked while their
//! campaign is held), deferred in the delay tiers until a due time, or
//! held back by a paused domain. Counts are of recipients, from the
//! deferred index's counts per request (`RequestStatus::waiting`).

use std::collections::BTreeMap;

use mailpipe_state::policy::{DomainState, Policy};
use mailpipe_state::store::{CampaignFlag, RequestDeferred, RequestStatus, Store, WHY_PAUSED};
use serde::Serialize;

/// Most paused domains whose pause is looked up for one view.
pub const PAUSES_LOOKED_UP: usize = 100;

/// Where one request's pending recipients are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Whereabouts {
    /// Not in the delay tiers: in a send lane or being sent (or parked,
    /// while the campaign is held).
    pub in_lanes: u64,
    /// Deferred until a due time, by why (`retry`, `throttled`, and
    /// `paused` for a domain whose pause already ended).
    pub deferred: BTreeMap<String, u64>,
    /// The earliest and latest due times of the deferred and paused
    /// recipients (Unix s).
    pub next_attempt: Option<i64>,
    pub last_attempt: Option<i64>,
    /// The delay tier of the earliest one (`1h`), when known.
    pub tier: Option<String>,
    /// Recipients held back by a domain that is paused now.
    pub paused: Vec<PausedWait>,
}

/// The recipients one paused domain holds back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PausedWait {
    pub domain: String,
    pub recipients: u64,
    /// End of the pause (Unix s).
    pub until: i64,
    /// `operator` or `breaker`.
    pub by: String,
    /// Why an operator paused it (empty: none given).
    pub reason: String,
}

impl Whereabouts {
    /// The paused recipients' lines of `status` and `queue list`: the
    /// total, then each paused domain with its count, end, who and why.
    pub fn print_paused(&self) {
        println!("  {:<10} {:>9}", "paused", thousands(self.paused_total()));
        for p in &self.paused {
            let reason = crate::out::optional(": ", &p.reason);
            println!(
                "    {:<30} {:>9}  until {} (by {}){reason}",
                p.domain,
                thousands(p.recipients),
                crate::out::utc(p.until),
                p.by
            );
        }
    }

    pub fn deferred_total(&self) -> u64 {
        self.deferred.values().sum()
    }

    pub fn paused_total(&self) -> u64 {
        self.paused.iter().map(|p| p.recipients).sum()
    }
}

/// The pause of a domain as [`whereabouts`] needs it: until when (Unix s),
/// by what, and why; `None` when the domain is not paused.
pub type Pause = Option<(i64, String, String)>;

/// The pause of a domain from its state.
pub fn pause_of(st: &DomainState) -> Pause {
    let until = st.paused_until?;
    Some((
        until,
        st.paused_by.clone().unwrap_or_default(),
        st.pause_note
            .as_ref()
            .map(|n| n.reason.clone())
            .unwrap_or_default(),
    ))
}

/// Where a request's pending recipients are: its counts of recipients in
/// the deferred index by why and domain, split by whether each domain
/// deferred as paused is still paused (`pauses`, by domain; a domain not
/// there counts as not paused), the rest of what is pending in the lanes.
pub fn whereabouts(
    s: &RequestStatus,
    deferred: &RequestDeferred,
    pauses: &BTreeMap<String, Pause>,
) -> Whereabouts {
    let mut w = Whereabouts::default();
    let mut waiting = 0;
    for (why, domains) in &s.waiting {
        for (domain, n) in domains {
            waiting += n;
            match (why.as_str(), pauses.get(domain).cloned().flatten()) {
                (WHY_PAUSED, Some((until, by, reason))) => w.paused.push(PausedWait {
                    domain: domain.clone(),
                    recipients: *n,
                    until,
                    by,
                    reason,
                }),
                _ => *w.deferred.entry(why.clone()).or_default() += n,
            }
        }
    }
    w.paused.sort_by(|a, b| {
        b.recipients
            .cmp(&a.recipients)
            .then(a.domain.cmp(&b.domain))
    });
    w.in_lanes = s.pending.saturating_sub(waiting);
    if waiting > 0 {
        w.next_attempt = deferred.first_due;
        w.last_attempt = deferred.last_due;
        w.tier = deferred
            .first
            .as_ref()
            .and_then(|i| i["tier"].as_str())
            .map(str::to_string);
    }
    w
}

/// The domains a request's recipients were deferred for as paused.
pub fn paused_domains(s: &RequestStatus) -> impl Iterator<Item = &String> {
    s.waiting.get(WHY_PAUSED).into_iter().flat_map(|d| d.keys())
}

/// Looks up the pauses of `domains` (at most [`PAUSES_LOOKED_UP`] new
/// ones) into `into`.
pub async fn look_up_pauses<'a>(
    policy: &Policy,
    ctx: &crate::Context,
    domains: impl IntoIterator<Item = &'a String>,
    into: &mut BTreeMap<String, Pause>,
) -> anyhow::Result<()> {
    for d in domains {
        if into.len() >= PAUSES_LOOKED_UP || into.contains_key(d) {
            continue;
        }
        let st = policy.state(d, &ctx.settings.policy.breaker).await?;
        into.insert(d.clone(), pause_of(&st));
    }
    Ok(())
}

/// One request's whereabouts, read from Redis.
pub async fn of_request(
    store: &Store,
    ctx: &crate::Context,
    s: &RequestStatus,
) -> anyhow::Result<Whereabouts> {
    let deferred = store.request_deferred(&s.request).await?;
    let mut pauses = BTreeMap::new();
    let policy = Policy::new(store.clone());
    look_up_pauses(&policy, ctx, paused_domains(s), &mut pauses).await?;
    Ok(whereabouts(s, &deferred, &pauses))
}

/// Most recent requests the global views read.
pub const REQUESTS_READ: usize = 1000;

/// A request with recipients pending, as the global views read it.
#[derive(Debug, Clone)]
pub struct Active {
    pub status: RequestStatus,
    pub held: bool,
}

impl Active {
    /// The campaign label, or the request id without one.
    pub fn campaign(&self) -> String {
        self.status
            .meta
            .as_ref()
            .and_then(|m| m.campaign.clone())
            .unwrap_or_else(|| self.status.request.clone())
    }

    /// When the request was accepted (Unix s).
    pub fn created(&self) -> i64 {
        self.status.meta.as_ref().map_or(0, |m| m.created)
    }
}

/// The [`REQUESTS_READ`] most recent requests that still have recipients
/// pending, newest first.
pub async fn active(store: &Store) -> anyhow::Result<Vec<Active>> {
    let mut out = Vec::new();
    for id in store.recent_requests(REQUESTS_READ).await? {
        let status = store.request_status(&id).await?;
        if status.meta.is_none() || status.pending == 0 {
            continue;
        }
        let held = store.campaign_flag(&id, CampaignFlag::Held).await?;
        out.push(Active { status, held });
    }
    Ok(out)
}

/// The recipients of every active request in the deferred index, by why
/// and domain.
pub fn waiting_totals(active: &[Active]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for a in active {
        for (why, domains) in &a.status.waiting {
            for (domain, n) in domains {
                *out.entry(why.clone())
                    .or_default()
                    .entry(domain.clone())
                    .or_default() += n;
            }
        }
    }
    out
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A time of day near `now` (`14:05Z`), or a date and time further away.
pub fn when(at: i64, now: i64) -> String {
    let full = crate::out::utc(at);
    if (at - now).abs() < 20 * 3600 {
        format!("{}Z", &full[11..16])
    } else {
        format!("{}Z", &full[..16])
    }
}

/// What the recipients not in the lanes wait for, in one line: `1,200
/// recipients deferred until 14:05Z (retry tier 1h); 300 paused (domain
/// example.com until 15:00Z: reason)`; `None` when none wait.
pub fn waiting_line(w: &Whereabouts, now: i64) -> Option<String> {
    let mut parts = Vec::new();
    let deferred = w.deferred_total();
    if deferred > 0 {
        let mut p = format!("{} recipients deferred", thousands(deferred));
        if let Some(next) = w.next_attempt {
            p.push_str(&format!(" until {}", when(next, now)));
        }
        let whys: Vec<String> = w
            .deferred
            .iter()
            .map(|(why, n)| match (why.as_str(), &w.tier) {
                ("retry", Some(t)) if w.deferred.len() == 1 => format!("retry tier {t}"),
                _ if w.deferred.len() == 1 => why.clone(),
                _ => format!("{why} {}", thousands(*n)),
            })
            .collect();
        p.push_str(&format!(" ({})", whys.join(", ")));
        parts.push(p);
    }
    for pw in &w.paused {
        let reason = if pw.reason.is_empty() {
            pw.by.clone()
        } else {
            pw.reason.clone()
        };
        parts.push(format!(
            "{} paused (domain {} until {}: {reason})",
            thousands(pw.recipients),
            pw.domain,
            when(pw.until, now)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(pending: u64, waiting: &[(&str, &str, u64)]) -> RequestStatus {
        let mut s = RequestStatus {
            pending,
            ..Default::default()
        };
        for (why, domain, n) in waiting {
            s.waiting
                .entry(why.to_string())
                .or_default()
                .insert(domain.to_string(), *n);
        }
        s
    }

    fn deferred(first: i64, last: i64, tier: &str) -> RequestDeferred {
        RequestDeferred {
            count: 1,
            first_due: Some(first),
            last_due: Some(last),
            first: Some(serde_json::json!({"tier": tier})),
        }
    }

    #[test]
    fn pending_recipients_are_in_the_lanes_deferred_or_held_back_by_a_paused_domain() {
        let paused = |until: i64| Some((until, "operator".to_string(), "migration".to_string()));
        let pauses: BTreeMap<String, Pause> = [
            ("p.example".to_string(), paused(9_000)),
            ("ended.example".to_string(), None),
        ]
        .into_iter()
        .collect();
        // (pending, waiting counts, in lanes, deferred by why, paused domains)
        type Case<'a> = (
            u64,
            Vec<(&'a str, &'a str, u64)>,
            u64,
            Vec<(&'a str, u64)>,
            Vec<(&'a str, u64)>,
        );
        let table: Vec<Case> = vec![
            (10, vec![], 10, vec![], vec![]),
            (
                10,
                vec![("retry", "a.example", 3), ("retry", "b.example", 2)],
                5,
                vec![("retry", 5)],
                vec![],
            ),
            // Paused now: held back by the pause, with its end and reason.
            (
                60,
                vec![("paused", "p.example", 50), ("throttled", "a.example", 4)],
                6,
                vec![("throttled", 4)],
                vec![("p.example", 50)],
            ),
            // A pause that ended (or a domain not looked up): deferred,
            // waiting for its due time.
            (
                8,
                vec![
                    ("paused", "ended.example", 5),
                    ("paused", "other.example", 3),
                ],
                0,
                vec![("paused", 8)],
                vec![],
            ),
            // Counts ahead of pending (a recipient ending meanwhile): none
            // in the lanes, never below zero.
            (
                3,
                vec![("retry", "a.example", 5)],
                0,
                vec![("retry", 5)],
                vec![],
            ),
        ];
        for (pending, waiting, lanes, by_why, paused_domains) in table {
            let s = status(pending, &waiting);
            let w = whereabouts(&s, &deferred(100, 200, "1h"), &pauses);
            assert_eq!(w.in_lanes, lanes, "{waiting:?}");
            let got: Vec<(&str, u64)> = w.deferred.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            assert_eq!(got, by_why, "{waiting:?}");
            let got: Vec<(&str, u64)> = w
                .paused
                .iter()
                .map(|p| (p.domain.as_str(), p.recipients))
                .collect();
            assert_eq!(got, paused_domains, "{waiting:?}");
            for p in &w.paused {
                assert_eq!((p.until, p.reason.as_str()), (9_000, "migration"));
            }
            let expect_due = (!waiting.is_empty()).then_some(100);
            assert_eq!(w.next_attempt, expect_due, "{waiting:?}");
        }
    }

    #[test]
    fn the_waiting_line_says_what_is_waited_for_and_until_when() {
        let now = 1_796_000_000; // 2026-11-29 ...
        let at = |h: i64| now - now % 86_400 + h * 3600;
        let w = |deferred: &[(&str, u64)], paused: &[(&str, u64, &str)], tier: Option<&str>| {
            Whereabouts {
                in_lanes: 0,
                deferred: deferred.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                next_attempt: Some(at(14) + 300),
                last_attempt: None,
                tier: tier.map(str::to_string),
                paused: paused
                    .iter()
                    .map(|(d, n, reason)| PausedWait {
                        domain: d.to_string(),
                        recipients: *n,
                        until: at(15),
                        by: "operator".into(),
                        reason: reason.to_string(),
                    })
                    .collect(),
            }
        };
        let table = [
            (w(&[], &[], None), None),
            (
                w(&[("retry", 1200)], &[("example.com", 300, "migration")], Some("1h")),
                Some("1,200 recipients deferred until 14:05Z (retry tier 1h); 300 paused (domain example.com until 15:00Z: migration)"),
            ),
            (
                w(&[("retry", 7), ("throttled", 1_000_000)], &[], Some("1m")),
                Some("1,000,007 recipients deferred until 14:05Z (retry 7, throttled 1,000,000)"),
            ),
            // No reason given: who paused it.
            (
                w(&[], &[("a.example", 5, "")], None),
                Some("5 paused (domain a.example until 15:00Z: operator)"),
            ),
        ];
        for (whereabouts, expected) in table {
            assert_eq!(
                waiting_line(&whereabouts, at(13)).as_deref(),
                expected,
                "{whereabouts:?}"
            );
        }
        // Far from now: the date too.
        assert_eq!(
            when(at(14) + 3 * 86_400, at(13)).len(),
            "2026-12-02 14:00Z".len()
        );
    }

    #[test]
    fn thousands_are_separated_by_commas() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (123_456, "123,456"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }
}

//! `mailpipe queue summary`: the recipients waiting, per domain or per
//! campaign, by age (like Postfix's `qshape`): rows of recipients, columns
//! of how long ago their request was accepted.
//!
//! What is counted: the pending recipients of every request not complete.
//! Per campaign, all of them. Per domain, those in the deferred index
//! (deferred or held back by a paused domain), whose domain Redis counts;
//! the rest (in a send lane, being sent, or parked while their campaign is
//! held) are in lane messages mailpipe does not open to look, and make one
//! row of their own.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mailpipe_state::store::Store;
use serde_json::json;

use crate::waiting::thousands;

/// The upper bounds of the age buckets, in minutes; a last bucket takes
/// everything older.
pub const BUCKET_MINUTES: [i64; 6] = [5, 10, 20, 40, 80, 160];

/// The row of the recipients whose domain is not indexed.
pub const IN_LANES: &str = "(in lanes, held)";

/// Recipients waiting by domain or campaign and age (qshape). Counts
/// recipients: per domain, those deferred or paused (by their domain) and
/// one row for those in the send lanes (or parked while held); per
/// campaign, every pending recipient.
#[derive(Args)]
pub struct SummaryCommand {
    /// Rows: recipient domains or campaigns.
    #[arg(long, value_enum, default_value_t = By::Domain)]
    pub by: By,
    /// Rows to show at most (the largest first; the rest are summed in `(other)`).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum By {
    Domain,
    Campaign,
}

/// The column labels: `0-5m`, `5-10m`, ..., `160m+`.
pub fn bucket_labels() -> Vec<String> {
    let mut out = Vec::new();
    let mut low = 0;
    for high in BUCKET_MINUTES {
        out.push(format!("{low}-{high}m"));
        low = high;
    }
    out.push(format!("{low}m+"));
    out
}

/// The bucket of an age in seconds: the first whose upper bound it is
/// under (a negative age, from a clock ahead, is in the first).
pub fn bucket_of(age_secs: i64) -> usize {
    BUCKET_MINUTES
        .iter()
        .position(|m| age_secs < m * 60)
        .unwrap_or(BUCKET_MINUTES.len())
}

/// One row: the total, then the count of each bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub total: u64,
    pub buckets: Vec<u64>,
}

/// The table: `(row key, age in seconds, recipients)` summed into rows,
/// the largest `limit` rows first (ties by key) and the others summed in
/// `(other)`, then the total of every row.
pub fn shape(
    entries: impl IntoIterator<Item = (String, i64, u64)>,
    limit: usize,
) -> (Vec<(String, Row)>, Row) {
    let empty = || Row {
        total: 0,
        buckets: vec![0; BUCKET_MINUTES.len() + 1],
    };
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut total = empty();
    for (key, age, n) in entries {
        if n == 0 {
            continue;
        }
        let b = bucket_of(age);
        let row = rows.entry(key).or_insert_with(empty);
        row.total += n;
        row.buckets[b] += n;
        total.total += n;
        total.buckets[b] += n;
    }
    let mut rows: Vec<(String, Row)> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(&b.0)));
    if rows.len() > limit {
        let mut other = empty();
        for (_, r) in rows.drain(limit..) {
            other.total += r.total;
            for (o, n) in other.buckets.iter_mut().zip(r.buckets) {
                *o += n;
            }
        }
        rows.push(("(other)".into(), other));
    }
    (rows, total)
}

impl SummaryCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let now = mailpipe_common::unix_now();
        let active = crate::waiting::active(&store).await?;
        let mut entries = Vec::new();
        for a in &active {
            let age = now - a.created();
            match self.by {
                By::Campaign => entries.push((a.campaign(), age, a.status.pending)),
                By::Domain => {
                    let mut indexed = 0;
                    for domains in a.status.waiting.values() {
                        for (domain, n) in domains {
                            indexed += n;
                            entries.push((domain.clone(), age, *n));
                        }
                    }
                    entries.push((
                        IN_LANES.to_string(),
                        age,
                        a.status.pending.saturating_sub(indexed),
                    ));
                }
            }
        }
        let (rows, total) = shape(entries, self.limit.max(1));
        let labels = bucket_labels();
        if ctx.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|(k, r)| json!({"key": k, "total": r.total, "buckets": r.buckets}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "by": match self.by { By::Domain => "domain", By::Campaign => "campaign" },
                    "buckets": labels,
                    "rows": rows,
                    "total": total,
                }))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        let name = match self.by {
            By::Domain => "domain",
            By::Campaign => "campaign",
        };
        let line = |key: &str, r: &Row| {
            let mut l = format!("{key:<32} {:>9}", thousands(r.total));
            for n in &r.buckets {
                l.push_str(&format!(" {:>8}", thousands(*n)));
            }
            l
        };
        let mut head = format!("{name:<32} {:>9}", "total");
        for l in &labels {
            head.push_str(&format!(" {l:>8}"));
        }
        println!("{head}");
        println!("{}", line("TOTAL", &total));
        for (k, r) in &rows {
            println!("{}", line(k, r));
        }
        println!("(recipients by how long ago their request was accepted)");
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_falls_in_the_first_bucket_it_is_under() {
        let m = |x: i64| x * 60;
        // (age s, bucket)
        let table = [
            (-30, 0),
            (0, 0),
            (m(5) - 1, 0),
            (m(5), 1),
            (m(10), 2),
            (m(19), 2),
            (m(20), 3),
            (m(40), 4),
            (m(80), 5),
            (m(159), 5),
            (m(160), 6),
            (m(100_000), 6),
        ];
        for (age, bucket) in table {
            assert_eq!(bucket_of(age), bucket, "{age}s");
        }
        assert_eq!(
            bucket_labels(),
            ["0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160m+"]
        );
    }

    #[test]
    fn rows_are_summed_by_key_and_bucket_the_largest_first() {
        let m = |x: i64| x * 60;
        let entries = vec![
            ("a.example".to_string(), m(1), 10),
            ("b.example".to_string(), m(7), 5),
            ("a.example".to_string(), m(200), 3),
            ("c.example".to_string(), m(30), 20),
            ("d.example".to_string(), m(30), 0),
            ("e.example".to_string(), m(50), 1),
        ];
        let (rows, total) = shape(entries.clone(), 10);
        let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["c.example", "a.example", "b.example", "e.example"]);
        assert_eq!(rows[1].1.buckets, [10, 0, 0, 0, 0, 0, 3]);
        assert_eq!(rows[1].1.total, 13);
        assert_eq!(total.total, 39);
        assert_eq!(total.buckets, [10, 5, 0, 20, 1, 0, 3]);
        // Beyond the limit: the smaller rows are summed in (other).
        let (rows, total2) = shape(entries, 2);
        let got: Vec<(&str, u64)> = rows.iter().map(|(k, r)| (k.as_str(), r.total)).collect();
        assert_eq!(got, [("c.example", 20), ("a.example", 13), ("(other)", 6)]);
        assert_eq!(rows[2].1.buckets, [0, 5, 0, 0, 1, 0, 0]);
        assert_eq!(total2, total);
    }
}

//! How the CLI speaks: errors and warnings on stderr, as `mailpipe: ...`
//! lines, or as one JSON object per line under `--json` (so scripts that
//! parse stdout can parse stderr the same way), and times as UTC dates.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Set once at start from `--json`.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// An error: `{"error": ...}` under `--json`, else `mailpipe: ...`.
pub fn error(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        eprintln!("{}", serde_json::json!({ "error": message }));
    } else {
        eprintln!("mailpipe: {message}");
    }
}

/// A warning: `{"warning": ...}` under `--json`, else `mailpipe: ...`.
pub fn warn(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        eprintln!("{}", serde_json::json!({ "warning": message }));
    } else {
        eprintln!("mailpipe: {message}");
    }
}

/// `text` after `lead` (`": "`, `" by "`), or nothing when `text` is
/// empty: an optional part of a line.
pub fn optional(lead: &str, text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{lead}{text}")
    }
}

/// A Unix time as `2026-12-06 22:41:07Z` (`-` for 0, which means "never").
pub fn utc(epoch: i64) -> String {
    if epoch == 0 {
        return "-".into();
    }
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_optional_part_is_written_only_when_it_has_text() {
        assert_eq!(optional(": ", "maintenance"), ": maintenance");
        assert_eq!(optional(": ", ""), "");
        assert_eq!(optional(" by ", "ops"), " by ops");
    }

    #[test]
    fn unix_times_read_as_utc_dates() {
        let table = [
            (0, "-"),
            (1, "1970-01-01 00:00:01Z"),
            (951_782_400, "2000-02-29 00:00:00Z"),
            (1_795_412_345, "2026-11-23 05:39:05Z"),
            (4_107_542_399, "2100-02-28 23:59:59Z"),
        ];
        for (epoch, expected) in table {
            assert_eq!(utc(epoch), expected, "{epoch}");
        }
    }
}

/// Whether a command whose output is JSON for scripts should print it for
/// people instead: stdout is a terminal and `--json` was not given. Piped or
/// redirected output stays JSON (the documented form scripts rely on).
pub fn for_people() -> bool {
    use std::io::IsTerminal;
    !JSON.load(Ordering::Relaxed) && std::io::stdout().is_terminal()
}

/// A JSON value as indented `key: value` lines for people: objects nest by
/// indentation, arrays of scalars on one line, other arrays item by item,
/// nulls left out.
pub fn human(value: &serde_json::Value) -> String {
    let mut out = String::new();
    human_into(&mut out, value, 0);
    out
}

fn human_into(out: &mut String, value: &serde_json::Value, depth: usize) {
    use serde_json::Value;
    let pad = "  ".repeat(depth);
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Null => {}
                    Value::Object(m) if m.is_empty() => {}
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        human_into(out, v, depth + 1);
                    }
                    Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        for (n, item) in items.iter().enumerate() {
                            out.push_str(&format!("{pad}  - {}\n", n + 1));
                            human_into(out, item, depth + 2);
                        }
                    }
                    Value::Array(items) => {
                        let list: Vec<String> = items.iter().map(scalar).collect();
                        out.push_str(&format!("{pad}{k}: {}\n", list.join(", ")));
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(v))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod human_tests {
    use super::human;

    #[test]
    fn json_reads_as_indented_lines_without_nulls() {
        let v = serde_json::json!({
            "report": "delivery_status",
            "addressed_to": ["a@example.com", "b@example.com"],
            "why": null,
            "recipients": [{"recipient": "a@example.com", "classification": {"reason": "user_unknown", "retry": false}}],
        });
        assert_eq!(
            human(&v),
            "addressed_to: a@example.com, b@example.com\n\
             recipients:\n  - 1\n    classification:\n      reason: user_unknown\n      retry: false\n    recipient: a@example.com\n\
             report: delivery_status\n"
        );
    }
}

//! The recipients CSV of `mailpipe submit --csv`: a header row with an
//! `email` column, optionally `name`, and any other columns, which become
//! template variables; one recipient per record. Fields are trimmed, every
//! record has as many fields as the header, and the file must be UTF-8.
//!
//! `submit` reads the file twice: [`CsvRecipients::count`] first, then
//! [`CsvRecipients::next_chunk`] part by part while it publishes. Both go
//! through the same reader, so a file that the count accepts is read to
//! its end without an error, and a bad record is refused before the first
//! part is published (rather than after some parts went out).

use std::io::Read;

use anyhow::bail;
use serde_json::{Map, Value};

/// Recipients read from a CSV, record by record.
pub struct CsvRecipients<R> {
    records: csv::StringRecordsIntoIter<R>,
    headers: csv::StringRecord,
    email_col: usize,
    name_col: Option<usize>,
    /// The file's name in error messages.
    name: String,
}

impl<R: Read> CsvRecipients<R> {
    /// Reads the header row; fails when it has no `email` column. `name`
    /// is the file as error messages name it.
    pub fn new(input: R, name: &str) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(false)
            .from_reader(input);
        let headers = reader.headers().map_err(|e| csv_error(name, e))?.clone();
        let Some(email_col) = headers.iter().position(|h| h.eq_ignore_ascii_case("email")) else {
            bail!("{name}: the CSV header has no \"email\" column");
        };
        let name_col = headers.iter().position(|h| h.eq_ignore_ascii_case("name"));
        Ok(Self {
            records: reader.into_records(),
            headers,
            email_col,
            name_col,
            name: name.to_string(),
        })
    }

    /// Reads every remaining record as [`next_chunk`](Self::next_chunk)
    /// would and counts them; the first bad record is the error.
    pub fn count(mut self) -> anyhow::Result<usize> {
        let mut n = 0;
        while self.next_record()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// The next `n` recipients as request recipients (`email`, `name`
    /// when not empty, `vars` when there are other columns); fewer at the
    /// end of the file.
    pub fn next_chunk(&mut self, n: usize) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::with_capacity(n.min(100_000));
        while out.len() < n {
            let Some(record) = self.next_record()? else {
                break;
            };
            let mut vars = Map::new();
            for (i, value) in record.iter().enumerate() {
                if i != self.email_col && Some(i) != self.name_col {
                    vars.insert(self.headers[i].to_string(), Value::from(value));
                }
            }
            let mut r = Map::new();
            r.insert("email".into(), Value::from(&record[self.email_col]));
            if let Some(name) = self.name_col.map(|i| &record[i]).filter(|v| !v.is_empty()) {
                r.insert("name".into(), Value::from(name));
            }
            if !vars.is_empty() {
                r.insert("vars".into(), Value::Object(vars));
            }
            out.push(Value::Object(r));
        }
        Ok(out)
    }

    fn next_record(&mut self) -> anyhow::Result<Option<csv::StringRecord>> {
        self.records
            .next()
            .transpose()
            .map_err(|e| csv_error(&self.name, e))
    }
}

/// A CSV reading error said once, with its line: the csv crate's own text
/// counts records from 1 after the header and lines from 1, which read as
/// two different places when wrapped in another count.
fn csv_error(name: &str, e: csv::Error) -> anyhow::Error {
    let line = e.position().map(|p| p.line());
    let what = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} field(s) where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        _ => e.to_string(),
    };
    match line {
        Some(l) => anyhow::anyhow!("{name}, line {l}: {what}"),
        None => anyhow::anyhow!("{name}: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_all(csv: &[u8], chunk: usize) -> anyhow::Result<Vec<Value>> {
        let mut r = CsvRecipients::new(csv, "people.csv")?;
        let mut all = Vec::new();
        loop {
            let c = r.next_chunk(chunk)?;
            if c.is_empty() {
                return Ok(all);
            }
            all.extend(c);
        }
    }

    #[test]
    fn records_become_recipients_with_their_other_columns_as_vars() {
        let csv = b"\xef\xbb\xbfEmail, Name ,plan\n a@x.example ,Ann,gold\nb@x.example,,\n";
        assert_eq!(
            CsvRecipients::new(&csv[..], "people.csv")
                .unwrap()
                .count()
                .unwrap(),
            2
        );
        assert_eq!(
            read_all(csv, 1).unwrap(),
            vec![
                json!({"email": "a@x.example", "name": "Ann", "vars": {"plan": "gold"}}),
                json!({"email": "b@x.example", "vars": {"plan": ""}}),
            ]
        );
    }

    #[test]
    fn a_file_the_count_accepts_is_read_to_its_end() {
        // Each was counted by a pass over raw bytes while the parts were
        // read as UTF-8 text: the count accepted them and the submission
        // failed after publishing its first parts.
        let cases: &[&[u8]] = &[
            b"email\na@x.example\nb@x.example\n\xff@x.example\n",
            b"email,name\na@x.example,A\nb@x.example,\xc3\n",
            // What the submit_csv fuzz target found against the old count
            // (fuzz/regressions/submit_csv/, less its first byte).
            b"Email\r\xf5\x00\xc3\xa9",
        ];
        for csv in cases {
            let counted = CsvRecipients::new(*csv, "people.csv").unwrap().count();
            let read = read_all(csv, 1);
            assert!(
                counted.is_err() && read.is_err(),
                "{:?}: counted {counted:?}, read {read:?}",
                String::from_utf8_lossy(csv)
            );
        }
    }

    #[test]
    fn bad_files_are_refused_naming_one_line() {
        let no_email = CsvRecipients::new(&b"mail,name\na,b\n"[..], "people.csv")
            .err()
            .unwrap();
        assert_eq!(
            no_email.to_string(),
            "people.csv: the CSV header has no \"email\" column"
        );
        let cases: &[(&[u8], &str)] = &[
            (
                b"email,name\na@example.com,Ann\nb@example.com,Bob,extra\n",
                "people.csv, line 3: 3 field(s) where the header has 2",
            ),
            (
                b"email,name\na@x.example,A\nb@x.example\n",
                "people.csv, line 3: 1 field(s) where the header has 2",
            ),
            (
                b"email\na@x.example\n\xff@x.example\n",
                "people.csv, line 3: not valid UTF-8",
            ),
        ];
        for (csv, expected) in cases {
            let counted = CsvRecipients::new(*csv, "people.csv")
                .unwrap()
                .count()
                .unwrap_err();
            assert_eq!(counted.to_string(), *expected);
            assert_eq!(read_all(csv, 1).unwrap_err().to_string(), *expected);
        }
    }
}

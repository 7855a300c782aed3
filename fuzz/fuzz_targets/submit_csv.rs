//! The recipients CSV of `mailpipe submit --csv`
//! (`mailpipe_ctl::recipients::CsvRecipients`) with any bytes: the count
//! pass and then the part-by-part reading, as `submit` does them.
//!
//! The first byte sets the part size (1 to 8 recipients), the rest is the
//! file.
//!
//! What must hold:
//! - no panic;
//! - when the count pass accepts the file, reading it part by part gives
//!   exactly that many recipients without an error (`submit` publishes
//!   parts as it reads: an error half way would leave a campaign half
//!   submitted);
//! - when the count pass refuses it, so does the reading, before the end;
//! - the recipients do not depend on the part size: reading one by one
//!   gives the same list (or fails as well);
//! - every recipient is an object with a string `email`, a non-empty
//!   string `name` only when there is one, and non-empty `vars` of strings
//!   only when there are other columns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpipe_ctl::recipients::CsvRecipients;
use serde_json::Value;

/// Reads every recipient in parts of `part`; the error, if any, ends it.
fn read_all(csv: &[u8], part: usize) -> (Vec<Value>, Option<String>) {
    let mut reader = match CsvRecipients::new(csv, "fuzz.csv") {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut all = Vec::new();
    loop {
        match reader.next_chunk(part) {
            Ok(chunk) if chunk.is_empty() => return (all, None),
            Ok(chunk) => {
                assert!(
                    chunk.len() <= part,
                    "{} recipients in a part of {part}",
                    chunk.len()
                );
                all.extend(chunk);
            }
            Err(e) => return (all, Some(format!("{e:#}"))),
        }
    }
}

fn check_recipient(r: &Value) {
    let Value::Object(fields) = r else {
        panic!("not an object: {r}");
    };
    for (key, value) in fields {
        match key.as_str() {
            "email" => assert!(value.is_string(), "{r}"),
            "name" => assert!(value.as_str().is_some_and(|n| !n.is_empty()), "{r}"),
            "vars" => {
                let vars = value.as_object().expect("vars is an object");
                assert!(!vars.is_empty(), "empty vars: {r}");
                assert!(vars.values().all(Value::is_string), "{r}");
            }
            other => panic!("unexpected field {other:?} in {r}"),
        }
    }
    assert!(fields.contains_key("email"), "no email: {r}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, csv)) = data.split_first() else {
        return;
    };
    let part = 1 + usize::from(first % 8);
    let counted = CsvRecipients::new(csv, "fuzz.csv").and_then(|r| r.count());
    let (recipients, error) = read_all(csv, part);
    match &counted {
        Ok(n) => {
            assert_eq!(
                error, None,
                "counted {n} recipients, then the reading failed"
            );
            assert_eq!(
                recipients.len(),
                *n,
                "counted {n}, read {}",
                recipients.len()
            );
        }
        Err(e) => assert!(
            error.is_some(),
            "the count refused the file ({e:#}), the reading did not"
        ),
    }
    recipients.iter().for_each(check_recipient);
    // (Up to an error, the records of the part being read are dropped with
    // it, so only whole readings are compared.)
    let (one_by_one, error_1) = read_all(csv, 1);
    assert_eq!(error_1.is_some(), error.is_some());
    if error.is_none() {
        assert_eq!(
            one_by_one, recipients,
            "the recipients depend on the part size"
        );
    }
});

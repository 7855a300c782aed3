//! Bounce and feedback-report parsing (`mailpipe_core::bounce::parse`) with
//! any bytes: what anyone can send to the bounce intake. Parsing must return
//! (never panic, never hang), and what it returns must be well formed: a
//! delivery report names at least one recipient, statuses have the RFC 3464
//! shape, addresses (recipients, complainants, unsubscribing senders) are
//! bare and lowercased where documented, and every recipient's failure can
//! be built and printed.
//!
//! `parse` catches panics of its own (it turns them into `Unrecognized`), as
//! a last resort for the intake. Here that guard hides nothing: libFuzzer's
//! panic hook aborts the process where the panic starts, before any
//! unwinding, so a panic anywhere under `parse` (ours, or a dependency's,
//! debug assertions included) is a crash. No panic is expected or excused:
//! the one mail-parser has on a message directly inside a message is
//! avoided by `mime::read` (see `fuzz/regressions/bounce_parse/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpipe_core::bounce::{parse, Report};

fn is_status(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    for address in &parsed.addressed_to {
        assert!(address.contains('@'), "not an address: {address:?}");
        assert_eq!(address, &address.to_ascii_lowercase());
    }
    match &parsed.report {
        Report::Delivery(report) => {
            assert!(!report.recipients.is_empty(), "a delivery report without recipients");
            for r in &report.recipients {
                if let Some(status) = &r.status {
                    assert!(is_status(status), "bad status {status:?}");
                }
                if let Some(address) = &r.final_recipient {
                    assert_eq!(address, &address.to_ascii_lowercase());
                }
                let _ = r.failure().to_string();
            }
        }
        Report::Complaint(report) => {
            assert!(!report.feedback_type.is_empty());
            assert_eq!(report.feedback_type, report.feedback_type.to_ascii_lowercase());
            for address in report.recipients.iter().chain(&report.original_rcpt_to) {
                assert!(address.contains('@'), "not an address: {address:?}");
                assert_eq!(address, &address.to_ascii_lowercase());
            }
        }
        Report::Unsubscribe(request) => {
            if let Some(address) = &request.address {
                assert!(address.contains('@'), "not an address: {address:?}");
                assert_eq!(address, &address.to_ascii_lowercase());
            }
        }
        Report::AutoReply => {}
        Report::Unrecognized(why) => assert!(!why.is_empty()),
    }
});

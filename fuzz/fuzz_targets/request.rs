//! Request parsing and validation at the edge: any bytes an application can
//! publish to the requests queue. `validate` must answer every input with a
//! request or a rejection (never panic, never hang), and what it accepts
//! must hold the invariants the expander relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailpipe_core::address::{is_header_safe, parse_mailbox, EmailAddress};
use mailpipe_core::message::Recipient;

fuzz_target!(|data: &[u8]| {
    let valid = match mailpipe_expander::validate(data, None, 1 << 20) {
        Ok(v) => v,
        Err(rejection) => {
            // Every rejection has a reason and a message.
            assert!(!rejection.reason().is_empty());
            let _ = rejection.to_string();
            return;
        }
    };
    // The request id is what Redis keys and AMQP headers are built from.
    assert!(
        !valid.id.is_empty() && valid.id.len() <= 128,
        "{:?}",
        valid.id
    );
    assert!(
        valid
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)),
        "{:?}",
        valid.id
    );
    // Sender addresses that passed validation are header-safe.
    let (_, from) = parse_mailbox(&valid.content.from).expect("validated from");
    assert!(is_header_safe(&from.to_string()));
    assert!(valid.part.index >= 1 && valid.part.index <= valid.part.total);
    // Recipients the expander would accept: the canonical address has an
    // ASCII domain, is ASCII unless it needs SMTPUTF8, has no control or
    // space character, is header-safe, at most 254 octets, and parsing it again gives it back.
    for raw in &valid.request.recipients {
        let Ok(r) = serde_json::from_str::<Recipient>(raw.get()) else {
            continue;
        };
        check_address(&r.email);
    }
});

fn check_address(raw: &str) {
    let Ok(a) = EmailAddress::parse(raw) else {
        return;
    };
    let s = a.to_string();
    assert_eq!(
        !s.is_ascii(),
        a.needs_smtputf8(),
        "SMTPUTF8 need misjudged: {s:?}"
    );
    assert!(
        !s.chars().any(|c| c.is_control() || c.is_whitespace()),
        "control or space in {s:?}"
    );
    assert!(a.domain().is_ascii(), "domain not ASCII: {:?}", a.domain());
    assert!(is_header_safe(&s), "{s:?}");
    assert!(s.len() <= 254, "{} octets: {s:?}", s.len());
    let again =
        EmailAddress::parse(&s).unwrap_or_else(|e| panic!("{s:?} does not parse again: {e}"));
    assert_eq!(again, a, "canonical form is not stable");
    assert_eq!(again.key(), a.key());
}

//! SMTP reply parsing and failure classification: any text a remote server
//! (or an operator pasting a bounce) can produce. Parsing, classification and
//! normalization must never panic, and normalization is documented to be
//! stable (normalizing its result gives it back).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailpipe_core::classify::{normalize, parse_reply, Classifier, Failure};

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(Classifier::default)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_reply(text);
    let failure = Failure::from_reply_text(text);
    let class = classifier().classify(&failure);
    let _ = (class.reason.as_str(), class.kind.as_str());
    // The failure as the retrier prints and stores it.
    let shown = failure.to_string();
    let _ = classifier().classify(&Failure::from_reply_text(&shown));
    let n = normalize(text);
    assert_eq!(normalize(&n), n, "normalize is not stable for {text:?}");
});

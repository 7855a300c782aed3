//! Robustness: thousands of truncated, mutated and spliced variants of the
//! samples, and pathological inputs, must never panic and stay bounded.

use super::*;

/// A tiny deterministic generator (xorshift64*), so that the fuzz-style test
/// is reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that make parsers take unusual paths.
const NASTY: &[&[u8]] = &[
    b"\r\n",
    b"\n\n",
    b"\r",
    b"\0",
    b"\xff",
    b"\xc3",
    b"--",
    b"--b--",
    b":",
    b";",
    b"<",
    b">",
    b"\"",
    b"=?utf-8?B?",
    b"?=",
    b"=\r\n",
    b" ",
    b"\t",
    b"Content-Type: multipart/report; boundary=\"",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Final-Recipient: rfc822; ",
    b"Action: ",
    b"Status: 5.",
    b"Diagnostic-Code: smtp; 550 ",
    b"Feedback-Type: ",
    b"message/rfc822",
    b"message/delivery-status",
    b"message/feedback-report",
    b"said: 550 ",
    b"<a@b>:\n",
    b"@",
    b"\xe2\x80\xae",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(8) {
            0 => data.truncate(at),
            1 => {
                let n = rng.below(64).min(data.len() - at);
                data.drain(at..at + n);
            }
            2 => {
                if at < data.len() {
                    data[at] = rng.next() as u8;
                }
            }
            3 => {
                let nasty = NASTY[rng.below(NASTY.len())];
                data.splice(at..at, nasty.iter().copied());
            }
            4 => {
                // Splice in a piece of another sample.
                let start = rng.below(other.len());
                let end = (start + rng.below(2048)).min(other.len());
                data.splice(at..at, other[start..end].iter().copied());
            }
            5 => {
                // Repeat a chunk (many recipients, many parts, long lines).
                let end = (at + rng.below(200)).min(data.len());
                let chunk = data[at..end].to_vec();
                for _ in 0..rng.below(50) {
                    data.splice(at..at, chunk.iter().copied());
                }
            }
            6 => {
                for byte in data.iter_mut().skip(at).take(rng.below(32)) {
                    *byte = byte.to_ascii_uppercase();
                }
            }
            _ => {
                let n = rng.below(256);
                let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(at..at, noise);
            }
        }
    }
    data
}

#[test]
fn mutated_truncated_and_spliced_samples_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for round in 0..120 {
        for (i, (_, raw)) in SAMPLES.iter().enumerate() {
            let other = SAMPLES[(i + 1 + round) % SAMPLES.len()].1;
            let input = mutate(&mut rng, raw, other);
            let parsed = parse_unguarded(&input);
            // Whatever came out is well formed.
            if let Report::Delivery(report) = &parsed.report {
                assert!(!report.recipients.is_empty());
                for r in &report.recipients {
                    assert!(r.status.as_deref().is_none_or(dsn::valid_status));
                    let _ = r.failure();
                }
            }
            runs += 1;
        }
    }
    // Every prefix of one sample of each kind.
    for name in [
        "sisimai-postfix-02.eml",
        "sisimai-arf-07.eml",
        "sisimai-exim-02.eml",
    ] {
        let raw = sample(name);
        for end in (0..raw.len()).step_by(7) {
            let _ = parse_unguarded(&raw[..end]);
            runs += 1;
        }
    }
    assert!(runs > 3000, "{runs} runs");
}

#[test]
fn pathological_inputs_are_bounded() {
    // Deeply nested multiparts.
    let mut nested = String::new();
    for i in 0..2000 {
        nested.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    nested.push_str("Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\nAction: failed\r\n");
    let _ = parse_unguarded(nested.as_bytes());

    // A header line of a few megabytes, and a header of a million short lines.
    let long = format!("Subject: {}\r\nX: y\r\n\r\nbody", "x".repeat(4 << 20));
    let _ = parse_unguarded(long.as_bytes());
    let many = format!("{}\r\nbody", "X-A: b\r\n".repeat(1 << 20));
    let _ = parse_unguarded(many.as_bytes());

    // Many recipients: capped.
    let mut dsn = String::from("Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n");
    for i in 0..5000 {
        dsn.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; u{i}@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
    }
    dsn.push_str("--b--\r\n");
    match parse_unguarded(dsn.as_bytes()).report {
        Report::Delivery(report) => assert_eq!(report.recipients.len(), dsn::MAX_RECIPIENTS),
        other => panic!("{other:?}"),
    }

    // Random bytes.
    let mut rng = Rng(42);
    for _ in 0..200 {
        let n = rng.below(4096);
        let noise: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        let _ = parse_unguarded(&noise);
    }
}

//! `mailpipe-bench sign`: DKIM signing rates of the crypto libraries mailpipe
//! could sign with, side by side in one run on this machine.
//!
//! Measured: RSA-2048 PKCS#1 v1.5 SHA-256 and Ed25519 (of the SHA-256 of the
//! data, as DKIM's ed25519-sha256 signs) with *ring*, aws-lc-rs and the
//! `openssl` crate (the system's libssl; for RSA also its low-level
//! `RSA_private_encrypt`, "openssl-raw"), each on 1 thread and on N threads
//! sharing one key (as the sender's tasks share one signer). The signed data
//! is what a DKIM signer signs: ~`--bytes` of canonical header fields.
//!
//! The machine is shared: every round measures every (algorithm, library,
//! threads) cell once, in turn, so that a burst of load from elsewhere hits
//! all libraries of a round alike. The result is the median over rounds of
//! each cell, plus each library's ratio to *ring* within the same round
//! (median of those ratios).
//!
//! Before measuring, all libraries sign the same data with the same key and
//! the signatures are compared: PKCS#1 v1.5 and Ed25519 are deterministic,
//! so they must be byte-identical.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use serde_json::{json, Value};

type SignFn = Box<dyn Fn(&[u8]) -> Vec<u8> + Sync>;

struct Cell {
    algorithm: &'static str,
    library: &'static str,
    sign: SignFn,
}

fn cells() -> anyhow::Result<Vec<Cell>> {
    // One RSA-2048 key (e = 65537) for all three libraries, made by OpenSSL
    // and handed over as PKCS#8 DER.
    let rsa = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let pkcs8 = rsa.private_key_to_pkcs8()?;
    let raw_rsa = rsa.rsa()?;
    let ring_rsa = ring::signature::RsaKeyPair::from_pkcs8(&pkcs8)
        .map_err(|e| anyhow::anyhow!("ring rejects the RSA key: {e}"))?;
    let aws_rsa = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&pkcs8)
        .map_err(|e| anyhow::anyhow!("aws-lc-rs rejects the RSA key: {e}"))?;

    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    let ring_ed = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| anyhow::anyhow!("ring: {e}"))?;
    let aws_ed = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| anyhow::anyhow!("aws-lc-rs: {e}"))?;
    let ossl_ed =
        openssl::pkey::PKey::private_key_from_raw_bytes(&seed, openssl::pkey::Id::ED25519)?;

    let ring_rng = ring::rand::SystemRandom::new();
    let aws_rng = aws_lc_rs::rand::SystemRandom::new();
    Ok(vec![
        Cell {
            algorithm: "rsa2048",
            library: "ring",
            sign: Box::new(move |data| {
                let mut out = vec![0u8; ring_rsa.public().modulus_len()];
                ring_rsa
                    .sign(
                        &ring::signature::RSA_PKCS1_SHA256,
                        &ring_rng,
                        data,
                        &mut out,
                    )
                    .expect("ring RSA signing");
                out
            }),
        },
        Cell {
            algorithm: "rsa2048",
            library: "aws-lc-rs",
            sign: Box::new(move |data| {
                let mut out = vec![0u8; aws_rsa.public_modulus_len()];
                aws_rsa
                    .sign(
                        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                        &aws_rng,
                        data,
                        &mut out,
                    )
                    .expect("aws-lc-rs RSA signing");
                out
            }),
        },
        Cell {
            algorithm: "rsa2048",
            library: "openssl",
            sign: Box::new(move |data| {
                let mut signer =
                    openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &rsa)
                        .expect("openssl signer");
                signer
                    .sign_oneshot_to_vec(data)
                    .expect("openssl RSA signing")
            }),
        },
        Cell {
            // The low-level RSA_private_encrypt (deprecated since OpenSSL
            // 3.0) on the DigestInfo: what `openssl speed rsa2048` times,
            // without the EVP context set-up of every signature above.
            algorithm: "rsa2048",
            library: "openssl-raw",
            sign: Box::new(move |data| {
                // DER DigestInfo prefix of SHA-256 (RFC 8017, 9.2 note 1).
                const PREFIX: [u8; 19] = [
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ];
                let mut info = PREFIX.to_vec();
                info.extend_from_slice(&openssl::sha::sha256(data));
                let mut out = vec![0u8; raw_rsa.size() as usize];
                let n = raw_rsa
                    .private_encrypt(&info, &mut out, openssl::rsa::Padding::PKCS1)
                    .expect("openssl raw RSA signing");
                out.truncate(n);
                out
            }),
        },
        Cell {
            algorithm: "ed25519",
            library: "ring",
            sign: Box::new(move |data| {
                let hash = ring::digest::digest(&ring::digest::SHA256, data);
                ring_ed.sign(hash.as_ref()).as_ref().to_vec()
            }),
        },
        Cell {
            algorithm: "ed25519",
            library: "aws-lc-rs",
            sign: Box::new(move |data| {
                let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
                aws_ed.sign(hash.as_ref()).as_ref().to_vec()
            }),
        },
        Cell {
            algorithm: "ed25519",
            library: "openssl",
            sign: Box::new(move |data| {
                let hash = openssl::sha::sha256(data);
                let mut signer =
                    openssl::sign::Signer::new_without_digest(&ossl_ed).expect("openssl signer");
                signer
                    .sign_oneshot_to_vec(&hash)
                    .expect("openssl Ed25519 signing")
            }),
        },
    ])
}

/// Signatures per second of `sign` over `data` on `threads` threads for
/// about `dur`.
fn rate(sign: &SignFn, data: &[u8], threads: usize, dur: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(sign(std::hint::black_box(data)));
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
    });
    // Every thread finishes the signature in flight: count the time too.
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn sign(seconds: f64, rounds: usize, threads: &[usize], bytes: usize) -> anyhow::Result<Value> {
    ensure!(rounds > 0 && !threads.is_empty(), "nothing to measure");
    let cells = cells().context("preparing keys")?;
    // Header-like data: printable ASCII in lines of 78.
    let data: Vec<u8> = (0..bytes)
        .map(|i| {
            if i % 78 == 77 {
                b'\n'
            } else {
                b' ' + (i % 90) as u8
            }
        })
        .collect();

    // Same key, same data: deterministic schemes give identical signatures.
    for algorithm in ["rsa2048", "ed25519"] {
        let sigs: Vec<(&str, Vec<u8>)> = cells
            .iter()
            .filter(|c| c.algorithm == algorithm)
            .map(|c| (c.library, (c.sign)(&data)))
            .collect();
        for (library, sig) in &sigs[1..] {
            ensure!(
                *sig == sigs[0].1,
                "{algorithm}: {library}'s signature differs from {}'s",
                sigs[0].0
            );
        }
    }

    let dur = Duration::from_secs_f64(seconds);
    // rates[cell][threads index][round]
    let mut rates = vec![vec![Vec::with_capacity(rounds); threads.len()]; cells.len()];
    for round in 0..rounds {
        for (ti, &t) in threads.iter().enumerate() {
            for (ci, cell) in cells.iter().enumerate() {
                let r = rate(&cell.sign, &data, t, dur);
                eprintln!(
                    "round {}/{rounds}: {:8} {:10} {t} thread(s): {r:9.0}/s",
                    round + 1,
                    cell.algorithm,
                    cell.library
                );
                rates[ci][ti].push(r);
            }
        }
    }

    let mut results = Vec::new();
    for (ci, cell) in cells.iter().enumerate() {
        let ring_index = cells
            .iter()
            .position(|c| c.algorithm == cell.algorithm && c.library == "ring")
            .unwrap_or(ci);
        let mut per_threads = serde_json::Map::new();
        for (ti, &t) in threads.iter().enumerate() {
            let ratios: Vec<f64> = (0..rounds)
                .map(|r| rates[ci][ti][r] / rates[ring_index][ti][r])
                .collect();
            per_threads.insert(
                t.to_string(),
                json!({
                    "per_s": median(rates[ci][ti].clone()).round(),
                    "rounds": rates[ci][ti].iter().map(|r| r.round()).collect::<Vec<_>>(),
                    "vs_ring": (median(ratios) * 100.0).round() / 100.0,
                }),
            );
        }
        results.push(json!({
            "algorithm": cell.algorithm,
            "library": cell.library,
            "threads": per_threads,
        }));
    }
    Ok(json!({
        "seconds_per_cell": seconds,
        "rounds": rounds,
        "bytes": bytes,
        "openssl": openssl::version::version(),
        "results": results,
    }))
}

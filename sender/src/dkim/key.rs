//! The private key files of `sender.dkim`: RSA (PKCS#1 or PKCS#8 PEM) and
//! Ed25519 (PKCS#8 PEM, or the 32-byte seed in base64).

use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair};
use data_encoding::BASE64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

pub(super) fn parse_rsa(contents: &[u8]) -> anyhow::Result<RsaKeyPair> {
    let der = PrivateKeyDer::from_pem_slice(contents).map_err(|e| {
        anyhow::anyhow!(
            "no unencrypted PEM private key found ({e}); rsa_sha256 takes PKCS#1 \
             (BEGIN RSA PRIVATE KEY) or PKCS#8 (BEGIN PRIVATE KEY) PEM"
        )
    })?;
    let pair = match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => anyhow::bail!("an EC key is not an RSA key"),
    };
    pair.map_err(|e| {
        anyhow::anyhow!(
            "not a usable RSA private key ({e}); RSA keys need 2048 to 8192 bits \
             (an Ed25519 key needs algorithm: ed25519_sha256)"
        )
    })
}

pub(super) fn parse_ed25519(contents: &[u8]) -> anyhow::Result<Ed25519KeyPair> {
    let text = std::str::from_utf8(contents).unwrap_or_default().trim();
    if text.starts_with("-----BEGIN") {
        return match PrivateKeyDer::from_pem_slice(contents) {
            Ok(PrivateKeyDer::Pkcs8(k)) => {
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der()).map_err(|e| {
                    anyhow::anyhow!(
                        "not an Ed25519 PKCS#8 key ({e}); an RSA key needs algorithm: rsa_sha256"
                    )
                })
            }
            Ok(_) => anyhow::bail!("not an Ed25519 key: ed25519_sha256 takes PKCS#8 PEM"),
            Err(e) => anyhow::bail!("no unencrypted PEM private key found ({e})"),
        };
    }
    let seed = BASE64
        .decode(text.as_bytes())
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ed25519_sha256 takes a PKCS#8 PEM file or the 32-byte private key in base64"
            )
        })?;
    Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| anyhow::anyhow!("not an Ed25519 private key ({e})"))
}

//! VERP return paths: the envelope sender of each message names the message,
//! so an asynchronous bounce sent back to it says which message
//! failed without anyone parsing the bounce's body.
//!
//! The address is `{local_part}+{token}@{domain}` (`bounces.*` settings). The
//! token is 40 characters of lowercase base32 (RFC 4648, no padding) over 25
//! bytes: the 16 bytes of the message id followed by the first 9 bytes (72
//! bits) of an HMAC-SHA256 tag over a version prefix and those 16 bytes.
//! Tokens are therefore opaque (no recipient address shows), cannot be forged
//! without the key, and keep the local part within the 64 octets of RFC 5321
//! for local parts of up to [`MAX_LOCAL_PART_LEN`] characters.
//!
//! Depended upon by the sender (which writes the addresses) and the bounce
//! intake (which reads them, answering 550 to [`VerpError::NotVerp`]): both
//! must run with the same `bounces.keys`. The first key signs and every key
//! verifies, so rotating means adding the new key first, keeping the old one
//! second for as long as bounces of older mail may come back (days), then
//! removing it.

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

mod settings;

pub use settings::{BounceSettings, ImapSettings};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a message id.
const ID_LEN: usize = 16;
/// Bytes of the truncated HMAC tag: 72 bits, so that id and tag make 25
/// bytes, exactly 40 base32 characters with no leftover bits (every token has
/// one spelling, up to case).
const TAG_LEN: usize = 9;
/// Characters of a token.
const TOKEN_LEN: usize = (ID_LEN + TAG_LEN) * 8 / 5;
/// Domain separation: these tags sign nothing else, and a later token format
/// gets a new prefix.
const TAG_PREFIX: &[u8] = b"mailpipe-verp-v1\0";

/// The longest `bounces.local_part` whose VERP local part
/// (`{local_part}+{token}`) stays within RFC 5321's 64 octets.
pub const MAX_LOCAL_PART_LEN: usize = 64 - 1 - TOKEN_LEN;

/// Why an address is not a valid VERP address of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerpError {
    /// Another domain or local part, or no token: not a bounce address of
    /// this mailpipe (the intake answers 550 "no such user").
    #[error("not a VERP address of this bounce domain")]
    NotVerp,
    /// Our local part and domain, but the token is not 40 base32 characters
    /// (or, when writing an address, the message id is not 32 hex digits).
    #[error("malformed VERP token")]
    Malformed,
    /// A well-formed token whose tag matches none of the keys: forged, or
    /// signed with a key that has been removed since.
    #[error("VERP token signature matches none of the keys")]
    Forged,
}

/// Writes and reads VERP addresses. Cheap to share: the keys are set up once.
#[derive(Clone)]
pub struct Verp {
    local_part: String,
    domain: String,
    /// Keyed HMAC states, cloned per token rather than re-keyed. The first
    /// signs; all verify.
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Verp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verp")
            .field("local_part", &self.local_part)
            .field("domain", &self.domain)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Verp {
    /// The VERP of `bounces` settings; `None` when `bounces.domain` is not
    /// set (no VERP: the envelope sender is the From address).
    ///
    /// # Panics
    ///
    /// When the domain is set but there are no keys, which
    /// `mailpipe_common::config::Settings::validate` refuses.
    pub fn from_settings(s: &BounceSettings) -> Option<Verp> {
        let domain = s.domain.as_deref()?;
        let keys = s
            .keys
            .iter()
            .map(|k| k.expose_secret().as_bytes().to_vec())
            .collect();
        Some(Verp::new(&s.local_part, domain, keys))
    }

    /// # Panics
    ///
    /// When `keys` is empty: there would be nothing to sign with.
    pub fn new(local_part: &str, domain: &str, keys: Vec<Vec<u8>>) -> Verp {
        assert!(!keys.is_empty(), "VERP needs at least one key");
        Verp {
            local_part: local_part.to_string(),
            domain: domain.to_string(),
            keys: keys
                .iter()
                .map(|k| HmacSha256::new_from_slice(k).expect("HMAC takes keys of any length"))
                .collect(),
        }
    }

    /// The envelope sender for a message id: `{local_part}+{token}@{domain}`.
    ///
    /// # Panics
    ///
    /// When `message_id` is not a mailpipe message id (32 hex digits, see
    /// [`message_id`](crate::message::message_id)); [`Self::try_address`]
    /// returns an error instead.
    pub fn address(&self, message_id: &str) -> String {
        self.try_address(message_id)
            .expect("a mailpipe message id is 32 hex digits")
    }

    /// [`Self::address`], or [`VerpError::Malformed`] when `message_id` is
    /// not 32 hex digits.
    pub fn try_address(&self, message_id: &str) -> Result<String, VerpError> {
        let mut id = [0u8; ID_LEN];
        hex::decode_to_slice(message_id, &mut id).map_err(|_| VerpError::Malformed)?;
        let mut raw = [0u8; ID_LEN + TAG_LEN];
        raw[..ID_LEN].copy_from_slice(&id);
        raw[ID_LEN..].copy_from_slice(&tag(&self.keys[0], &id)[..TAG_LEN]);
        let token = BASE32_NOPAD.encode(&raw).to_ascii_lowercase();
        Ok(format!("{}+{}@{}", self.local_part, token, self.domain))
    }

    /// The message id (32 lowercase hex digits) a bounce address names.
    ///
    /// Local part, token and domain are matched without regard to case
    /// (some MTAs change the case of local parts); surrounding angle
    /// brackets, as in an SMTP `RCPT TO:<…>`, are accepted. The tag is
    /// compared in constant time.
    pub fn decode(&self, address: &str) -> Result<String, VerpError> {
        let address = address.trim();
        let address = address
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(address);
        let (local, domain) = address.rsplit_once('@').ok_or(VerpError::NotVerp)?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return Err(VerpError::NotVerp);
        }
        let (prefix, token) = local.rsplit_once('+').ok_or(VerpError::NotVerp)?;
        if !prefix.eq_ignore_ascii_case(&self.local_part) || token.is_empty() {
            return Err(VerpError::NotVerp);
        }
        if token.len() != TOKEN_LEN {
            return Err(VerpError::Malformed);
        }
        let mut raw = [0u8; ID_LEN + TAG_LEN];
        BASE32_NOPAD
            .decode_mut(token.to_ascii_uppercase().as_bytes(), &mut raw)
            .map_err(|_| VerpError::Malformed)?;
        let (id, given) = raw.split_at(ID_LEN);
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(TAG_PREFIX);
            mac.update(id);
            if mac.verify_truncated_left(given).is_ok() {
                return Ok(hex::encode(id));
            }
        }
        Err(VerpError::Forged)
    }
}

/// The full HMAC-SHA256 tag of a message id.
fn tag(key: &HmacSha256, id: &[u8]) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(TAG_PREFIX);
    mac.update(id);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn verp(keys: &[&str]) -> Verp {
        Verp::new(
            "bounces",
            "bounce.example.com",
            keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
        )
    }

    #[test]
    fn an_address_decodes_to_its_message_id() {
        let v = verp(&["first key, 16+ chars"]);
        let a = v.address(ID);
        assert!(a.starts_with("bounces+"), "{a}");
        assert!(a.ends_with("@bounce.example.com"), "{a}");
        assert_eq!(v.decode(&a), Ok(ID.to_string()));
        assert_eq!(v.decode(&format!("<{a}>")), Ok(ID.to_string()));
        let other = crate::message::message_id("req-1", "someone@example.org");
        assert_eq!(v.decode(&v.address(&other)), Ok(other));
    }

    #[test]
    fn the_token_is_lowercase_base32_and_hides_the_id() {
        let a = verp(&["first key, 16+ chars"]).address(ID);
        let token = a
            .strip_prefix("bounces+")
            .and_then(|t| t.strip_suffix("@bounce.example.com"))
            .unwrap();
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert!(!a.contains(ID));
    }

    #[test]
    fn a_changed_token_character_is_forged() {
        let v = verp(&["first key, 16+ chars"]);
        let a = v.address(ID);
        let plus = a.find('+').unwrap();
        // Every position: in the id part and in the tag part.
        for i in plus + 1..plus + 1 + TOKEN_LEN {
            let mut bytes = a.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(v.decode(&changed), Err(VerpError::Forged), "{changed}");
        }
    }

    #[test]
    fn other_domains_local_parts_and_plain_addresses_are_not_verp() {
        let v = verp(&["first key, 16+ chars"]);
        let a = v.address(ID);
        let token = &a[a.find('+').unwrap() + 1..a.find('@').unwrap()];
        for other in [
            format!("bounces+{token}@other.example.com"),
            format!("bounces+{token}@example.com"),
            format!("returns+{token}@bounce.example.com"),
            "bounces@bounce.example.com".to_string(),
            "bounces+@bounce.example.com".to_string(),
            "postmaster@bounce.example.com".to_string(),
            "no at sign".to_string(),
        ] {
            assert_eq!(v.decode(&other), Err(VerpError::NotVerp), "{other}");
        }
    }

    #[test]
    fn bad_tokens_are_malformed() {
        let v = verp(&["first key, 16+ chars"]);
        for bad in [
            "bounces+abc@bounce.example.com".to_string(),
            format!("bounces+{}@bounce.example.com", "1".repeat(TOKEN_LEN)),
            format!("bounces+{}@bounce.example.com", "a".repeat(TOKEN_LEN + 1)),
        ] {
            assert_eq!(v.decode(&bad), Err(VerpError::Malformed), "{bad}");
        }
        assert_eq!(v.try_address("not-an-id"), Err(VerpError::Malformed));
        assert_eq!(v.try_address(&ID[..30]), Err(VerpError::Malformed));
    }

    #[test]
    fn case_changes_by_mtas_still_decode() {
        let v = verp(&["first key, 16+ chars"]);
        let a = v.address(ID);
        assert_eq!(v.decode(&a.to_ascii_uppercase()), Ok(ID.to_string()));
        let mixed: String = a
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(v.decode(&mixed), Ok(ID.to_string()));
    }

    #[test]
    fn rotated_keys_verify_until_removed() {
        let old = verp(&["the old key, 16+ chars"]);
        let a = old.address(ID);
        let rotated = verp(&["the new key, 16+ chars", "the old key, 16+ chars"]);
        assert_eq!(rotated.decode(&a), Ok(ID.to_string()));
        // New mail is signed with the new key, which the old list refuses.
        let fresh = rotated.address(ID);
        assert_ne!(fresh, a);
        assert_eq!(old.decode(&fresh), Err(VerpError::Forged));
        let removed = verp(&["the new key, 16+ chars"]);
        assert_eq!(removed.decode(&a), Err(VerpError::Forged));
        assert_eq!(removed.decode(&fresh), Ok(ID.to_string()));
    }

    #[test]
    fn the_local_part_fits_rfc_5321() {
        let longest = "b".repeat(MAX_LOCAL_PART_LEN);
        let v = Verp::new(&longest, "bounce.example.com", vec![b"k".repeat(16)]);
        let a = v.address(ID);
        assert_eq!(a.split_once('@').unwrap().0.len(), 64);
        let default = verp(&["first key, 16+ chars"]).address(ID);
        assert!(default.split_once('@').unwrap().0.len() <= 64);
        assert_eq!(MAX_LOCAL_PART_LEN, 23);
    }

    #[test]
    fn settings_without_a_domain_mean_no_verp() {
        let mut s = BounceSettings::default();
        assert!(Verp::from_settings(&s).is_none());
        s.domain = Some("bounce.example.com".into());
        s.keys = vec!["a key of 16+ chars".into()];
        let v = Verp::from_settings(&s).unwrap();
        assert!(v.address(ID).starts_with("bounces+"));
        assert!(!format!("{v:?}").contains("16+"), "keys stay out of logs");
    }
}

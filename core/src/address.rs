//! Recipient and sender addresses, parsed once at the edge.
//!
//! An [`EmailAddress`] is a syntactically valid `local@domain` whose domain is
//! stored in its ASCII (IDNA) form, so every later step — deduplication,
//! quarantine look-ups, the SMTP envelope — works on one canonical spelling.
//! Internationalized domains (`user@bücher.example`) are accepted and
//! converted. Local parts may hold non-ASCII characters (`josé@…`,
//! `用户@例子.测试`, RFC 6531): they are kept in Unicode normalization form
//! C, so that two spellings of one name are one recipient, and the sender
//! delivers them only to servers that offer SMTPUTF8
//! ([`EmailAddress::needs_smtputf8`]). Anything that could smuggle a header
//! or SMTP command (CR, LF, NUL, other control characters, spaces, `<>`) is
//! refused.

use std::fmt;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than 254 octets")]
    TooLong,
    #[error("address has no '@'")]
    MissingAt,
    #[error("local part {0:?} is not a valid dot-atom")]
    InvalidLocalPart(String),
    #[error("domain {0:?} is not a valid domain name")]
    InvalidDomain(String),
    #[error(
        "local part {0:?} is not ASCII: as a sender address it would need SMTPUTF8 at every \
         receiving server (recipients may have one, senders may not)"
    )]
    NonAsciiSender(String),
}

/// A valid email address with an ASCII (punycode) domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress {
    local: String,
    domain: String,
}

/// RFC 5322 `atext`, extended by RFC 6532 with every non-ASCII character
/// except controls, spaces and the invisible format characters (bidi
/// overrides, zero-width joiners) that would let two addresses look alike.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace() && !is_invisible_format(c))
}

/// Unicode format characters (category Cf) that change how text reads
/// without being seen: never part of an address.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

impl EmailAddress {
    /// Parses and canonicalizes an address (trims surrounding whitespace,
    /// lowercases and IDNA-encodes the domain).
    pub fn parse(raw: &str) -> Result<Self, AddressError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(AddressError::Empty);
        }
        if raw.len() > 254 * 4 {
            return Err(AddressError::TooLong);
        }
        let (local, domain) = raw.rsplit_once('@').ok_or(AddressError::MissingAt)?;
        let local: std::borrow::Cow<'_, str> = if local.is_ascii() {
            local.into()
        } else {
            icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(local)
        };
        let local = local.as_ref();
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| is_atext(c) || c == '.');
        if !local_ok {
            return Err(AddressError::InvalidLocalPart(local.to_string()));
        }
        let domain = Self::parse_domain(domain)?;
        if local.len() + 1 + domain.len() > 254 {
            return Err(AddressError::TooLong);
        }
        Ok(Self {
            local: local.to_string(),
            domain,
        })
    }

    fn parse_domain(raw: &str) -> Result<String, AddressError> {
        let bad = || AddressError::InvalidDomain(raw.to_string());
        if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let ascii = idna::domain_to_ascii_strict(raw).map_err(|_| bad())?;
        let labels: Vec<&str> = ascii.split('.').collect();
        if ascii.len() > 253 || labels.len() < 2 {
            return Err(bad());
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(bad());
            }
        }
        // A top-level label is never all digits (that would be an IP literal in disguise).
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(bad());
        }
        Ok(ascii)
    }

    /// The local part as given (in normalization form C when not ASCII).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// Whether delivering to (or from) this address needs the server's
    /// SMTPUTF8 extension (RFC 6531): its local part is not ASCII. The
    /// domain never needs it, being kept in its ASCII form.
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }

    /// The domain, lowercase ASCII (punycode for internationalized names).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The key used for deduplication, quarantine and denylists: the whole
    /// address lowercased (mailbox providers treat local parts
    /// case-insensitively in practice, and a duplicate that differs only by
    /// case is still a duplicate to the person receiving it).
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_ascii_lowercase(), self.domain)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

impl EmailAddress {
    /// An address as mailpipe itself wrote it on the wire (a job's
    /// recipient): the expander parsed and canonicalized it before writing
    /// it, so it is split at its last `@` and not parsed again (no second
    /// IDNA pass per job in the sender), and an address that an earlier
    /// version accepted and this one would refuse is kept as written, so
    /// that a lane message is never refused for its recipient's spelling.
    /// The domain is lowercased. `None` only without an `@`.
    pub fn from_wire(s: &str) -> Option<Self> {
        let (local, domain) = s.rsplit_once('@')?;
        Some(Self {
            local: local.to_string(),
            domain: domain.to_ascii_lowercase(),
        })
    }
}

/// On the wire (jobs, events) an address is its string, `local@domain`.
impl serde::Serialize for EmailAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read with [`EmailAddress::from_wire`].
impl<'de> serde::Deserialize<'de> for EmailAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_wire(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an address (no '@')")))
    }
}

impl std::str::FromStr for EmailAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Parses a mailbox as written in a request's `from` / `reply_to`:
/// `addr@example.com` or `Display Name <addr@example.com>`. Its local part
/// must be ASCII: a sender address that needs SMTPUTF8 would make every
/// message of the request undeliverable to servers without it.
pub fn parse_mailbox(raw: &str) -> Result<(Option<String>, EmailAddress), AddressError> {
    let raw = raw.trim();
    if !is_header_safe(raw) {
        return Err(AddressError::InvalidLocalPart(raw.to_string()));
    }
    let (name, addr) = match (raw.rfind('<'), raw.ends_with('>')) {
        (Some(open), true) => {
            let name = raw[..open].trim().trim_matches('"').trim();
            let addr = EmailAddress::parse(&raw[open + 1..raw.len() - 1])?;
            ((!name.is_empty()).then(|| name.to_string()), addr)
        }
        _ => (None, EmailAddress::parse(raw)?),
    };
    if addr.needs_smtputf8() {
        return Err(AddressError::NonAsciiSender(addr.local().to_string()));
    }
    Ok((name, addr))
}

/// A display name that is safe to put in a header: no control characters.
pub fn is_header_safe(value: &str) -> bool {
    !value.chars().any(|c| c == '\r' || c == '\n' || c == '\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_the_wire_an_address_is_its_string_and_reads_back_whatever_version_wrote_it() {
        let a = EmailAddress::parse("José@Bücher.Example").unwrap();
        let wire = serde_json::to_string(&a).unwrap();
        assert_eq!(wire, r#""José@xn--bcher-kva.example""#);
        assert_eq!(serde_json::from_str::<EmailAddress>(&wire).unwrap(), a);
        // Written by a version that accepted what this one refuses: kept
        // as written (domain lowercased), never a refused lane message.
        let kept: EmailAddress = serde_json::from_str(r#""a..b@Example.COM""#).unwrap();
        assert!(EmailAddress::parse("a..b@example.com").is_err());
        assert_eq!(
            (kept.local(), kept.domain(), kept.key().as_str()),
            ("a..b", "example.com", "a..b@example.com")
        );
        // Without an `@` it is not an address at all.
        assert!(serde_json::from_str::<EmailAddress>(r#""nobody""#).is_err());
        assert!(serde_json::from_str::<EmailAddress>("12").is_err());
    }

    #[test]
    fn ordinary_addresses_are_accepted_and_domain_is_lowercased() {
        let a = EmailAddress::parse("  Alice.Smith+news@Example.COM ").unwrap();
        assert_eq!(a.to_string(), "Alice.Smith+news@example.com");
        assert_eq!(a.key(), "alice.smith+news@example.com");
        assert_eq!(a.domain(), "example.com");
    }

    #[test]
    fn internationalized_domains_become_punycode() {
        let a = EmailAddress::parse("kunde@bücher.example").unwrap();
        assert_eq!(a.domain(), "xn--bcher-kva.example");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "plainaddress",
            "@example.com",
            "a@",
            "a@b",
            "a..b@example.com",
            ".a@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@example.com\r\nBcc: victim@example.com",
            "a\n@example.com",
            "<a@example.com>",
            "a@-example.com",
            "a@example..com",
            "a@127.0.0.1",
            "jo\u{200B}hn@example.com",
            "jo\u{202E}hn@example.com",
            "jo\u{0085}hn@example.com",
            "jo\u{3000}hn@example.com",
            "a@example.com>",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn unicode_local_parts_are_accepted_in_nfc() {
        let a = EmailAddress::parse("josé@example.com").unwrap();
        assert_eq!(a.local(), "josé");
        assert!(a.needs_smtputf8());
        // The same name with a combining accent is the same recipient.
        let b = EmailAddress::parse("jose\u{0301}@Example.com").unwrap();
        assert_eq!(b.local(), "jos\u{00E9}");
        assert_eq!(a.key(), b.key());
        let c = EmailAddress::parse("用户@例子.测试").unwrap();
        assert_eq!(c.to_string(), "用户@xn--fsqu00a.xn--0zwm56d");
        assert!(c.needs_smtputf8());
        assert!(!EmailAddress::parse("kunde@bücher.example")
            .unwrap()
            .needs_smtputf8());
        // 64 octets is the limit, not 64 characters: 22 × 3 octets is over.
        assert!(EmailAddress::parse(&format!("{}@example.com", "用".repeat(22))).is_err());
        assert!(EmailAddress::parse(&format!("{}@example.com", "用".repeat(21))).is_ok());
    }

    #[test]
    fn overlong_local_part_is_refused() {
        let local = "a".repeat(65);
        assert!(EmailAddress::parse(&format!("{local}@example.com")).is_err());
    }

    #[test]
    fn mailboxes_with_display_names_parse() {
        let (name, addr) = parse_mailbox("\"ACME News\" <news@acme.example>").unwrap();
        assert_eq!(name.as_deref(), Some("ACME News"));
        assert_eq!(addr.to_string(), "news@acme.example");
        let (name, _) = parse_mailbox("news@acme.example").unwrap();
        assert_eq!(name, None);
        assert!(parse_mailbox("News <news@acme.example>\r\nBcc: x@y.example").is_err());
        assert!(matches!(
            parse_mailbox("Jöhn <jöhn@acme.example>"),
            Err(AddressError::NonAsciiSender(_))
        ));
    }

    #[test]
    fn header_safety_rejects_line_breaks() {
        assert!(is_header_safe("Alice Smith"));
        assert!(!is_header_safe("Alice\r\nBcc: x@y.z"));
    }
}

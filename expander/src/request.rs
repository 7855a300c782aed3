//! Validation of a bulk request at the edge: everything that can be refused
//! for the whole request is refused here, with a reason that ends up in the
//! dead-letter record. What survives is a [`ValidRequest`].

use std::time::Duration;

use mailpipe_common::address::{is_header_safe, parse_mailbox, EmailAddress};
use mailpipe_common::message::{
    sha256_hex, BulkRequest, Content, Lane, Part, Recipient, DEFAULT_VALIDITY_SECONDS,
    MAX_REQUEST_RETRIES, MAX_VALIDITY_SECONDS, REQUEST_SCHEMA_VERSION,
};
use mailpipe_common::template::Compiled;

/// Why a request was refused as a whole. `reason()` is the machine-readable
/// dead-letter reason.
#[derive(Debug)]
pub enum Rejection {
    Oversized {
        size: usize,
        max: usize,
    },
    Malformed(String),
    UnsupportedVersion(u32),
    Invalid(String),
    InvalidTemplate(String),
    /// Returned to the queue this many times without an outcome (a crash loop).
    Poison(u32),
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Oversized { .. } => "oversized_request",
            Rejection::Malformed(_) => "malformed_request",
            Rejection::UnsupportedVersion(_) => "unsupported_schema_version",
            Rejection::Invalid(_) => "invalid_request",
            Rejection::InvalidTemplate(_) => "invalid_template",
            Rejection::Poison(_) => "poison_request",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Oversized { size, max } => write!(
                f,
                "request is {size} bytes, more than the {max} accepted; submit it in parts"
            ),
            Rejection::Malformed(e) => write!(f, "request is not valid JSON for schema 1: {e}"),
            Rejection::UnsupportedVersion(v) => write!(
                f,
                "schema_version {v} is not supported (this expander reads {REQUEST_SCHEMA_VERSION})"
            ),
            Rejection::Invalid(e) => write!(f, "{e}"),
            Rejection::InvalidTemplate(e) => write!(f, "{e}"),
            Rejection::Poison(n) => write!(
                f,
                "the request was returned to the queue {n} times without being expanded"
            ),
        }
    }
}

/// A request that passed validation.
pub struct ValidRequest<'a> {
    pub id: String,
    pub request: BulkRequest<'a>,
    pub content: Content,
    pub compiled: Compiled,
    pub part: Part,
    pub validity: Duration,
}

impl ValidRequest<'_> {
    pub fn lane(&self) -> Lane {
        self.request.lane
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// The request id (and part index) a body claims, read leniently from a
/// body that [`validate`] refused, so that the refusal can be recorded
/// under the id the application will ask `mailpipe status` about. `None`
/// when the body names no usable id (then only the dead-letter record
/// tells of it). An id the application did not give (a message id or a
/// content hash) is not claimed: nobody would ask for it.
pub fn claimed_id(body: &[u8], max_bytes: usize) -> Option<(String, Option<u32>)> {
    if body.len() > max_bytes {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Claim {
        request_id: Option<String>,
        part: Option<ClaimedPart>,
    }
    #[derive(serde::Deserialize)]
    struct ClaimedPart {
        index: Option<u32>,
    }
    let claim: Claim = serde_json::from_slice(body).ok()?;
    let id = claim.request_id.filter(|id| valid_id(id))?;
    Some((id, claim.part.and_then(|p| p.index)))
}

/// Parses and validates a request body. `amqp_message_id` is the publish's
/// message id, used as the request id when the body has none.
pub fn validate<'a>(
    body: &'a [u8],
    amqp_message_id: Option<&str>,
    max_bytes: usize,
) -> Result<ValidRequest<'a>, Rejection> {
    if body.len() > max_bytes {
        return Err(Rejection::Oversized {
            size: body.len(),
            max: max_bytes,
        });
    }
    // Peek at the version first so a future schema gets the right reason
    // instead of a confusing field error.
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: Option<u32>,
    }
    let version: Version =
        serde_json::from_slice(body).map_err(|e| Rejection::Malformed(e.to_string()))?;
    match version.schema_version {
        Some(REQUEST_SCHEMA_VERSION) => {}
        Some(v) => return Err(Rejection::UnsupportedVersion(v)),
        None => {
            return Err(Rejection::Malformed(
                "missing field `schema_version`".into(),
            ))
        }
    }
    let request: BulkRequest<'a> =
        serde_json::from_slice(body).map_err(|e| Rejection::Malformed(e.to_string()))?;

    let id = match (&request.request_id, &request.part, amqp_message_id) {
        (Some(id), _, _) => id.clone(),
        (None, Some(_), _) => {
            return Err(Rejection::Invalid(
                "a request split into parts needs a request_id shared by its parts".into(),
            ))
        }
        (None, None, Some(mid)) if !mid.is_empty() => mid.to_string(),
        (None, None, _) => format!("req-{}", &sha256_hex(body)[..32]),
    };
    if !valid_id(&id) {
        return Err(Rejection::Invalid(format!(
            "request_id {id:?} must be 1-128 characters of A-Z a-z 0-9 - _ . :"
        )));
    }
    parse_mailbox(&request.from)
        .map_err(|e| Rejection::Invalid(format!("from {:?}: {e}", request.from)))?;
    if let Some(r) = &request.reply_to {
        parse_mailbox(r).map_err(|e| Rejection::Invalid(format!("reply_to {r:?}: {e}")))?;
    }
    for (label, value) in [("tenant", &request.tenant), ("campaign", &request.campaign)] {
        if let Some(v) = value {
            if v.len() > 128 || v.chars().any(char::is_control) {
                return Err(Rejection::Invalid(format!(
                    "{label} must be at most 128 printable characters"
                )));
            }
        }
    }
    let part = request.part.unwrap_or(Part { index: 1, total: 1 });
    if part.total == 0 || part.index == 0 || part.index > part.total {
        return Err(Rejection::Invalid(format!(
            "part {}/{} is out of range",
            part.index, part.total
        )));
    }
    if let Some(share) = request.control_group {
        if !(0.0..=1.0).contains(&share) {
            return Err(Rejection::Invalid(format!(
                "control_group {share} must be between 0 and 1"
            )));
        }
    }
    if let Some(retries) = request.retries {
        if retries > MAX_REQUEST_RETRIES {
            return Err(Rejection::Invalid(format!(
                "retries {retries} must be between 0 and {MAX_REQUEST_RETRIES}"
            )));
        }
    }
    if let Some(c) = &request.coalesce {
        if c.key.is_empty() || c.key.len() > 128 || c.window_seconds == 0 {
            return Err(Rejection::Invalid(
                "coalesce needs a key (1-128 characters) and a window_seconds above 0".into(),
            ));
        }
    }
    let validity_secs = request.validity_seconds.unwrap_or(DEFAULT_VALIDITY_SECONDS);
    if validity_secs == 0 || validity_secs > MAX_VALIDITY_SECONDS {
        return Err(Rejection::Invalid(
            "validity_seconds must be between 1 and 30 days".into(),
        ));
    }
    let content = request.content();
    let compiled =
        Compiled::compile(&content).map_err(|e| Rejection::InvalidTemplate(e.to_string()))?;
    Ok(ValidRequest {
        id,
        content,
        compiled,
        part,
        validity: Duration::from_secs(validity_secs),
        request,
    })
}

/// One recipient entry of a valid request (its raw JSON): its address and
/// entry, or the reason it is excluded on its own (`invalid_recipient`,
/// `address_not_specified`, `invalid_address`), counted in the part's
/// exclusions; screening decides on the rest.
pub fn admit_recipient(raw: &str) -> Result<(EmailAddress, Recipient), &'static str> {
    let recipient: Recipient = serde_json::from_str(raw).map_err(|_| "invalid_recipient")?;
    if recipient.email.trim().is_empty() {
        return Err("address_not_specified");
    }
    let address = EmailAddress::parse(&recipient.email).map_err(|_| "invalid_address")?;
    if recipient
        .name
        .as_deref()
        .is_some_and(|n| !is_header_safe(n) || n.len() > 256)
    {
        return Err("invalid_recipient");
    }
    Ok((address, recipient))
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_recipient_entry_is_admitted_or_excluded_with_its_reason() {
        let long_name = format!(
            r#"{{"email":"a@example.com","name":"{}"}}"#,
            "n".repeat(257)
        );
        let table: Vec<(&str, Result<&str, &str>)> = vec![
            (r#"{"email":"Bob@Example.COM"}"#, Ok("bob@example.com")),
            (
                r#"{"email":" bob@bücher.example "}"#,
                Ok("bob@xn--bcher-kva.example"),
            ),
            (
                r#"{"email":"a@example.com","name":"Ann","vars":{"x":1}}"#,
                Ok("a@example.com"),
            ),
            (r#"{"email":""}"#, Err("address_not_specified")),
            (r#"{"email":"   "}"#, Err("address_not_specified")),
            (r#"{"email":"no-at-sign"}"#, Err("invalid_address")),
            (r#"{"email":"a b@example.com"}"#, Err("invalid_address")),
            (
                r#"{"email":"a@example.com","name":"Ann\r\nBcc: x@y"}"#,
                Err("invalid_recipient"),
            ),
            (&long_name, Err("invalid_recipient")),
            (
                r#"{"email":"a@example.com","extra":1}"#,
                Err("invalid_recipient"),
            ),
            (r#"{"name":"no address"}"#, Err("invalid_recipient")),
            ("[1,2]", Err("invalid_recipient")),
        ];
        for (raw, want) in table {
            let got = super::admit_recipient(raw).map(|(a, _)| a.key());
            assert_eq!(got.as_deref().map_err(|e| *e), want, "{raw}");
        }
    }

    #[test]
    fn a_refused_body_still_names_the_request_and_part_it_claims() {
        type Claimed<'a> = Option<(&'a str, Option<u32>)>;
        let table: &[(&str, Claimed)] = &[
            (
                r#"{"request_id":"r1","subject":"{{ oops"}"#,
                Some(("r1", None)),
            ),
            (
                r#"{"request_id":"r1","part":{"index":4,"total":3}}"#,
                Some(("r1", Some(4))),
            ),
            (
                r#"{"request_id":"r1","part":{"total":3}}"#,
                Some(("r1", None)),
            ),
            (r#"{"request_id":"a b"}"#, None),
            (r#"{"request_id":42}"#, None),
            (r#"{"subject":"no id"}"#, None),
            ("not json", None),
        ];
        for (body, expected) in table {
            let got = claimed_id(body.as_bytes(), 1 << 20);
            let expected = expected.map(|(id, part)| (id.to_string(), part));
            assert_eq!(got, expected, "{body}");
        }
        assert_eq!(claimed_id(br#"{"request_id":"r1"}"#, 4), None, "oversized");
    }

    use super::*;

    const OK: &str = r#"{"schema_version":1,"request_id":"r1","from":"News <n@example.com>",
        "subject":"Hi","text":"Hello","recipients":[{"email":"a@example.com"}]}"#;

    #[test]
    fn a_valid_request_passes() {
        let v = validate(OK.as_bytes(), None, 1 << 20).unwrap();
        assert_eq!(v.id, "r1");
        assert_eq!(v.part, Part { index: 1, total: 1 });
        assert_eq!(v.validity, Duration::from_secs(DEFAULT_VALIDITY_SECONDS));
        assert_eq!(v.request.retries, None);
        let zero = OK.replace(r#""text":"Hello""#, r#""text":"Hello","retries":0"#);
        let v = validate(zero.as_bytes(), None, 1 << 20).unwrap();
        assert_eq!(v.request.retries, Some(0));
    }

    #[test]
    fn rejections_carry_their_reason() {
        let cases: &[(&str, &str)] = &[
            ("not json", "malformed_request"),
            (r#"{"schema_version":2}"#, "unsupported_schema_version"),
            (r#"{"from":"a@example.com"}"#, "malformed_request"),
            (
                r#"{"schema_version":1,"from":"a@example.com","recipients":[]}"#,
                "malformed_request",
            ),
            (
                r#"{"schema_version":1,"from":"bad","subject":"s","text":"t","recipients":[]}"#,
                "invalid_request",
            ),
            (
                r#"{"schema_version":1,"from":"a@example.com","subject":"{{","text":"t","recipients":[]}"#,
                "invalid_template",
            ),
            (
                r#"{"schema_version":1,"from":"a@example.com","subject":"s","text":"t","recipients":[],"part":{"index":1,"total":2}}"#,
                "invalid_request",
            ),
            (
                r#"{"schema_version":1,"request_id":"a b","from":"a@example.com","subject":"s","text":"t","recipients":[]}"#,
                "invalid_request",
            ),
            (
                r#"{"schema_version":1,"from":"a@example.com","subject":"s","text":"t","recipients":[],"control_group":2}"#,
                "invalid_request",
            ),
            (
                r#"{"schema_version":1,"from":"a@example.com","subject":"s","text":"t","recipients":[],"retries":21}"#,
                "invalid_request",
            ),
            (
                r#"{"schema_version":1,"from":"a@example.com","subject":"s","text":"t","recipients":[],"retries":-1}"#,
                "malformed_request",
            ),
        ];
        for (body, reason) in cases {
            let r = validate(body.as_bytes(), None, 1 << 20);
            assert_eq!(r.err().map(|e| e.reason()), Some(*reason), "{body}");
        }
    }

    #[test]
    fn oversized_requests_are_refused_before_parsing() {
        let r = validate(OK.as_bytes(), None, 10);
        assert_eq!(r.err().map(|e| e.reason()), Some("oversized_request"));
    }

    #[test]
    fn request_id_falls_back_to_message_id_then_content_hash() {
        let body = r#"{"schema_version":1,"from":"a@example.com","subject":"s","text":"t","recipients":[]}"#;
        assert_eq!(
            validate(body.as_bytes(), Some("m-1"), 1 << 20).unwrap().id,
            "m-1"
        );
        let a = validate(body.as_bytes(), None, 1 << 20).unwrap().id;
        let b = validate(body.as_bytes(), None, 1 << 20).unwrap().id;
        assert_eq!(a, b);
        assert!(a.starts_with("req-"));
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    fn schema() -> serde_json::Value {
        serde_json::from_str(include_str!("../../schema/request.schema.json")).unwrap()
    }

    #[test]
    fn the_published_example_is_a_valid_request() {
        let body = include_bytes!("../../schema/example-request.json");
        let v = validate(body, None, 1 << 20).unwrap();
        assert_eq!(v.id, "renewal-2026-11-23");
        assert_eq!(v.request.recipients.len(), 2);
    }

    #[test]
    fn every_schema_property_is_understood_by_the_parser() {
        // The parser refuses unknown fields, so a property the schema
        // documents but the parser lacks would be refused here.
        let schema = schema();
        let props = schema["properties"].as_object().unwrap();
        let mut example: serde_json::Value =
            serde_json::from_slice(include_bytes!("../../schema/example-request.json")).unwrap();
        example["part"] = serde_json::json!({"index": 1, "total": 1});
        example["coalesce"] = serde_json::json!({"key": "k", "window_seconds": 60});
        example["max_audience"] = serde_json::json!(10);
        example["control_group"] = serde_json::json!(0.1);
        example["retries"] = serde_json::json!(MAX_REQUEST_RETRIES);
        example["quality"] = serde_json::json!(["no_mail_host", "likely_typo"]);
        for key in props.keys() {
            assert!(
                example.get(key).is_some(),
                "example lacks schema property {key}"
            );
        }
        let body = serde_json::to_vec(&example).unwrap();
        validate(&body, None, 1 << 20).unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for r in required {
            let mut missing = example.clone();
            missing.as_object_mut().unwrap().remove(r);
            let body = serde_json::to_vec(&missing).unwrap();
            assert!(
                validate(&body, None, 1 << 20).is_err(),
                "{r} is required by the schema"
            );
        }
    }
}

//! Finding the sent message a report is about: by VERP token, by the
//! returned original's `X-Mailpipe-Id` or `Message-ID`, or (unsubscribe
//! requests that name no message) by the sender's address over the recent
//! requests. Only a message mailpipe sent, to the address it sent to, is found.

use mailpipe_common::address::EmailAddress;
use mailpipe_common::bounce::{Original, Parsed};
use mailpipe_common::verp::VerpError;

use super::{Intake, MailOutcome, Matched, Unusable};
use crate::{Inbound, Temporary};

/// Recent requests searched for a message to the sender of an unsubscribe
/// request that names no message (each costs a Redis read).
const UNSUBSCRIBE_LOOKBACK: usize = 500;

impl Intake {
    /// Finds the sent message a report is about.
    pub(super) async fn identify(
        &self,
        mail: &Inbound,
        parsed: &Parsed,
        original: &Original,
    ) -> Result<Result<Matched, Unusable>, Temporary> {
        let mut forged = None;
        let mut candidates: Vec<(String, &'static str)> = Vec::new();
        if let Some(verp) = &self.verp {
            let addresses = mail
                .rcpt_to
                .iter()
                .chain(parsed.addressed_to.iter())
                .chain(original.return_path.iter());
            for address in addresses {
                match verp.decode(address) {
                    Ok(id) => candidates.push((id, "verp")),
                    Err(VerpError::Forged) => forged = Some(address.clone()),
                    Err(_) => {}
                }
            }
        }
        if let Some(id) = original.mailpipe_id.as_deref().filter(|i| is_message_id(i)) {
            candidates.push((id.to_string(), "header"));
        }
        if let Some(id) = original
            .message_id
            .as_deref()
            .and_then(|m| m.split_once('@'))
            .map(|(local, _)| local)
            .filter(|i| is_message_id(i))
        {
            candidates.push((id.to_string(), "header"));
        }
        if candidates.is_empty() {
            return Ok(Err(match forged {
                Some(address) => Unusable {
                    outcome: MailOutcome::Forged,
                    why: format!("the VERP token of {address} does not verify"),
                },
                None => Unusable {
                    outcome: MailOutcome::Unmatched,
                    why: "no VERP token and no mailpipe message id in the returned headers".into(),
                },
            }));
        }
        let mut tried = Vec::new();
        for (id, by) in candidates {
            if tried.contains(&id) {
                continue;
            }
            match self.sent_record(&id).await? {
                Some(record) => {
                    let Some(address) = record.to.clone() else {
                        tried.push(id);
                        continue;
                    };
                    return Ok(Ok(Matched {
                        message: id,
                        address: address.to_ascii_lowercase(),
                        record,
                        by,
                    }));
                }
                _ => tried.push(id),
            }
        }
        Ok(Err(Unusable {
            outcome: MailOutcome::Unmatched,
            why: format!(
                "no sent record for message {} (never sent by mailpipe, or its record expired)",
                tried.join(", ")
            ),
        }))
    }

    /// The latest message mailpipe sent to `address`, among the recent
    /// requests: how an unsubscribe request mailed to the plain
    /// List-Unsubscribe or bounce address (no VERP token, no message id) is
    /// matched. Only an address mailpipe sent to can be found.
    pub(super) async fn sent_to(&self, address: &str) -> Result<Option<Matched>, Temporary> {
        let Ok(parsed) = EmailAddress::parse(address) else {
            return Ok(None);
        };
        let key = parsed.key();
        let requests = self
            .store
            .recent_requests(UNSUBSCRIBE_LOOKBACK)
            .await
            .map_err(|e| Temporary(e.to_string()))?;
        for request in requests {
            let id = mailpipe_common::message::message_id(&request, &key);
            let Some(record) = self.sent_record(&id).await? else {
                continue;
            };
            let sent_to = record.to.clone().unwrap_or_default().to_ascii_lowercase();
            if sent_to == address.to_ascii_lowercase() {
                return Ok(Some(Matched {
                    message: id,
                    record,
                    address: sent_to,
                    by: "address",
                }));
            }
        }
        Ok(None)
    }
}

/// mailpipe's message ids: 32 lowercase hex digits.
fn is_message_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::is_message_id;

    #[test]
    fn message_ids_are_recognized() {
        assert!(is_message_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_message_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_message_id("0123456789abcdef"));
        assert!(!is_message_id("0123456789abcdef0123456789abcdeg"));
    }
}

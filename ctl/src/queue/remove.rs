//! `mailpipe queue remove`: messages that are never to be sent, named by
//! id or, with --request, by address.

use std::process::ExitCode;

use clap::Args;
use mailpipe_common::address::EmailAddress;
use mailpipe_common::message::message_id;
use mailpipe_common::unix_now;
use serde_json::json;

use super::unknown_request;
use crate::ops::{require_yes, Ops};

/// Remove messages so they are never sent (like `postsuper -d ID`). They end
/// in the state `removed`, counted in `mailpipe status`.
#[derive(Args)]
pub struct RemoveCommand {
    /// Message ids; with --request, recipient addresses work too.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// The request the messages belong to (needed for messages that are not
    /// deferred, whose request mailpipe cannot look up by id).
    #[arg(long)]
    pub request: Option<String>,
    /// Confirm.
    #[arg(long)]
    pub yes: bool,
}

impl RemoveCommand {
    pub(super) async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        if let Some(code) = require_yes(self.yes, "queue remove") {
            return Ok(code);
        }
        let ops = Ops::connect(ctx).await?;
        if let Some(r) = &self.request {
            if !ops.known_request(r).await? {
                ops.close().await;
                return Ok(unknown_request(r));
            }
        }
        // Held ambiguous recipients are removed from their queue.
        let ids: std::collections::BTreeSet<String> = self
            .ids
            .iter()
            .map(|raw| target_id(self.request.as_deref(), raw))
            .collect();
        let held = crate::ambiguous::remove(&ops, &ids).await?;
        let deferred = ops.store.deferred(1_000_000).await?;
        let mut removed = held.len();
        let mut unknown = Vec::new();
        for raw in &self.ids {
            let id = target_id(self.request.as_deref(), raw);
            if held.contains(&id) {
                continue;
            }
            let info = deferred.iter().find(|(d, ..)| *d == id).map(|(_, _, i)| i);
            let request = self
                .request
                .clone()
                .or_else(|| info.and_then(|i| i["request"].as_str().map(str::to_string)));
            let Some(request) = request else {
                unknown.push(raw.clone());
                continue;
            };
            let job = mailpipe_state::queue_ops::Removed {
                id: id.clone(),
                request,
                campaign: info.and_then(|i| i["campaign"].as_str().map(str::to_string)),
                lane: info
                    .and_then(|i| i["lane"].as_str()?.parse().ok())
                    .unwrap_or_default(),
                deadline: unix_now() + 5 * 24 * 3600,
                to: info
                    .and_then(|i| i["recipient"].as_str())
                    .or_else(|| raw.contains('@').then_some(raw.as_str()))
                    .and_then(EmailAddress::from_wire),
            };
            if ops.record_removed(&job, "removed").await? {
                removed += 1;
            } else {
                crate::out::warn(&format!("{raw}: already has a terminal state; unchanged"));
            }
        }
        ops.close().await;
        for u in &unknown {
            crate::out::error(&format!(
                "{u}: not among deferred messages; pass --request to remove a pending one"
            ));
        }
        if ctx.json {
            println!("{}", json!({"removed": removed, "unknown": unknown}));
        } else {
            println!("{removed} message(s) removed; they will not be sent");
        }
        Ok(if unknown.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }
}

/// The message id `queue remove` acts on for `raw`: with `--request`, an
/// address is the message of that request to it, found by the address's
/// key as the expander computed it (trimmed, IDNA domain, lowercased);
/// anything else is an id.
fn target_id(request: Option<&str>, raw: &str) -> String {
    match (request, raw.contains('@')) {
        (Some(r), true) => match EmailAddress::parse(raw) {
            Ok(address) => message_id(r, &address.key()),
            // Not an address the expander would have accepted: no message
            // has this id, and the caller reports it unknown.
            Err(_) => raw.to_string(),
        },
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id the expander gave the message of `request` to `raw`.
    fn expanded(request: &str, raw: &str) -> String {
        message_id(request, &EmailAddress::parse(raw).unwrap().key())
    }

    #[test]
    fn an_address_names_the_message_the_expander_made_for_it() {
        let table = [
            "bob@example.com",
            "Bob@Example.COM",
            " bob@example.com ",
            "bob@bücher.example",
            "Bob@BÜCHER.example",
            "bob@xn--bcher-kva.example",
        ];
        for raw in table {
            assert_eq!(target_id(Some("r1"), raw), expanded("r1", raw), "{raw:?}");
        }
        // The internationalized spellings are one recipient.
        assert_eq!(
            target_id(Some("r1"), "bob@bücher.example"),
            target_id(Some("r1"), "bob@xn--bcher-kva.example")
        );
    }

    #[test]
    fn without_a_request_or_an_at_sign_the_argument_is_the_id() {
        assert_eq!(target_id(None, "bob@example.com"), "bob@example.com");
        assert_eq!(target_id(Some("r1"), "0123abcd"), "0123abcd");
    }
}

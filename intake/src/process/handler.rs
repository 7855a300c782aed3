//! How the SMTP listener and the IMAP poller use the intake: which
//! recipients the listener accepts, and one replica at a time polling the
//! mailbox.

use std::time::Duration;

use mailpipe_common::verp::VerpError;

use super::Intake;
use crate::events::ForgedAddressRefused;
use crate::{Handler, Inbound, Temporary};

impl Handler for Intake {
    fn accepts_recipient(&self, address: &str) -> Result<(), String> {
        let Some(verp) = &self.verp else {
            return Ok(());
        };
        match verp.decode(address) {
            Ok(_) => Ok(()),
            Err(VerpError::Forged) => {
                // Forged, or signed with a key this intake does not have
                // (the sender's and the intake's bounces.keys differ).
                ForgedAddressRefused { address }.emit(&self.metrics);
                Err("invalid bounce address".into())
            }
            Err(_) => {
                // The plain bounce address (e.g. registered with a feedback
                // loop) is taken too; matching then relies on the report.
                let plain = format!(
                    "{}@{}",
                    self.settings.bounces.local_part,
                    self.settings.bounces.domain.as_deref().unwrap_or_default()
                );
                if address.eq_ignore_ascii_case(&plain) {
                    Ok(())
                } else {
                    Err("no such user here".into())
                }
            }
        }
    }

    async fn accept(&self, mail: Inbound) -> Result<(), Temporary> {
        self.process(&mail).await.map(|_| ())
    }

    async fn may_poll(&self, mailbox: &str) -> bool {
        // Longer than any round (each IMAP step has its own deadline); a
        // replica that dies mid-round holds the mailbox this long at most.
        let ttl = Duration::from_secs(600);
        match self
            .store
            .try_lock(&format!("imap:{mailbox}"), &self.instance, ttl)
            .await
        {
            Ok(mine) => mine,
            Err(e) => {
                tracing::warn!(error = %e, "Redis unavailable; not polling the mailbox this round");
                false
            }
        }
    }

    async fn polled(&self, mailbox: &str) {
        self.store
            .unlock(&format!("imap:{mailbox}"), &self.instance)
            .await
            .ok();
    }
}

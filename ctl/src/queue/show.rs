//! `mailpipe queue show ID`: one message's history.

use std::process::ExitCode;

use clap::Args;
use mailpipe_common::unix_now;
use serde_json::json;

use super::ago;
use crate::ops::Ops;

/// One message's history: attempts, replies, classification, state.
/// Exit code 3 when nothing is known about it.
#[derive(Args)]
pub struct ShowCommand {
    /// Message id (as in `queue list --deferred`, events and the X-Mailpipe-Id header).
    pub id: String,
}

impl ShowCommand {
    pub(super) async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let ops = Ops::connect(ctx).await?;
        let done = ops.store.done(&self.id).await?;
        let history = ops.store.history(&self.id).await?;
        let deferred = ops
            .store
            .deferred(100_000)
            .await?
            .into_iter()
            .find(|(id, ..)| id == &self.id);
        ops.close().await;
        if done.is_none() && history.is_empty() && deferred.is_none() {
            crate::out::error(&format!(
                "nothing is known about message {:?} (pending messages that never failed have no history yet)",
                self.id
            ));
            return Ok(ExitCode::from(3));
        }
        let state = match (&done, &deferred) {
            (Some(d), _) => d.state.to_string(),
            (None, Some(_)) => "deferred".into(),
            (None, None) => "pending".into(),
        };
        if ctx.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "id": self.id,
                    "state": state,
                    "done": done,
                    "deferred": deferred.as_ref().map(|(_, due, info)| json!({"due": due, "info": info})),
                    "history": history,
                }))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!("message  {}", self.id);
        println!("state    {state}");
        if let Some(d) = &done {
            println!("request  {}", d.request);
            if !d.route.is_empty() {
                println!("route    {}", d.route);
            }
            println!("detail   {}", d.detail);
        }
        if let Some((_, due, info)) = &deferred {
            println!("request  {}", info["request"].as_str().unwrap_or("-"));
            println!("to       {}", info["recipient"].as_str().unwrap_or("-"));
            println!("next     {}", ago(unix_now() - due));
        }
        for h in &history {
            println!(
                "attempt {:>2}  {:<8} {:<14} {:<6} {}",
                h["attempt"]
                    .as_u64()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                h["decision"].as_str().unwrap_or("-"),
                h["reason"].as_str().unwrap_or("-"),
                h["type"].as_str().unwrap_or("-"),
                h["reply"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

//! The broker plumbing the subcommands share: a connection, a channel
//! with publisher confirms, persistent properties, and a window of
//! outstanding confirms.

use std::collections::VecDeque;

use anyhow::{bail, Context as _};
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

pub async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .context("connecting to RabbitMQ")
}

pub async fn confirm_channel(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

pub fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Publishes with a window of outstanding confirms, like mailpipe's
/// `ConfirmWindow`.
pub struct Window {
    pending: VecDeque<lapin::PublisherConfirm>,
    max: usize,
}

impl Window {
    pub fn new(max: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            max: max.max(1),
        }
    }
    pub async fn push(&mut self, pc: lapin::PublisherConfirm) -> anyhow::Result<()> {
        self.pending.push_back(pc);
        while self.pending.len() >= self.max {
            let p = self.pending.pop_front().expect("non-empty");
            check(p.await?)?;
        }
        Ok(())
    }
    pub async fn drain(&mut self) -> anyhow::Result<()> {
        while let Some(p) = self.pending.pop_front() {
            check(p.await?)?;
        }
        Ok(())
    }
}

pub fn check(c: Confirmation) -> anyhow::Result<()> {
    match c {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => {
            bail!("message returned: {} {}", r.reply_code, r.reply_text)
        }
        Confirmation::Nack(None) => bail!("broker nacked a publish"),
        Confirmation::NotRequested => bail!("confirms not enabled"),
    }
}

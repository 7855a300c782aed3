//! `mailpipe archive export`: a request's delivered messages, read back from
//! the archive stream and written as `.eml` files, byte for byte as the
//! receiving servers got them.
//!
//! Where it starts reading: the stream offset of the request's creation
//! time (the expander's clock, when it registered the request) less a
//! margin for clocks that disagree (`archive::start_timestamp`). No message
//! of a request is archived before the request is registered, and a
//! timestamp is the one position AMQP 0.9.1 gives a consumer that no
//! process has to record: a publisher is not told the offset its message
//! got, and the stream's tail offset cannot be asked for without reading.
//! The broker seeks to the timestamp by its chunk index, so the export reads
//! from there, not from the stream's start.
//!
//! When it stops: once it has every sent message of the request (the `sent`
//! count of `mailpipe status` when it started), or once nothing arrived for
//! `--idle` (the stream's tail). The decisions are in
//! `mailpipe_common::archive` (`read`, `export_done`), with their tests.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use mailpipe_common::amqp;
use mailpipe_common::archive::{self, Read};
use mailpipe_common::config::parse_duration;
use mailpipe_common::topology::Topology;
use mailpipe_state::store::Store;

/// The archive of delivered mail (`sender.archive.enabled`): every message a
/// server accepted, as sent, in the RabbitMQ stream `{prefix}.archive`.
#[derive(Args)]
pub struct ArchiveCommand {
    #[command(subcommand)]
    command: ArchiveSubCommand,
}

#[derive(Subcommand)]
enum ArchiveSubCommand {
    Export(ExportCommand),
}

/// Write a request's delivered messages to DIR, one `<message-id>.eml` each,
/// byte for byte as sent (DKIM signature included). Reads the archive
/// stream from the request's creation time; stops once it has every sent
/// message of the request, or when the stream has nothing more. Exit codes:
/// 0 every sent message written, 3 unknown request (nothing written), 4 some
/// sent messages are not in the archive (sent before it was on, aged out of
/// it, or lost with a sender killed before the archive's confirm).
#[derive(Args)]
pub struct ExportCommand {
    /// The request id printed by `mailpipe submit`.
    #[arg(long)]
    pub request: String,
    /// Directory to write the files into (created if missing; files of the
    /// same message are overwritten).
    #[arg(long)]
    pub to: PathBuf,
    /// Stop when the stream delivers nothing for this long (its tail).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub idle: Duration,
}

/// Unacknowledged messages the broker may send ahead (a stream consumer
/// needs a prefetch and acknowledgements to be given more).
const PREFETCH: u16 = 1000;

impl ArchiveCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        match &self.command {
            ArchiveSubCommand::Export(c) => c.run(ctx).await,
        }
    }
}

/// What an export found.
#[derive(Debug, Default, serde::Serialize)]
struct Exported {
    request: String,
    dir: String,
    /// Distinct messages written.
    written: u64,
    /// The request's sent messages when the export started.
    sent: u64,
    /// Archived messages of the request whose id cannot be a file name.
    unreadable: u64,
    /// Messages read from the stream, the request's and others'.
    read: u64,
}

impl ExportCommand {
    pub async fn run(&self, ctx: &crate::Context) -> anyhow::Result<ExitCode> {
        let store = Store::connect(&ctx.settings.redis)
            .await
            .context("connecting to Redis")?;
        let status = store.request_status(&self.request).await?;
        let Some(meta) = status.meta.clone() else {
            return Ok(crate::queue::unknown_request(&self.request));
        };
        let topology = Topology::from_settings(&ctx.settings);
        if topology.archive().is_none() {
            anyhow::bail!(
                "the archive is off (sender.archive.enabled is false): no message was archived"
            );
        }
        tokio::fs::create_dir_all(&self.to)
            .await
            .with_context(|| format!("creating {}", self.to.display()))?;
        let mut found = Exported {
            request: self.request.clone(),
            dir: self.to.display().to_string(),
            sent: status.sent,
            ..Default::default()
        };
        if !archive::export_done(0, status.sent, false) {
            let start = archive::start_timestamp(meta.created, archive::CLOCK_MARGIN);
            self.read_stream(ctx, &topology, start, &mut found).await?;
        }
        if ctx.json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            println!(
                "wrote {} messages of request {} to {} ({} sent; {} read from the archive)",
                found.written, found.request, found.dir, found.sent, found.read
            );
        }
        if found.unreadable > 0 {
            crate::out::warn(&format!(
                "{} archived messages of the request have a message id that cannot be a file name; not written",
                found.unreadable
            ));
        }
        if found.written < found.sent {
            crate::out::warn(&format!(
                "{} sent messages are not in the archive: sent before the archive was on, aged out of it (sender.archive.max_age, max_bytes), or their sender was killed between the server's reply and the archive's confirm",
                found.sent - found.written
            ));
            return Ok(ExitCode::from(4));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Reads the stream from `start` (Unix seconds) until the request is
    /// complete or the tail is reached, writing the request's messages.
    async fn read_stream(
        &self,
        ctx: &crate::Context,
        topology: &Topology,
        start: u64,
        found: &mut Exported,
    ) -> anyhow::Result<()> {
        let conn = amqp::connect_once(&ctx.settings.amqp, "mailpipe-archive-export").await?;
        let channel = amqp::channel(&conn, Some(PREFETCH)).await?;
        let stream = topology.queue(Topology::ARCHIVE);
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), AMQPValue::Timestamp(start));
        let mut consumer = channel
            .basic_consume(
                stream.clone().into(),
                "".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .with_context(|| format!("reading the archive stream {stream}"))?;
        let mut names = BTreeSet::new();
        let mut unacked = 0u16;
        loop {
            let next = tokio::time::timeout(self.idle, consumer.next()).await;
            let idle = next.is_err();
            if let Ok(next) = next {
                let delivery = match next {
                    None => anyhow::bail!("the broker cancelled the read of {stream}"),
                    Some(d) => d.with_context(|| format!("reading {stream}"))?,
                };
                found.read += 1;
                let request = amqp::header_str(&delivery.properties, archive::REQUEST_HEADER);
                let message = amqp::header_str(&delivery.properties, archive::MESSAGE_HEADER);
                match archive::read(&self.request, request.as_deref(), message.as_deref()) {
                    Read::Write(name) => {
                        let path = self.to.join(&name);
                        tokio::fs::write(&path, &delivery.data)
                            .await
                            .with_context(|| format!("writing {}", path.display()))?;
                        names.insert(name);
                        found.written = names.len() as u64;
                    }
                    Read::Skip => {}
                    Read::BadId(_) => found.unreadable += 1,
                }
                // Acks only give the broker credit to send more: a stream
                // keeps its messages whatever its readers ack.
                unacked += 1;
                if unacked >= PREFETCH / 2 {
                    delivery
                        .acker
                        .ack(BasicAckOptions { multiple: true })
                        .await?;
                    unacked = 0;
                }
            }
            if archive::export_done(found.written, found.sent, idle) {
                break;
            }
        }
        let _ = channel.close(200, "exported".into()).await;
        let _ = conn.close(200, "exported".into()).await;
        Ok(())
    }
}

//! A provider simulator: one SMTP peer that plays several mailbox providers,
//! each on its own loopback address (127.0.0.x) and the same port, as MX
//! hosts share port 25. A scenario points MX records at those addresses
//! (see [`crate::dns`]) so that many domains land at one provider, as
//! business domains land at Google or Microsoft.
//!
//! Each provider enforces its own limits, as real ones do:
//! - at most `max_connections` open connections; past it, a new connection
//!   is answered `421 4.7.0 Too many connections, try again later` and closed;
//! - at most `rate` recipients per second across all its connections (a
//!   token bucket holding `burst` tokens, one token per accepted RCPT);
//!   past it, a RCPT is answered `451 4.7.28 … rate limited …`, or with
//!   [`OverRate::Close421`] `421 4.7.0 Try again later, closing connection.`
//!   and the connection is closed;
//! - while blocked ([`Provider::block_for`]), every RCPT is answered
//!   `550 5.7.1 … blocked due to poor reputation`.
//!
//! Limits and blocks can be changed while it runs. It counts, per provider,
//! connections accepted and refused, transactions delivered, throttled and
//! blocked, how many times each recipient was delivered (to catch
//! duplicates) and a per-second timeline; [`Provider::stats`] takes a
//! snapshot.
//!
//! It speaks ESMTP with PIPELINING (replies are buffered and flushed when
//! the client has nothing more in flight), no TLS, no AUTH.
//!
//! Depends only on `std`, `tokio` and `serde_json`, so that the benchmark
//! tool (bench/, `mailpipe-bench providers`) compiles the same file.
//!
//! Over 500 lines: one SMTP peer with its limits and counts, one file because
//! `mailpipe-bench providers` compiles it as it is (`#[path]`).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Reply past the connection limit, at connect.
pub const TOO_MANY_CONNECTIONS: &str = "421 4.7.0 Too many connections, try again later";
/// Reply to a RCPT past the rate ([`OverRate::Rcpt451`]).
pub const RATE_LIMITED_451: &str = "451 4.7.28 Our system has detected an unusual rate of mail from your IP address, messages are temporarily rate limited. Try again later";
/// Reply to a RCPT past the rate ([`OverRate::Close421`]); the connection is closed.
pub const RATE_LIMITED_421: &str = "421 4.7.0 Try again later, closing connection.";
/// Reply to every RCPT while the provider blocks the sender.
pub const REPUTATION_BLOCK: &str =
    "550 5.7.1 Service unavailable, client host [127.0.0.1] blocked due to poor reputation";

/// What a provider answers to a recipient past its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverRate {
    /// `451 4.7.28` to the RCPT; the connection stays open.
    Rcpt451,
    /// `421 4.7.0` to the RCPT, then the connection is closed.
    Close421,
}

/// One simulated provider.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    pub name: String,
    /// Loopback address it listens on (any 127.0.0.0/8 address on Linux).
    pub ip: Ipv4Addr,
    /// Open connections at most.
    pub max_connections: u32,
    /// Recipients per second at most, across its connections.
    pub rate: f64,
    /// Tokens the bucket holds (the burst above the rate).
    pub burst: f64,
    pub over_rate: OverRate,
}

impl ProviderSpec {
    /// A provider with the default burst ([`default_burst`]) that answers
    /// `451 4.7.28` past its rate.
    pub fn new(name: &str, ip: Ipv4Addr, max_connections: u32, rate: f64) -> Self {
        Self {
            name: name.to_string(),
            ip,
            max_connections,
            rate,
            burst: default_burst(rate),
            over_rate: OverRate::Rcpt451,
        }
    }

    /// Parses `name=a,ip=127.0.0.21,conns=3,rate=1500[,burst=N][,over=421]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut ip = None;
        let mut conns = None;
        let mut rate = None;
        let mut burst = None;
        let mut over = OverRate::Rcpt451;
        for part in text.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part}: expected key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{k}={v}: {e}");
            match k.trim() {
                "name" => name = Some(v.trim().to_string()),
                "ip" => ip = Some(v.trim().parse::<Ipv4Addr>().map_err(|e| bad(&e))?),
                "conns" => conns = Some(v.trim().parse::<u32>().map_err(|e| bad(&e))?),
                "rate" => rate = Some(v.trim().parse::<f64>().map_err(|e| bad(&e))?),
                "burst" => burst = Some(v.trim().parse::<f64>().map_err(|e| bad(&e))?),
                "over" => {
                    over = match v.trim() {
                        "451" => OverRate::Rcpt451,
                        "421" => OverRate::Close421,
                        other => return Err(format!("over={other}: 451 or 421")),
                    }
                }
                other => return Err(format!("unknown key {other}")),
            }
        }
        let mut spec = Self::new(
            &name.ok_or("name= is missing")?,
            ip.ok_or("ip= is missing")?,
            conns.ok_or("conns= is missing")?,
            rate.ok_or("rate= is missing")?,
        );
        if let Some(b) = burst {
            spec.burst = b;
        }
        spec.over_rate = over;
        Ok(spec)
    }
}

/// The burst of a provider of this rate: a tenth of a second's worth, at
/// least 2 messages.
pub fn default_burst(rate: f64) -> f64 {
    (rate / 10.0).max(2.0)
}

/// Counts of one provider since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections served (greeted with 220).
    pub connections_accepted: u64,
    /// Connections answered 421 at connect (over the connection limit).
    pub connections_refused: u64,
    /// Most connections open at once.
    pub peak_connections: u32,
    /// Transactions begun (MAIL FROM accepted).
    pub transactions: u64,
    /// Transactions that ended with 250 after DATA.
    pub transactions_delivered: u64,
    /// Transactions with at least one throttling reply (451 4.7.28 / 421 at RCPT).
    pub transactions_throttled: u64,
    /// Transactions with at least one reputation block (550 5.7.1).
    pub transactions_blocked: u64,
    /// Recipients delivered (counted at the 250 after DATA).
    pub delivered: u64,
    /// RCPTs answered with a throttling reply.
    pub recipients_throttled: u64,
    /// RCPTs answered with a reputation block.
    pub recipients_blocked: u64,
}

/// What happened at a provider during one second of the timeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Second {
    pub delivered: u32,
    /// RCPTs answered with a throttling reply.
    pub throttled: u32,
    /// RCPTs answered with a reputation block.
    pub blocked: u32,
    pub connections: u32,
    pub refused_connections: u32,
}

/// A snapshot of one provider.
#[derive(Clone, Debug)]
pub struct ProviderStats {
    pub name: String,
    /// Limits in force when the snapshot was taken.
    pub max_connections: u32,
    pub rate: f64,
    pub burst: f64,
    pub counts: Counts,
    /// Deliveries per (lowercased) recipient.
    pub per_recipient: HashMap<String, u32>,
    /// Entry `i` covers seconds `[i, i + 1)` after the simulator started.
    pub timeline: Vec<Second>,
    /// Time of the last delivery (Unix ms), if any.
    pub last_delivery_ms: Option<u64>,
}

impl ProviderStats {
    /// Recipients delivered more than once, with their counts.
    pub fn duplicates(&self) -> Vec<(String, u32)> {
        let mut d: Vec<_> = self
            .per_recipient
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(r, n)| (r.clone(), *n))
            .collect();
        d.sort();
        d
    }

    /// Share of transactions answered with a throttling reply.
    pub fn throttled_transaction_share(&self) -> f64 {
        ratio(self.counts.transactions_throttled, self.counts.transactions)
    }

    /// Share of connections refused at connect.
    pub fn refused_connection_share(&self) -> f64 {
        ratio(
            self.counts.connections_refused,
            self.counts.connections_accepted + self.counts.connections_refused,
        )
    }

    /// Deliveries during the timeline's seconds `[from, to)`.
    pub fn delivered_between(&self, from: usize, to: usize) -> u64 {
        self.window(from, to).map(|s| s.delivered as u64).sum()
    }

    /// Throttled RCPTs and refused connections during seconds `[from, to)`.
    pub fn pushback_between(&self, from: usize, to: usize) -> u64 {
        self.window(from, to)
            .map(|s| s.throttled as u64 + s.refused_connections as u64)
            .sum()
    }

    fn window(&self, from: usize, to: usize) -> impl Iterator<Item = &Second> {
        self.timeline
            .iter()
            .skip(from)
            .take(to.saturating_sub(from))
    }

    /// The snapshot as JSON (for the benchmark), without the per-recipient map.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.counts;
        let duplicates = self.duplicates();
        serde_json::json!({
            "name": self.name,
            "max_connections": self.max_connections,
            "rate": self.rate,
            "burst": self.burst,
            "connections_accepted": c.connections_accepted,
            "connections_refused": c.connections_refused,
            "peak_connections": c.peak_connections,
            "transactions": c.transactions,
            "transactions_delivered": c.transactions_delivered,
            "transactions_throttled": c.transactions_throttled,
            "transactions_blocked": c.transactions_blocked,
            "delivered": c.delivered,
            "recipients": self.per_recipient.len(),
            "duplicates": duplicates.len(),
            "recipients_throttled": c.recipients_throttled,
            "recipients_blocked": c.recipients_blocked,
            "last_delivery_ms": self.last_delivery_ms,
            "timeline": self.timeline.iter().map(|s| [s.delivered, s.throttled, s.blocked, s.connections, s.refused_connections]).collect::<Vec<_>>(),
        })
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct State {
    max_connections: u32,
    rate: f64,
    burst: f64,
    over_rate: OverRate,
    blocked_until: Option<Instant>,
    tokens: f64,
    refilled: Instant,
    open: u32,
    counts: Counts,
    per_recipient: HashMap<String, u32>,
    timeline: Vec<Second>,
    last_delivery_ms: Option<u64>,
}

/// One running provider; a handle to steer it and read its counts.
pub struct Provider {
    pub name: String,
    pub ip: Ipv4Addr,
    epoch: Instant,
    state: Mutex<State>,
}

/// What a RCPT gets.
enum Verdict {
    Accept,
    Throttle(OverRate),
    Block,
}

impl Provider {
    fn new(spec: &ProviderSpec, epoch: Instant) -> Self {
        let now = Instant::now();
        Self {
            name: spec.name.clone(),
            ip: spec.ip,
            epoch,
            state: Mutex::new(State {
                max_connections: spec.max_connections,
                rate: spec.rate,
                burst: spec.burst,
                over_rate: spec.over_rate,
                blocked_until: None,
                tokens: spec.burst,
                refilled: now,
                open: 0,
                counts: Counts::default(),
                per_recipient: HashMap::new(),
                timeline: Vec::new(),
                last_delivery_ms: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn second<'a>(&self, s: &'a mut State) -> &'a mut Second {
        let i = self.epoch.elapsed().as_secs() as usize;
        if s.timeline.len() <= i {
            s.timeline.resize(i + 1, Second::default());
        }
        &mut s.timeline[i]
    }

    /// Sets the rate (recipients per second) and its default burst.
    pub fn set_rate(&self, rate: f64) {
        let mut s = self.lock();
        refill(&mut s);
        s.rate = rate;
        s.burst = default_burst(rate);
        s.tokens = s.tokens.min(s.burst);
    }

    /// Sets the connection limit; connections open beyond it stay open.
    pub fn set_max_connections(&self, max: u32) {
        self.lock().max_connections = max;
    }

    /// Halves the rate (and its burst), as a provider that tightens its
    /// limit mid-run.
    pub fn halve_rate(&self) {
        let rate = self.lock().rate / 2.0;
        self.set_rate(rate);
    }

    /// Answers every RCPT with a reputation block for this long.
    pub fn block_for(&self, how_long: Duration) {
        self.lock().blocked_until = Some(Instant::now() + how_long);
    }

    /// Ends a reputation block now.
    pub fn unblock(&self) {
        self.lock().blocked_until = None;
    }

    /// A snapshot of its counts, limits and timeline.
    pub fn stats(&self) -> ProviderStats {
        let s = self.lock();
        ProviderStats {
            name: self.name.clone(),
            max_connections: s.max_connections,
            rate: s.rate,
            burst: s.burst,
            counts: s.counts.clone(),
            per_recipient: s.per_recipient.clone(),
            timeline: s.timeline.clone(),
            last_delivery_ms: s.last_delivery_ms,
        }
    }

    /// Recipients delivered so far.
    pub fn delivered(&self) -> u64 {
        self.lock().counts.delivered
    }

    /// Takes a connection slot; `false` when over the limit (counted as refused).
    fn admit(&self) -> bool {
        let mut s = self.lock();
        if s.open >= s.max_connections {
            s.counts.connections_refused += 1;
            self.second(&mut s).refused_connections += 1;
            return false;
        }
        s.open += 1;
        s.counts.peak_connections = s.counts.peak_connections.max(s.open);
        s.counts.connections_accepted += 1;
        self.second(&mut s).connections += 1;
        true
    }

    fn release(&self) {
        let mut s = self.lock();
        s.open = s.open.saturating_sub(1);
    }

    fn begin_transaction(&self) {
        self.lock().counts.transactions += 1;
    }

    /// Decides a RCPT; a transaction is counted as throttled (or blocked)
    /// once, however many of its recipients were.
    fn rcpt(&self, tx: &mut Transaction) -> Verdict {
        let mut s = self.lock();
        let now = Instant::now();
        if s.blocked_until.is_some_and(|t| now < t) {
            s.counts.recipients_blocked += 1;
            if !tx.blocked {
                tx.blocked = true;
                s.counts.transactions_blocked += 1;
            }
            self.second(&mut s).blocked += 1;
            return Verdict::Block;
        }
        refill(&mut s);
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            return Verdict::Accept;
        }
        s.counts.recipients_throttled += 1;
        if !tx.throttled {
            tx.throttled = true;
            s.counts.transactions_throttled += 1;
        }
        self.second(&mut s).throttled += 1;
        Verdict::Throttle(s.over_rate)
    }

    fn delivered_to(&self, recipients: &[String]) {
        let mut s = self.lock();
        s.counts.transactions_delivered += 1;
        s.counts.delivered += recipients.len() as u64;
        for r in recipients {
            *s.per_recipient.entry(r.to_ascii_lowercase()).or_default() += 1;
        }
        self.second(&mut s).delivered += recipients.len() as u32;
        s.last_delivery_ms = Some(unix_ms());
    }
}

fn refill(s: &mut State) {
    let now = Instant::now();
    let dt = now.duration_since(s.refilled).as_secs_f64();
    s.refilled = now;
    s.tokens = (s.tokens + dt * s.rate).min(s.burst);
}

#[derive(Default)]
struct Transaction {
    active: bool,
    recipients: Vec<String>,
    throttled: bool,
    blocked: bool,
}

/// The running simulator: every provider's listener, on one port.
pub struct Simulator {
    pub port: u16,
    /// When the timelines' second 0 began (Unix ms).
    pub epoch_ms: u64,
    epoch: Instant,
    providers: Vec<Arc<Provider>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Starts the providers on a free port (the same on every address).
    pub async fn start(specs: &[ProviderSpec]) -> io::Result<Self> {
        let mut last = None;
        for _ in 0..20 {
            let port = crate::free_port();
            match Self::start_on(port, specs).await {
                Ok(sim) => return Ok(sim),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    /// Starts the providers on this port.
    pub async fn start_on(port: u16, specs: &[ProviderSpec]) -> io::Result<Self> {
        let epoch = Instant::now();
        let epoch_ms = unix_ms();
        let mut listeners = Vec::new();
        for spec in specs {
            let addr = SocketAddr::from((spec.ip, port));
            let l = TcpListener::bind(addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("{}: bind {addr}: {e}", spec.name))
            })?;
            listeners.push((Arc::new(Provider::new(spec, epoch)), l));
        }
        let providers = listeners.iter().map(|(p, _)| p.clone()).collect();
        let tasks = listeners
            .into_iter()
            .map(|(p, l)| tokio::spawn(accept_loop(p, l)))
            .collect();
        Ok(Self {
            port,
            epoch_ms,
            epoch,
            providers,
            tasks,
        })
    }

    /// The provider of this name; panics on an unknown name.
    pub fn provider(&self, name: &str) -> &Provider {
        self.providers
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no simulated provider {name}"))
    }

    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter().map(|p| p.as_ref())
    }

    /// The timeline's current second (the index of [`ProviderStats::timeline`]).
    pub fn second(&self) -> usize {
        self.epoch.elapsed().as_secs() as usize
    }

    /// Every provider's snapshot.
    pub fn stats(&self) -> Vec<ProviderStats> {
        self.providers.iter().map(|p| p.stats()).collect()
    }

    /// Recipients delivered so far at every provider.
    pub fn delivered(&self) -> u64 {
        self.providers.iter().map(|p| p.delivered()).sum()
    }

    /// Stops listening and closes every open connection.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections; the sessions live in a set dropped (aborted) with
/// the loop.
async fn accept_loop(p: Arc<Provider>, listener: TcpListener) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let p = p.clone();
                sessions.spawn(async move {
                    if p.admit() {
                        let _ = session(&p, sock).await;
                        p.release();
                    } else {
                        refuse(sock).await;
                    }
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

async fn refuse(mut sock: TcpStream) {
    let reply = format!("{TOO_MANY_CONNECTIONS}\r\n");
    let _ = sock.write_all(reply.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// The address inside `<...>` of a MAIL/RCPT argument.
fn angle_address(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match (text.find('<'), text.find('>')) {
        (Some(a), Some(b)) if a < b => text[a + 1..b].to_string(),
        _ => text
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
    }
}

async fn session(p: &Provider, sock: TcpStream) -> io::Result<()> {
    let (r, w) = sock.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = BufWriter::with_capacity(16 * 1024, w);
    w.write_all(format!("220 {}.simulator ESMTP\r\n", p.name).as_bytes())
        .await?;
    let mut tx = Transaction::default();
    let mut line = Vec::with_capacity(1024);
    let result = loop {
        // Pipelining: answer everything read so far before waiting for more.
        if r.buffer().is_empty() {
            w.flush().await?;
        }
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            break Ok(());
        }
        let verb: [u8; 4] =
            std::array::from_fn(|i| line.get(i).copied().unwrap_or(b' ').to_ascii_uppercase());
        match &verb {
            b"EHLO" => {
                w.write_all(
                    format!(
                        "250-{}.simulator\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 52428800\r\n",
                        p.name
                    )
                    .as_bytes(),
                )
                .await?
            }
            b"HELO" => w.write_all(b"250 simulator\r\n").await?,
            b"MAIL" => {
                tx = Transaction {
                    active: true,
                    ..Default::default()
                };
                p.begin_transaction();
                w.write_all(b"250 2.1.0 Ok\r\n").await?
            }
            b"RCPT" if !tx.active => w.write_all(b"503 5.5.1 Error: need MAIL command\r\n").await?,
            b"RCPT" => match p.rcpt(&mut tx) {
                Verdict::Accept => {
                    tx.recipients.push(angle_address(&line));
                    w.write_all(b"250 2.1.5 Ok\r\n").await?
                }
                Verdict::Block => w.write_all(format!("{REPUTATION_BLOCK}\r\n").as_bytes()).await?,
                Verdict::Throttle(OverRate::Rcpt451) => {
                    w.write_all(format!("{RATE_LIMITED_451}\r\n").as_bytes()).await?
                }
                Verdict::Throttle(OverRate::Close421) => {
                    w.write_all(format!("{RATE_LIMITED_421}\r\n").as_bytes()).await?;
                    w.flush().await?;
                    break Ok(());
                }
            },
            b"DATA" if !tx.active => w.write_all(b"503 5.5.1 Error: need RCPT command\r\n").await?,
            b"DATA" if tx.recipients.is_empty() => {
                tx = Transaction::default();
                w.write_all(b"554 5.5.1 Error: no valid recipients\r\n").await?
            }
            b"DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                w.flush().await?;
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                }
                p.delivered_to(&tx.recipients);
                tx = Transaction::default();
                w.write_all(b"250 2.0.0 Ok: queued\r\n").await?
            }
            b"RSET" => {
                tx = Transaction::default();
                w.write_all(b"250 2.0.0 Ok\r\n").await?
            }
            b"NOOP" => w.write_all(b"250 2.0.0 Ok\r\n").await?,
            b"QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                w.flush().await?;
                break Ok(());
            }
            _ => w.write_all(b"502 5.5.2 Error: command not recognized\r\n").await?,
        }
    };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_parses_from_the_command_line_form() {
        let s = ProviderSpec::parse("name=a,ip=127.0.0.21,conns=3,rate=1500,over=421").unwrap();
        assert_eq!(s.name, "a");
        assert_eq!(s.ip, Ipv4Addr::new(127, 0, 0, 21));
        assert_eq!(s.max_connections, 3);
        assert_eq!(s.rate, 1500.0);
        assert_eq!(s.burst, 150.0);
        assert_eq!(s.over_rate, OverRate::Close421);
        assert!(ProviderSpec::parse("name=a,ip=127.0.0.21,rate=5").is_err());
        assert!(ProviderSpec::parse("name=a,ip=x,conns=1,rate=5").is_err());
    }
}

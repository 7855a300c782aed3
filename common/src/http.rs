//! The health and metrics endpoint every binary serves:
//! `/metrics` (Prometheus text format), `/healthz` (the process is alive) and
//! `/readyz` (connected to RabbitMQ and Redis and consuming). No endpoint
//! exposes recipient addresses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// Readiness shared between a worker and its endpoint, and the state of its
/// connections as metrics.
///
/// Ready means: consuming on a live broker session (set by the worker) and
/// Redis answering (set by `mailpipe_state::worker::watch_redis`). A worker that reconnects in a
/// loop is ready only for moments: `mailpipe_broker_reconnects_total` is what
/// shows it (and what the reconnect-loop alert watches).
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    redis_ok: Arc<AtomicBool>,
    sessions: Arc<AtomicU64>,
    broker_connected: IntGauge,
    broker_reconnects: IntCounter,
    redis_connected: IntGauge,
}

impl Default for Health {
    fn default() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            redis_ok: Arc::new(AtomicBool::new(true)),
            sessions: Arc::new(AtomicU64::new(0)),
            broker_connected: gauge(
                "mailpipe_broker_connected",
                "1 while the process has a live session on RabbitMQ",
            ),
            broker_reconnects: IntCounter::new(
                "mailpipe_broker_reconnects_total",
                "Broker sessions started after the first one (each follows a lost or failed session)",
            )
            .expect("valid metric"),
            redis_connected: gauge(
                "mailpipe_redis_connected",
                "1 while Redis answers the process's pings",
            ),
        }
    }
}

impl Health {
    /// Adds the connection metrics to a process's registry.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.broker_connected.clone()))?;
        registry.register(Box::new(self.broker_reconnects.clone()))?;
        registry.register(Box::new(self.redis_connected.clone()))?;
        self.redis_connected.set(1);
        Ok(())
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.redis_ok.load(Ordering::Relaxed)
    }

    /// A broker session began (counted as a reconnect after the first).
    pub fn session_started(&self) {
        if self.sessions.fetch_add(1, Ordering::Relaxed) > 0 {
            self.broker_reconnects.inc();
        }
        self.broker_connected.set(1);
    }

    /// The broker session ended (or was lost).
    pub fn session_ended(&self) {
        self.broker_connected.set(0);
    }

    /// Records whether Redis answered (`mailpipe-state`'s watch of it);
    /// returns what was recorded before.
    pub fn set_redis_ok(&self, ok: bool) -> bool {
        self.redis_connected.set(ok as i64);
        self.redis_ok.swap(ok, Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    registry: Registry,
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let families = state.registry.gather();
    match TextEncoder::new().encode(&families, &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds `listen` (port 0 picks a free port) and serves until `shutdown`.
/// Returns the bound address.
pub async fn serve(
    listen: &str,
    health: Health,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, registry });
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "health endpoint failed");
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(addr)
}

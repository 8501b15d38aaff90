//! The admin HTTP server (`admin.listen`): `/metrics` (Prometheus, OpenMetrics text),
//! `/healthz` (the process answers) and `/readyz` (JSON detail of what the gateway needs
//! to take calls).
//!
//! Counters owned by other crates (SIP endpoint and transport, webhook server) are copied
//! into the [`Metrics`] registry at scrape time, so those crates stay free of Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use whatsip_meta::rt::WebhookStats;

use super::RuntimeError;
use super::call::Shared;
use crate::ops::metrics::{CONTENT_TYPE, Metrics, SipLabels, TransportErrorLabels};

const PBX_UP: u8 = 1;
const PBX_DOWN: u8 = 2;

/// Health facts the runtime learns as it goes (lock-free).
/// PBX reachability is unknown (0) until the first OPTIONS ping answers or times out.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pbx: AtomicU8,
    draining: AtomicBool,
}

impl Health {
    /// The PBX answered (or stopped answering) its OPTIONS pings.
    pub(crate) fn set_pbx_up(&self, up: bool) {
        self.pbx
            .store(if up { PBX_UP } else { PBX_DOWN }, Ordering::Relaxed);
    }

    /// The gateway stopped taking new calls (SIGTERM drain or shutdown).
    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether new calls are refused.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn pbx(&self) -> &'static str {
        match self.pbx.load(Ordering::Relaxed) {
            PBX_UP => "up",
            PBX_DOWN => "down",
            _ => "unknown",
        }
    }
}

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    webhook_stats: Arc<WebhookStats>,
    webhook_addr: SocketAddr,
}

/// The running admin server.
#[derive(Debug)]
pub(crate) struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `listen` and serves the admin routes.
    pub(crate) async fn start(
        listen: SocketAddr,
        shared: Arc<Shared>,
        webhook_stats: Arc<WebhookStats>,
        webhook_addr: SocketAddr,
    ) -> Result<Self, RuntimeError> {
        let listener =
            tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| RuntimeError::Bind {
                    what: "admin server",
                    reason: format!("{listen}: {e}"),
                })?;
        let addr = listener.local_addr().map_err(|e| RuntimeError::Bind {
            what: "admin server",
            reason: e.to_string(),
        })?;
        let permissions = super::outbound_admin::router(
            shared.config.clone(),
            shared.permissions.clone(),
            super::graph_sides(&shared.config).unwrap_or_default(),
        );
        let state = AdminState {
            shared,
            webhook_stats,
            webhook_addr,
        };
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(state)
            .merge(permissions);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                warn!(error = %e, "admin server stopped");
            }
        });
        info!(%addr, "admin server listening (/metrics, /healthz, /readyz)");
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (bounded).
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Raises `counter` to `value` (the source is itself monotonic).
fn catch_up(counter: &Counter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

fn sample_foreign_counters(state: &AdminState, m: &Metrics) {
    let web = state.webhook_stats.snapshot();
    catch_up(&m.webhook_signature_failures, web.bad_signature);

    let t = state.shared.sip.transport().stats();
    let sip = |flow: &str| SipLabels {
        flow: flow.into(),
        method: "all".into(),
        status: "all".into(),
    };
    catch_up(
        &m.sip_messages.get_or_create(&sip("in")),
        t.messages_received,
    );
    catch_up(&m.sip_messages.get_or_create(&sip("out")), t.messages_sent);
    for (kind, value) in [
        ("frame", t.frame_errors),
        ("parse", t.parse_errors),
        ("send", t.send_errors),
        ("connection_refused", t.connections_refused),
    ] {
        let l = TransportErrorLabels {
            transport: "all".into(),
            kind: kind.into(),
        };
        catch_up(&m.transport_errors.get_or_create(&l), value);
    }
    let e = state.shared.sip.stats();
    for (kind, value) in [
        ("transaction_timeout", e.timeouts),
        ("ack_timeout", e.ack_timeouts),
    ] {
        let l = TransportErrorLabels {
            transport: "all".into(),
            kind: kind.into(),
        };
        catch_up(&m.transport_errors.get_or_create(&l), value);
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let m = &state.shared.metrics;
    sample_foreign_counters(&state, m);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.encode()).into_response()
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let sip_listening = !state.shared.sip.transport().listen_addrs().is_empty();
    let webhook_listening = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(state.webhook_addr),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let health = &state.shared.health;
    let pbx = health.pbx();
    let draining = health.is_draining();
    let ready = sip_listening && webhook_listening && pbx != "down" && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "config": "loaded",
            "sip_listening": sip_listening,
            "webhook_listening": webhook_listening,
            "pbx_options": pbx,
            "graph_api": "unknown",
            "draining": draining,
        },
        "calls_in_progress": state.shared.registry.len(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

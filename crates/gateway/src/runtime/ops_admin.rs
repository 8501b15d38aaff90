//! The admin HTTP server (`admin.listen`): `/metrics` (Prometheus, OpenMetrics text),
//! `/healthz` (the process answers) and `/readyz` (JSON detail of what the gateway needs
//! to take calls).
//!
//! Counters owned by other crates (SIP endpoint and transport, webhook server) are copied
//! into the [`Metrics`] registry at scrape time, so those crates stay free of Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use whatsip_meta::rt::WebhookStats;

use super::RuntimeError;
use super::call::Shared;
use super::clock::SystemClock;
use crate::ops::metrics::{CONTENT_TYPE, Metrics, TransportErrorLabels, catch_up};

const PBX_UP: u8 = 1;
const PBX_DOWN: u8 = 2;
/// A Graph API outcome younger than this answers `/readyz` without a probe.
const GRAPH_FRESH: Duration = Duration::from_secs(30);
/// Bound of the `/readyz` probe (`GET /<PHONE_NUMBER_ID>/settings`, reference §4.2).
const GRAPH_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Health facts the runtime learns as it goes (atomics; the Graph outcome under a mutex).
/// PBX reachability is unknown (0) until the first OPTIONS ping answers or times out.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pbx: AtomicU8,
    draining: AtomicBool,
    /// The last Graph API outcome (any request of any call, or the readiness probe).
    graph: Mutex<Option<GraphSeen>>,
    /// Held while a readiness probe runs: concurrent `/readyz` never probe twice.
    graph_probe: tokio::sync::Mutex<()>,
}

/// What the gateway last learned about the Graph API.
#[derive(Debug, Clone)]
struct GraphSeen {
    reachable: bool,
    at: Instant,
    detail: String,
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

    /// A Graph API request ended: any HTTP reply (even an error) proves Meta reachable; a
    /// transport failure (refused, timed out, broken connection) says it is not. Errors
    /// that are not [`whatsip_meta::GraphError`]s say nothing.
    pub(crate) fn graph_observed(
        &self,
        action: &str,
        error: Option<&(dyn std::error::Error + 'static)>,
    ) {
        let (reachable, detail) = match error {
            None => (true, format!("{action}: answered")),
            Some(e) => match e.downcast_ref::<whatsip_meta::GraphError>() {
                Some(g) => {
                    let transport = matches!(
                        g,
                        whatsip_meta::GraphError::Connect { .. }
                            | whatsip_meta::GraphError::Timeout { .. }
                            | whatsip_meta::GraphError::Transport { .. }
                    );
                    let text = g.to_string();
                    let text = text.get(..200).unwrap_or(&text);
                    (!transport, format!("{action}: {text}"))
                }
                None => return,
            },
        };
        *self.graph.lock().unwrap_or_else(|e| e.into_inner()) = Some(GraphSeen {
            reachable,
            at: SystemClock::now(),
            detail,
        });
    }

    fn graph_seen(&self) -> Option<GraphSeen> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        let permissions = super::outbound_admin::router(shared.clone());
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

/// Records one Graph API request of the gateway: latency and error code in the metrics,
/// reachability for `/readyz`.
pub(crate) fn graph_request_done(
    shared: &Shared,
    action: &str,
    took: Duration,
    error: Option<&(dyn std::error::Error + 'static)>,
) {
    shared.metrics.graph_request(action, took, error);
    shared.health.graph_observed(action, error);
}

fn sample_foreign_counters(state: &AdminState, m: &Metrics) {
    let web = state.webhook_stats.snapshot();
    catch_up(&m.webhook_signature_failures, web.bad_signature);

    m.sample_sip(&state.shared.sip.message_counts());
    m.sample_media();
    for (transport, t) in state.shared.sip.transport().stats_by_kind() {
        for (kind, value) in [
            ("frame", t.frame_errors),
            ("parse", t.parse_errors),
            ("send", t.send_errors),
            ("connection_refused", t.connections_refused),
        ] {
            let l = TransportErrorLabels {
                transport: transport.as_str().to_ascii_lowercase(),
                kind: kind.into(),
            };
            catch_up(&m.transport_errors.get_or_create(&l), value);
        }
    }
    // timeouts are counted by the transaction layer, over every transport
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
    let (graph, graph_detail) = graph_check(&state.shared).await;
    let ready =
        sip_listening && webhook_listening && pbx != "down" && graph != "unreachable" && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "checks": {
            "config": "loaded",
            "sip_listening": sip_listening,
            "webhook_listening": webhook_listening,
            "pbx_options": pbx,
            "graph_api": graph,
            "draining": draining,
        },
        "detail": {
            "graph_api": graph_detail,
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

/// Graph API reachability for `/readyz`: `reachable`, `unreachable` or `unknown`, and why.
/// A recent outcome of any Graph request answers at once; otherwise one bounded probe,
/// `GET /<PHONE_NUMBER_ID>/settings` (reference §4.2: read-only, no side effect), runs for
/// the first business number, and its outcome is kept like any other request's. The probe
/// uses its own one-attempt client built from the live config.
async fn graph_check(shared: &Shared) -> (&'static str, String) {
    let describe = |seen: &GraphSeen, now: Instant| {
        let age = now.saturating_duration_since(seen.at).as_secs();
        let status = if seen.reachable {
            "reachable"
        } else {
            "unreachable"
        };
        (status, format!("{} ({age} s ago)", seen.detail))
    };
    let now = SystemClock::now();
    let seen = shared.health.graph_seen();
    if let Some(s) = &seen
        && now.saturating_duration_since(s.at) < GRAPH_FRESH
    {
        return describe(s, now);
    }
    let Ok(_probing) = shared.health.graph_probe.try_lock() else {
        // another /readyz is probing right now: report what is known
        return match &seen {
            Some(s) => describe(s, now),
            None => ("unknown", "graph probe in progress".to_owned()),
        };
    };
    let (client, phone_number_id) = match probe_client(&shared.live_config.snapshot()) {
        Ok(Some(c)) => c,
        Ok(None) => return ("unknown", "no business number to probe".to_owned()),
        Err(why) => return ("unknown", format!("graph probe not built: {why}")),
    };
    let started = SystemClock::now();
    let probe = client.settings(&phone_number_id, false);
    match tokio::time::timeout(GRAPH_PROBE_TIMEOUT, probe).await {
        Ok(result) => {
            let took = SystemClock::now().saturating_duration_since(started);
            let error = result.as_ref().err();
            graph_request_done(
                shared,
                "settings_probe",
                took,
                error.map(|e| e as &(dyn std::error::Error + 'static)),
            );
        }
        Err(_) => {
            let e = whatsip_meta::GraphError::Timeout {
                timeout_ms: u64::try_from(GRAPH_PROBE_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            };
            graph_request_done(shared, "settings_probe", GRAPH_PROBE_TIMEOUT, Some(&e));
        }
    }
    match shared.health.graph_seen() {
        Some(s) => describe(&s, SystemClock::now()),
        None => ("unknown", "graph probe gave no answer".to_owned()),
    }
}

/// A Graph client for the readiness probe from the live config (the reloaded token and
/// URL), one attempt bounded by [`GRAPH_PROBE_TIMEOUT`], and the first business number by
/// phone-number id; `None` without business numbers.
fn probe_client(
    config: &crate::config::Config,
) -> Result<Option<(whatsip_meta::rt::GraphClient, whatsip_meta::PhoneNumberId)>, String> {
    let mut ids: Vec<&str> = config
        .business_numbers
        .iter()
        .map(|b| b.phone_number_id.as_str())
        .collect();
    ids.sort_unstable();
    let Some(id) = ids.first() else {
        return Ok(None);
    };
    let id = whatsip_meta::PhoneNumberId::parse(*id).map_err(|e| e.to_string())?;
    let api_version = whatsip_meta::graph::ApiVersion::parse(&config.meta.api_version)
        .map_err(|e| e.to_string())?;
    let client = whatsip_meta::rt::GraphClient::new(
        whatsip_meta::rt::GraphClientConfig {
            base_url: config.meta.graph_base_url.clone(),
            api_version,
            request_timeout: GRAPH_PROBE_TIMEOUT,
            max_attempts: 1,
            ..whatsip_meta::rt::GraphClientConfig::default()
        },
        whatsip_meta::AccessToken::new(config.meta.access_token.expose()),
    )
    .map_err(|e| e.to_string())?;
    Ok(Some((client, id)))
}

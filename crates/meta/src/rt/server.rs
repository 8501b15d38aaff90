//! The webhook HTTP(S) server.
//!
//! `GET {path}` answers Meta's subscription handshake. `POST {path}` checks the body size and
//! `X-Hub-Signature-256` before anything else, queues the verified body on a bounded channel
//! and answers `200` at once (Meta re-sends anything slower than ~20 s). One processing task
//! owns the [`CallEventGuard`]: it parses, drops duplicates, stale connects and connects for
//! calls already ended, and forwards fresh events to the receiver returned by
//! [`WebhookServer::bind`].
//!
//! Status codes: 200 accepted; 401 missing or bad signature; 413 body over the limit;
//! 503 processing queue full (Meta retries, nothing is lost); 403/400 refused handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, trace, warn};

use super::clock::{Clock, SystemClock};
use super::tls::{TlsIdentity, TlsListener};
use crate::event::{ParseNote, WebhookEvent};
use crate::guard::{CallEventGuard, GuardConfig, Verdict};
use crate::secret::{AppSecret, VerifyToken};
use crate::webhook::{MAX_WEBHOOK_BODY_BYTES, VerifiedWebhook, WebhookError, verify_subscription};

/// Webhook server settings; `Default` is the production value except `listen`.
#[derive(Debug, Clone)]
pub struct WebhookServerConfig {
    /// Where to listen (default `127.0.0.1:8080`, behind a TLS-terminating proxy).
    pub listen: SocketAddr,
    /// The callback path (default `/webhook`).
    pub path: String,
    /// Body limit (default 3 MB, Meta's maximum payload).
    pub max_body_bytes: usize,
    /// Verified bodies waiting for the processing task (default 1024); when full, POSTs get
    /// 503 and Meta retries.
    pub queue_depth: usize,
    /// Fresh events waiting for the consumer (default 1024).
    pub event_queue_depth: usize,
    /// Dedup and ordering settings.
    pub guard: GuardConfig,
    /// Serve HTTPS with this identity; `None` for plain HTTP.
    pub tls: Option<TlsIdentity>,
}

impl Default for WebhookServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/webhook".into(),
            max_body_bytes: MAX_WEBHOOK_BODY_BYTES,
            queue_depth: 1024,
            event_queue_depth: 1024,
            guard: GuardConfig::default(),
            tls: None,
        }
    }
}

/// Counters of what the server saw; read with [`WebhookServer::stats`].
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Handshakes answered 200.
    pub handshakes_ok: AtomicU64,
    /// Handshakes refused.
    pub handshakes_refused: AtomicU64,
    /// POSTs verified and queued (answered 200).
    pub posts_accepted: AtomicU64,
    /// POSTs refused for a missing, malformed or wrong signature (401).
    pub bad_signature: AtomicU64,
    /// POSTs over the body limit (413).
    pub too_large: AtomicU64,
    /// POSTs refused because the queue was full (503).
    pub queue_full: AtomicU64,
    /// Verified bodies that were not a readable envelope.
    pub malformed: AtomicU64,
    /// Parse notes (unknown fields/events, skipped items).
    pub notes: AtomicU64,
    /// Events forwarded.
    pub fresh: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Connects/statuses for ended calls dropped.
    pub already_ended: AtomicU64,
    /// Stale connects dropped.
    pub stale: AtomicU64,
}

impl WebhookStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// All counters at once, for metrics and the admin API.
    pub fn snapshot(&self) -> WebhookStatsSnapshot {
        let g = Self::get;
        WebhookStatsSnapshot {
            handshakes_ok: g(&self.handshakes_ok),
            handshakes_refused: g(&self.handshakes_refused),
            posts_accepted: g(&self.posts_accepted),
            bad_signature: g(&self.bad_signature),
            too_large: g(&self.too_large),
            queue_full: g(&self.queue_full),
            malformed: g(&self.malformed),
            notes: g(&self.notes),
            fresh: g(&self.fresh),
            duplicates: g(&self.duplicates),
            already_ended: g(&self.already_ended),
            stale: g(&self.stale),
        }
    }
}

/// A copy of [`WebhookStats`]; field meanings are the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WebhookStatsSnapshot {
    pub handshakes_ok: u64,
    pub handshakes_refused: u64,
    pub posts_accepted: u64,
    pub bad_signature: u64,
    pub too_large: u64,
    pub queue_full: u64,
    pub malformed: u64,
    pub notes: u64,
    pub fresh: u64,
    pub duplicates: u64,
    pub already_ended: u64,
    pub stale: u64,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

/// A running webhook server. Dropping it stops it.
#[derive(Debug)]
pub struct WebhookServer {
    local_addr: SocketAddr,
    stats: Arc<WebhookStats>,
    shutdown: Option<oneshot::Sender<()>>,
    serve_task: JoinHandle<()>,
    process_task: JoinHandle<()>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Swapped by [`WebhookServer::set_credentials`] (config reload).
    credentials: std::sync::RwLock<(AppSecret, VerifyToken)>,
    max_body_bytes: usize,
    queue: mpsc::Sender<VerifiedWebhook>,
    stats: Arc<WebhookStats>,
}

impl WebhookServer {
    /// Binds and starts the server with the system clock. Returns the server and the
    /// receiver of fresh, deduplicated events.
    pub async fn bind(
        config: WebhookServerConfig,
        secret: AppSecret,
        verify_token: VerifyToken,
    ) -> Result<(Self, mpsc::Receiver<WebhookEvent>), ServerError> {
        Self::bind_with_clock(config, secret, verify_token, Arc::new(SystemClock)).await
    }

    /// As [`Self::bind`] with an injected clock (tests age events with it).
    pub async fn bind_with_clock(
        config: WebhookServerConfig,
        secret: AppSecret,
        verify_token: VerifyToken,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, mpsc::Receiver<WebhookEvent>), ServerError> {
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let stats = Arc::new(WebhookStats::default());
        let (queue_tx, queue_rx) = mpsc::channel(config.queue_depth.max(1));
        let (event_tx, event_rx) = mpsc::channel(config.event_queue_depth.max(1));
        let shared = Arc::new(Shared {
            credentials: std::sync::RwLock::new((secret, verify_token)),
            max_body_bytes: config.max_body_bytes,
            queue: queue_tx,
            stats: stats.clone(),
        });
        let router = Router::new()
            .route(&config.path, get(handshake).post(deliver))
            // One byte over the limit so the handler, not the extractor, sees oversize bodies
            // whose length is not announced, and counts them.
            .layer(DefaultBodyLimit::max(
                config.max_body_bytes.saturating_add(1),
            ))
            .with_state(shared.clone());
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = shutdown_rx.await;
        };
        let serve_task = match &config.tls {
            Some(identity) => {
                let listener =
                    TlsListener::new(tcp, identity).map_err(|source| ServerError::Bind {
                        addr: config.listen,
                        source,
                    })?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router)
                        .with_graceful_shutdown(shutdown)
                        .await
                    {
                        warn!(error = %e, "webhook server stopped");
                    }
                })
            }
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(tcp, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    warn!(error = %e, "webhook server stopped");
                }
            }),
        };
        let guard = CallEventGuard::new(config.guard.clone());
        let process_task = tokio::spawn(process(queue_rx, event_tx, guard, clock, stats.clone()));
        info!(%local_addr, path = %config.path, tls = config.tls.is_some(), "webhook server listening");
        Ok((
            Self {
                local_addr,
                stats,
                shutdown: Some(shutdown_tx),
                serve_task,
                process_task,
                shared,
            },
            event_rx,
        ))
    }

    /// Replaces the app secret that signs webhooks and the subscription verify token
    /// (config reload). Deliveries already being checked finish with the old secret.
    pub fn set_credentials(&self, secret: AppSecret, verify_token: VerifyToken) {
        *self
            .shared
            .credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (secret, verify_token);
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> &WebhookStats {
        &self.stats
    }

    /// The counters, shared (for a metrics endpoint that outlives this borrow).
    pub fn stats_handle(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Stops accepting, lets in-flight requests finish, and stops processing.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.serve_task).await;
        self.process_task.abort();
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.serve_task.abort();
        self.process_task.abort();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn credentials(&self) -> (AppSecret, VerifyToken) {
        self.credentials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn handshake(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let pairs = params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let verify_token = shared.credentials().1;
    match verify_subscription(pairs, &verify_token) {
        Ok(challenge) => {
            WebhookStats::bump(&shared.stats.handshakes_ok);
            info!("webhook subscription verified");
            ([(header::CONTENT_TYPE, "text/plain")], challenge).into_response()
        }
        Err(e) => {
            WebhookStats::bump(&shared.stats.handshakes_refused);
            warn!(error = %e, "webhook subscription handshake refused");
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
            (status, e.to_string()).into_response()
        }
    }
}

async fn deliver(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                WebhookStats::bump(&shared.stats.too_large);
                warn!(limit = shared.max_body_bytes, "webhook body over the limit");
            } else {
                debug!(%status, "webhook body could not be read");
            }
            return status.into_response();
        }
    };
    let signature = headers
        .get(crate::webhook::SIGNATURE_HEADER)
        .map(|v| v.as_bytes());
    let verified = match VerifiedWebhook::from_parts_with_limit(
        signature,
        body,
        &shared.credentials().0,
        shared.max_body_bytes,
    ) {
        Ok(v) => v,
        Err(e @ WebhookError::BodyTooLarge { .. }) => {
            WebhookStats::bump(&shared.stats.too_large);
            warn!(error = %e, "webhook refused");
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
        Err(e) => {
            WebhookStats::bump(&shared.stats.bad_signature);
            warn!(error = %e, "webhook refused: check the app secret");
            return StatusCode::UNAUTHORIZED.into_response();
        }
    };
    trace!(target: "whatsip::wire", body = %String::from_utf8_lossy(verified.body()), "webhook received");
    match shared.queue.try_send(verified) {
        Ok(()) => {
            WebhookStats::bump(&shared.stats.posts_accepted);
            StatusCode::OK.into_response()
        }
        Err(_) => {
            WebhookStats::bump(&shared.stats.queue_full);
            warn!("webhook processing queue full; answering 503 so meta retries");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn process(
    mut queue: mpsc::Receiver<VerifiedWebhook>,
    events: mpsc::Sender<WebhookEvent>,
    mut guard: CallEventGuard,
    clock: Arc<dyn Clock>,
    stats: Arc<WebhookStats>,
) {
    while let Some(verified) = queue.recv().await {
        let parsed = match verified.parse() {
            Ok(parsed) => parsed,
            Err(e) => {
                WebhookStats::bump(&stats.malformed);
                warn!(error = %e, "signed webhook body not understood");
                continue;
            }
        };
        for note in &parsed.notes {
            WebhookStats::bump(&stats.notes);
            match note {
                ParseNote::InvalidItem { path, reason } => {
                    warn!(%path, %reason, "webhook item skipped")
                }
                other => debug!(note = ?other, "webhook content not handled"),
            }
        }
        let (now, wall) = (clock.now(), clock.wall());
        for event in parsed.events {
            let call_id = event
                .event
                .call_id()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default();
            let name = event.event.name();
            match guard.handle_event(&event.event, now, wall) {
                Verdict::Fresh => {
                    WebhookStats::bump(&stats.fresh);
                    debug!(event = name, wa_call_id = %call_id, "webhook event");
                    if events.send(event).await.is_err() {
                        debug!("webhook event receiver dropped; stopping processing");
                        return;
                    }
                }
                Verdict::Duplicate => {
                    WebhookStats::bump(&stats.duplicates);
                    debug!(event = name, wa_call_id = %call_id, "duplicate webhook dropped");
                }
                Verdict::ConnectAfterTerminate => {
                    WebhookStats::bump(&stats.already_ended);
                    info!(event = name, wa_call_id = %call_id, "connect after its terminate: passed on for the record only");
                    let mut event = event;
                    event.after_terminate = true;
                    if events.send(event).await.is_err() {
                        debug!("webhook event receiver dropped; stopping processing");
                        return;
                    }
                }
                Verdict::AlreadyEnded => {
                    WebhookStats::bump(&stats.already_ended);
                    info!(event = name, wa_call_id = %call_id, "webhook for a call already ended dropped");
                }
                Verdict::Stale { age } => {
                    WebhookStats::bump(&stats.stale);
                    warn!(event = name, wa_call_id = %call_id, age_s = age.as_secs(), "stale webhook dropped");
                }
            }
        }
    }
}

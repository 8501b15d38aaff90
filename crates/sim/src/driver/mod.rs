//! Tokio drivers: the engine task owning the core, the HTTP server (Graph + control API),
//! and the webhook deliverer; plus [`SimHandle`], the Rust API tests use.

pub(crate) mod clock;
pub(crate) mod deliver;
pub(crate) mod engine;
pub(crate) mod http;
pub(crate) mod recorder;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::info;

use crate::core::{
    BusinessNumber, CallInfo, CallState, CoreConfig, MetaCore, PermissionGrant, PermissionReply,
    PermissionStatus, UserCall, UserProfile,
};
use crate::error::SimError;
use crate::ids::{PhoneNumberId, WaCallId, WaId};
use crate::peer::{MediaPeerFactory, MediaReport, SdpOnlyPeerFactory};

pub use clock::SystemClock;
pub use deliver::{
    Batching, FaultAction, FaultRule, Faults, GraphFault, GraphFaultRule, WebhookConfig,
    WebhookMatch, sign,
};
pub use recorder::{DeliveryOutcome, GraphRecord, SimEvent, WebhookRecord};

use engine::{Command, Engine};
use recorder::Recorder;

/// Everything needed to start a simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Listen address for Graph and control API (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The Meta model.
    pub core: CoreConfig,
    /// Webhook delivery.
    pub webhook: WebhookConfig,
    /// Initial fault rules.
    pub faults: Faults,
    /// Creates the users' media peers (default: [`SdpOnlyPeerFactory`]).
    pub peers: Arc<dyn MediaPeerFactory>,
    /// How often peers' reports are read to feed the media watchdogs.
    pub media_poll: Duration,
    /// Most Graph requests, webhook attempts and events kept each (oldest dropped first),
    /// so long load runs stay within bounded memory.
    pub record_limit: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            core: CoreConfig::default(),
            webhook: WebhookConfig::default(),
            faults: Faults::default(),
            peers: Arc::new(SdpOnlyPeerFactory),
            media_poll: Duration::from_secs(1),
            record_limit: recorder::DEFAULT_RECORD_LIMIT,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("core", &self.core)
            .field("webhook", &self.webhook)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Result of [`SimHandle::verify_webhook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// 200 with the raw challenge as the body.
    pub verified: bool,
    /// HTTP status received.
    pub status: u16,
    /// Challenge sent.
    pub challenge: String,
    /// Body received (cut to 1 KiB).
    pub body: String,
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Binds the listener, starts the engine, HTTP server and webhook deliverer.
    pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let recorder = Arc::new(Recorder::new(cfg.record_limit));
        let faults = Arc::new(Mutex::new(cfg.faults.clone()));
        let (wh_tx, wh_rx) = mpsc::channel(4096);
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let numbers = cfg.core.numbers.clone();
        let engine = Engine::new(
            MetaCore::new(cfg.core),
            SystemClock::new(),
            cfg.peers,
            recorder.clone(),
            wh_tx,
            cfg.media_poll,
        );
        let handle = SimHandle {
            shared: Arc::new(Shared {
                cmd: cmd_tx,
                recorder: recorder.clone(),
                faults: faults.clone(),
                addr,
                webhook_url: cfg.webhook.url.clone(),
                numbers,
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let deliverer = tokio::spawn(deliver::run(cfg.webhook, faults, recorder, wh_rx));
        let engine = tokio::spawn(engine.run(cmd_rx));
        let app = http::router(handle.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulator http server failed");
            }
        });
        handle
            .shared
            .lock_tasks()
            .extend([server, engine, deliverer]);
        info!(%addr, "whatsip-sim listening");
        Ok(handle)
    }
}

pub(crate) struct Shared {
    pub(crate) cmd: mpsc::Sender<Command>,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) faults: Arc<Mutex<Faults>>,
    addr: SocketAddr,
    webhook_url: Option<String>,
    numbers: Vec<BusinessNumber>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulator. Cheap to clone; all clones drive the same simulator.
#[derive(Clone)]
pub struct SimHandle {
    pub(crate) shared: Arc<Shared>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Base URL to configure as the Graph API base, e.g. `http://127.0.0.1:40123`
    /// (append `/v23.0/{phone-number-id}/calls`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The configured business numbers.
    pub fn numbers(&self) -> &[BusinessNumber] {
        &self.shared.numbers
    }

    /// Resolves a phone number id or a display number to the phone number id.
    pub fn resolve_number(&self, s: &str) -> Option<PhoneNumberId> {
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        self.shared
            .numbers
            .iter()
            .find(|n| n.phone_number_id.as_str() == digits || n.display_phone_number == digits)
            .map(|n| n.phone_number_id.clone())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SimError>>) -> Command,
    ) -> Result<T, SimError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd
            .send(make(tx))
            .await
            .map_err(|_| SimError::Stopped)?;
        rx.await.map_err(|_| SimError::Stopped)?
    }

    /// A WhatsApp user calls the business: the `connect` webhook carries the user's
    /// peer's offer. Errors when Meta would refuse without a webhook.
    pub async fn user_calls(&self, call: UserCall) -> Result<WaCallId, SimError> {
        self.ask(|tx| Command::UserCalls(call, tx)).await
    }

    /// The user hangs up (or declines a ringing business call).
    pub async fn user_hangs_up(&self, call: &WaCallId) -> Result<(), SimError> {
        self.ask(|tx| Command::UserHangsUp(call.clone(), tx)).await
    }

    /// The user picks up a ringing business call.
    pub async fn user_answers(&self, call: &WaCallId) -> Result<(), SimError> {
        self.ask(|tx| Command::UserAnswers(call.clone(), tx)).await
    }

    /// The user declines a ringing business call.
    pub async fn user_rejects(&self, call: &WaCallId) -> Result<(), SimError> {
        self.ask(|tx| Command::UserRejects(call.clone(), tx)).await
    }

    /// The user presses DTMF digits (forwarded to the media peer).
    pub async fn user_presses(&self, call: &WaCallId, digits: &str) -> Result<(), SimError> {
        self.ask(|tx| Command::UserPresses(call.clone(), digits.to_owned(), tx))
            .await
    }

    /// Reports business media on a call, as if a packet arrived (feeds the watchdogs when
    /// the media peer cannot observe real media).
    pub async fn business_media(&self, call: &WaCallId) -> Result<(), SimError> {
        self.shared
            .cmd
            .send(Command::BusinessMedia(call.clone()))
            .await
            .map_err(|_| SimError::Stopped)
    }

    /// Sets a pair's permission directly (no webhook).
    pub async fn set_permission(
        &self,
        pnid: &PhoneNumberId,
        user: &WaId,
        grant: PermissionGrant,
    ) -> Result<(), SimError> {
        self.ask(|tx| Command::SetPermission(pnid.clone(), user.clone(), grant, tx))
            .await
    }

    /// The user replies to the pending permission request (or grants/revokes from the
    /// profile when none is pending); emits the `call_permission_reply` webhook.
    pub async fn user_replies_permission(
        &self,
        pnid: &PhoneNumberId,
        user: &WaId,
        reply: PermissionReply,
    ) -> Result<(), SimError> {
        self.ask(|tx| Command::ReplyPermission(pnid.clone(), user.clone(), reply, tx))
            .await
    }

    /// The pair's current permission.
    pub async fn permission(
        &self,
        pnid: &PhoneNumberId,
        user: &WaId,
    ) -> Result<PermissionStatus, SimError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd
            .send(Command::Permission(pnid.clone(), user.clone(), tx))
            .await
            .map_err(|_| SimError::Stopped)?;
        rx.await.map_err(|_| SimError::Stopped)
    }

    /// Adds or replaces a scripted user.
    pub async fn set_user(&self, profile: UserProfile) -> Result<(), SimError> {
        self.ask(|tx| Command::SetUser(profile, tx)).await
    }

    /// What the call's media peer has seen so far (`None` once the call ended).
    pub async fn media_report(&self, call: &WaCallId) -> Result<Option<MediaReport>, SimError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .cmd
            .send(Command::PeerReport(call.clone(), tx))
            .await
            .map_err(|_| SimError::Stopped)?;
        rx.await.map_err(|_| SimError::Stopped)
    }

    /// Latest snapshot of a call.
    pub fn call(&self, id: &WaCallId) -> Option<CallInfo> {
        self.shared.recorder.call(id)
    }

    /// Snapshots of all calls, oldest first.
    pub fn calls(&self) -> Vec<CallInfo> {
        self.shared.recorder.calls()
    }

    /// Every Graph request received, in order.
    pub fn graph_requests(&self) -> Vec<GraphRecord> {
        self.shared.recorder.graph()
    }

    /// Every webhook POST attempt, in order.
    pub fn webhooks(&self) -> Vec<WebhookRecord> {
        self.shared.recorder.webhooks()
    }

    /// Events without webhooks (nudges, peer errors).
    pub fn events(&self) -> Vec<SimEvent> {
        self.shared.recorder.events()
    }

    /// Forgets recorded Graph requests, webhooks and events (calls are kept).
    pub fn clear_records(&self) {
        self.shared.recorder.clear();
    }

    /// Replaces the fault rules.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Current fault rules (with remaining `times`).
    pub fn faults(&self) -> Faults {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `pred` holds for something `probe` returns; re-checks on every change.
    async fn wait<T>(
        &self,
        timeout: Duration,
        what: &'static str,
        mut probe: impl FnMut() -> Option<T>,
    ) -> Result<T, SimError> {
        let mut rx = self.shared.recorder.subscribe();
        let deadline = clock::tokio_now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(v) = probe() {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(SimError::Stopped),
                Err(_) => return probe().ok_or(SimError::Timeout(timeout, what)),
            }
        }
    }

    /// Waits for a Graph request matching `pred` (already received ones count).
    pub async fn wait_for_graph_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&GraphRecord) -> bool,
    ) -> Result<GraphRecord, SimError> {
        self.wait(timeout, "graph request", || {
            self.shared.recorder.graph().into_iter().find(|r| pred(r))
        })
        .await
    }

    /// Waits for a webhook attempt matching `pred` (already made ones count).
    pub async fn wait_for_webhook(
        &self,
        timeout: Duration,
        pred: impl Fn(&WebhookRecord) -> bool,
    ) -> Result<WebhookRecord, SimError> {
        self.wait(timeout, "webhook", || {
            self.shared
                .recorder
                .webhooks()
                .into_iter()
                .find(|r| pred(r))
        })
        .await
    }

    /// Waits until the call satisfies `pred`.
    pub async fn wait_for_call(
        &self,
        id: &WaCallId,
        timeout: Duration,
        pred: impl Fn(&CallInfo) -> bool,
    ) -> Result<CallInfo, SimError> {
        self.wait(timeout, "call condition", || {
            self.shared.recorder.call(id).filter(|c| pred(c))
        })
        .await
    }

    /// Waits until the call is in `state`.
    pub async fn wait_for_call_state(
        &self,
        id: &WaCallId,
        state: CallState,
        timeout: Duration,
    ) -> Result<CallInfo, SimError> {
        self.wait_for_call(id, timeout, |c| c.state == state).await
    }

    /// Waits until the call ended and returns its final snapshot.
    pub async fn wait_for_call_end(
        &self,
        id: &WaCallId,
        timeout: Duration,
    ) -> Result<CallInfo, SimError> {
        self.wait_for_call_state(id, CallState::Terminated, timeout)
            .await
    }

    /// Waits for a business-initiated call to `user` that is ringing or later.
    pub async fn wait_for_business_call(
        &self,
        user: &WaId,
        timeout: Duration,
    ) -> Result<CallInfo, SimError> {
        self.wait(timeout, "business call", || {
            self.shared.recorder.calls().into_iter().find(|c| {
                &c.user == user
                    && c.direction == crate::core::Direction::BusinessInitiated
                    && c.state != CallState::AwaitingAnswer
            })
        })
        .await
    }

    /// Performs Meta's webhook verification handshake against the configured URL
    /// (`GET ?hub.mode=subscribe&hub.challenge=…&hub.verify_token=…`, §1.1) and reports
    /// whether the receiver echoed the challenge with a 200.
    pub async fn verify_webhook(&self, verify_token: &str) -> Result<VerifyOutcome, SimError> {
        let url = self
            .shared
            .webhook_url
            .clone()
            .ok_or_else(|| SimError::Config("no webhook url configured".into()))?;
        let challenge = rand::random_range(1_000_000_000u64..9_999_999_999).to_string();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| SimError::Config(e.to_string()))?;
        let resp = client
            .get(&url)
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.challenge", challenge.as_str()),
                ("hub.verify_token", verify_token),
            ])
            .send()
            .await
            .map_err(|e| SimError::Config(format!("verification request failed: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Ok(VerifyOutcome {
            verified: status == 200 && body == challenge,
            status,
            challenge,
            body: crate::ids::truncate(&body, 1024).to_owned(),
        })
    }

    /// Stops the server, the engine (stopping every media peer) and the deliverer.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = self.shared.lock_tasks().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

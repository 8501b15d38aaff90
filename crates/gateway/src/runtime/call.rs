//! One task per inbound call: drives the [`InboundCall`] core and carries out its actions
//! on the WhatsApp leg (Graph API + WebRTC) and the PBX leg (SIP + RTP).
//!
//! The task owns the core, the WhatsApp leg handle, the PBX media task's channels and the
//! INVITE attempts. Each INVITE client transaction is read by a small forwarding task that
//! tags its events with the attempt number, so late answers of cancelled attempts reach
//! the core too (which answers them with BYE).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tracing::{Instrument, Span, debug, info, warn};
use whatsip_media::driver::{
    MediaCommand, PbxMediaHandle, PbxRtpConfig, PbxSockets, SocketBuffers, spawn_pbx_media_counted,
};
use whatsip_media::sdp::{
    LocalMedia, NegotiatedMedia, PbxSdpConfig, PortAllocator, answer_offer, build_offer,
    parse_answer,
};
use whatsip_media::webrtc::{WaCallHandle, WaLegEvent, WebRtcEndpoint};
use whatsip_media::{
    Codec as MediaCodec, Direction, Leg, MediaRelay, RelayConfig, RelayEvent, RtpPacket,
};
use whatsip_meta::side::WhatsAppSide;
use whatsip_sip::endpoint::{ClientEvent, ClientTxnId, Endpoint, IncomingRequest, ack_for_2xx};
use whatsip_sip::transport::Target;
use whatsip_sip::{CallId, DialogId, HeaderName, Method, Request, Response, StatusCode, Tag, Uri};

use super::clock::SystemClock;
use super::milestone::{CallMilestone, MilestoneKind};
use super::pbx;
use crate::call::{
    GraphAction, InboundAction, InboundCall, InboundEnd, InboundInput, WaCaller, pbx_invite_context,
};
use crate::config::{Codec, Config};
use crate::dialplan::{InboundRoute, PbxTarget};
use crate::types::SipStatus;

/// How long a call outlives a cleanly closed WhatsApp leg while Meta's `terminate`
/// webhook is awaited.
const WA_CLOSED_GRACE: Duration = Duration::from_secs(5);

/// What every call task shares (read-only, apart from the port pool and the registry).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) sip: Endpoint,
    /// Where new calls send their INVITEs (swapped by a config reload; a call keeps the
    /// target it started with: [`Shared::pbx_target`]).
    pub(crate) trunk: std::sync::RwLock<Target>,
    pub(crate) webrtc: WebRtcEndpoint,
    pub(crate) ports: Mutex<PortAllocator>,
    pub(crate) media_ip: IpAddr,
    pub(crate) milestones: broadcast::Sender<CallMilestone>,
    pub(crate) registry: Registry,
    /// Business-initiated calls whose task is running (their own registry lives in the
    /// dispatcher; this count lets `calls_in_progress` include them).
    pub(crate) outbound_live: std::sync::atomic::AtomicUsize,
    /// The CDR writer thread (`None`: CDRs disabled).
    pub(crate) cdr: Option<super::ops_cdr::CdrWriter>,
    /// Prometheus metrics.
    pub(crate) metrics: Arc<crate::ops::metrics::Metrics>,
    /// Health facts for `/readyz` (PBX reachability, draining).
    pub(crate) health: super::ops_admin::Health,
    /// The Graph API client and one side per business number (swapped by a reload).
    pub(crate) graph: std::sync::RwLock<super::GraphHandles>,
    /// The reloadable config (SIGHUP): new calls are routed by its dial plan.
    pub(crate) live_config: crate::config::SharedConfig,
    /// Call permissions and the consent guard (business-initiated calls, admin API).
    pub(crate) permissions: Arc<Mutex<crate::permission::PermissionTracker>>,
}

impl Shared {
    /// The PBX trunk target for a call starting now.
    pub(crate) fn pbx_target(&self) -> Target {
        self.trunk
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The Graph API client as of now.
    pub(crate) fn graph_client(&self) -> whatsip_meta::rt::GraphClient {
        self.graph
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .client()
    }

    /// The WhatsApp sides by phone-number id, as of now.
    pub(crate) fn graph_sides(&self) -> Arc<HashMap<String, whatsip_meta::rt::GraphSide>> {
        self.graph
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sides
            .clone()
    }

    /// The config for a call starting now (the reloaded one after SIGHUP); the call keeps
    /// it for its whole life.
    pub(crate) fn live(&self) -> Arc<Config> {
        self.live_config.snapshot()
    }
}

/// Live calls by WhatsApp call id and by the SIP Call-IDs of their attempts.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    by_wa: HashMap<String, mpsc::Sender<CallCommand>>,
    by_sip: HashMap<String, String>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a call; `false` if one with this id is live already.
    pub(crate) fn insert(&self, wa: &str, tx: mpsc::Sender<CallCommand>) -> bool {
        let mut g = self.lock();
        if g.by_wa.contains_key(wa) {
            return false;
        }
        g.by_wa.insert(wa.to_owned(), tx);
        true
    }

    fn add_sip(&self, wa: &str, sip: &str) {
        self.lock().by_sip.insert(sip.to_owned(), wa.to_owned());
    }

    fn remove(&self, wa: &str) {
        let mut g = self.lock();
        g.by_wa.remove(wa);
        g.by_sip.retain(|_, w| w != wa);
    }

    pub(crate) fn by_wa(&self, wa: &str) -> Option<mpsc::Sender<CallCommand>> {
        self.lock().by_wa.get(wa).cloned()
    }

    pub(crate) fn by_sip(&self, sip: &str) -> Option<mpsc::Sender<CallCommand>> {
        let g = self.lock();
        g.by_sip.get(sip).and_then(|wa| g.by_wa.get(wa)).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().by_wa.len()
    }

    pub(crate) fn all(&self) -> Vec<mpsc::Sender<CallCommand>> {
        self.lock().by_wa.values().cloned().collect()
    }
}

/// Commands from the dispatcher to a call task.
#[derive(Debug)]
pub(crate) enum CallCommand {
    /// The `terminate` webhook.
    WaTerminated,
    /// An in-dialog request from the PBX (BYE, re-INVITE, UPDATE, INFO, …).
    Sip(Box<IncomingRequest>),
    /// The gateway shuts down: end the call on both legs.
    Shutdown,
}

/// Everything a call starts with.
#[derive(Debug)]
pub(crate) struct CallSetup<S> {
    pub(crate) caller: WaCaller,
    pub(crate) wa_call_id: whatsip_meta::WaCallId,
    pub(crate) offer_sdp: String,
    pub(crate) route: InboundRoute,
    /// The business number called (E.164), for the CDR.
    pub(crate) business_number: String,
    /// The WhatsApp side (Graph API today, SIP mode later): only its trait is used.
    pub(crate) side: S,
}

/// Registers the call and returns its task (to spawn); `None` if the call is live already.
/// The task removes the call from the registry when both legs are released.
pub(crate) fn start<S>(
    shared: Arc<Shared>,
    setup: CallSetup<S>,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static>
where
    S: WhatsAppSide + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let wa_id = setup.caller.call_id.as_str().to_owned();
    if !shared.registry.insert(&wa_id, tx) {
        debug!(wa_call_id = %wa_id, "call already live; duplicate offer ignored");
        return None;
    }
    let span = tracing::info_span!(
        "call",
        wa_call_id = %wa_id,
        sip_call_id = tracing::field::Empty,
        dir = "inbound"
    );
    let task = CallTask::new(shared, setup, rx, span.clone());
    Some(task.run().instrument(span))
}

struct Attempt {
    invite: Request,
    txn: Option<ClientTxnId>,
    call_id: CallId,
    from_tag: Tag,
    answer: Option<Response>,
    finished: bool,
    cancelled: bool,
    bye_sent: bool,
}

struct PbxMedia {
    handle: PbxMediaHandle,
    wa_out: mpsc::Receiver<RtpPacket>,
    events: mpsc::Receiver<RelayEvent>,
    codec: MediaCodec,
    direction: Direction,
}

enum Wake {
    Command(Option<CallCommand>),
    Pbx(usize, ClientEvent),
    Wa(Option<WaLegEvent>),
    ToWa(Option<RtpPacket>),
    Relay(Option<RelayEvent>),
    Timer,
    WaClosedGrace,
}

struct CallTask<S> {
    shared: Arc<Shared>,
    /// The config as of the call's start (a reload does not touch live calls).
    config: Arc<Config>,
    /// The trunk as of the call's start; in-dialog requests keep going there.
    pbx_target: Target,
    span: Span,
    core: InboundCall,
    caller: WaCaller,
    business_number: String,
    wa_call_id: whatsip_meta::WaCallId,
    offer_sdp: String,
    side: S,
    commands: mpsc::Receiver<CallCommand>,
    commands_open: bool,
    pbx_tx: mpsc::Sender<(usize, ClientEvent)>,
    pbx_rx: mpsc::Receiver<(usize, ClientEvent)>,
    attempts: Vec<Attempt>,
    answer_sdp: Option<String>,
    wa: Option<WaCallHandle>,
    sockets: Option<PbxSockets>,
    rtp_port: Option<u16>,
    session_version: u64,
    session_id: u64,
    media: Option<PbxMedia>,
    pending_request: Option<IncomingRequest>,
    gate_opened: Option<Instant>,
    shutting_down: bool,
    sip_call_id: Option<String>,
    wa_closed_at: Option<Instant>,
    cdr: std::sync::Mutex<super::ops_cdr::CallCdr>,
}

impl<S: WhatsAppSide + 'static> CallTask<S> {
    fn new(
        shared: Arc<Shared>,
        setup: CallSetup<S>,
        commands: mpsc::Receiver<CallCommand>,
        span: Span,
    ) -> Self {
        let (pbx_tx, pbx_rx) = mpsc::channel(64);
        let session_id = rand::random::<u32>().into();
        let cdr = super::ops_cdr::CallCdr::inbound(
            shared.cdr.clone(),
            Some(shared.metrics.clone()),
            setup.caller.call_id.as_str(),
            &setup.business_number,
            setup.caller.number.as_str(),
            setup.caller.name.as_deref(),
            &setup.route,
        );
        Self {
            business_number: setup.business_number.clone(),
            cdr: std::sync::Mutex::new(cdr),
            config: shared.live(),
            pbx_target: shared.pbx_target(),
            shared,
            span,
            core: InboundCall::new(setup.route),
            caller: setup.caller,
            wa_call_id: setup.wa_call_id,
            offer_sdp: setup.offer_sdp,
            side: setup.side,
            commands,
            commands_open: true,
            pbx_tx,
            pbx_rx,
            attempts: Vec::new(),
            answer_sdp: None,
            wa: None,
            sockets: None,
            rtp_port: None,
            session_version: 1,
            session_id,
            media: None,
            pending_request: None,
            gate_opened: None,
            shutting_down: false,
            sip_call_id: None,
            wa_closed_at: None,
        }
    }

    async fn run(mut self) {
        self.feed(InboundInput::WaOffer).await;
        // Bounded by the core: every state has a way out (ring timer, Graph request
        // timeouts, Meta's terminate, the WhatsApp leg's connect timeout).
        while !self.core.is_terminated() {
            let wake = self.wait().await;
            self.on_wake(wake).await;
        }
        let ended_at = SystemClock::now();
        self.linger().await;
        self.release().await;
        let reason = end_reason(self.core.end(), self.shutting_down);
        // the CDR is committed before the call leaves the registry
        let finished = self
            .cdr_lock()
            .complete(self.core.end(), self.shutting_down, &reason);
        if let Some((writer, record)) = finished {
            writer.finish(record).await;
        }
        let talk_time = self
            .gate_opened
            .map(|t| ended_at.saturating_duration_since(t));
        // both legs are released: the call no longer counts as in progress when its
        // `Ended` milestone is seen
        self.shared.registry.remove(self.caller.call_id.as_str());
        self.milestone(MilestoneKind::Ended { reason, talk_time });
    }

    async fn wait(&mut self) -> Wake {
        let deadline = self.core.poll_timeout();
        let grace = self.wa_closed_at.map(|t| t + WA_CLOSED_GRACE);
        let commands_open = self.commands_open;
        let commands = &mut self.commands;
        let pbx_rx = &mut self.pbx_rx;
        let wa = &mut self.wa;
        let media = &mut self.media;
        let (wa_out, relay) = match media {
            Some(m) => (Some(&mut m.wa_out), Some(&mut m.events)),
            None => (None, None),
        };
        tokio::select! {
            c = commands.recv(), if commands_open => Wake::Command(c),
            Some((a, e)) = pbx_rx.recv() => Wake::Pbx(a, e),
            e = wa_next(wa) => Wake::Wa(e),
            p = recv_opt(wa_out) => Wake::ToWa(p),
            e = recv_opt(relay) => Wake::Relay(e),
            () = sleep_opt(deadline) => Wake::Timer,
            () = sleep_opt(grace) => Wake::WaClosedGrace,
        }
    }

    async fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Command(None) => self.commands_open = false,
            Wake::Command(Some(CallCommand::WaTerminated)) => {
                self.feed(InboundInput::WaTerminated).await;
            }
            Wake::Command(Some(CallCommand::Sip(req))) => self.on_request(*req).await,
            Wake::Command(Some(CallCommand::Shutdown)) => {
                self.shutting_down = true;
                // The core ends the call on both legs for a media failure: CANCEL and
                // reject while ringing, BYE and terminate once answered.
                self.feed(InboundInput::MediaFailed).await;
            }
            Wake::Pbx(attempt, event) => self.on_pbx(attempt, event).await,
            Wake::Wa(Some(ev)) => self.on_wa(ev).await,
            Wake::Wa(None) => {
                self.wa = None;
                self.feed(InboundInput::MediaFailed).await;
            }
            Wake::ToWa(Some(p)) => forward_to_wa(self.wa.as_ref(), p),
            Wake::Relay(Some(ev)) => self.on_relay(ev).await,
            Wake::ToWa(None) | Wake::Relay(None) => {
                if let Some(m) = self.media.take() {
                    reap_media_task(m.handle).await;
                }
                self.feed(InboundInput::MediaFailed).await;
            }
            Wake::WaClosedGrace => {
                self.wa_closed_at = None;
                warn!("whatsapp leg closed without a terminate webhook");
                self.feed(InboundInput::MediaFailed).await;
            }
            Wake::Timer => {
                let now = SystemClock::now();
                self.core.handle_timeout(now);
                self.drain().await;
            }
        }
    }

    /// Feeds one input with the clock read once, then carries out every action.
    async fn feed(&mut self, input: InboundInput) {
        let now = SystemClock::now();
        self.core.handle(input, now);
        self.drain().await;
    }

    async fn drain(&mut self) {
        // Bounded: each action is carried out once; actions feeding inputs back (Graph
        // results, media ready) move the core forward through a finite state graph.
        for _ in 0..256 {
            let Some(action) = self.core.poll_action() else {
                return;
            };
            self.execute(action).await;
        }
        debug_assert!(
            false,
            "inbound call produced more than 256 actions in one turn"
        );
    }

    async fn execute(&mut self, action: InboundAction) {
        match action {
            InboundAction::StartMedia => self.start_wa_media().await,
            InboundAction::SendGraph(action) => self.send_graph(action).await,
            InboundAction::SendInvite { attempt, target } => {
                self.send_invite(attempt, target).await
            }
            InboundAction::TryFallback { attempt, cause } => {
                info!(attempt, ?cause, "trying the dial plan fallback");
            }
            InboundAction::SendCancel { attempt } => {
                if let Some(a) = self.attempts.get_mut(attempt)
                    && let Some(id) = a.txn
                    && !a.finished
                {
                    a.cancelled = true;
                    if let Err(e) = self.shared.sip.cancel(id).await {
                        warn!(error = %e, "cancel failed");
                    }
                }
            }
            InboundAction::SendBye { attempt } => self.send_bye(attempt).await,
            InboundAction::AnswerReInvite => self.answer_reinvite().await,
            InboundAction::OpenMediaGate => {
                self.gate_opened = Some(SystemClock::now());
                if let Some(m) = &self.media {
                    let _ = m.handle.commands.send(MediaCommand::OpenWaGate).await;
                }
            }
            InboundAction::StopMedia => self.stop_media().await,
        }
    }

    // ---- WhatsApp leg -----------------------------------------------------------------

    async fn start_wa_media(&mut self) {
        match self.shared.webrtc.answer(self.offer_sdp.clone()).await {
            Ok((handle, sdp)) => {
                self.wa = Some(handle);
                self.answer_sdp = Some(sdp);
                self.core
                    .handle(InboundInput::MediaReady, SystemClock::now());
            }
            Err(e) => {
                warn!(error = %e, "whatsapp offer unusable");
                self.core
                    .handle(InboundInput::MediaFailed, SystemClock::now());
            }
        }
    }

    async fn send_graph(&mut self, action: GraphAction) {
        let id = &self.wa_call_id;
        let answer = self.answer_sdp.clone().unwrap_or_default();
        let started = SystemClock::now();
        match action {
            GraphAction::PreAccept => self.milestone(MilestoneKind::PreAcceptSent),
            GraphAction::Accept => self.milestone(MilestoneKind::AcceptSent),
            _ => {}
        }
        let result = match action {
            GraphAction::PreAccept => self.side.pre_accept(id, &answer).await,
            GraphAction::Accept => self.side.accept(id, &answer, None).await,
            GraphAction::Reject => self.side.reject(id).await,
            GraphAction::Terminate => self.side.terminate(id).await,
            GraphAction::Connect => {
                debug_assert!(false, "connect on an inbound call");
                return;
            }
        };
        super::ops_admin::graph_request_done(
            &self.shared,
            action.as_str(),
            SystemClock::now().saturating_duration_since(started),
            result
                .as_ref()
                .err()
                .map(|e| e as &(dyn std::error::Error + 'static)),
        );
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                warn!(action = action.as_str(), error = %e, "graph request failed");
                // the side is generic; the Graph client's error carries Meta's code
                let code = (&e as &(dyn std::error::Error + 'static))
                    .downcast_ref::<whatsip_meta::GraphError>()
                    .and_then(whatsip_meta::GraphError::meta_code)
                    .map(|c| c.code());
                self.cdr_lock().graph_error_code(code);
                self.milestone(MilestoneKind::GraphFailed {
                    action: action.as_str(),
                });
                false
            }
        };
        if ok {
            match action {
                GraphAction::PreAccept => self.milestone(MilestoneKind::PreAccepted),
                GraphAction::Accept => {
                    self.milestone(MilestoneKind::Accepted);
                    // a connected call between the pair resets Meta's permission-request
                    // limits (Calling API notes §3.6)
                    if let Ok(business) = crate::types::E164::parse(&self.business_number) {
                        self.shared
                            .permissions
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record_inbound_connected(&business, &self.caller.number);
                    }
                }
                _ => info!(action = action.as_str(), "graph action sent"),
            }
        }
        self.core
            .handle(InboundInput::GraphResult { action, ok }, SystemClock::now());
    }

    async fn on_wa(&mut self, ev: WaLegEvent) {
        match ev {
            WaLegEvent::Rtp(p) => {
                if let Some(m) = &self.media {
                    // a full queue drops the frame, as a late packet would be
                    // (counted in the call's MediaPath as wa_to_pbx_queue_full)
                    m.handle.send_wa_packet(p);
                }
            }
            WaLegEvent::Connected => self.milestone(MilestoneKind::MediaConnected),
            WaLegEvent::Disconnected => warn!("whatsapp leg lost ICE connectivity"),
            WaLegEvent::Closed => {
                // The phone closed DTLS: the user hung up, and Meta's `terminate` webhook
                // is on its way (ending the call now would send a needless `terminate`).
                // It ends as a media failure only if the webhook does not come.
                debug!("whatsapp leg closed; waiting for the terminate webhook");
                self.wa = None;
                self.wa_closed_at = Some(SystemClock::now());
            }
            WaLegEvent::Failed { reason } => {
                warn!(%reason, "whatsapp leg failed");
                self.wa = None;
                self.feed(InboundInput::MediaFailed).await;
            }
            WaLegEvent::Stats(_) => {}
            other => debug!(?other, "whatsapp leg event"),
        }
    }

    async fn on_relay(&mut self, ev: RelayEvent) {
        match ev {
            RelayEvent::DtmfDigit { from, digit, .. } => self.milestone(MilestoneKind::Dtmf {
                digit,
                from_whatsapp: from == Leg::Wa,
            }),
            RelayEvent::MediaTimeout { leg, silent_for } => {
                warn!(?leg, ?silent_for, "media timeout");
                self.feed(InboundInput::MediaFailed).await;
            }
            RelayEvent::FirstPacket { leg } => debug!(?leg, "first media packet"),
            other => debug!(?other, "relay event"),
        }
    }

    // ---- PBX leg ----------------------------------------------------------------------

    fn sdp_config(&self) -> PbxSdpConfig {
        let mut codecs: Vec<MediaCodec> = self
            .shared
            .config
            .pbx
            .codecs
            .iter()
            .map(|c| match c {
                Codec::Pcmu => MediaCodec::Pcmu,
                Codec::Pcma => MediaCodec::Pcma,
                Codec::G722 => MediaCodec::G722,
                Codec::Opus => MediaCodec::Opus,
            })
            .collect();
        // once a codec is agreed, answers to re-INVITEs keep it (the relay is built for it)
        if let Some(m) = &self.media {
            codecs.retain(|c| *c != m.codec);
            codecs.insert(0, m.codec);
        }
        PbxSdpConfig {
            codecs,
            ptime_ms: u32::try_from(self.shared.config.media.ptime.as_millis()).unwrap_or(20),
            offer_rtcp_mux: false,
            ..PbxSdpConfig::default()
        }
    }

    fn local_media(&mut self) -> Option<LocalMedia> {
        self.session_version += 1;
        Some(LocalMedia {
            addr: self.shared.media_ip,
            rtp_port: self.rtp_port?,
            session_id: self.session_id,
            session_version: self.session_version,
            direction: Direction::SendRecv,
            // SDES-SRTP toward the PBX is not configurable yet: plain RTP/AVP
            crypto: None,
        })
    }

    async fn bind_pbx_sockets(&mut self) -> bool {
        if self.rtp_port.is_some() {
            return true;
        }
        // Bounded by the attempts: a pair some other process holds is skipped.
        for _ in 0..16 {
            let port = {
                let mut ports = self.shared.ports.lock().unwrap_or_else(|e| e.into_inner());
                match ports.allocate() {
                    Ok(p) => p,
                    Err(e) => {
                        warn!(error = %e, "no rtp port pair free");
                        return false;
                    }
                }
            };
            match PbxSockets::bind_at(self.shared.config.media.bind, port, false).await {
                Ok(s) => {
                    self.sockets = Some(s);
                    self.rtp_port = Some(port);
                    return true;
                }
                Err(e) => {
                    debug!(port, error = %e, "rtp port pair busy");
                    self.release_port(port);
                }
            }
        }
        false
    }

    fn release_port(&self, port: u16) {
        self.shared
            .ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(port);
    }

    async fn send_invite(&mut self, attempt: usize, target: PbxTarget) {
        let now = SystemClock::now();
        let Ok(uri) = Uri::parse(&target.uri) else {
            warn!(uri = %target.uri, "dial plan target is not a SIP URI");
            self.core.handle(
                InboundInput::PbxFailed {
                    attempt,
                    status: status(400),
                },
                now,
            );
            return;
        };
        if !self.bind_pbx_sockets().await {
            self.core.handle(
                InboundInput::PbxFailed {
                    attempt,
                    status: status(503),
                },
                now,
            );
            return;
        }
        let sdp_config = self.sdp_config();
        let Some(local_media) = self.local_media() else {
            return;
        };
        let sdp = build_offer(&local_media, &sdp_config);
        let pbx = self.pbx_target.clone();
        let Some(local) = self.shared.sip.local_addr(pbx.kind, pbx.addr) else {
            warn!(
                transport = pbx.kind.as_str(),
                "no sip listener for the pbx transport"
            );
            self.core.handle(
                InboundInput::PbxFailed {
                    attempt,
                    status: status(503),
                },
                now,
            );
            return;
        };
        let ctx = pbx_invite_context(
            &self.config.headers,
            &self.caller,
            &target,
            &self.config.pbx.domain,
        );
        let host = local.ip();
        let call_id = CallId::new(format!("{:016x}@{host}", rand::random::<u64>()));
        let from_tag = Tag::new(format!("{:08x}", rand::random::<u32>()));
        let invite = pbx::invite(&uri, local, pbx.kind, &ctx, &call_id, &from_tag, sdp);
        self.shared
            .registry
            .add_sip(self.caller.call_id.as_str(), call_id.as_str());
        if self.sip_call_id.is_none() {
            self.span.record("sip_call_id", call_id.as_str());
        }
        self.sip_call_id = Some(call_id.as_str().to_owned());
        match self.shared.sip.send_request(invite, pbx).await {
            Ok(mut handle) => {
                self.attempts.push(Attempt {
                    invite: handle.request.clone(),
                    txn: Some(handle.id),
                    call_id,
                    from_tag,
                    answer: None,
                    finished: false,
                    cancelled: false,
                    bye_sent: false,
                });
                self.milestone(MilestoneKind::InviteSent {
                    attempt,
                    uri: target.uri.clone(),
                });
                let tx = self.pbx_tx.clone();
                tokio::spawn(
                    async move {
                        while let Some(ev) = handle.recv().await {
                            if tx.send((attempt, ev)).await.is_err() {
                                return;
                            }
                        }
                    }
                    .instrument(self.span.clone()),
                );
            }
            Err(e) => {
                warn!(error = %e, "invite could not be sent");
                self.attempts.push(Attempt {
                    invite: Request::new(Method::Invite, uri),
                    txn: None,
                    call_id,
                    from_tag,
                    answer: None,
                    finished: true,
                    cancelled: false,
                    bye_sent: false,
                });
                self.core.handle(
                    InboundInput::PbxFailed {
                        attempt,
                        status: status(503),
                    },
                    SystemClock::now(),
                );
            }
        }
    }

    async fn on_pbx(&mut self, attempt: usize, event: ClientEvent) {
        let Some(a) = self.attempts.get_mut(attempt) else {
            return;
        };
        let input = match event {
            ClientEvent::Provisional(r) => {
                let code = r.status.as_u16();
                if code == 100 {
                    return;
                }
                self.milestone(MilestoneKind::Provisional { status: code });
                InboundInput::PbxProvisional {
                    attempt,
                    status: status(code),
                }
            }
            ClientEvent::Final(r) if r.status.is_success() => {
                let first = a.answer.is_none();
                a.finished = true;
                if first {
                    let ack = ack_for_2xx(&pbx::without_via(&a.invite), &r);
                    a.answer = Some(r.clone());
                    if let Err(e) = self.shared.sip.send_ack(ack, self.pbx_target.clone()).await {
                        warn!(error = %e, "ack could not be sent");
                    }
                }
                let current =
                    self.core.current_attempt() == Some(attempt) && !self.core.is_answered();
                if first && current {
                    match self.start_pbx_media(&r) {
                        Ok(codec) => {
                            self.milestone(MilestoneKind::Answered { codec });
                            self.feed(InboundInput::PbxAnswered { attempt }).await;
                        }
                        Err(e) => {
                            warn!(error = %e, "pbx answer sdp unusable");
                            self.feed(InboundInput::PbxAnswered { attempt }).await;
                            self.feed(InboundInput::MediaFailed).await;
                        }
                    }
                    return;
                }
                InboundInput::PbxAnswered { attempt }
            }
            ClientEvent::Final(r) => {
                a.finished = true;
                let code = r.status.as_u16();
                self.milestone(MilestoneKind::PbxFailed {
                    attempt,
                    status: code,
                });
                InboundInput::PbxFailed {
                    attempt,
                    status: status(code),
                }
            }
            ClientEvent::Timeout => {
                a.finished = true;
                self.milestone(MilestoneKind::PbxFailed {
                    attempt,
                    status: 408,
                });
                InboundInput::PbxFailed {
                    attempt,
                    status: status(408),
                }
            }
            ClientEvent::TransportError => {
                a.finished = true;
                self.milestone(MilestoneKind::PbxFailed {
                    attempt,
                    status: 503,
                });
                InboundInput::PbxFailed {
                    attempt,
                    status: status(503),
                }
            }
            other => {
                debug!(?other, "client transaction event ignored");
                return;
            }
        };
        self.feed(input).await;
    }

    fn start_pbx_media(&mut self, answer: &Response) -> Result<String, String> {
        let body = std::str::from_utf8(&answer.body).map_err(|_| "sdp is not utf-8".to_owned())?;
        let negotiated =
            parse_answer(body, &self.sdp_config(), false).map_err(|e| e.to_string())?;
        let sockets = self
            .sockets
            .take()
            .ok_or_else(|| "rtp sockets already in use".to_owned())?;
        let (handle, wa_out, events) = start_pbx_leg(
            &self.shared,
            &negotiated,
            sockets,
            &self.span,
            self.wa.as_ref(),
        )?;
        let codec = negotiated.codec.encoding_name().to_owned();
        self.media = Some(PbxMedia {
            handle,
            wa_out,
            events,
            codec: negotiated.codec,
            direction: negotiated.pbx_direction,
        });
        Ok(codec)
    }

    async fn send_bye(&mut self, attempt: usize) {
        let Some(a) = self.attempts.get_mut(attempt) else {
            return;
        };
        let Some(answer) = a.answer.clone() else {
            debug!(attempt, "bye for an attempt without 2xx");
            return;
        };
        if a.bye_sent {
            return;
        }
        a.bye_sent = true;
        let bye = pbx::bye(&a.invite, &answer, 2);
        let key = dialog_key(a, &answer);
        let sip = self.shared.sip.clone();
        let target = self.pbx_target.clone();
        tokio::spawn(
            async move {
                match sip.send_request(bye, target).await {
                    Ok(mut h) => match h.final_response().await {
                        Ok(r) => debug!(status = r.status.as_u16(), "bye answered"),
                        Err(e) => debug!(error = %e, "bye not answered"),
                    },
                    Err(e) => warn!(error = %e, "bye could not be sent"),
                }
                if let Some(key) = key {
                    let _ = sip.forget_dialog(key).await;
                }
            }
            .instrument(self.span.clone()),
        );
    }

    async fn on_request(&mut self, req: IncomingRequest) {
        let method = req.request.method.clone();
        match method {
            Method::Bye => {
                self.respond(&req, StatusCode::OK, None).await;
                if let Some(key) = req.dialog.clone() {
                    let _ = self.shared.sip.forget_dialog(key).await;
                }
                self.feed(InboundInput::PbxBye).await;
            }
            Method::Invite | Method::Update => {
                self.pending_request = Some(req);
                self.feed(InboundInput::PbxReInvite).await;
                if let Some(req) = self.pending_request.take() {
                    // the core did not ask for an answer (call not answered yet or ending)
                    self.respond(&req, status_code(491), None).await;
                }
            }
            Method::Ack | Method::Cancel => {}
            _ => self.respond(&req, StatusCode::OK, None).await,
        }
    }

    async fn answer_reinvite(&mut self) {
        let Some(req) = self.pending_request.take() else {
            return;
        };
        let sdp_config = self.sdp_config();
        let Some(local) = self.local_media() else {
            self.respond(&req, status_code(488), None).await;
            return;
        };
        let offer = std::str::from_utf8(&req.request.body)
            .unwrap_or("")
            .trim()
            .to_owned();
        let sdp = if offer.is_empty() {
            // a session refresh without SDP (UPDATE), or an offer-less re-INVITE whose
            // 200 must carry our offer
            (req.request.method == Method::Invite).then(|| build_offer(&local, &sdp_config))
        } else {
            match answer_offer(&offer, &local, &sdp_config) {
                Ok((sdp, negotiated)) => {
                    self.set_pbx_direction(negotiated.pbx_direction).await;
                    Some(sdp)
                }
                Err(e) => {
                    warn!(error = %e, "pbx re-offer unusable");
                    self.respond(&req, status_code(488), None).await;
                    return;
                }
            }
        };
        self.respond(&req, StatusCode::OK, sdp).await;
    }

    async fn set_pbx_direction(&mut self, direction: Direction) {
        let Some(m) = &mut self.media else {
            return;
        };
        if m.direction == direction {
            return;
        }
        let was_held = m.direction != Direction::SendRecv;
        m.direction = direction;
        let _ = m
            .handle
            .commands
            .send(MediaCommand::SetPbxDirection(direction))
            .await;
        let held = direction != Direction::SendRecv;
        if held != was_held {
            self.milestone(MilestoneKind::HoldChanged { on_hold: held });
        }
    }

    async fn respond(&self, req: &IncomingRequest, status: StatusCode, sdp: Option<String>) {
        let mut resp = pbx::response(&req.request, status);
        if status.is_success() {
            let pbx = &self.pbx_target;
            if let Some(local) = self.shared.sip.local_addr(pbx.kind, pbx.addr)
                && matches!(req.request.method, Method::Invite | Method::Update)
            {
                resp.headers
                    .push(HeaderName::CONTACT, pbx::contact(local, pbx.kind));
            }
            // RFC 4028 §9: echo the session interval; the PBX sent the refresh, so it
            // stays the refresher unless it said otherwise
            if let Some(se) = req.request.headers.get("Session-Expires") {
                let se = if se.contains("refresher") {
                    se.to_owned()
                } else {
                    format!("{se};refresher=uac")
                };
                resp.headers.push(HeaderName::SESSION_EXPIRES, se);
                resp.headers.push("Require", "timer");
            }
        }
        if let Some(sdp) = sdp {
            resp.set_body("application/sdp", sdp);
        }
        if let Err(e) = self.shared.sip.respond(req.id, resp).await {
            debug!(error = %e, "response not sent");
        }
    }

    // ---- teardown ---------------------------------------------------------------------

    async fn stop_media(&mut self) {
        if let Some(mut m) = self.media.take() {
            let _ = m.handle.commands.send(MediaCommand::Stop).await;
            let joined = tokio::time::timeout(Duration::from_secs(5), m.handle.join).await;
            for (digit, from_whatsapp) in late_dtmf(&mut m.events) {
                self.milestone(MilestoneKind::Dtmf {
                    digit,
                    from_whatsapp,
                });
            }
            match joined {
                Ok(Ok(stats)) => {
                    debug!(?stats, "pbx media stopped");
                    let p = &stats.path;
                    info!(
                        dropped_toward_pbx = p.dropped_toward_pbx(),
                        dropped_toward_wa = p.dropped_toward_wa(),
                        wa_to_pbx_p99 = ?p.wa_to_pbx_latency.quantile_upper_bound(0.99),
                        pbx_to_wa_p99 = ?p.pbx_to_wa_latency.quantile_upper_bound(0.99),
                        "media path"
                    );
                    self.cdr_lock().media_stats(&stats);
                }
                Ok(Err(e)) => warn!(error = %e, "pbx media task failed"),
                Err(_) => warn!("pbx media task did not stop in time"),
            }
        }
        if let Some(wa) = self.wa.take() {
            wa.hang_up().await;
        }
        self.sockets = None;
        if let Some(port) = self.rtp_port.take() {
            self.release_port(port);
        }
    }

    /// After the call ended, waits (bounded) for the final answers of cancelled INVITEs,
    /// so a 200 OK that crossed our CANCEL still gets its ACK and BYE.
    async fn linger(&mut self) {
        let deadline = tokio::time::Instant::from_std(SystemClock::now() + Duration::from_secs(8));
        while self.attempts.iter().any(|a| a.txn.is_some() && !a.finished) {
            match tokio::time::timeout_at(deadline, self.pbx_rx.recv()).await {
                Ok(Some((attempt, event))) => self.on_pbx(attempt, event).await,
                Ok(None) | Err(_) => break,
            }
        }
    }

    async fn release(&mut self) {
        self.stop_media().await;
        for a in &self.attempts {
            if let Some(answer) = &a.answer
                && !a.bye_sent
                && let Some(key) = dialog_key(a, answer)
            {
                let _ = self.shared.sip.forget_dialog(key).await;
            }
        }
    }

    fn cdr_lock(&self) -> std::sync::MutexGuard<'_, super::ops_cdr::CallCdr> {
        self.cdr.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn milestone(&self, kind: MilestoneKind) {
        let at_unix_us = CallMilestone::now_unix_us();
        info!(
            milestone = %crate::ops::redact::milestone(&kind, self.config.logging.redact_phone_numbers),
            at_us = at_unix_us,
            "call milestone"
        );
        self.cdr_lock().observe(&kind, self.sip_call_id.as_deref());
        let _ = self.shared.milestones.send(CallMilestone {
            at_unix_us,
            wa_call_id: self.caller.call_id.as_str().to_owned(),
            sip_call_id: self.sip_call_id.clone(),
            kind,
        });
    }
}

fn dialog_key(a: &Attempt, answer: &Response) -> Option<DialogId> {
    Some(DialogId {
        call_id: a.call_id.clone(),
        local_tag: a.from_tag.clone(),
        remote_tag: answer.to_tag()?,
    })
}

fn status(code: u16) -> SipStatus {
    // codes come from parsed SIP responses (100..=699) or from this file's constants
    SipStatus::new(code).unwrap_or(SipStatus::from_const(500))
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::new(code).unwrap_or(StatusCode::SERVER_INTERNAL_ERROR)
}

fn end_reason(end: Option<&InboundEnd>, shutdown: bool) -> String {
    if shutdown {
        return "gateway shutdown".into();
    }
    match end {
        Some(InboundEnd::WaHangup) => "whatsapp hangup".into(),
        Some(InboundEnd::PbxHangup) => "pbx hangup".into(),
        Some(InboundEnd::PbxRejected(s)) => format!("pbx rejected {}", s.code()),
        Some(InboundEnd::NoAnswer) => "no answer".into(),
        Some(InboundEnd::MediaFailed) => "media failed".into(),
        Some(InboundEnd::GraphFailed(a)) => format!("graph {} failed", a.as_str()),
        Some(InboundEnd::NoRoute) => "no route".into(),
        None => "unknown".into(),
    }
}

async fn wa_next(wa: &mut Option<WaCallHandle>) -> Option<WaLegEvent> {
    match wa {
        Some(w) => w.next_event().await.map(|e| e.event),
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: Option<&mut mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// The transcoding jitter buffer of `media.jitter_buffer_frames`: play-out starts with that
/// many frames buffered, or once the first has waited as long.
fn jitter_config(media: &crate::config::MediaConfig) -> whatsip_media::JitterConfig {
    let frames = media.jitter_buffer_frames;
    whatsip_media::JitterConfig {
        target_depth: frames,
        target_wait: media.ptime * u32::try_from(frames).unwrap_or(0),
        ..Default::default()
    }
}

/// Sends a frame from the PBX leg toward WhatsApp; a full worker queue drops it, as a late
/// audio frame would be (counted in the call's media path).
pub(crate) fn forward_to_wa(wa: Option<&WaCallHandle>, p: RtpPacket) {
    if let Some(wa) = wa
        && !wa.try_send_rtp(p)
    {
        debug!("whatsapp leg queue full; frame dropped");
    }
}

/// The DTMF digits a stopped PBX media task reported that the call task had not handled yet,
/// as (digit, from WhatsApp), in order. RTP does not pass through the call task, so a digit
/// can reach the far end before its event reaches the call task; without this a digit
/// pressed just before hang-up would be missing from the milestones and the CDR. Bounded by
/// the event channel's capacity.
pub(crate) fn late_dtmf(events: &mut mpsc::Receiver<RelayEvent>) -> Vec<(char, bool)> {
    std::iter::from_fn(|| events.try_recv().ok())
        .filter_map(|e| match e {
            RelayEvent::DtmfDigit { from, digit, .. } => Some((digit, from == Leg::Wa)),
            _ => None,
        })
        .collect()
}

/// Waits for a PBX media task that ended on its own (it should not before `Stop`).
pub(crate) async fn reap_media_task(handle: PbxMediaHandle) {
    warn!("pbx media task ended");
    let _ = handle.join.await;
}

/// The PBX leg's task, its packets toward WhatsApp and its events.
pub(crate) type PbxLeg = (
    PbxMediaHandle,
    mpsc::Receiver<RtpPacket>,
    mpsc::Receiver<RelayEvent>,
);

/// The PBX leg's media task of a call in either direction: a relay for the negotiated codec
/// on the call's RTP sockets, spawned inside the call's span, counting into the WhatsApp
/// leg's media path ([`WaCallHandle::path`]) when there is one, so drops and added latency
/// cover both legs of the call, starting in the direction the PBX's SDP asked for. With a
/// WhatsApp leg, the two legs exchange RTP directly
/// ([`PbxMediaHandle::link_wa_leg`]); the returned channel then only carries what was in
/// flight before, and the call task's forwarding stays as the fallback.
pub(crate) fn start_pbx_leg(
    shared: &Shared,
    negotiated: &NegotiatedMedia,
    sockets: PbxSockets,
    span: &Span,
    wa: Option<&WaCallHandle>,
) -> Result<PbxLeg, String> {
    let wa_path = wa.map(|w| w.path().clone());
    let relay_config = RelayConfig {
        ptime: shared.config.media.ptime,
        pbx_codec: negotiated.codec,
        pbx_pt: negotiated.pt,
        pbx_dtmf: negotiated.dtmf,
        jitter: jitter_config(&shared.config.media),
        opus: whatsip_media::OpusEncoderConfig {
            complexity: shared.config.media.opus_complexity,
            ..Default::default()
        },
        ..RelayConfig::default()
    };
    let relay = MediaRelay::new(relay_config, &mut rand::rng(), SystemClock::now())
        .map_err(|e| e.to_string())?;
    let (wa_tx, wa_out) = mpsc::channel(256);
    let (ev_tx, events) = mpsc::channel(64);
    let mut rtp = PbxRtpConfig::new(
        negotiated.remote_rtp,
        negotiated.remote_rtcp,
        negotiated.rtcp_mux,
    );
    rtp.buffers = SocketBuffers::both(shared.config.media.rtp_socket_buffer_bytes);
    rtp.path = wa_path.unwrap_or_default();
    rtp.path.set_observer(shared.metrics.clone());
    // the media task runs inside the call's span (wa_call_id, sip_call_id: STYLE.md §6)
    // and counts in the process-wide media counters (transcoder sessions, watchdog)
    let handle = {
        let _entered = span.enter();
        spawn_pbx_media_counted(
            relay,
            sockets,
            rtp,
            wa_tx,
            ev_tx,
            shared.metrics.media.clone(),
        )
    };
    if negotiated.pbx_direction != Direction::SendRecv {
        // a fresh task's queue has room
        let _ = handle
            .commands
            .try_send(MediaCommand::SetPbxDirection(negotiated.pbx_direction));
    }
    if let Some(wa) = wa
        && !handle.link_wa_leg(wa)
    {
        debug!("media legs not linked directly (queue full); relaying through the call task");
    }
    Ok((handle, wa_out, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_dtmf_keeps_every_pending_digit_in_order_and_nothing_else() {
        let (tx, mut rx) = mpsc::channel(8);
        let digit = |from, digit| RelayEvent::DtmfDigit {
            from,
            digit,
            duration: Duration::from_millis(100),
            inband: false,
        };
        tx.try_send(digit(Leg::Wa, '5')).unwrap();
        tx.try_send(RelayEvent::FirstPacket { leg: Leg::Pbx })
            .unwrap();
        tx.try_send(digit(Leg::Pbx, '5')).unwrap();
        tx.try_send(digit(Leg::Pbx, '#')).unwrap();
        assert_eq!(
            late_dtmf(&mut rx),
            vec![('5', true), ('5', false), ('#', false)]
        );
        assert!(late_dtmf(&mut rx).is_empty());
    }
}

//! A stand-in PBX for the demo and for tests: a SIP UAS that answers and echoes audio.
//!
//! It plays the part of an Asterisk extension running `Answer()` then `Echo()` behind a
//! trunk configured like `docs/pbx/asterisk.md`: it answers each INVITE with 180 and then
//! 200 carrying an SDP answer (PCMU when offered, else the first of PCMA, G.722, Opus
//! offered, plus telephone-event), echoes RTP back to wherever it comes from (symmetric
//! RTP), decodes RFC 4733 digits instead of echoing them, answers BYE, CANCEL and OPTIONS,
//! and can hang up by itself after a while. Everything it sees is recorded as a
//! [`PbxRecord`] (an [`Instant`] and a [`PbxEvent`]), for the demo's timeline and for
//! tests' assertions.
//!
//! The Request-URI user picks the behaviour, as in the SIPp scenarios:
//! `busy` → 486, `decline` → 603, `noanswer` → 180 and nothing more; anything else answers.
//!
//! It runs on whatsip-sip's [`Endpoint`] (transactions, retransmissions, 100 Trying and
//! CANCEL handling come from there); the echo itself is the sans-IO `echo` module. One
//! task owns the call table; each answered call has one RTP task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), whatsip_gateway::pbx_standin::StandinError> {
//! use std::time::Duration;
//! use whatsip_gateway::pbx_standin::{PbxEvent, StandinPbx, StandinPbxConfig};
//!
//! let pbx = StandinPbx::start(StandinPbxConfig::default()).await?;
//! // ... point a trunk at pbx.sip_addr() and call it ...
//! let digit = pbx
//!     .wait_for(Duration::from_secs(10), |e| matches!(e, PbxEvent::Digit { .. }))
//!     .await;
//! let everything = pbx.stop().await;
//! # Ok(()) }
//! ```

mod echo;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use whatsip_media::Codec;
use whatsip_media::sdp::{LocalMedia, PbxSdpConfig, answer_offer};
use whatsip_sip::endpoint::{
    ClientEvent, Endpoint, EndpointConfig, EndpointError, EndpointEvent, IncomingRequest,
    ServerTxnId, SystemClock,
};
use whatsip_sip::transport::{ListenAddr, Target, TransportKind};
use whatsip_sip::{
    Branch, CallId, Dialog, HeaderName, Host, Method, Request, StatusCode, Tag, TimerConfig, Via,
};

use echo::{EchoEvent, EchoStats, RtpEcho};

/// How the stand-in PBX listens and behaves. `Default`: UDP on 127.0.0.1 with an ephemeral
/// port, media on 127.0.0.1, 300 ms of ringing, no automatic hang-up.
#[derive(Debug, Clone)]
pub struct StandinPbxConfig {
    /// SIP listeners (UDP and/or TCP). Port 0 picks a free port (see
    /// [`StandinPbx::sip_addr`]).
    pub listen: Vec<ListenAddr>,
    /// Address of the per-call RTP sockets, also written into SDP.
    pub media_ip: IpAddr,
    /// Time between the 180 and the 200.
    pub ring_time: Duration,
    /// Send BYE this long after the call is answered (`None`: wait for the caller).
    pub hang_up_after: Option<Duration>,
    /// Codecs accepted from offers, in preference order.
    pub codecs: Vec<Codec>,
    /// How long [`StandinPbx::stop`] lets SIP transactions in flight finish.
    pub shutdown_grace: Duration,
}

impl Default for StandinPbxConfig {
    fn default() -> Self {
        Self {
            listen: vec![ListenAddr {
                kind: TransportKind::Udp,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            }],
            media_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ring_time: Duration::from_millis(300),
            hang_up_after: None,
            codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus],
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Something the stand-in PBX saw or did. `call_id` is the SIP Call-ID.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PbxEvent {
    /// A new INVITE arrived (the whole request, to check headers such as `X-WA-*`).
    Invite {
        /// Call-ID.
        call_id: CallId,
        /// The request as received.
        request: Box<Request>,
        /// Where it came from.
        source: SocketAddr,
    },
    /// 180 Ringing sent.
    Ringing {
        /// Call-ID.
        call_id: CallId,
    },
    /// 200 OK with our SDP answer sent.
    Answered {
        /// Call-ID.
        call_id: CallId,
        /// The codec chosen from the offer.
        codec: Codec,
        /// Its payload type.
        pt: u8,
        /// The telephone-event payload type, when the offer had one.
        dtmf_pt: Option<u8>,
        /// Our RTP address (in the SDP).
        rtp: SocketAddr,
    },
    /// The INVITE was refused with a final error response.
    Refused {
        /// Call-ID.
        call_id: CallId,
        /// The status sent.
        status: u16,
        /// Why.
        reason: String,
    },
    /// The ACK for our 200 arrived.
    Acked {
        /// Call-ID.
        call_id: CallId,
    },
    /// The first RTP packet of the call arrived; echoes go back to `source`.
    MediaStarted {
        /// Call-ID.
        call_id: CallId,
        /// Where it came from.
        source: SocketAddr,
        /// Its payload type.
        pt: u8,
    },
    /// An RFC 4733 key press began.
    Digit {
        /// Call-ID.
        call_id: CallId,
        /// The key.
        digit: char,
    },
    /// An RFC 4733 key press ended.
    DigitEnd {
        /// Call-ID.
        call_id: CallId,
        /// The key.
        digit: char,
        /// Its duration (from the event's 8 kHz duration field).
        duration: Duration,
    },
    /// The caller cancelled before the answer (200 to CANCEL, 487 to INVITE were sent).
    Cancelled {
        /// Call-ID.
        call_id: CallId,
    },
    /// The caller sent BYE (answered 200).
    ByeReceived {
        /// Call-ID.
        call_id: CallId,
    },
    /// We sent BYE; `status` is the final response (`None`: none came).
    ByeSent {
        /// Call-ID.
        call_id: CallId,
        /// The BYE's final status.
        status: Option<u16>,
    },
    /// Another in-dialog request (re-INVITE, UPDATE, INFO, …), answered 200.
    InDialog {
        /// Call-ID.
        call_id: CallId,
        /// Its method.
        method: String,
    },
    /// An out-of-dialog OPTIONS, answered 200.
    Options {
        /// Where it came from.
        source: SocketAddr,
    },
    /// The call is over and its media stopped.
    Ended {
        /// Call-ID.
        call_id: CallId,
        /// RTP packets received.
        rtp_received: u64,
        /// RTP packets echoed back.
        rtp_echoed: u64,
        /// Digits received, in order.
        digits: String,
    },
}

impl PbxEvent {
    /// The SIP Call-ID the event belongs to (`None` for OPTIONS).
    pub fn call_id(&self) -> Option<&CallId> {
        match self {
            Self::Invite { call_id, .. }
            | Self::Ringing { call_id }
            | Self::Answered { call_id, .. }
            | Self::Refused { call_id, .. }
            | Self::Acked { call_id }
            | Self::MediaStarted { call_id, .. }
            | Self::Digit { call_id, .. }
            | Self::DigitEnd { call_id, .. }
            | Self::Cancelled { call_id }
            | Self::ByeReceived { call_id }
            | Self::ByeSent { call_id, .. }
            | Self::InDialog { call_id, .. }
            | Self::Ended { call_id, .. } => Some(call_id),
            Self::Options { .. } => None,
        }
    }
}

/// One recorded event and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct PbxRecord {
    /// When (tokio's clock, so paused-clock tests see virtual time).
    pub at: Instant,
    /// What.
    pub event: PbxEvent,
}

/// Why the stand-in PBX could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandinError {
    /// The SIP listeners could not be bound.
    #[error("stand-in pbx: sip endpoint: {0}")]
    Sip(#[from] EndpointError),
}

/// A running stand-in PBX.
#[derive(Debug)]
pub struct StandinPbx {
    endpoint: Endpoint,
    recorder: Recorder,
    commands: mpsc::Sender<PbxCommand>,
    task: JoinHandle<()>,
}

impl StandinPbx {
    /// Binds the SIP listeners and starts answering.
    pub async fn start(config: StandinPbxConfig) -> Result<Self, StandinError> {
        let mut ep_config = EndpointConfig::default();
        ep_config.transport.listen = config.listen.clone();
        ep_config.user_agent = "whatsip-standin-pbx".to_owned();
        ep_config.answer_options = false;
        ep_config.shutdown_grace = config.shutdown_grace;
        let (endpoint, events) = Endpoint::start(ep_config).await?;
        let recorder = Recorder::new();
        let (commands, commands_rx) = mpsc::channel(64);
        let (internal_tx, internal_rx) = mpsc::channel(256);
        let pbx = Pbx {
            endpoint: endpoint.clone(),
            config,
            recorder: recorder.clone(),
            calls: HashMap::new(),
            internal: internal_tx,
            rng: rand::rngs::StdRng::from_os_rng(),
        };
        let task = tokio::spawn(pbx.run(events, commands_rx, internal_rx));
        for l in endpoint.transport().listen_addrs() {
            info!(kind = %l.kind, addr = %l.addr, "stand-in pbx listening");
        }
        Ok(Self {
            endpoint,
            recorder,
            commands,
            task,
        })
    }

    /// The bound SIP address for `kind` (with the real port when 0 was asked for).
    pub fn sip_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.endpoint
            .transport()
            .listen_addrs()
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.addr)
    }

    /// Everything recorded so far, in order.
    pub fn records(&self) -> Vec<PbxRecord> {
        self.recorder.records()
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PbxRecord> {
        self.recorder.subscribe()
    }

    /// Waits until an event matching `pred` has been recorded (earlier ones count) or
    /// `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&PbxEvent) -> bool,
    ) -> Option<PbxRecord> {
        let mut rx = self.recorder.subscribe();
        if let Some(r) = self.records().into_iter().find(|r| pred(&r.event)) {
            return Some(r);
        }
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(r) if pred(&r.event) => return Some(r),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(r) = self.records().into_iter().find(|r| pred(&r.event)) {
                            return Some(r);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Sends BYE on every answered call now.
    pub async fn hang_up_all(&self) {
        let _ = self.commands.send(PbxCommand::HangUpAll).await;
    }

    /// Calls currently in progress (ringing or answered).
    pub async fn calls_in_progress(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(PbxCommand::Count(tx)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Stops media, lets SIP transactions in flight finish (bounded by
    /// [`StandinPbxConfig::shutdown_grace`]) and returns everything recorded.
    pub async fn stop(self) -> Vec<PbxRecord> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(PbxCommand::Stop(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        self.task.abort();
        self.endpoint.shutdown().await;
        self.recorder.records()
    }
}

/// The shared event log: the PBX task and RTP tasks append, handles read.
#[derive(Debug, Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<PbxRecord>>>,
    live: broadcast::Sender<PbxRecord>,
}

/// Most records kept (a demo or test makes a handful of calls).
const RECORD_LIMIT: usize = 10_000;

impl Recorder {
    fn new() -> Self {
        Self {
            log: Arc::new(Mutex::new(Vec::new())),
            live: broadcast::channel(1024).0,
        }
    }

    fn record(&self, event: PbxEvent) {
        let r = PbxRecord {
            at: SystemClock.now(),
            event,
        };
        debug!(event = ?r.event, "stand-in pbx");
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() < RECORD_LIMIT {
                log.push(r.clone());
            }
        }
        let _ = self.live.send(r);
    }

    fn records(&self) -> Vec<PbxRecord> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn subscribe(&self) -> broadcast::Receiver<PbxRecord> {
        self.live.subscribe()
    }
}

#[derive(Debug)]
enum PbxCommand {
    HangUpAll,
    Count(oneshot::Sender<usize>),
    Stop(oneshot::Sender<()>),
}

/// Timers and task results fed back into the PBX task.
#[derive(Debug)]
enum Internal {
    Answer(CallId),
    HangUp(CallId),
}

struct RtpTask {
    stop: oneshot::Sender<()>,
    done: JoinHandle<(EchoStats, String)>,
}

enum CallState {
    Ringing,
    Answered {
        dialog: Box<Dialog>,
        rtp: RtpTask,
        answer_sdp: String,
    },
}

struct Call {
    txn: ServerTxnId,
    invite: Request,
    kind: TransportKind,
    source: SocketAddr,
    tag: Tag,
    state: CallState,
}

struct Pbx {
    endpoint: Endpoint,
    config: StandinPbxConfig,
    recorder: Recorder,
    calls: HashMap<CallId, Call>,
    internal: mpsc::Sender<Internal>,
    rng: rand::rngs::StdRng,
}

impl Pbx {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<EndpointEvent>,
        mut commands: mpsc::Receiver<PbxCommand>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.handle_endpoint_event(ev).await,
                    None => return,
                },
                c = commands.recv() => match c {
                    Some(PbxCommand::HangUpAll) => {
                        let ids: Vec<CallId> = self.calls.keys().cloned().collect();
                        for id in ids {
                            self.hang_up(&id).await;
                        }
                    }
                    Some(PbxCommand::Count(tx)) => {
                        let _ = tx.send(self.calls.len());
                    }
                    Some(PbxCommand::Stop(done)) => {
                        let ids: Vec<CallId> = self.calls.keys().cloned().collect();
                        for id in ids {
                            self.end_call(&id).await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some(i) = internal.recv() => match i {
                    Internal::Answer(id) => self.answer(&id).await,
                    Internal::HangUp(id) => self.hang_up(&id).await,
                },
            }
        }
    }

    async fn handle_endpoint_event(&mut self, ev: EndpointEvent) {
        match ev {
            EndpointEvent::Request(inc) => self.handle_request(inc).await,
            EndpointEvent::Cancelled { id, .. } => {
                let found = self
                    .calls
                    .iter()
                    .find(|(_, c)| c.txn == id)
                    .map(|(k, _)| k.clone());
                if let Some(call_id) = found {
                    self.recorder.record(PbxEvent::Cancelled {
                        call_id: call_id.clone(),
                    });
                    self.end_call(&call_id).await;
                }
            }
            EndpointEvent::Ack { request, .. } => {
                if let Some(call_id) = request.call_id()
                    && self.calls.contains_key(&call_id)
                {
                    self.recorder.record(PbxEvent::Acked { call_id });
                }
            }
            EndpointEvent::AckTimeout { id, status } => {
                let found = self
                    .calls
                    .iter()
                    .find(|(_, c)| c.txn == id)
                    .map(|(k, _)| k.clone());
                if let Some(call_id) = found
                    && (200..300).contains(&status)
                {
                    // RFC 3261 §13.3.1.4: no ACK for our 2xx, end the dialog with BYE.
                    warn!(%call_id, "no ACK for 200, hanging up");
                    self.hang_up(&call_id).await;
                }
            }
            _ => {}
        }
    }

    async fn handle_request(&mut self, inc: IncomingRequest) {
        let req = &inc.request;
        let Some(call_id) = req.call_id() else {
            return;
        };
        match (&req.method, req.to_tag().is_some()) {
            (Method::Invite, false) => self.handle_invite(inc, call_id).await,
            (Method::Options, false) => {
                let mut ok = req.response(StatusCode::OK, None);
                ok.headers
                    .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO");
                let _ = self.endpoint.respond(inc.id, ok).await;
                self.recorder
                    .record(PbxEvent::Options { source: inc.source });
            }
            (Method::Bye, true) if self.calls.contains_key(&call_id) => {
                let _ = self
                    .endpoint
                    .respond(inc.id, req.response(StatusCode::OK, None))
                    .await;
                self.recorder.record(PbxEvent::ByeReceived {
                    call_id: call_id.clone(),
                });
                self.end_call(&call_id).await;
            }
            (_, true) if self.calls.contains_key(&call_id) => {
                let mut ok = req.response(StatusCode::OK, None);
                if req.method == Method::Invite
                    && let Some(Call {
                        state: CallState::Answered { answer_sdp, .. },
                        ..
                    }) = self.calls.get(&call_id)
                {
                    // A re-INVITE (hold, refresh): keep the same media.
                    if let Some(local) = self.endpoint.local_addr(inc.kind, inc.source) {
                        ok.headers
                            .push(HeaderName::CONTACT, contact(local, inc.kind));
                    }
                    ok.set_body("application/sdp", answer_sdp.clone());
                }
                let _ = self.endpoint.respond(inc.id, ok).await;
                self.recorder.record(PbxEvent::InDialog {
                    call_id,
                    method: req.method.to_string(),
                });
            }
            (_, true) => {
                let _ = self
                    .endpoint
                    .respond(inc.id, req.response(StatusCode::CALL_DOES_NOT_EXIST, None))
                    .await;
            }
            (_, false) => {
                let _ = self
                    .endpoint
                    .respond(inc.id, req.response(StatusCode::METHOD_NOT_ALLOWED, None))
                    .await;
            }
        }
    }

    async fn handle_invite(&mut self, inc: IncomingRequest, call_id: CallId) {
        let req = inc.request;
        self.recorder.record(PbxEvent::Invite {
            call_id: call_id.clone(),
            request: Box::new(req.clone()),
            source: inc.source,
        });
        if self.calls.contains_key(&call_id) {
            // A second INVITE with the same Call-ID but a new transaction: a loop or a
            // confused peer; RFC 3261 §8.2.2.2 merged-request answer.
            self.refuse(
                inc.id,
                &req,
                call_id,
                StatusCode::LOOP_DETECTED,
                "duplicate Call-ID",
            )
            .await;
            return;
        }
        let user = req
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .unwrap_or_default();
        match user.as_str() {
            "busy" => {
                self.refuse(inc.id, &req, call_id, StatusCode::BUSY_HERE, "busy")
                    .await;
                return;
            }
            "decline" => {
                self.refuse(inc.id, &req, call_id, StatusCode::DECLINE, "decline")
                    .await;
                return;
            }
            _ => {}
        }
        let check = if req.body.is_empty() {
            Err("no SDP offer (late offer is not supported)".to_owned())
        } else {
            answer_offer(&body_str(&req), &self.local(0), &self.sdp_config())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        if let Err(why) = check {
            self.refuse(inc.id, &req, call_id, StatusCode::NOT_ACCEPTABLE_HERE, &why)
                .await;
            return;
        }
        let tag = Tag::generate(&mut self.rng);
        let ringing = req.response(StatusCode::RINGING, Some(&tag));
        if self.endpoint.respond(inc.id, ringing).await.is_err() {
            return;
        }
        self.recorder.record(PbxEvent::Ringing {
            call_id: call_id.clone(),
        });
        self.calls.insert(
            call_id.clone(),
            Call {
                txn: inc.id,
                invite: req,
                kind: inc.kind,
                source: inc.source,
                tag,
                state: CallState::Ringing,
            },
        );
        if user == "noanswer" {
            return;
        }
        let internal = self.internal.clone();
        let ring = self.config.ring_time;
        tokio::spawn(async move {
            tokio::time::sleep(ring).await;
            let _ = internal.send(Internal::Answer(call_id)).await;
        });
    }

    async fn answer(&mut self, call_id: &CallId) {
        let media_ip = self.config.media_ip;
        let sdp_config = self.sdp_config();
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        if !matches!(call.state, CallState::Ringing) {
            return;
        }
        let socket = match UdpSocket::bind(SocketAddr::new(media_ip, 0)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "stand-in pbx: cannot bind rtp");
                let (txn, invite) = (call.txn, call.invite.clone());
                self.calls.remove(call_id);
                self.refuse(
                    txn,
                    &invite,
                    call_id.clone(),
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no rtp port",
                )
                .await;
                return;
            }
        };
        let Ok(rtp_addr) = socket.local_addr() else {
            return;
        };
        let local = LocalMedia {
            addr: media_ip,
            rtp_port: rtp_addr.port(),
            session_id: self.rng.random_range(1..u64::from(u32::MAX)),
            session_version: 1,
            direction: whatsip_media::Direction::SendRecv,
            crypto: None,
        };
        let Ok((answer_sdp, negotiated)) =
            answer_offer(&body_str(&call.invite), &local, &sdp_config)
        else {
            // checked when the INVITE arrived
            return;
        };
        let Some(local_sip) = self.endpoint.local_addr(call.kind, call.source) else {
            return;
        };
        let mut ok = call.invite.response(StatusCode::OK, Some(&call.tag));
        ok.headers
            .push(HeaderName::CONTACT, contact(local_sip, call.kind));
        ok.headers
            .push("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO");
        ok.set_body("application/sdp", answer_sdp.clone());
        let dialog = match Dialog::uas(
            &call.invite,
            &ok,
            contact(local_sip, call.kind),
            call.kind.is_reliable(),
            &TimerConfig::default(),
        ) {
            Ok(d) => d,
            Err(e) => {
                let (txn, invite) = (call.txn, call.invite.clone());
                self.calls.remove(call_id);
                self.refuse(
                    txn,
                    &invite,
                    call_id.clone(),
                    StatusCode::BAD_REQUEST,
                    &e.to_string(),
                )
                .await;
                return;
            }
        };
        if self.endpoint.respond(call.txn, ok).await.is_err() {
            // A CANCEL won the race: the endpoint already sent 487.
            return;
        }
        let dtmf_pt = negotiated.dtmf.map(|t| t.pt);
        self.recorder.record(PbxEvent::Answered {
            call_id: call_id.clone(),
            codec: negotiated.codec,
            pt: negotiated.pt,
            dtmf_pt,
            rtp: rtp_addr,
        });
        let echo = RtpEcho::new(dtmf_pt, self.rng.random(), self.rng.random());
        let rtp = spawn_rtp(socket, echo, call_id.clone(), self.recorder.clone());
        if let Some(call) = self.calls.get_mut(call_id) {
            call.state = CallState::Answered {
                dialog: Box::new(dialog),
                rtp,
                answer_sdp,
            };
        }
        if let Some(after) = self.config.hang_up_after {
            let internal = self.internal.clone();
            let id = call_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = internal.send(Internal::HangUp(id)).await;
            });
        }
    }

    /// Sends BYE on an answered call and ends it.
    async fn hang_up(&mut self, call_id: &CallId) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let CallState::Answered { dialog, .. } = &mut call.state else {
            return;
        };
        // The endpoint puts its own Via on top; the dialog needs one to build the request.
        let placeholder = Via::new(
            whatsip_sip::Transport::Udp,
            Host::Ipv4(Ipv4Addr::LOCALHOST),
            None,
            &Branch::generate(&mut self.rng),
        );
        let mut bye = dialog.create_request(Method::Bye, &placeholder);
        bye.headers.remove("Via");
        // interop: like Asterisk with force_rport/rewrite_contact, send in-dialog requests
        // to where the INVITE came from rather than trusting the Contact's address.
        let target = Target::new(call.kind, call.source);
        let recorder = self.recorder.clone();
        let id = call_id.clone();
        match self.endpoint.send_request(bye, target).await {
            Ok(mut handle) => {
                tokio::spawn(async move {
                    let status = loop {
                        match tokio::time::timeout(Duration::from_secs(40), handle.recv()).await {
                            Ok(Some(ClientEvent::Final(r))) => break Some(r.status.as_u16()),
                            Ok(Some(ClientEvent::Provisional(_))) => {}
                            _ => break None,
                        }
                    };
                    recorder.record(PbxEvent::ByeSent {
                        call_id: id,
                        status,
                    });
                });
            }
            Err(e) => {
                warn!(error = %e, "stand-in pbx: BYE not sent");
                self.recorder.record(PbxEvent::ByeSent {
                    call_id: id,
                    status: None,
                });
            }
        }
        self.end_call(call_id).await;
    }

    /// Removes the call and stops its media; records `Ended`.
    async fn end_call(&mut self, call_id: &CallId) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        let (stats, digits) = match call.state {
            CallState::Ringing => (EchoStats::default(), String::new()),
            CallState::Answered { rtp, dialog, .. } => {
                let _ = rtp.stop.send(());
                let result = tokio::time::timeout(Duration::from_secs(2), rtp.done).await;
                let id = dialog.id();
                let _ = self.endpoint.forget_dialog(id.clone()).await;
                match result {
                    Ok(Ok(v)) => v,
                    _ => (EchoStats::default(), String::new()),
                }
            }
        };
        self.recorder.record(PbxEvent::Ended {
            call_id: call_id.clone(),
            rtp_received: stats.received,
            rtp_echoed: stats.echoed,
            digits,
        });
    }

    async fn refuse(
        &mut self,
        txn: ServerTxnId,
        req: &Request,
        call_id: CallId,
        status: StatusCode,
        reason: &str,
    ) {
        let _ = self.endpoint.respond(txn, req.response(status, None)).await;
        self.recorder.record(PbxEvent::Refused {
            call_id,
            status: status.as_u16(),
            reason: reason.to_owned(),
        });
    }

    fn sdp_config(&self) -> PbxSdpConfig {
        PbxSdpConfig {
            codecs: self.config.codecs.clone(),
            ..PbxSdpConfig::default()
        }
    }

    fn local(&self, port: u16) -> LocalMedia {
        LocalMedia {
            addr: self.config.media_ip,
            rtp_port: port,
            session_id: 1,
            session_version: 1,
            direction: whatsip_media::Direction::SendRecv,
            crypto: None,
        }
    }
}

fn body_str(req: &Request) -> String {
    String::from_utf8_lossy(&req.body).into_owned()
}

fn contact(local: SocketAddr, kind: TransportKind) -> String {
    match kind {
        TransportKind::Udp => format!("<sip:pbx@{local}>"),
        other => format!(
            "<sip:pbx@{local};transport={}>",
            other.as_str().to_ascii_lowercase()
        ),
    }
}

/// Runs one call's echo until `stop`; returns its counters and digits.
fn spawn_rtp(socket: UdpSocket, mut echo: RtpEcho, call_id: CallId, recorder: Recorder) -> RtpTask {
    let (stop, mut stop_rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut digits = String::new();
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                r = socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else {
                        // ICMP port unreachable surfaces here on some systems: keep going,
                        // without spinning if the error persists.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    echo.handle_datagram(&buf[..n], source);
                    while let Some((data, to)) = echo.poll_transmit() {
                        let _ = socket.try_send_to(&data, to);
                    }
                    while let Some(ev) = echo.poll_event() {
                        let call_id = call_id.clone();
                        recorder.record(match ev {
                            EchoEvent::FirstPacket { source, pt } => {
                                PbxEvent::MediaStarted { call_id, source, pt }
                            }
                            EchoEvent::Digit { digit } => {
                                if digits.len() < 256 {
                                    digits.push(digit);
                                }
                                PbxEvent::Digit { call_id, digit }
                            }
                            EchoEvent::DigitEnd { digit, duration } => PbxEvent::DigitEnd {
                                call_id,
                                digit,
                                duration: Duration::from_micros(u64::from(duration) * 125),
                            },
                        });
                    }
                }
            }
        }
        (echo.stats(), digits)
    });
    RtpTask { stop, done }
}

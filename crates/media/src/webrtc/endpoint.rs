//! Tokio driver: a small fixed set of UDP sockets shared by every WhatsApp call.
//!
//! Each socket is owned by one worker task that owns the [`WaLeg`] cores of the calls placed
//! on it (STYLE.md §1: a core is owned by exactly one task; others talk to it over bounded
//! channels). Incoming datagrams are routed to a call by the STUN USERNAME (our ICE ufrag
//! before the colon) and, for DTLS/SRTP/STUN responses, by the remote address the call has
//! talked to. Several calls may share a remote address (Meta relays listen on a handful of
//! ports, §6.2), which a single socket cannot tell apart after ICE; the endpoint therefore
//! places a new call on a socket where none of the offer's candidate addresses is in use.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::{Span, debug, info, trace, warn};

use super::{SdpSummary, WaLeg, WaLegConfig, WaLegError, WaLegEvent};
use crate::RtpPacket;
use crate::driver::{MediaCommand, SocketBuffers, SystemClock};
use crate::path::{Flow, MediaPath, PathDrop};

/// Configuration of the shared-socket endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Sockets to bind, each with the address to advertise in SDP (`None`: the bound address,
    /// which must then not be unspecified). One is enough unless many calls come from the
    /// same Meta relay address.
    pub sockets: Vec<(SocketAddr, Option<SocketAddr>)>,
    /// Per-leg settings (`candidates` is filled from the socket).
    pub leg: WaLegConfig,
    /// Capacity of each worker's command channel.
    pub command_capacity: usize,
    /// Capacity of each call's event channel; RTP beyond it is dropped and counted.
    pub event_capacity: usize,
    /// Kernel buffers of each socket (every call on a socket shares them).
    pub buffers: SocketBuffers,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            sockets: vec![(SocketAddr::from(([127, 0, 0, 1], 0)), None)],
            leg: WaLegConfig::default(),
            command_capacity: 4096,
            event_capacity: 1024,
            buffers: SocketBuffers::SHARED_DEFAULT,
        }
    }
}

/// One event of a call, stamped with the worker's `now` for the turn that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct WaCallEvent {
    /// When the worker handled the input that produced it.
    pub at: Instant,
    /// The event.
    pub event: WaLegEvent,
}

/// The shared-socket WebRTC endpoint (cheap to clone).
#[derive(Debug, Clone)]
pub struct WebRtcEndpoint {
    workers: Arc<Vec<Worker>>,
    event_capacity: usize,
}

#[derive(Debug)]
struct Worker {
    cmd: mpsc::Sender<Cmd>,
    local_addr: SocketAddr,
    advertised: SocketAddr,
    calls: Arc<AtomicUsize>,
    /// Remote candidate addresses of live calls, for placement (approximate, refreshed by the
    /// worker).
    remotes: Arc<std::sync::Mutex<HashMap<SocketAddr, usize>>>,
}

/// Handle to one call on the endpoint. Dropping it hangs the call up.
#[derive(Debug)]
pub struct WaCallHandle {
    key: u64,
    cmd: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<WaCallEvent>,
    local_ufrag: String,
    path: MediaPath,
}

/// Sends RTP toward Meta on one call from any task, straight to the call's socket worker
/// (see [`WaCallHandle::rtp_sender`]). Cheap to clone; sending after the call ended is a
/// no-op.
#[derive(Debug, Clone)]
pub struct WaRtpSender {
    key: u64,
    cmd: mpsc::Sender<Cmd>,
    path: MediaPath,
}

impl WaRtpSender {
    /// Queues one RTP packet without waiting; `false` when the worker queue is full (the
    /// packet is dropped, as a late audio frame would be, and counted as
    /// [`PathDrop::WaSendQueueFull`]).
    pub fn try_send(&self, packet: RtpPacket) -> bool {
        let ok = self
            .cmd
            .try_send(Cmd::SendRtp {
                key: self.key,
                packet,
            })
            .is_ok();
        if !ok {
            self.path.count(PathDrop::WaSendQueueFull);
        }
        ok
    }
}

enum Cmd {
    Answer {
        offer: String,
        span: Span,
        path: MediaPath,
        remotes: Vec<SocketAddr>,
        events: mpsc::Sender<WaCallEvent>,
        reply: oneshot::Sender<Result<(u64, String, String), WaLegError>>,
    },
    Offer {
        span: Span,
        path: MediaPath,
        events: mpsc::Sender<WaCallEvent>,
        reply: oneshot::Sender<Result<(u64, String, String), WaLegError>>,
    },
    AcceptAnswer {
        key: u64,
        answer: String,
        reply: oneshot::Sender<Result<(), WaLegError>>,
    },
    SendRtp {
        key: u64,
        packet: RtpPacket,
    },
    RouteRtp {
        key: u64,
        to: mpsc::Sender<MediaCommand>,
    },
    HangUp {
        key: u64,
    },
}

impl WebRtcEndpoint {
    /// Binds the sockets and starts one worker task per socket.
    pub async fn bind(config: EndpointConfig) -> io::Result<Self> {
        if config.sockets.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no webrtc socket configured",
            ));
        }
        let mut workers = Vec::with_capacity(config.sockets.len());
        for (bind, advertised) in &config.sockets {
            let socket = UdpSocket::bind(bind).await?;
            let local_addr = socket.local_addr()?;
            config
                .buffers
                .apply_logged(&socket, &format!("webrtc {local_addr}"));
            let advertised = advertised.unwrap_or(local_addr);
            if advertised.ip().is_unspecified() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("socket {local_addr} needs an advertised address"),
                ));
            }
            let (tx, rx) = mpsc::channel(config.command_capacity.max(1));
            let calls = Arc::new(AtomicUsize::new(0));
            let remotes = Arc::new(std::sync::Mutex::new(HashMap::new()));
            let mut leg_config = config.leg.clone();
            leg_config.candidates = vec![advertised];
            let task = WorkerTask {
                socket,
                advertised,
                leg_config,
                rx,
                calls: HashMap::new(),
                by_ufrag: HashMap::new(),
                by_addr: HashMap::new(),
                timers: BinaryHeap::new(),
                next_key: 0,
                n_calls: Arc::clone(&calls),
                remotes: Arc::clone(&remotes),
            };
            tokio::spawn(task.run());
            info!(%local_addr, %advertised, "webrtc socket bound");
            workers.push(Worker {
                cmd: tx,
                local_addr,
                advertised,
                calls,
                remotes,
            });
        }
        Ok(Self {
            workers: Arc::new(workers),
            event_capacity: config.event_capacity.max(8),
        })
    }

    /// The bound socket addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.local_addr).collect()
    }

    /// The advertised addresses (candidates in our SDP).
    pub fn advertised_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.advertised).collect()
    }

    /// Answers Meta's offer (user-initiated call). Returns the call handle and our SDP answer.
    ///
    /// The worker enters the caller's current span (STYLE.md §6: `call{wa_call_id, ..}`)
    /// whenever it works for this call, so `.instrument(call_span)` the calling future.
    pub async fn answer(&self, offer: String) -> Result<(WaCallHandle, String), WaLegError> {
        let remotes = SdpSummary::parse(&offer).candidates;
        let worker = self.place(&remotes);
        let (events_tx, events_rx) = mpsc::channel(self.event_capacity);
        let (reply, rx) = oneshot::channel();
        let path = MediaPath::new();
        worker
            .cmd
            .send(Cmd::Answer {
                offer,
                span: Span::current(),
                path: path.clone(),
                remotes,
                events: events_tx,
                reply,
            })
            .await
            .map_err(|_| WaLegError::Closed)?;
        let (key, ufrag, sdp) = rx.await.map_err(|_| WaLegError::Closed)??;
        Ok((
            WaCallHandle {
                key,
                cmd: worker.cmd.clone(),
                events: events_rx,
                local_ufrag: ufrag,
                path,
            },
            sdp,
        ))
    }

    /// Creates our offer for a business-initiated call; apply Meta's answer with
    /// [`WaCallHandle::accept_answer`]. The current span becomes the call's span, as for
    /// [`WebRtcEndpoint::answer`].
    pub async fn offer(&self) -> Result<(WaCallHandle, String), WaLegError> {
        let worker = self.place(&[]);
        let (events_tx, events_rx) = mpsc::channel(self.event_capacity);
        let (reply, rx) = oneshot::channel();
        let path = MediaPath::new();
        worker
            .cmd
            .send(Cmd::Offer {
                span: Span::current(),
                path: path.clone(),
                events: events_tx,
                reply,
            })
            .await
            .map_err(|_| WaLegError::Closed)?;
        let (key, ufrag, sdp) = rx.await.map_err(|_| WaLegError::Closed)??;
        Ok((
            WaCallHandle {
                key,
                cmd: worker.cmd.clone(),
                events: events_rx,
                local_ufrag: ufrag,
                path,
            },
            sdp,
        ))
    }

    /// Number of live calls over all sockets.
    pub fn call_count(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.calls.load(Ordering::Relaxed))
            .sum()
    }

    /// Picks the least loaded socket among those where no remote address is already in use.
    fn place(&self, remotes: &[SocketAddr]) -> &Worker {
        let free = |w: &&Worker| {
            let used = w
                .remotes
                .lock()
                .map(|m| remotes.iter().any(|r| m.contains_key(r)))
                .unwrap_or(false);
            !used
        };
        let load = |w: &&Worker| w.calls.load(Ordering::Relaxed);
        self.workers
            .iter()
            .filter(free)
            .min_by_key(load)
            .or_else(|| {
                warn!("every webrtc socket already serves a call from this remote address");
                self.workers.iter().min_by_key(load)
            })
            .unwrap_or(&self.workers[0])
    }
}

impl WaCallHandle {
    /// Our ICE ufrag (for logs).
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The call's media path: drop counters and added latency of both legs. Hand it to the
    /// PBX leg ([`crate::driver::PbxRtpConfig::path`]) so both legs count into one.
    pub fn path(&self) -> &MediaPath {
        &self.path
    }

    /// Applies Meta's answer to our offer.
    pub async fn accept_answer(&self, answer: String) -> Result<(), WaLegError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::AcceptAnswer {
                key: self.key,
                answer,
                reply,
            })
            .await
            .map_err(|_| WaLegError::Closed)?;
        rx.await.map_err(|_| WaLegError::Closed)?
    }

    /// Queues one RTP packet toward Meta, waiting if the worker is busy.
    pub async fn send_rtp(&self, packet: RtpPacket) -> Result<(), WaLegError> {
        self.cmd
            .send(Cmd::SendRtp {
                key: self.key,
                packet,
            })
            .await
            .map_err(|_| WaLegError::Closed)
    }

    /// Queues one RTP packet without waiting; `false` when the worker queue is full (the
    /// packet is dropped, as a late audio frame would be, and counted as
    /// [`PathDrop::WaSendQueueFull`]).
    pub fn try_send_rtp(&self, packet: RtpPacket) -> bool {
        self.rtp_sender().try_send(packet)
    }

    /// A sender of RTP toward Meta for this call that another task (the PBX media task) can
    /// own, so packets do not pass through the task holding this handle.
    pub fn rtp_sender(&self) -> WaRtpSender {
        WaRtpSender {
            key: self.key,
            cmd: self.cmd.clone(),
            path: self.path.clone(),
        }
    }

    /// From now on the worker hands the call's received RTP straight to `to` (a PBX media
    /// task's command channel) as [`MediaCommand::WaPacket`] instead of yielding it from
    /// [`WaCallHandle::next_event`]: one task hop less per packet. A full `to` drops the
    /// packet and counts [`PathDrop::WaToPbxQueueFull`]; once `to` is closed, RTP comes back
    /// through `next_event`. `false` when the worker's queue is full (nothing changed).
    pub fn route_rtp_to(&self, to: mpsc::Sender<MediaCommand>) -> bool {
        self.cmd
            .try_send(Cmd::RouteRtp { key: self.key, to })
            .is_ok()
    }

    /// Next event; `None` once the call is gone.
    pub async fn next_event(&mut self) -> Option<WaCallEvent> {
        self.events.recv().await
    }

    /// Hangs up (DTLS close_notify, then [`WaLegEvent::Closed`]).
    pub async fn hang_up(&self) {
        let _ = self.cmd.send(Cmd::HangUp { key: self.key }).await;
    }
}

impl Drop for WaCallHandle {
    fn drop(&mut self) {
        let _ = self.cmd.try_send(Cmd::HangUp { key: self.key });
    }
}

/// Datagrams handled per wake-up after the first, before commands and timers get a turn.
const RECV_BATCH: usize = 64;

struct Call {
    /// Boxed: str0m's `Rtc` is ~10 KiB inline, and the calls map keeps up to half its slots
    /// empty after growing; boxed, an empty slot costs a pointer, not a whole leg.
    leg: Box<WaLeg>,
    /// The call's span (`Span::current()` when the call was created), entered for its work.
    span: Span,
    events: mpsc::Sender<WaCallEvent>,
    /// The leg's next timeout.
    timeout: Option<Instant>,
    /// The earliest heap entry of this call still pending, if any. A new timeout is pushed
    /// only when earlier than it, so the heap holds about one entry per call instead of one
    /// per packet (str0m moves its timeout on almost every datagram).
    armed: Option<Instant>,
    addrs: Vec<SocketAddr>,
    path: MediaPath,
    /// Where received RTP goes instead of `events` ([`WaCallHandle::route_rtp_to`]).
    rtp_to: Option<mpsc::Sender<MediaCommand>>,
    /// Whether a dropped event was already logged (one `warn` per call).
    drop_logged: bool,
}

struct WorkerTask {
    socket: UdpSocket,
    advertised: SocketAddr,
    leg_config: WaLegConfig,
    rx: mpsc::Receiver<Cmd>,
    calls: HashMap<u64, Call>,
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_key: u64,
    n_calls: Arc<AtomicUsize>,
    remotes: Arc<std::sync::Mutex<HashMap<SocketAddr, usize>>>,
}

impl WorkerTask {
    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        let sleep = tokio::time::sleep(std::time::Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let next = self.timers.peek().map(|Reverse((t, _))| *t);
            if next != armed {
                if let Some(t) = next {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(t));
                }
                armed = next;
            }
            tokio::select! {
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    let now = SystemClock::now();
                    self.handle_cmd(cmd, now);
                }
                r = self.socket.recv_from(&mut buf) => {
                    match r {
                        Ok((n, source)) => {
                            let now = SystemClock::now();
                            self.handle_datagram(&buf[..n], source, now);
                            // Drain what else is queued without another trip through select:
                            // with hundreds of calls on one socket this keeps the kernel
                            // buffer from overflowing. Bounded so commands and timers still
                            // get their turn.
                            for _ in 0..RECV_BATCH {
                                let Ok((n, source)) = self.socket.try_recv_from(&mut buf) else {
                                    break;
                                };
                                self.handle_datagram(&buf[..n], source, now);
                            }
                        }
                        Err(e) => {
                            // ICMP port unreachable and friends surface here on some OSes.
                            debug!(error = %e, "webrtc socket recv");
                        }
                    }
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = SystemClock::now();
                    self.handle_timers(now);
                }
            }
        }
        debug!("webrtc worker stopped");
    }

    fn handle_cmd(&mut self, cmd: Cmd, now: Instant) {
        match cmd {
            Cmd::Answer {
                offer,
                span,
                path,
                remotes,
                events,
                reply,
            } => {
                let guard = span.clone();
                let _g = guard.enter();
                let result = WaLeg::answer(&self.leg_config, &offer, now).map(|(leg, sdp)| {
                    let ufrag = leg.local_ufrag().to_owned();
                    let key = self.insert(leg, span, path, events, remotes, now);
                    (key, ufrag, sdp)
                });
                if let Err(e) = &result {
                    warn!(error = %e, "meta offer refused");
                }
                let _ = reply.send(result);
            }
            Cmd::Offer {
                span,
                path,
                events,
                reply,
            } => {
                let guard = span.clone();
                let _g = guard.enter();
                let result = WaLeg::offer(&self.leg_config, now).map(|(leg, sdp)| {
                    let ufrag = leg.local_ufrag().to_owned();
                    let key = self.insert(leg, span, path, events, Vec::new(), now);
                    (key, ufrag, sdp)
                });
                let _ = reply.send(result);
            }
            Cmd::AcceptAnswer { key, answer, reply } => {
                let remotes = SdpSummary::parse(&answer).candidates;
                let span = self
                    .calls
                    .get(&key)
                    .map_or_else(Span::none, |c| c.span.clone());
                let _g = span.enter();
                let result = match self.calls.get_mut(&key) {
                    Some(call) => call.leg.accept_answer(&answer, now),
                    None => Err(WaLegError::Closed),
                };
                if result.is_ok() {
                    if let Ok(mut m) = self.remotes.lock() {
                        for r in &remotes {
                            *m.entry(*r).or_insert(0) += 1;
                        }
                    }
                    if let Some(call) = self.calls.get_mut(&key) {
                        call.addrs.extend(remotes);
                    }
                }
                self.flush(key, now);
                let _ = reply.send(result);
            }
            Cmd::SendRtp { key, packet } => {
                if let Some(call) = self.calls.get_mut(&key) {
                    let received_at = call.path.arrival(Flow::PbxToWa, packet.seq.0);
                    let path = call.path.clone();
                    match call.leg.send_rtp(&packet, now) {
                        Ok(()) => {
                            self.flush(key, now);
                            if let Some(at) = received_at {
                                path.record_latency(Flow::PbxToWa, at, SystemClock::now());
                            }
                        }
                        Err(e) => {
                            trace!(error = %e, "rtp not sent");
                            path.count(PathDrop::WaSendRejected);
                            self.flush(key, now);
                        }
                    }
                }
            }
            Cmd::RouteRtp { key, to } => {
                if let Some(call) = self.calls.get_mut(&key) {
                    call.rtp_to = Some(to);
                }
            }
            Cmd::HangUp { key } => {
                if let Some(call) = self.calls.get_mut(&key) {
                    let span = call.span.clone();
                    let _g = span.enter();
                    call.leg.hang_up(now);
                    self.flush(key, now);
                }
            }
        }
    }

    fn insert(
        &mut self,
        leg: WaLeg,
        span: Span,
        path: MediaPath,
        events: mpsc::Sender<WaCallEvent>,
        remotes: Vec<SocketAddr>,
        now: Instant,
    ) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.by_ufrag.insert(leg.local_ufrag().to_owned(), key);
        if let Ok(mut m) = self.remotes.lock() {
            for r in &remotes {
                *m.entry(*r).or_insert(0) += 1;
            }
        }
        self.calls.insert(
            key,
            Call {
                leg: Box::new(leg),
                span,
                events,
                timeout: None,
                armed: None,
                addrs: remotes,
                path,
                rtp_to: None,
                drop_logged: false,
            },
        );
        self.n_calls.fetch_add(1, Ordering::Relaxed);
        self.flush(key, now);
        key
    }

    fn handle_datagram(&mut self, data: &[u8], source: SocketAddr, now: Instant) {
        let key = stun_local_ufrag(data)
            .and_then(|u| self.by_ufrag.get(u).copied())
            .or_else(|| self.by_addr.get(&source).copied());
        let Some(key) = key else {
            trace!(%source, len = data.len(), "datagram for no call");
            return;
        };
        if let Entry::Vacant(v) = self.by_addr.entry(source) {
            v.insert(key);
            if let Some(call) = self.calls.get_mut(&key) {
                call.addrs.push(source);
            }
        }
        if let Some(call) = self.calls.get_mut(&key) {
            let span = call.span.clone();
            let _g = span.enter();
            call.leg.handle_datagram(now, source, self.advertised, data);
            self.flush(key, now);
        }
    }

    fn handle_timers(&mut self, now: Instant) {
        // Bounded by the number of calls: each call has at most one live heap entry due now.
        for _ in 0..self.timers.len() {
            let Some(Reverse((t, key))) = self.timers.peek().copied() else {
                break;
            };
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(call) = self.calls.get_mut(&key) else {
                continue;
            };
            if call.armed == Some(t) {
                call.armed = None;
            }
            match call.timeout {
                Some(due) if due <= now => {}
                Some(later) => {
                    // the leg moved its timeout later since this entry was pushed
                    if call.armed.is_none() {
                        call.armed = Some(later);
                        self.timers.push(Reverse((later, key)));
                    }
                    continue;
                }
                None => continue,
            }
            call.timeout = None;
            let span = call.span.clone();
            let _g = span.enter();
            call.leg.handle_timeout(now);
            self.flush(key, now);
        }
    }

    /// Sends what the leg queued, forwards its events, re-arms its timer, removes it if done.
    fn flush(&mut self, key: u64, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        while let Some(d) = call.leg.poll_datagram() {
            if let Entry::Vacant(v) = self.by_addr.entry(d.destination) {
                v.insert(key);
                call.addrs.push(d.destination);
            }
            if let Err(e) = self.socket.try_send_to(&d.contents, d.destination) {
                // A full socket buffer drops the datagram like the network would.
                trace!(error = %e, destination = %d.destination, "webrtc send failed");
                call.path.count(PathDrop::WaSocketSendFailed);
            }
        }
        while let Some(event) = call.leg.poll_event() {
            let rtp_seq = match &event {
                WaLegEvent::Rtp(p) => Some(p.seq.0),
                _ => None,
            };
            if let Some(seq) = rtp_seq {
                call.path.stamp_arrival(Flow::WaToPbx, seq, now);
            }
            let event = match (event, &call.rtp_to) {
                (WaLegEvent::Rtp(p), Some(to)) => match to.try_send(MediaCommand::WaPacket(p)) {
                    Ok(()) => continue,
                    Err(TrySendError::Full(_)) => {
                        call.path.count(PathDrop::WaToPbxQueueFull);
                        continue;
                    }
                    Err(TrySendError::Closed(cmd)) => {
                        // the PBX media task ended: back to the call's own event channel
                        call.rtp_to = None;
                        match cmd {
                            MediaCommand::WaPacket(p) => WaLegEvent::Rtp(p),
                            _ => continue,
                        }
                    }
                },
                (event, _) => event,
            };
            if let Err(e) = call.events.try_send(WaCallEvent { at: now, event }) {
                if rtp_seq.is_some() {
                    call.path.count(PathDrop::WaEventQueueFull);
                }
                if !call.drop_logged || rtp_seq.is_none() {
                    call.drop_logged = true;
                    warn!(error = %e, "call event dropped: consumer too slow or gone");
                }
            }
        }
        if call.leg.is_terminated() {
            let call = self.calls.remove(&key);
            if let Some(call) = call {
                self.by_ufrag.remove(call.leg.local_ufrag());
                for a in &call.addrs {
                    if self.by_addr.get(a) == Some(&key) {
                        self.by_addr.remove(a);
                    }
                }
                if let Ok(mut m) = self.remotes.lock() {
                    for a in &call.addrs {
                        if let Some(n) = m.get_mut(a) {
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                m.remove(a);
                            }
                        }
                    }
                }
                self.n_calls.fetch_sub(1, Ordering::Relaxed);
                debug!(ufrag = %call.leg.local_ufrag(), "call removed");
            }
            return;
        }
        let t = call.leg.poll_timeout();
        call.timeout = t;
        if let Some(t) = t
            && call.armed.is_none_or(|armed| t < armed)
        {
            call.armed = Some(t);
            self.timers.push(Reverse((t, key)));
        }
    }
}

/// The local ufrag from a STUN binding request's USERNAME (`<our ufrag>:<their ufrag>`,
/// RFC 8445 §7.2.2), or `None` for anything else.
fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    // RFC 7983: STUN starts with 0..=3 and carries the magic cookie.
    if data.len() < 20 || data[0] > 3 || data[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[i + 2], body[i + 3]]));
        let value = body.get(i + 4..i + 4 + alen)?;
        if typ == 0x0006 {
            let user = std::str::from_utf8(value).ok()?;
            return user.split(':').next();
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_username_gives_local_ufrag() {
        let user = b"abcd:efgh";
        let mut m = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xA4, 0x42];
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
        m.extend_from_slice(user);
        m.extend_from_slice(&[0, 0, 0]);
        assert_eq!(stun_local_ufrag(&m), Some("abcd"));
        assert_eq!(stun_local_ufrag(&m[..m.len() - 4]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        assert_eq!(stun_local_ufrag(&[]), None);
    }
}

//! The PBX leg's tokio driver: owns the RTP (and RTCP) sockets and one [`MediaRelay`], ticks
//! it every ptime, latches to where the PBX really sends from, and exchanges WhatsApp-leg
//! packets and relay events with the rest of the gateway over bounded channels.
//!
//! ```text
//!  WhatsApp leg task ──MediaCommand::WaPacket──▶ ┌──────────────┐ ──UDP──▶ PBX (latched)
//!  gateway ──OpenWaGate / SetPbxDirection / Stop▶│ PBX media    │ ◀─UDP─── PBX
//!  WhatsApp leg task ◀────── RtpPacket ───────── │ task (relay) │
//!  gateway ◀──────────────── RelayEvent ──────── └──────────────┘
//! ```
//!
//! Symmetric RTP (interop(nat)): we send to the SDP address until the PBX's first valid RTP
//! packet arrives, then to the packet's source; a later source is latched only when the
//! current one has been silent for [`PbxRtpConfig::relatch_after`], so one spoofed packet
//! cannot steal the stream. RTCP latches the same way on its own port (or rides the RTP
//! port with rtcp-mux).

mod buffers;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

use crate::codec::MediaError;
use crate::path::{Flow, MediaPath, PathDrop};
use crate::relay::{Direction, Leg, MediaRelay, RelayEvent};
use crate::rtp::{RtpPacket, is_rtcp};
use crate::sdp::PortAllocator;
use crate::srtp::{SdesKey, SrtpContext};
use crate::stats::MediaStats;
use crate::webrtc::{WaCallHandle, WaRtpSender};

pub use buffers::{GrantedBuffers, SocketBuffers};

/// The only place the media drivers read the clocks (STYLE.md §1).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// Monotonic now; follows tokio's paused clock in tests.
    #[allow(clippy::disallowed_methods)]
    #[must_use]
    pub fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Wall-clock now, for RTCP NTP timestamps.
    #[allow(clippy::disallowed_methods)]
    #[must_use]
    pub fn wall() -> SystemTime {
        SystemTime::now()
    }
}

mod counters;

pub use counters::{MediaCounters, MediaCountersSnapshot};

/// Settings of one PBX media task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxRtpConfig {
    /// Where the PBX's SDP says to send RTP.
    pub remote_rtp: SocketAddr,
    /// Where the PBX's SDP says to send RTCP (same as RTP with rtcp-mux).
    pub remote_rtcp: SocketAddr,
    /// RTP and RTCP share the RTP socket.
    pub rtcp_mux: bool,
    /// Follow the PBX's actual source address (symmetric RTP).
    pub latch: bool,
    /// A new source replaces the latched one only after this much silence from it.
    pub relatch_after: Duration,
    /// RTCP report interval (RFC 3550 §6.2: 5 s minimum is the classic value).
    pub rtcp_interval: Duration,
    /// SDES CNAME in our reports.
    pub cname: String,
    /// SDES-SRTP keys when the PBX leg negotiated `RTP/SAVP`.
    pub srtp: Option<SrtpKeys>,
    /// Kernel buffers of the call's RTP/RTCP sockets, applied when the task starts.
    pub buffers: SocketBuffers,
    /// The call's drop counters and added-latency histograms; pass the WhatsApp leg's
    /// ([`crate::webrtc::WaCallHandle::path`]) so both legs count into one path and the
    /// latency spans the whole gateway.
    pub path: MediaPath,
}

/// The two SDES master keys of an SRTP PBX leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Ours: protects what we send.
    pub local: SdesKey,
    /// The PBX's: unprotects what it sends.
    pub remote: SdesKey,
}

impl PbxRtpConfig {
    /// Defaults for a negotiated remote address.
    #[must_use]
    pub fn new(remote_rtp: SocketAddr, remote_rtcp: SocketAddr, rtcp_mux: bool) -> Self {
        Self {
            remote_rtp,
            remote_rtcp,
            rtcp_mux,
            latch: true,
            relatch_after: Duration::from_secs(2),
            rtcp_interval: Duration::from_secs(5),
            cname: "whatsip".into(),
            srtp: None,
            buffers: SocketBuffers::PER_CALL_DEFAULT,
            path: MediaPath::new(),
        }
    }
}

/// A bound RTP/RTCP socket pair for one call.
#[derive(Debug)]
pub struct PbxSockets {
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    rtp_port: u16,
}

impl PbxSockets {
    /// Binds a pair from `ports` on `ip`, skipping pairs some other process holds (bounded
    /// by the pool size). With `rtcp_mux` only the RTP port is bound.
    pub async fn bind(
        ip: IpAddr,
        ports: &mut PortAllocator,
        rtcp_mux: bool,
    ) -> Result<Self, MediaError> {
        let mut failed = Vec::new();
        let result = loop {
            let port = match ports.allocate() {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
            match Self::bind_at(ip, port, rtcp_mux).await {
                Ok(s) => break Ok(s),
                Err(e) => {
                    debug!(port, error = %e, "rtp port pair busy");
                    failed.push(port);
                }
            }
        };
        for port in failed {
            ports.release(port);
        }
        result
    }

    /// Binds exactly `rtp_port` (and `rtp_port + 1` for RTCP unless muxed); port 0 picks
    /// an ephemeral RTP port (tests).
    pub async fn bind_at(ip: IpAddr, rtp_port: u16, rtcp_mux: bool) -> Result<Self, MediaError> {
        let io = |e: std::io::Error| MediaError::Io(e.to_string());
        let rtp = UdpSocket::bind(SocketAddr::new(ip, rtp_port))
            .await
            .map_err(io)?;
        let rtp_port = rtp.local_addr().map_err(io)?.port();
        let rtcp = if rtcp_mux {
            None
        } else {
            let port = rtp_port.checked_add(1).ok_or(MediaError::PortsExhausted)?;
            Some(
                UdpSocket::bind(SocketAddr::new(ip, port))
                    .await
                    .map_err(io)?,
            )
        };
        Ok(Self {
            rtp,
            rtcp,
            rtp_port,
        })
    }

    /// The bound RTP port (for our SDP).
    #[must_use]
    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }
}

/// Commands to a running PBX media task.
#[derive(Debug)]
#[non_exhaustive]
pub enum MediaCommand {
    /// A plain RTP packet from the WhatsApp leg.
    WaPacket(RtpPacket),
    /// Meta's `accept` succeeded: start sending toward WhatsApp.
    OpenWaGate,
    /// The PBX's SDP changed direction (hold/resume).
    SetPbxDirection(Direction),
    /// Send a DTMF digit on a leg as RFC 4733 (e.g. a SIP INFO digit from the PBX).
    SendDtmf {
        /// The leg to send it on.
        to: Leg,
        /// `0-9 * # A-D`.
        digit: char,
        /// How long the key is held.
        duration: Duration,
    },
    /// Reply with a statistics snapshot.
    Stats(oneshot::Sender<MediaStats>),
    /// Send packets for the WhatsApp leg straight to its socket worker instead of `wa_out`
    /// (see [`PbxMediaHandle::link_wa_leg`]).
    LinkWaLeg(WaRtpSender),
    /// End the task; its join handle returns the final statistics.
    Stop,
}

/// The handle of a running PBX media task.
#[derive(Debug)]
pub struct PbxMediaHandle {
    /// Send commands here (bounded).
    pub commands: mpsc::Sender<MediaCommand>,
    /// Resolves to the call's final statistics when the task ends.
    pub join: JoinHandle<MediaStats>,
    /// The call's media path counters (the one in [`PbxRtpConfig::path`]).
    pub path: MediaPath,
}

impl PbxMediaHandle {
    /// Hands one RTP packet from the WhatsApp leg to the task without waiting; a full queue
    /// drops it (as a late packet would be) and counts [`PathDrop::WaToPbxQueueFull`].
    pub fn send_wa_packet(&self, packet: RtpPacket) -> bool {
        let ok = self
            .commands
            .try_send(MediaCommand::WaPacket(packet))
            .is_ok();
        if !ok {
            self.path.count(PathDrop::WaToPbxQueueFull);
        }
        ok
    }

    /// Joins the two legs of a call directly: RTP from the WhatsApp leg comes straight to
    /// this task (not through `wa`'s [`WaCallHandle::next_event`]) and this task's packets
    /// for WhatsApp go straight to the leg's socket worker (not through `wa_out`), so a
    /// packet crosses one task hop instead of two each way; other events still reach the
    /// holder of `wa`. `false` when a queue was full: the call then keeps (part of) the
    /// indirect path, which still works.
    pub fn link_wa_leg(&self, wa: &WaCallHandle) -> bool {
        self.commands
            .try_send(MediaCommand::LinkWaLeg(wa.rtp_sender()))
            .is_ok()
            && wa.route_rtp_to(self.commands.clone())
    }
}

/// Starts the PBX media task for one call. `wa_out` receives the packets for the WhatsApp
/// leg, `events` the relay's events; both are bounded and never block the media loop (a
/// full channel drops and warns).
#[must_use]
pub fn spawn_pbx_media(
    relay: MediaRelay,
    sockets: PbxSockets,
    config: PbxRtpConfig,
    wa_out: mpsc::Sender<RtpPacket>,
    events: mpsc::Sender<RelayEvent>,
) -> PbxMediaHandle {
    spawn_pbx_media_counted(relay, sockets, config, wa_out, events, MediaCounters::new())
}

/// [`spawn_pbx_media`] that also counts the session (by PBX codec) and the relay's watchdog
/// interventions into `counters`, shared by every call of the process. The session counts
/// from now until the task ends (or is aborted). Both run the task inside the caller's
/// current tracing span.
#[must_use]
pub fn spawn_pbx_media_counted(
    relay: MediaRelay,
    sockets: PbxSockets,
    config: PbxRtpConfig,
    wa_out: mpsc::Sender<RtpPacket>,
    events: mpsc::Sender<RelayEvent>,
    counters: std::sync::Arc<MediaCounters>,
) -> PbxMediaHandle {
    let (tx, rx) = mpsc::channel(256);
    let path = config.path.clone();
    let session = counters::SessionGuard::start(counters.clone(), relay.stats().pbx_codec);
    // the task logs inside the caller's span (the gateway's per-call span, STYLE.md §6)
    let task = run(
        relay, sockets, config, rx, wa_out, events, counters, session,
    );
    let join = tokio::spawn(tracing::Instrument::instrument(
        task,
        tracing::Span::current(),
    ));
    PbxMediaHandle {
        commands: tx,
        join,
        path,
    }
}

/// Per-call sockets are many: their granted sizes go to `debug`, a cap to one `debug` line.
fn apply_buffers(sockets: &PbxSockets, buffers: &SocketBuffers) {
    if *buffers == SocketBuffers::KERNEL_DEFAULT {
        return;
    }
    for s in std::iter::once(&sockets.rtp).chain(sockets.rtcp.as_ref()) {
        match buffers.apply(s) {
            Ok(g) => debug!(
                granted_recv = g.recv_bytes,
                granted_send = g.send_bytes,
                "pbx rtp socket buffers"
            ),
            Err(e) => debug!(error = %e, "pbx rtp socket buffers unknown"),
        }
    }
}

struct Latch {
    addr: SocketAddr,
    latched: bool,
    last_rx: Option<Instant>,
}

impl Latch {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            latched: false,
            last_rx: None,
        }
    }

    /// Whether the packet from `src` may be used; moves the target when allowed.
    fn observe(&mut self, src: SocketAddr, enabled: bool, relatch: Duration, now: Instant) -> bool {
        if src == self.addr && (self.latched || !enabled) {
            self.last_rx = Some(now);
            return true;
        }
        if !enabled {
            // without latching only the SDP address is accepted
            return src == self.addr;
        }
        let stale = self
            .last_rx
            .is_none_or(|t| now.saturating_duration_since(t) >= relatch);
        if !self.latched || stale {
            if src != self.addr {
                debug!(from = %self.addr, to = %src, "latching to pbx media source");
            }
            self.addr = src;
            self.latched = true;
            self.last_rx = Some(now);
            return true;
        }
        trace!(%src, "ignoring media from an unlatched source");
        false
    }
}

#[allow(clippy::too_many_arguments)] // one task's whole state, moved in once
async fn run(
    mut relay: MediaRelay,
    sockets: PbxSockets,
    config: PbxRtpConfig,
    mut commands: mpsc::Receiver<MediaCommand>,
    wa_out: mpsc::Sender<RtpPacket>,
    events: mpsc::Sender<RelayEvent>,
    counters: std::sync::Arc<MediaCounters>,
    _session: counters::SessionGuard,
) -> MediaStats {
    apply_buffers(&sockets, &config.buffers);
    let path = config.path.clone();
    let mut rtp_latch = Latch::new(config.remote_rtp);
    let mut rtcp_latch = Latch::new(config.remote_rtcp);
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(1500);
    let mut next_rtcp = SystemClock::now() + config.rtcp_interval;
    let mut srtp_tx = config.srtp.as_ref().map(|k| SrtpContext::new(&k.local));
    let mut srtp_rx = config.srtp.as_ref().map(|k| SrtpContext::new(&k.remote));
    let mut plain = Vec::with_capacity(2048);
    let mut watchdog = counters::WatchdogSeen::default();
    let mut wa_direct: Option<WaRtpSender> = None;
    // one timer for the task's life, moved only when the deadline changes (not re-created
    // for every packet)
    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next_rtcp));
    tokio::pin!(sleep);
    let mut armed = next_rtcp;
    loop {
        let deadline = relay
            .poll_timeout()
            .unwrap_or_else(|| SystemClock::now() + Duration::from_secs(1))
            .min(next_rtcp);
        if deadline != armed {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
            armed = deadline;
        }
        let rtcp_recv = async {
            match &sockets.rtcp {
                Some(s) => s.recv_from(&mut rtcp_buf).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv() => {
                let now = SystemClock::now();
                match cmd {
                    Some(MediaCommand::WaPacket(p)) => {
                        // the WhatsApp worker stamped when the datagram arrived
                        let at = path.arrival(Flow::WaToPbx, p.seq.0).map_or(now, |t| t.min(now));
                        relay.handle_packet(Leg::Wa, p, at);
                    }
                    Some(MediaCommand::OpenWaGate) => relay.open_wa_gate(now),
                    Some(MediaCommand::SetPbxDirection(d)) => relay.set_pbx_direction(d, now),
                    Some(MediaCommand::SendDtmf { to, digit, duration }) => {
                        if let Err(e) = relay.send_dtmf(to, digit, duration) {
                            warn!(error = %e, "cannot send dtmf");
                        }
                    }
                    Some(MediaCommand::Stats(reply)) => {
                        let _ = reply.send(relay.stats());
                    }
                    Some(MediaCommand::LinkWaLeg(sender)) => wa_direct = Some(sender),
                    Some(MediaCommand::Stop) | None => break,
                }
            }
            r = sockets.rtp.recv_from(&mut buf) => {
                let now = SystemClock::now();
                match r {
                    Ok((n, src)) => {
                        plain.clear();
                        plain.extend_from_slice(&buf[..n]);
                        let rtcp = is_rtcp(&plain);
                        if let Some(ctx) = srtp_rx.as_mut() {
                            let r = if rtcp {
                                ctx.unprotect_rtcp(&mut plain)
                            } else {
                                ctx.unprotect_rtp(&mut plain)
                            };
                            if let Err(e) = r {
                                trace!(%src, error = %e, "dropping srtp packet");
                                path.count(PathDrop::PbxRxRejected);
                                plain.clear();
                            }
                        }
                        let data = &plain[..];
                        if data.is_empty() {
                            // failed SRTP authentication or replay: already logged
                        } else if rtcp {
                            if config.rtcp_mux
                                && rtcp_latch.observe(src, config.latch, config.relatch_after, now)
                            {
                                relay.handle_rtcp(Leg::Pbx, data, now, SystemClock::wall());
                            }
                        } else {
                            match RtpPacket::parse(data) {
                                Ok(p) => {
                                    if rtp_latch.observe(src, config.latch, config.relatch_after, now) {
                                        relay.handle_packet(Leg::Pbx, p, now);
                                    } else {
                                        path.count(PathDrop::PbxRxRejected);
                                    }
                                }
                                Err(e) => {
                                    trace!(%src, error = %e, "dropping non-rtp datagram");
                                    path.count(PathDrop::PbxRxRejected);
                                }
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "pbx rtp socket receive failed"),
                }
            }
            r = rtcp_recv => {
                let now = SystemClock::now();
                if let Ok((n, src)) = r {
                    plain.clear();
                    plain.extend_from_slice(&rtcp_buf[..n]);
                    let ok = srtp_rx.as_mut().is_none_or(|c| c.unprotect_rtcp(&mut plain).is_ok());
                    if ok && rtcp_latch.observe(src, config.latch, config.relatch_after, now) {
                        relay.handle_rtcp(Leg::Pbx, &plain, now, SystemClock::wall());
                    }
                }
            }
            () = &mut sleep => {
                let now = SystemClock::now();
                if relay.poll_timeout().is_some_and(|t| t <= now) {
                    relay.handle_tick(now);
                }
                if next_rtcp <= now {
                    next_rtcp = now + config.rtcp_interval;
                    let mut report =
                        relay.rtcp_report(Leg::Pbx, &config.cname, now, SystemClock::wall());
                    if let Some(ctx) = srtp_tx.as_mut()
                        && ctx.protect_rtcp(&mut report).is_err()
                    {
                        report.clear();
                    }
                    // Until the PBX's own RTCP tells us where it lives, follow the RTP
                    // latch: same address with rtcp-mux, the next port without.
                    let to = if rtcp_latch.latched || !rtp_latch.latched {
                        rtcp_latch.addr
                    } else if config.rtcp_mux {
                        rtp_latch.addr
                    } else {
                        SocketAddr::new(rtp_latch.addr.ip(), rtp_latch.addr.port().wrapping_add(1))
                    };
                    let sock = match &sockets.rtcp {
                        Some(s) if !config.rtcp_mux => s,
                        _ => &sockets.rtp,
                    };
                    if let Err(e) = sock.send_to(&report, to).await {
                        debug!(error = %e, "rtcp send failed");
                    }
                }
            }
        }
        // drain the relay's output
        while let Some(t) = relay.poll_transmit() {
            match t.leg {
                Leg::Pbx => {
                    out.clear();
                    t.packet.write_to(&mut out);
                    if let Some(ctx) = srtp_tx.as_mut()
                        && let Err(e) = ctx.protect_rtp(&mut out)
                    {
                        debug!(error = %e, "srtp protect failed");
                        continue;
                    }
                    match sockets.rtp.send_to(&out, rtp_latch.addr).await {
                        Ok(_) => {
                            if let Some(at) = t.received_at {
                                path.record_latency(Flow::WaToPbx, at, SystemClock::now());
                            }
                        }
                        Err(e) => {
                            debug!(error = %e, "pbx rtp send failed");
                            path.count(PathDrop::PbxSendFailed);
                        }
                    }
                }
                Leg::Wa => {
                    if let Some(at) = t.received_at {
                        path.stamp_arrival(Flow::PbxToWa, t.packet.seq.0, at);
                    }
                    if let Some(direct) = &wa_direct {
                        // counts its own drops (PathDrop::WaSendQueueFull)
                        direct.try_send(t.packet);
                    } else if wa_out.try_send(t.packet).is_err() {
                        path.count(PathDrop::PbxToWaQueueFull);
                        warn!("whatsapp leg channel full or closed; dropping packet");
                    }
                }
            }
        }
        while let Some(e) = relay.poll_event() {
            if events.try_send(e).is_err() {
                warn!("relay event channel full or closed; dropping event");
            }
        }
        watchdog.update(
            &counters,
            relay.comfort_noise_runs(),
            relay.media_timeouts(),
        );
    }
    let mut stats = relay.stats();
    stats.path = path.stats();
    stats
}

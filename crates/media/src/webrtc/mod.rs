//! The WhatsApp leg: one WebRTC peer connection toward Meta, built on str0m in RTP mode.
//!
//! [`WaLeg`] is a sans-IO core (STYLE.md §1). It answers Meta's offer for user-initiated calls
//! ([`WaLeg::answer`]) or creates the business offer for business-initiated calls
//! ([`WaLeg::offer`] then [`WaLeg::accept_answer`]), exactly as the Calling API reference §6
//! requires:
//!
//! - ICE full and controlling against Meta's ICE-lite, regular nomination (str0m checks every
//!   pair first and nominates the best succeeded pair with a second check carrying
//!   USE-CANDIDATE), no trickle, no ICE restart;
//! - DTLS client (`a=setup:active`) in our answers, with a self-signed ECDSA P-256
//!   certificate shared by the endpoint's legs and rotated daily ([`DtlsCertificates`]); on
//!   business-initiated calls Meta may answer `active` or `passive` and both work;
//! - one audio m-line, rtcp-mux, BUNDLE; Opus on PT 111 (48 kHz, 20 ms) and
//!   `telephone-event/8000` on PT 126 only; one SSRC for our audio for the whole call;
//! - raw RTP both ways ("RTP mode"): Opus and RFC 4733 payloads pass untouched.
//!
//! State diagram:
//!
//! ```text
//!  answer(offer) ──────────────────────────┐
//!  offer() ── AwaitingAnswer ─accept_answer┴─> Connecting ─ICE+DTLS─> Connected
//!                                               │  connect_timeout        │ DTLS close / ICE gone
//!                                               └──────> Terminated <─────┘  hang_up()
//! ```
//!
//! Drive loop: after every `handle_*` or command, drain [`WaLeg::poll_datagram`] and
//! [`WaLeg::poll_event`] until both return `None`, then wake at [`WaLeg::poll_timeout`].
//!
//! The tokio driver with one shared UDP socket for all calls is [`WebRtcEndpoint`] (feature
//! `rt`).

mod certificate;
mod crypto;
#[cfg(feature = "rt")]
mod endpoint;
pub(crate) mod sdp;
pub(crate) mod session;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind};
use str0m::{Candidate, Rtc};
use tracing::{debug, info};

use crate::RtpPacket;

pub use certificate::{DtlsCertificates, DtlsIdentity};
#[cfg(feature = "rt")]
pub use endpoint::{EndpointConfig, WaCallEvent, WaCallHandle, WaRtpSender, WebRtcEndpoint};
pub use sdp::{SdpSummary, SetupRole};

use session::RtcSession;

/// Opus payload type on the WhatsApp leg (reference §6.1, §6.6).
pub const OPUS_PT: u8 = 111;
/// `telephone-event/8000` payload type on the WhatsApp leg (reference §6.8).
pub const TELEPHONE_EVENT_PT: u8 = 126;
/// Opus RTP clock (48 kHz).
pub const OPUS_CLOCK_RATE_HZ: u32 = 48_000;
/// RFC 4733 clock on the WhatsApp leg (8 kHz only; §6.1).
pub const TELEPHONE_EVENT_CLOCK_RATE_HZ: u32 = 8_000;

/// Configuration of one WhatsApp leg. `Default` is the production value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaLegConfig {
    /// Addresses written as host candidates into our SDP (the advertised public address of the
    /// shared socket). Datagrams fed to [`WaLeg::handle_datagram`] must name one of them as
    /// destination.
    pub candidates: Vec<SocketAddr>,
    /// Give up when ICE + DTLS are not up this long after the leg was created.
    pub connect_timeout: Duration,
    /// How often a [`WaLegEvent::Stats`] is produced (str0m's stats interval).
    pub stats_interval: Duration,
    /// Our DTLS certificate: one per endpoint, shared by clones of this config, rotated after
    /// its period (see [`DtlsCertificates`]).
    pub dtls: DtlsCertificates,
}

impl Default for WaLegConfig {
    fn default() -> Self {
        Self {
            candidates: Vec::new(),
            connect_timeout: Duration::from_secs(20),
            stats_interval: Duration::from_secs(5),
            dtls: DtlsCertificates::default(),
        }
    }
}

/// A UDP datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The local candidate address it leaves from.
    pub source: SocketAddr,
    /// Where to send it.
    pub destination: SocketAddr,
    /// Bytes (STUN, DTLS or SRTP/SRTCP).
    pub contents: Vec<u8>,
}

/// Counters for one leg (CDR and metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaLegStats {
    /// RTP packets handed to the application.
    pub rtp_packets_received: u64,
    /// RTP payload bytes received.
    pub rtp_bytes_received: u64,
    /// RTP packets written toward Meta.
    pub rtp_packets_sent: u64,
    /// RTP payload bytes sent.
    pub rtp_bytes_sent: u64,
    /// Fraction of incoming packets lost (str0m's receiver statistics).
    pub loss_fraction: Option<f32>,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter_rtp_units: u32,
    /// Round-trip time from RTCP.
    pub rtt: Option<Duration>,
}

/// What a [`WaLeg`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WaLegEvent {
    /// ICE and DTLS are up; SRTP flows.
    Connected,
    /// A decrypted RTP packet from Meta.
    Rtp(RtpPacket),
    /// ICE lost the peer (consent checks failing). The call may still recover.
    Disconnected,
    /// The leg ended cleanly (DTLS close or [`WaLeg::hang_up`]). Terminal.
    Closed,
    /// The leg failed (no connection in time, fatal str0m error). Terminal.
    Failed {
        /// Human readable reason.
        reason: String,
    },
    /// Periodic statistics.
    Stats(WaLegStats),
}

/// Errors of the WhatsApp leg.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaLegError {
    /// The remote SDP could not be used (text cut to 64 bytes).
    #[error("invalid remote sdp: {0}")]
    InvalidSdp(String),
    /// The remote SDP offers no `opus/48000/2`.
    #[error("remote sdp has no opus/48000/2")]
    NoOpus,
    /// The remote SDP exceeds the accepted size.
    #[error("remote sdp too large: {0} bytes")]
    SdpTooLarge(usize),
    /// `accept_answer` without a pending offer.
    #[error("no offer pending")]
    NoPendingOffer,
    /// Media sent before ICE and DTLS are up.
    #[error("leg not connected")]
    NotConnected,
    /// The leg has terminated.
    #[error("leg closed")]
    Closed,
    /// str0m has no send stream for our audio (bug).
    #[error("no send stream")]
    NoSendStream,
    /// A local configuration problem (no candidate, bad address).
    #[error("config: {0}")]
    Config(String),
}

/// The WhatsApp leg core: a str0m `Rtc` configured for Meta, with STYLE.md's poll API.
pub struct WaLeg {
    session: RtcSession,
    pending: Option<SdpPendingOffer>,
    connect_deadline: Instant,
    local_ufrag: String,
}

impl std::fmt::Debug for WaLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaLeg")
            .field("local_ufrag", &self.local_ufrag)
            .field("connected", &self.session.is_connected())
            .field("terminated", &self.session.is_terminated())
            .finish_non_exhaustive()
    }
}

impl WaLeg {
    /// Answers Meta's offer (user-initiated call, reference §1.3). Returns the leg and our SDP
    /// answer (`a=setup:active`, Opus 111 + telephone-event/8000 126, our candidates).
    pub fn answer(
        config: &WaLegConfig,
        offer: &str,
        now: Instant,
    ) -> Result<(Self, String), WaLegError> {
        let summary = check_remote_sdp(offer)?;
        let mut leg = Self::new(config, now)?;
        let munged = sdp::offer_for_active_answer(offer);
        let offer = SdpOffer::from_sdp_string(&munged).map_err(|e| invalid(&e.to_string()))?;
        let answer = leg
            .session
            .rtc_mut()
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| invalid(&e.to_string()))?;
        leg.session.drain(now);
        if leg.session.mid().is_none()
            && let Some(mid) = summary.mid.as_deref()
        {
            leg.session.set_mid(mid.into());
        }
        let answer = sdp::finish_local_sdp(&answer.to_sdp_string());
        info!(ufrag = %leg.local_ufrag, remote_ice_lite = summary.ice_lite, "answered meta offer");
        Ok((leg, answer))
    }

    /// Creates our offer for a business-initiated call (reference §2.2): one audio m-line with
    /// Opus 111 and telephone-event/8000 126, `a=setup:actpass` (RFC 8842), our candidates.
    pub fn offer(config: &WaLegConfig, now: Instant) -> Result<(Self, String), WaLegError> {
        let mut leg = Self::new(config, now)?;
        let mut api = leg.session.rtc_mut().sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let Some((offer, pending)) = api.apply() else {
            debug_assert!(false, "adding media always produces an offer");
            return Err(WaLegError::Config("str0m produced no offer".to_owned()));
        };
        leg.session.set_mid(mid);
        leg.pending = Some(pending);
        leg.session.drain(now);
        let offer = sdp::finish_local_sdp(&offer.to_sdp_string());
        info!(ufrag = %leg.local_ufrag, "created business offer");
        Ok((leg, offer))
    }

    /// Applies Meta's answer to [`WaLeg::offer`] (reference §1.4). Meta may take either DTLS
    /// role; we take the other one.
    pub fn accept_answer(&mut self, answer: &str, now: Instant) -> Result<(), WaLegError> {
        check_remote_sdp(answer)?;
        let pending = self.pending.take().ok_or(WaLegError::NoPendingOffer)?;
        let answer = SdpAnswer::from_sdp_string(&sdp::normalize_remote(answer))
            .map_err(|e| invalid(&e.to_string()))?;
        let result = self
            .session
            .rtc_mut()
            .sdp_api()
            .accept_answer(pending, answer);
        self.session.drain(now);
        result.map_err(|e| invalid(&e.to_string()))?;
        info!(ufrag = %self.local_ufrag, "applied meta answer");
        Ok(())
    }

    /// Our ICE username fragment (the shared socket routes STUN by it).
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The SSRC of our audio (one for the whole call, reference §6.1).
    pub fn local_ssrc(&mut self) -> Option<u32> {
        let mid = self.session.mid()?;
        self.session
            .rtc_mut()
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .map(|s| *s.ssrc())
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.session.is_connected()
    }

    /// Whether the leg has ended (the owner removes it).
    pub fn is_terminated(&self) -> bool {
        self.session.is_terminated()
    }

    /// Counters so far.
    pub fn stats(&self) -> &WaLegStats {
        self.session.stats()
    }

    /// Whether a datagram belongs to this leg (STUN for our ufrag, or from our peer).
    pub fn accepts(
        &self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        self.session.accepts(now, source, destination, data)
    }

    /// Feeds one received UDP datagram. Malformed input is dropped and logged, never fatal.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.session.handle_datagram(now, source, destination, data);
    }

    /// Advances timers (ICE checks, DTLS retransmits, RTCP, connect timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.session.is_connected()
            && !self.session.is_terminated()
            && now >= self.connect_deadline
        {
            info!(ufrag = %self.local_ufrag, "ice/dtls not connected in time");
            self.session
                .fail("ice/dtls not connected before connect_timeout".to_owned());
            return;
        }
        self.session.handle_timeout(now);
    }

    /// Sends one RTP packet toward Meta on our single SSRC. Sequence number, timestamp, marker
    /// and payload are used as given (the relay owns them); `ssrc` is replaced by ours.
    pub fn send_rtp(&mut self, rtp: &RtpPacket, now: Instant) -> Result<(), WaLegError> {
        self.session.send_rtp(rtp, now)
    }

    /// Ends the leg: DTLS close_notify, then [`WaLegEvent::Closed`].
    pub fn hang_up(&mut self, now: Instant) {
        self.session.close(now);
    }

    /// Next datagram to send.
    pub fn poll_datagram(&mut self) -> Option<Datagram> {
        self.session.poll_datagram()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<WaLegEvent> {
        self.session.poll_event()
    }

    /// When to call [`WaLeg::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.session.poll_timeout()?;
        if self.session.is_connected() {
            Some(t)
        } else {
            Some(t.min(self.connect_deadline))
        }
    }

    fn new(config: &WaLegConfig, now: Instant) -> Result<Self, WaLegError> {
        if config.candidates.is_empty() {
            return Err(WaLegError::Config("no candidate address".to_owned()));
        }
        let identity = config.dtls.current(now)?;
        let mut rtc = wa_rtc_config(config.stats_interval)
            .set_dtls_cert(identity.cert().clone())
            .build(now);
        for addr in &config.candidates {
            let c = Candidate::host(*addr, "udp").map_err(|e| WaLegError::Config(e.to_string()))?;
            rtc.add_local_candidate(c);
        }
        let local_ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let mut session = RtcSession::new(rtc);
        session.drain(now);
        debug!(%local_ufrag, "wa leg created");
        Ok(Self {
            session,
            pending: None,
            connect_deadline: now + config.connect_timeout,
            local_ufrag,
        })
    }
}

/// str0m configuration shared by the leg and the phone: RTP mode, Opus 111 + tele 126 only,
/// no header extensions (none are needed for audio toward Meta; Meta's older offers list three
/// and accept an answer without them).
pub(crate) fn wa_rtc_config(stats_interval: Duration) -> str0m::RtcConfig {
    let mut cfg = Rtc::builder()
        .set_crypto_provider(crypto::shared_provider())
        .set_rtp_mode(true)
        .clear_codecs()
        .clear_extension_map()
        .set_stats_interval(Some(stats_interval));
    let codecs = cfg.codec_config();
    codecs.add_config(
        OPUS_PT.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(10),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    codecs.add_config(
        TELEPHONE_EVENT_PT.into(),
        None,
        Codec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams {
            telephone_event_max: Some(15),
            ..Default::default()
        },
    );
    cfg
}

fn check_remote_sdp(sdp: &str) -> Result<SdpSummary, WaLegError> {
    if sdp.len() > sdp::MAX_SDP_LEN {
        return Err(WaLegError::SdpTooLarge(sdp.len()));
    }
    let summary = SdpSummary::parse(sdp);
    if summary.m_lines == 0 {
        return Err(invalid("no m-line"));
    }
    if summary.opus_pt.is_none() {
        return Err(WaLegError::NoOpus);
    }
    Ok(summary)
}

fn invalid(msg: &str) -> WaLegError {
    let mut end = msg.len().min(64);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    WaLegError::InvalidSdp(msg[..end].to_owned())
}

#[cfg(test)]
mod tests;

//! The media relay core: one per call, between the WhatsApp leg and the PBX leg.
//!
//! ```text
//!  WhatsApp leg (plain RTP: Opus/48000 PT 111, telephone-event/8000 PT 126)
//!        │ handle_packet(Leg::Wa, ..)                     ▲ poll_transmit → Leg::Wa
//!        ▼                                                │
//!   jitter buffer ─▶ Opus decode @8/16 kHz (PLC, FEC) ─▶ G.711/G.722 encode ─▶ PBX
//!   PBX ─▶ jitter buffer ─▶ G.711/G.722 decode (PLC) ─▶ Opus encode @8/16 kHz ─▶ WhatsApp
//!   (Opus on both legs: each packet is forwarded the moment it arrives, no jitter buffer;
//!    payloads untouched, only SSRC, seq and ts rewritten; the far end de-jitters)
//!   RFC 4733 events bypass the audio path in both directions (dtmf::DtmfForwarder);
//!   toward a PBX without telephone-event they become in-band tones instead
//! ```
//!
//! Drive contract (STYLE.md §1): feed every received packet to [`MediaRelay::handle_packet`],
//! call [`MediaRelay::handle_tick`] whenever [`MediaRelay::poll_timeout`] is reached (once
//! per ptime), and after each call drain [`MediaRelay::poll_transmit`] and
//! [`MediaRelay::poll_event`]. When transcoding, every tick queues at most one audio packet
//! per leg; in pass-through a packet goes out per packet received, plus a fill-in frame
//! toward WhatsApp on a tick when the PBX has been quiet for two frames. Every outgoing
//! packet gets the next sequence number of its leg's single SSRC, so sequence
//! numbers are never reused and WhatsApp sees one SSRC for the whole call (§6.1).
//!
//! Watchdogs: once the gateway opens the WhatsApp gate ([`MediaRelay::open_wa_gate`], after
//! `accept` succeeded) a packet goes to WhatsApp every ptime whatever the PBX does (silence
//! while it is quiet, on hold or not answering), so Meta's 20 s / 30 s no-media timeouts
//! (§6.4) never fire. A leg silent for `media_timeout` raises [`RelayEvent::MediaTimeout`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rand::Rng;
use tracing::{debug, trace, warn};

use crate::codec::{AudioDecoder, AudioEncoder, Codec, MediaError};
use crate::dtmf::{DtmfForwarder, TelephoneEvent};
use crate::dtmf::{DtmfPayload, digit_to_event, event_to_digit};
use crate::jitter::{JitterBuffer, JitterConfig, Pull};
use crate::opus::{OpusDecoder, OpusEncoder, OpusEncoderConfig};
use crate::rtcp::{self, ReportBlock, SenderInfo};
use crate::rtp::{RtpPacket, RtpTs, SeqNo, Ssrc};
use crate::stats::{LegStats, MediaStats, ReceiveStats};
use crate::tone::{DtmfDetector, ToneGenerator};

/// One side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The WhatsApp (WebRTC) leg.
    Wa,
    /// The PBX (RTP) leg.
    Pbx,
}

/// The media direction the PBX declared in its SDP (RFC 3264 §5.1), from the PBX's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways.
    #[default]
    SendRecv,
    /// The PBX sends but does not want media (it holds us with music).
    SendOnly,
    /// The PBX receives only (it put the call on hold without music).
    RecvOnly,
    /// No media either way.
    Inactive,
}

impl Direction {
    /// Whether the peer with this direction sends media.
    #[must_use]
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// Whether the peer with this direction wants to receive media.
    #[must_use]
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }

    /// The SDP attribute name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction the other side answers with (RFC 3264 §6.1).
    #[must_use]
    pub fn reversed(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            d => d,
        }
    }
}

/// Settings of one call's relay; `Default` is the production value except the PBX codec,
/// which the SDP negotiation decides.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Packetisation time of both legs: 10, 20, 40 or 60 ms (Opus frame sizes; Meta uses
    /// 20 ms).
    pub ptime: Duration,
    /// The PBX leg's audio codec.
    pub pbx_codec: Codec,
    /// The PBX leg's payload type for it.
    pub pbx_pt: u8,
    /// The PBX leg's telephone-event, if negotiated.
    pub pbx_dtmf: Option<TelephoneEvent>,
    /// WhatsApp's Opus payload type.
    pub wa_opus_pt: u8,
    /// WhatsApp's telephone-event (PT 126 at 8000 Hz, §6.1).
    pub wa_dtmf: TelephoneEvent,
    /// A leg silent this long raises [`RelayEvent::MediaTimeout`].
    pub media_timeout: Duration,
    /// Jitter buffers of both legs.
    pub jitter: JitterConfig,
    /// Opus encoder toward WhatsApp when transcoding.
    pub opus: OpusEncoderConfig,
    /// Detect DTMF sent by the PBX as audio tones (transcoding only).
    pub inband_dtmf_detection: bool,
    /// 8 kHz mono PCM looped toward WhatsApp while the PBX holds the call without sending
    /// (`recvonly`/`inactive`); silence when `None`.
    pub hold_sound: Option<Arc<[i16]>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            ptime: Duration::from_millis(20),
            pbx_codec: Codec::Pcmu,
            pbx_pt: 0,
            pbx_dtmf: Some(TelephoneEvent {
                pt: 101,
                clock_rate_hz: 8000,
            }),
            wa_opus_pt: 111,
            wa_dtmf: TelephoneEvent {
                pt: 126,
                clock_rate_hz: 8000,
            },
            media_timeout: Duration::from_secs(30),
            jitter: JitterConfig::default(),
            opus: OpusEncoderConfig::default(),
            inband_dtmf_detection: false,
            hold_sound: None,
        }
    }
}

/// A packet for one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub leg: Leg,
    /// The packet (plain RTP; the leg's transport encrypts it).
    pub packet: RtpPacket,
    /// When the audio frame it carries was received from the other leg (the `now` of its
    /// [`MediaRelay::handle_packet`]); `None` for packets the relay made up (comfort
    /// silence, hold sound, DTMF). The driver measures the gateway's added latency from it.
    pub received_at: Option<Instant>,
}

/// What the relay reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// The first RTP packet arrived from this leg.
    FirstPacket {
        /// The leg.
        leg: Leg,
    },
    /// A DTMF digit arrived from a leg (reported once per key press).
    DtmfDigit {
        /// The leg that sent it.
        from: Leg,
        /// `0-9 * # A-D`.
        digit: char,
        /// How long the key was held (0 for in-band detection).
        duration: Duration,
        /// Detected from audio tones rather than RFC 4733 events.
        inband: bool,
    },
    /// A leg has sent nothing for `RelayConfig::media_timeout`.
    MediaTimeout {
        /// The silent leg.
        leg: Leg,
        /// How long it has been silent.
        silent_for: Duration,
    },
}

/// The relay core of one call.
#[derive(Debug)]
pub struct MediaRelay {
    config: RelayConfig,
    passthrough: bool,
    pbx_frame_samples: usize,
    wa_gate_open: bool,
    pbx_direction: Direction,
    next_tick: Instant,
    /// When [`MediaRelay::handle_tick`] last ran.
    last_tick: Instant,
    wa_in: Receiver,
    pbx_in: Receiver,
    wa_out: Sender,
    pbx_out: Sender,
    wa_to_pbx_dtmf: DtmfForwarder,
    pbx_to_wa_dtmf: DtmfForwarder,
    transcoder: Option<Transcoder>,
    silence_opus: Bytes,
    hold: Option<HoldPlayer>,
    inband_out: Option<(u8, ToneGenerator)>,
    wa_dtmf_out: DtmfOut,
    pbx_dtmf_out: DtmfOut,
    transmits: VecDeque<Transmit>,
    events: VecDeque<RelayEvent>,
    scratch: Vec<u8>,
    /// Watchdog counters (see `COMFORT_NOISE_AFTER`).
    comfort_noise_runs: u64,
    /// The PBX packet time whose silence was last counted as a comfort-noise run.
    comfort_noise_since: Option<Instant>,
    media_timeouts: u64,
}

/// A comfort-noise intervention is counted once per PBX silence that lasts this long while
/// the relay keeps sending to WhatsApp (a jitter hiccup is not an intervention; a PBX that
/// stays silent or sends nothing at all is, and the frames we send instead are what keep
/// Meta's 20 s / 30 s no-media timers (§6.4) from ending the call).
pub(crate) const COMFORT_NOISE_AFTER: Duration = Duration::from_secs(1);

/// While an Opus pass-through call streams both ways and the tick has nothing to generate,
/// the tick runs only when the PBX may have gone quiet, and at least once in this many
/// frames (the media-timeout check), instead of on every frame.
const IDLE_TICK_FRAMES: u32 = 5;

#[derive(Debug)]
struct Transcoder {
    wa_decoder: OpusDecoder,
    wa_encoder: OpusEncoder,
    pbx_decoder: AudioDecoder,
    pbx_encoder: AudioEncoder,
    to_pbx_pcm: Vec<i16>,
    to_wa_pcm: Vec<i16>,
    pbx_last_frame: Vec<i16>,
    pbx_concealed_run: u32,
    inband: Option<DtmfDetector>,
}

/// Digits this relay originates on one leg (RFC 4733 §2.5: one update per ptime, then the
/// end packet three times).
#[derive(Debug, Default)]
struct DtmfOut {
    queue: VecDeque<(u8, Duration)>,
    current: Option<Generating>,
}

#[derive(Debug)]
struct Generating {
    event: u8,
    ts: RtpTs,
    total_ticks: u32,
    elapsed_ticks: u32,
    ends_sent: u8,
}

#[derive(Debug)]
struct HoldPlayer {
    pcm: Arc<[i16]>,
    pos: usize,
    encoder: OpusEncoder,
}

#[derive(Debug)]
struct Receiver {
    ssrc: Option<Ssrc>,
    stats: ReceiveStats,
    /// Payloads with their receipt instant.
    jitter: JitterBuffer<(Bytes, Instant)>,
    /// Receipt instant of the last frame pulled out of `jitter` this tick.
    pulled_at: Option<Instant>,
    last_rx: Instant,
    seen: bool,
    timeout_raised: bool,
    leg_stats: LegStats,
    last_sr: Option<(u32, Instant)>,
    /// Pass-through: the RTP timestamp of the last packet forwarded as it arrived (its
    /// successor's timestamp delta is kept); `None` after anything else was sent on the
    /// outgoing stream, so the next packet starts a new talkspurt.
    cut_through_ts: Option<RtpTs>,
    /// Pass-through: when a packet was last forwarded as it arrived.
    cut_through_at: Option<Instant>,
}

#[derive(Debug)]
struct Sender {
    ssrc: Ssrc,
    next_seq: SeqNo,
    next_ts: RtpTs,
    ts_per_frame: u32,
    marker_pending: bool,
    sent: u64,
    octets: u64,
}

impl MediaRelay {
    /// Creates the relay; SSRCs, initial sequence numbers and timestamps of both outgoing
    /// streams come from `rng` (RFC 3550 §5.1: random initial values).
    pub fn new<R: Rng + ?Sized>(
        config: RelayConfig,
        rng: &mut R,
        now: Instant,
    ) -> Result<Self, MediaError> {
        let ptime_ms = u32::try_from(config.ptime.as_millis())
            .ok()
            .filter(|ms| [10, 20, 40, 60].contains(ms))
            .ok_or_else(|| MediaError::Config(format!("ptime {:?}", config.ptime)))?;
        let passthrough = config.pbx_codec == Codec::Opus;
        let pbx_rate = config.pbx_codec.sample_rate_hz();
        let transcoder = if passthrough {
            None
        } else {
            Some(Transcoder {
                wa_decoder: OpusDecoder::new(pbx_rate)?,
                wa_encoder: OpusEncoder::new(pbx_rate, &config.opus)?,
                pbx_decoder: AudioDecoder::new(config.pbx_codec)?,
                pbx_encoder: AudioEncoder::new(config.pbx_codec, &config.opus)?,
                to_pbx_pcm: Vec::new(),
                to_wa_pcm: Vec::new(),
                pbx_last_frame: Vec::new(),
                pbx_concealed_run: 0,
                inband: config
                    .inband_dtmf_detection
                    .then(|| DtmfDetector::new(pbx_rate, 2)),
            })
        };
        // One 20 ms frame of digital silence, encoded once: comfort frames toward WhatsApp
        // (and toward an Opus PBX) cost no encoder time.
        let mut silence = Vec::new();
        let mut enc = OpusEncoder::new(8000, &OpusEncoderConfig::default())?;
        enc.encode(&vec![0; 8 * ptime_ms as usize], &mut silence)?;
        let hold = match config.hold_sound.clone().filter(|p| !p.is_empty()) {
            Some(pcm) => Some(HoldPlayer {
                pcm,
                pos: 0,
                encoder: OpusEncoder::new(8000, &config.opus)?,
            }),
            None => None,
        };
        let pbx_dtmf_clock = config.pbx_dtmf.map_or(8000, |t| t.clock_rate_hz);
        let wa_dtmf_clock = config.wa_dtmf.clock_rate_hz;
        let wa_ts_per_frame = 48 * ptime_ms;
        let pbx_ts_per_frame = config.pbx_codec.clock_rate_hz() / 1000 * ptime_ms;
        Ok(Self {
            passthrough,
            pbx_frame_samples: (pbx_rate / 1000 * ptime_ms) as usize,
            wa_gate_open: false,
            pbx_direction: Direction::SendRecv,
            next_tick: now,
            last_tick: now,
            wa_in: Receiver::new(48_000, config.jitter.clone(), now),
            pbx_in: Receiver::new(config.pbx_codec.clock_rate_hz(), config.jitter.clone(), now),
            wa_out: Sender::new(rng, wa_ts_per_frame),
            pbx_out: Sender::new(rng, pbx_ts_per_frame),
            wa_to_pbx_dtmf: DtmfForwarder::new(wa_dtmf_clock, pbx_dtmf_clock),
            pbx_to_wa_dtmf: DtmfForwarder::new(pbx_dtmf_clock, wa_dtmf_clock),
            transcoder,
            silence_opus: Bytes::from(silence),
            hold,
            inband_out: None,
            wa_dtmf_out: DtmfOut::default(),
            pbx_dtmf_out: DtmfOut::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            comfort_noise_runs: 0,
            comfort_noise_since: None,
            media_timeouts: 0,
            config,
        })
    }

    /// Lets media flow toward WhatsApp: call once Meta's `accept` succeeded. Before that no
    /// packet goes to the WhatsApp leg.
    pub fn open_wa_gate(&mut self, now: Instant) {
        if !self.wa_gate_open {
            debug!("wa media gate opened");
            self.wa_gate_open = true;
            self.wa_out.marker_pending = true;
            if !self.wa_in.seen {
                self.wa_in.last_rx = now;
            }
        }
    }

    /// Applies the direction from the PBX's latest SDP (hold/resume). The WhatsApp leg is
    /// not touched: it keeps receiving packets (silence) during hold.
    pub fn set_pbx_direction(&mut self, direction: Direction, now: Instant) {
        if direction != self.pbx_direction {
            debug!(direction = direction.as_str(), "pbx media direction");
            if direction.sends() && !self.pbx_direction.sends() {
                self.pbx_in.last_rx = now;
                self.pbx_in.timeout_raised = false;
            }
            self.pbx_direction = direction;
        }
    }

    /// Sends a DTMF digit on `to` as RFC 4733 events, e.g. a SIP INFO digit from the PBX
    /// toward WhatsApp. Digits queue behind one another; `duration` is clamped to
    /// 40 ms..=5 s. Fails for an unknown digit or a PBX without telephone-event.
    pub fn send_dtmf(
        &mut self,
        to: Leg,
        digit: char,
        duration: Duration,
    ) -> Result<(), MediaError> {
        let event = digit_to_event(digit)
            .ok_or_else(|| MediaError::Config(format!("not a dtmf digit: {digit:?}")))?;
        if to == Leg::Pbx && self.config.pbx_dtmf.is_none() {
            return Err(MediaError::Config(
                "pbx negotiated no telephone-event".into(),
            ));
        }
        let duration = duration.clamp(Duration::from_millis(40), Duration::from_secs(5));
        let out = match to {
            Leg::Wa => &mut self.wa_dtmf_out,
            Leg::Pbx => &mut self.pbx_dtmf_out,
        };
        if out.queue.len() < 32 {
            out.queue.push_back((event, duration));
        }
        Ok(())
    }

    /// Whether Opus passes through untouched (the PBX negotiated Opus).
    #[must_use]
    pub fn is_passthrough(&self) -> bool {
        self.passthrough
    }

    /// The SSRC of everything this relay sends to `leg`.
    #[must_use]
    pub fn ssrc(&self, leg: Leg) -> Ssrc {
        match leg {
            Leg::Wa => self.wa_out.ssrc,
            Leg::Pbx => self.pbx_out.ssrc,
        }
    }

    /// Feeds one plain RTP packet received from `leg`.
    pub fn handle_packet(&mut self, leg: Leg, packet: RtpPacket, now: Instant) {
        let (audio_pt, dtmf_pt) = match leg {
            Leg::Wa => (self.config.wa_opus_pt, Some(self.config.wa_dtmf.pt)),
            Leg::Pbx => (self.config.pbx_pt, self.config.pbx_dtmf.map(|t| t.pt)),
        };
        let is_dtmf = Some(packet.pt) == dtmf_pt;
        if packet.pt != audio_pt && !is_dtmf {
            // CN (PT 13), a codec we did not negotiate, or garbage: never played.
            trace!(
                ?leg,
                pt = packet.pt,
                "dropping packet with unexpected payload type"
            );
            self.receiver(leg).leg_stats.discarded += 1;
            return;
        }
        let rx = self.receiver(leg);
        if rx.ssrc != Some(packet.ssrc) {
            if rx.ssrc.is_some() {
                debug!(?leg, ssrc = packet.ssrc.0, "source changed ssrc");
                rx.jitter.reset();
                rx.cut_through_ts = None;
            }
            rx.ssrc = Some(packet.ssrc);
        }
        rx.stats
            .on_packet(packet.seq, packet.ts, packet.payload.len(), !is_dtmf, now);
        rx.last_rx = now;
        rx.timeout_raised = false;
        if !rx.seen {
            rx.seen = true;
            self.events.push_back(RelayEvent::FirstPacket { leg });
        }
        if is_dtmf {
            self.forward_dtmf(leg, &packet);
            return;
        }
        if self.passthrough {
            self.cut_through(leg, packet, now);
            return;
        }
        let rx = self.receiver(leg);
        if rx.jitter.push(packet.seq, (packet.payload, now), now)
            != crate::jitter::PushOutcome::Accepted
        {
            rx.leg_stats.discarded += 1;
        }
    }

    /// Opus pass-through: forwards an audio packet the moment it arrives (no jitter buffer:
    /// the far end has its own), on our outgoing stream: our SSRC, contiguous sequence
    /// numbers, and the source's timestamp spacing, so its gaps (lost packets, silence
    /// suppression) survive. A packet older than the last one forwarded is dropped: it
    /// would go out after its successor.
    fn cut_through(&mut self, leg: Leg, packet: RtpPacket, now: Instant) {
        let rx = self.receiver(leg);
        let delta = rx
            .cut_through_ts
            .map(|last| packet.ts.0.wrapping_sub(last.0));
        // Late or repeated (a "delta" in the upper half of the u32 space is negative).
        if delta.is_some_and(|d| d == 0 || d > u32::MAX / 2) {
            rx.leg_stats.discarded += 1;
            return;
        }
        let sendable = match leg {
            Leg::Wa => self.pbx_direction.receives() && !self.wa_to_pbx_dtmf.is_active(),
            // while the PBX holds the call, WhatsApp hears our hold audio (tick)
            Leg::Pbx => self.wa_gate_open && self.pbx_direction.sends(),
        };
        let rx = self.receiver(leg);
        if !sendable {
            // the outgoing stream goes on without this source: restart the spacing
            rx.cut_through_ts = None;
            return;
        }
        rx.cut_through_ts = Some(packet.ts);
        rx.cut_through_at = Some(now);
        let (out, pt) = match leg {
            Leg::Wa => (&mut self.pbx_out, self.config.pbx_pt),
            Leg::Pbx => (&mut self.wa_out, self.config.wa_opus_pt),
        };
        match delta {
            // keep the source's spacing: `audio_packet` advanced one frame already
            Some(d) => out.next_ts = out.next_ts.advance(d.wrapping_sub(out.ts_per_frame)),
            None => out.marker_pending = true,
        }
        let t = out.audio_packet(pt, packet.payload);
        self.transmits.push_back(Transmit {
            leg: match leg {
                Leg::Wa => Leg::Pbx,
                Leg::Pbx => Leg::Wa,
            },
            packet: t,
            received_at: Some(now),
        });
    }

    /// Runs one ptime: plays one frame out of each jitter buffer toward the other leg and
    /// checks the media timeouts. Call at [`MediaRelay::poll_timeout`].
    pub fn handle_tick(&mut self, now: Instant) {
        self.tick_toward_pbx(now);
        self.tick_toward_wa(now);
        if self.wa_gate_open {
            self.tick_dtmf_out(Leg::Wa);
        }
        if self.pbx_direction.receives() {
            self.tick_dtmf_out(Leg::Pbx);
        }
        self.check_timeouts(now);
        self.last_tick = now;
        let ptime = self.config.ptime;
        self.next_tick += ptime;
        if self.passthrough && self.next_tick <= now {
            // ticks left out while idle (`idle_until`): back on the frame grid, no burst
            let behind = now.saturating_duration_since(self.next_tick).as_nanos();
            let frames = behind / ptime.as_nanos().max(1) + 1;
            self.next_tick += ptime * u32::try_from(frames).unwrap_or(u32::MAX);
        } else if self.next_tick + 5 * ptime < now {
            // the driver stalled: do not try to catch up with a burst
            self.next_tick = now + ptime;
        }
    }

    /// Until when an Opus pass-through call's tick has nothing to do: both directions are
    /// forwarded as they arrive, no DTMF is being generated, and the PBX is streaming (the
    /// tick fills in only once it has been quiet for two frames). `None` when every tick
    /// counts (transcoding, gate closed, hold, DTMF, a quiet PBX).
    fn idle_until(&self) -> Option<Instant> {
        let busy = |o: &DtmfOut| o.current.is_some() || !o.queue.is_empty();
        if !self.passthrough
            || !self.wa_gate_open
            || !self.pbx_direction.sends()
            || busy(&self.wa_dtmf_out)
            || busy(&self.pbx_dtmf_out)
        {
            return None;
        }
        let ptime = self.config.ptime;
        let quiet_at = self.pbx_in.cut_through_at? + 2 * ptime;
        Some(quiet_at.min(self.last_tick + IDLE_TICK_FRAMES * ptime))
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// When [`MediaRelay::handle_tick`] is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(match self.idle_until() {
            Some(idle) => idle.max(self.next_tick),
            None => self.next_tick,
        })
    }

    /// Watchdog: PBX silences of at least 1 s bridged with comfort noise toward WhatsApp
    /// so far.
    #[must_use]
    pub fn comfort_noise_runs(&self) -> u64 {
        self.comfort_noise_runs
    }

    /// Watchdog: [`RelayEvent::MediaTimeout`]s raised so far.
    #[must_use]
    pub fn media_timeouts(&self) -> u64 {
        self.media_timeouts
    }

    /// A snapshot of the call's media statistics.
    #[must_use]
    pub fn stats(&self) -> MediaStats {
        let mut wa = self.wa_in.leg_stats.clone();
        self.wa_in.stats.fill(&mut wa);
        wa.packets_sent = self.wa_out.sent;
        let mut pbx = self.pbx_in.leg_stats.clone();
        self.pbx_in.stats.fill(&mut pbx);
        pbx.packets_sent = self.pbx_out.sent;
        MediaStats {
            wa,
            pbx,
            pbx_codec: self.config.pbx_codec,
            passthrough: self.passthrough,
            comfort_noise_runs: self.comfort_noise_runs,
            media_timeouts: self.media_timeouts,
            path: crate::path::MediaPathStats::default(),
        }
    }

    /// Builds a compound RTCP report (SR + SDES CNAME) for `leg` (the PBX leg; str0m does the
    /// WhatsApp leg's RTCP). Send it every ~5 s (RFC 3550 §6.2 minimum interval).
    pub fn rtcp_report(
        &mut self,
        leg: Leg,
        cname: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<u8> {
        let (rx, tx) = match leg {
            Leg::Wa => (&mut self.wa_in, &self.wa_out),
            Leg::Pbx => (&mut self.pbx_in, &self.pbx_out),
        };
        let mut blocks = Vec::new();
        if let Some(ssrc) = rx.ssrc {
            let (lsr, dlsr) = rx.last_sr.map_or((0, 0), |(mid, at)| {
                let held = now.saturating_duration_since(at);
                (mid, (held.as_micros() * 65_536 / 1_000_000) as u32)
            });
            blocks.push(ReportBlock {
                ssrc,
                fraction_lost: rx.stats.take_fraction_lost(),
                cumulative_lost: rx.stats.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
                highest_seq: rx.stats.highest_seq(),
                jitter: rx.stats.jitter_ticks(),
                lsr,
                dlsr,
            });
        }
        // The RTP timestamp of `now`: the next frame's timestamp minus the time to it.
        let until_next = self.next_tick.saturating_duration_since(now);
        let clock_hz = match leg {
            Leg::Wa => 48_000,
            Leg::Pbx => self.config.pbx_codec.clock_rate_hz(),
        };
        let back = (until_next.as_micros() * u128::from(clock_hz) / 1_000_000) as u32;
        let sender = (tx.sent > 0).then(|| SenderInfo {
            ntp: rtcp::ntp_from_system(wall),
            rtp_ts: tx.next_ts.0.wrapping_sub(back),
            packet_count: tx.sent as u32,
            octet_count: tx.octets as u32,
        });
        let mut out = Vec::with_capacity(80);
        rtcp::build_report(tx.ssrc, sender, &blocks, cname, &mut out);
        out
    }

    /// Feeds a compound RTCP packet received from `leg`: remembers the peer's SR for our
    /// LSR/DLSR and takes round-trip time and the peer's view of our stream from report
    /// blocks about our SSRC. Malformed RTCP is ignored (and counted).
    pub fn handle_rtcp(&mut self, leg: Leg, buf: &[u8], now: Instant, wall: SystemTime) {
        let reports = match rtcp::parse_reports(buf) {
            Ok(r) => r,
            Err(e) => {
                trace!(?leg, error = %e, "ignoring malformed rtcp");
                self.receiver(leg).leg_stats.discarded += 1;
                return;
            }
        };
        let our_ssrc = self.ssrc(leg);
        let rx = self.receiver(leg);
        for r in reports {
            if let Some(s) = r.sender {
                rx.last_sr = Some((rtcp::ntp_mid32(s.ntp), now));
            }
            for b in r.blocks.iter().filter(|b| b.ssrc == our_ssrc) {
                if let Some(rtt) = rtcp::round_trip_time(b, wall) {
                    rx.leg_stats.rtt = Some(rtt);
                }
                rx.leg_stats.remote_packets_lost = i64::from(b.cumulative_lost);
                rx.leg_stats.remote_jitter_ticks = b.jitter;
            }
        }
    }

    fn receiver(&mut self, leg: Leg) -> &mut Receiver {
        match leg {
            Leg::Wa => &mut self.wa_in,
            Leg::Pbx => &mut self.pbx_in,
        }
    }

    fn forward_dtmf(&mut self, from: Leg, packet: &RtpPacket) {
        let (to_pt, forwarder, sender, may_send) = match from {
            Leg::Wa => (
                self.config.pbx_dtmf.map(|t| t.pt),
                &mut self.wa_to_pbx_dtmf,
                &mut self.pbx_out,
                self.pbx_direction.receives(),
            ),
            Leg::Pbx => (
                Some(self.config.wa_dtmf.pt),
                &mut self.pbx_to_wa_dtmf,
                &mut self.wa_out,
                self.wa_gate_open,
            ),
        };
        let Some(fw) = forwarder.handle(packet.seq, packet.ts, &packet.payload, sender.next_ts)
        else {
            trace!(?from, "dropping duplicate or stale dtmf packet");
            return;
        };
        if let Some((digit, duration)) = fw.digit {
            debug!(?from, %digit, ?duration, "dtmf digit");
            self.events.push_back(RelayEvent::DtmfDigit {
                from,
                digit,
                duration,
                inband: false,
            });
            match from {
                Leg::Wa => self.wa_in.leg_stats.dtmf_digits += 1,
                Leg::Pbx => self.pbx_in.leg_stats.dtmf_digits += 1,
            }
        }
        let to = match from {
            Leg::Wa => Leg::Pbx,
            Leg::Pbx => Leg::Wa,
        };
        match to_pt {
            Some(pt) if may_send => {
                let packet = RtpPacket {
                    pt,
                    seq: sender.take_seq(),
                    ts: fw.ts,
                    ssrc: sender.ssrc,
                    marker: fw.marker,
                    payload: Bytes::copy_from_slice(&fw.payload.to_bytes()),
                };
                sender.sent += 1;
                self.transmits.push_back(Transmit {
                    leg: to,
                    packet,
                    received_at: None,
                });
            }
            Some(_) => {}
            None => {
                // interop: a PBX without telephone-event hears the digit as in-band tones
                // (transcoding only, see transcode_toward_pbx) and the gateway gets the
                // DtmfDigit event (for SIP INFO if configured).
                trace!("pbx negotiated no telephone-event; digit goes in-band");
            }
        }
    }

    fn tick_toward_pbx(&mut self, now: Instant) {
        let may_send = self.pbx_direction.receives();
        let muted = self.wa_to_pbx_dtmf.is_active();
        self.wa_in.pulled_at = None;
        if self.passthrough {
            // forwarded as they arrive (`cut_through`): nothing to play out here
            return;
        }
        let payload = self.transcode_toward_pbx(now, muted);
        let pt = self.config.pbx_pt;
        match payload {
            Some(p) if may_send => {
                let t = self.pbx_out.audio_packet(pt, p);
                self.transmits.push_back(Transmit {
                    leg: Leg::Pbx,
                    packet: t,
                    received_at: self.wa_in.pulled_at,
                });
            }
            // A missing pass-through frame leaves a gap in seq, so the receiver knows to
            // conceal (and can use FEC from the next packet).
            None if may_send => self.pbx_out.skip_frame(),
            _ => {
                self.pbx_out.skip_frame();
                self.pbx_out.marker_pending = true;
            }
        }
    }

    fn tick_toward_wa(&mut self, now: Instant) {
        self.pbx_in.pulled_at = None;
        let payload = if self.passthrough {
            // The PBX's packets were forwarded as they arrived; fill in only when it has
            // gone quiet for two frames (or never sent), or while it holds the call.
            let quiet = self
                .pbx_in
                .cut_through_at
                .is_none_or(|at| now.saturating_duration_since(at) >= 2 * self.config.ptime);
            if !quiet && self.pbx_direction.sends() {
                return;
            }
            self.pbx_in.cut_through_ts = None;
            Some(self.silence_opus.clone())
        } else {
            self.transcode_toward_wa(now)
        };
        if !self.wa_gate_open {
            self.wa_out.skip_frame();
            return;
        }
        let payload = match self.hold.as_mut() {
            Some(h) if !self.pbx_direction.sends() => {
                let samples = (self.config.ptime.as_millis() * 8) as usize;
                let frame: Vec<i16> = (0..samples)
                    .map(|i| h.pcm[(h.pos + i) % h.pcm.len()])
                    .collect();
                h.pos = (h.pos + samples) % h.pcm.len();
                self.scratch.clear();
                let held = match h.encoder.encode(&frame, &mut self.scratch) {
                    Ok(()) => Some(Bytes::copy_from_slice(&self.scratch)),
                    Err(_) => Some(self.silence_opus.clone()),
                };
                self.pbx_in.pulled_at = None;
                held
            }
            _ => payload,
        };
        let pt = self.config.wa_opus_pt;
        match payload {
            Some(p) => {
                self.watch_pbx_silence(now);
                let t = self.wa_out.audio_packet(pt, p);
                self.transmits.push_back(Transmit {
                    leg: Leg::Wa,
                    packet: t,
                    received_at: self.pbx_in.pulled_at,
                });
            }
            None => self.wa_out.skip_frame(),
        }
    }

    fn transcode_toward_pbx(&mut self, now: Instant, muted: bool) -> Option<Bytes> {
        let frame = self.pbx_frame_samples;
        let t = self.transcoder.as_mut()?;
        let mut pulls = 0;
        while t.to_pbx_pcm.len() < frame && pulls < 3 {
            pulls += 1;
            let result = match self.wa_in.jitter.pull(now) {
                Pull::Frame((p, at)) => {
                    self.wa_in.pulled_at = Some(at);
                    t.wa_decoder.decode(&p, &mut t.to_pbx_pcm)
                }
                Pull::Missing => {
                    if let Some((next, _)) = self.wa_in.jitter.peek_next() {
                        self.wa_in.leg_stats.fec_frames += 1;
                        t.wa_decoder.decode_fec(next, frame, &mut t.to_pbx_pcm)
                    } else {
                        self.wa_in.leg_stats.concealed_frames += 1;
                        t.wa_decoder.conceal(frame, &mut t.to_pbx_pcm)
                    }
                }
                Pull::Buffering => break,
            };
            if let Err(e) = result {
                // a corrupt Opus packet from the peer: conceal instead
                warn!(error = %e, "opus decode failed");
                self.wa_in.leg_stats.concealed_frames += 1;
                let _ = t.wa_decoder.conceal(frame, &mut t.to_pbx_pcm);
            }
        }
        let mut pcm: Vec<i16> = if t.to_pbx_pcm.len() >= frame {
            t.to_pbx_pcm.drain(..frame).collect()
        } else {
            // underrun: comfort silence keeps the PBX's NAT binding and RTP timeout happy
            t.to_pbx_pcm.clear();
            vec![0; frame]
        };
        if muted {
            match (self.config.pbx_dtmf, self.wa_to_pbx_dtmf.active_event()) {
                // interop: a PBX without telephone-event hears the digit as tones
                (None, Some(event)) => {
                    let rate = self.config.pbx_codec.sample_rate_hz();
                    if self.inband_out.as_ref().is_none_or(|(e, _)| *e != event) {
                        self.inband_out = event_to_digit(event)
                            .and_then(|d| ToneGenerator::dtmf(d, rate))
                            .map(|g| (event, g));
                    }
                    pcm.fill(0);
                    if let Some((_, g)) = self.inband_out.as_mut() {
                        pcm.clear();
                        g.fill(frame, &mut pcm);
                    }
                }
                // the digit travels as RFC 4733; do not leak it in-band too
                _ => pcm.fill(0),
            }
        } else {
            self.inband_out = None;
        }
        self.scratch.clear();
        if let Err(e) = t.pbx_encoder.encode(&pcm, &mut self.scratch) {
            warn!(error = %e, "pbx encode failed");
            return None;
        }
        Some(Bytes::copy_from_slice(&self.scratch))
    }

    fn transcode_toward_wa(&mut self, now: Instant) -> Option<Bytes> {
        let frame = self.pbx_frame_samples;
        let t = self.transcoder.as_mut()?;
        let mut pulls = 0;
        while t.to_wa_pcm.len() < frame && pulls < 3 {
            pulls += 1;
            match self.pbx_in.jitter.pull(now) {
                Pull::Frame((p, at)) => {
                    self.pbx_in.pulled_at = Some(at);
                    let start = t.to_wa_pcm.len();
                    if let Err(e) = t.pbx_decoder.decode(&p, &mut t.to_wa_pcm) {
                        warn!(error = %e, "pbx decode failed");
                    }
                    t.pbx_last_frame.clear();
                    t.pbx_last_frame.extend_from_slice(&t.to_wa_pcm[start..]);
                    t.pbx_concealed_run = 0;
                }
                Pull::Missing => {
                    // PLC for G.711/G.722 (RFC 3551 leaves it to the receiver): replay the
                    // last frame at half level once, then fade to silence.
                    self.pbx_in.leg_stats.concealed_frames += 1;
                    t.pbx_concealed_run += 1;
                    if t.pbx_concealed_run == 1 && t.pbx_last_frame.len() == frame {
                        let faded = t.pbx_last_frame.iter().map(|s| s / 2);
                        t.to_wa_pcm.extend(faded);
                    } else {
                        t.to_wa_pcm.resize(t.to_wa_pcm.len() + frame, 0);
                    }
                }
                Pull::Buffering => break,
            }
        }
        let pcm: Vec<i16> = if t.to_wa_pcm.len() >= frame {
            t.to_wa_pcm.drain(..frame).collect()
        } else {
            t.to_wa_pcm.clear();
            vec![0; frame]
        };
        if let Some(digit) = t.inband.as_mut().and_then(|det| det.push_block(&pcm)) {
            debug!(%digit, "in-band dtmf from pbx");
            self.pbx_in.leg_stats.dtmf_digits += 1;
            self.events.push_back(RelayEvent::DtmfDigit {
                from: Leg::Pbx,
                digit,
                duration: Duration::ZERO,
                inband: true,
            });
        }
        if !self.wa_gate_open {
            return None;
        }
        self.scratch.clear();
        if let Err(e) = t.wa_encoder.encode(&pcm, &mut self.scratch) {
            warn!(error = %e, "opus encode failed");
            return Some(self.silence_opus.clone());
        }
        Some(Bytes::copy_from_slice(&self.scratch))
    }

    fn tick_dtmf_out(&mut self, leg: Leg) {
        let (te, out, sender) = match leg {
            Leg::Wa => (
                Some(self.config.wa_dtmf),
                &mut self.wa_dtmf_out,
                &mut self.wa_out,
            ),
            Leg::Pbx => (
                self.config.pbx_dtmf,
                &mut self.pbx_dtmf_out,
                &mut self.pbx_out,
            ),
        };
        let Some(te) = te else {
            out.queue.clear();
            return;
        };
        let step =
            (u128::from(te.clock_rate_hz) * self.config.ptime.as_micros() / 1_000_000) as u32;
        if out.current.is_none() {
            let Some((event, duration)) = out.queue.pop_front() else {
                return;
            };
            let total = (u128::from(te.clock_rate_hz) * duration.as_micros() / 1_000_000) as u32;
            out.current = Some(Generating {
                event,
                // the event starts at the frame just sent (RFC 4733 §2.5.1.2)
                ts: RtpTs(sender.next_ts.0.wrapping_sub(sender.ts_per_frame)),
                total_ticks: total.min(u32::from(u16::MAX)),
                elapsed_ticks: 0,
                ends_sent: 0,
            });
        }
        let Some(g) = out.current.as_mut() else {
            return;
        };
        let first = g.elapsed_ticks == 0;
        g.elapsed_ticks = (g.elapsed_ticks + step).min(g.total_ticks);
        let end = g.elapsed_ticks >= g.total_ticks;
        let payload = DtmfPayload {
            event: g.event,
            end,
            volume: 10,
            duration: g.elapsed_ticks as u16,
        };
        let packet = RtpPacket {
            pt: te.pt,
            seq: sender.take_seq(),
            ts: g.ts,
            ssrc: sender.ssrc,
            marker: first,
            payload: Bytes::copy_from_slice(&payload.to_bytes()),
        };
        sender.sent += 1;
        if end {
            g.ends_sent += 1;
            if g.ends_sent >= 3 {
                out.current = None;
            }
        }
        self.transmits.push_back(Transmit {
            leg,
            packet,
            received_at: None,
        });
    }

    /// A frame is going to WhatsApp: if the PBX has been silent for
    /// [`COMFORT_NOISE_AFTER`], this silence counts as one comfort-noise intervention.
    fn watch_pbx_silence(&mut self, now: Instant) {
        let last = self.pbx_in.last_rx;
        if now.saturating_duration_since(last) >= COMFORT_NOISE_AFTER
            && self.comfort_noise_since != Some(last)
        {
            self.comfort_noise_since = Some(last);
            self.comfort_noise_runs += 1;
            debug!("pbx silent; comfort noise keeps the whatsapp leg alive");
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        let limit = self.config.media_timeout;
        let expect = [
            (Leg::Wa, self.wa_gate_open),
            (Leg::Pbx, self.pbx_direction.sends()),
        ];
        for (leg, expected) in expect {
            let rx = self.receiver(leg);
            let silent_for = now.saturating_duration_since(rx.last_rx);
            if expected && !rx.timeout_raised && silent_for >= limit {
                rx.timeout_raised = true;
                self.media_timeouts += 1;
                warn!(?leg, ?silent_for, "media timeout");
                self.events
                    .push_back(RelayEvent::MediaTimeout { leg, silent_for });
            }
        }
    }
}

impl Receiver {
    fn new(clock_rate_hz: u32, jitter: JitterConfig, now: Instant) -> Self {
        Self {
            ssrc: None,
            stats: ReceiveStats::new(clock_rate_hz),
            jitter: JitterBuffer::new(jitter),
            pulled_at: None,
            last_rx: now,
            seen: false,
            timeout_raised: false,
            leg_stats: LegStats::default(),
            last_sr: None,
            cut_through_ts: None,
            cut_through_at: None,
        }
    }
}

impl Sender {
    fn new<R: Rng + ?Sized>(rng: &mut R, ts_per_frame: u32) -> Self {
        Self {
            ssrc: Ssrc(rng.random()),
            // RFC 3550 §5.1 random start; keep well below the wrap so the first packets
            // are not mistaken for a restart by naive receivers.
            next_seq: SeqNo(rng.random::<u16>() & 0x7fff),
            next_ts: RtpTs(rng.random()),
            ts_per_frame,
            marker_pending: true,
            sent: 0,
            octets: 0,
        }
    }

    fn take_seq(&mut self) -> SeqNo {
        let s = self.next_seq;
        self.next_seq = s.next();
        s
    }

    fn audio_packet(&mut self, pt: u8, payload: Bytes) -> RtpPacket {
        let p = RtpPacket {
            pt,
            seq: self.take_seq(),
            ts: self.next_ts,
            ssrc: self.ssrc,
            marker: std::mem::take(&mut self.marker_pending),
            payload,
        };
        self.next_ts = self.next_ts.advance(self.ts_per_frame);
        self.sent += 1;
        self.octets += p.payload.len() as u64;
        p
    }

    /// A frame time passes without a packet; `next_seq` is consumed so that the receiver
    /// sees the loss (used for lost pass-through frames).
    fn skip_frame(&mut self) {
        self.next_ts = self.next_ts.advance(self.ts_per_frame);
    }
}

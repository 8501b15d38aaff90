//! The phone's test signal and analysis: Opus tone out, RFC 4733 digits out, and a report of
//! what came in (tone frequency and level via Goertzel, digits, gaps, loss).
//!
//! Pure and clock-free: `now` is passed in; one [`PhoneAudio::handle_tick`] per 20 ms.

use std::collections::{BTreeMap, VecDeque};
use std::f64::consts::PI;
use std::time::{Duration, Instant};

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, SampleRate};
use bytes::Bytes;

use crate::webrtc::{OPUS_PT, TELEPHONE_EVENT_PT, WaLegError};
use crate::{RtpPacket, RtpTs, SeqNo, Ssrc};

/// Internal PCM rate: libopus encodes from and decodes to 16 kHz directly (RFC 6716 §2).
const PCM_RATE_HZ: u32 = 16_000;
const FRAME_SAMPLES: usize = 320; // 20 ms at 16 kHz
const RTP_TICKS_PER_FRAME: u32 = 960; // 20 ms at the 48 kHz Opus clock
const DTMF_TICKS_PER_FRAME: u16 = 160; // 20 ms in RFC 4733 duration units (8 kHz, §6.8)
const DTMF_FRAMES: u16 = 5; // 100 ms digits
const DTMF_PAUSE_FRAMES: u32 = 5; // 100 ms between digits
const DTMF_END_REPEATS: u8 = 3; // RFC 4733 §2.5.1.4
const SILENCE_DBFS: f64 = -55.0;

/// What the phone plays and how. `Default`: a 1 kHz tone at -12 dBFS.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneAudioConfig {
    /// Tone frequency; `None` sends silence (still one packet per 20 ms).
    pub tone_hz: Option<f64>,
    /// Tone level.
    pub tone_level_dbfs: f64,
    /// SSRC written into outgoing packets (the WebRTC stack uses its own).
    pub ssrc: u32,
    /// First sequence number (from the simulator's RNG).
    pub initial_seq: u16,
    /// First RTP timestamp (from the simulator's RNG).
    pub initial_ts: u32,
}

impl Default for PhoneAudioConfig {
    fn default() -> Self {
        Self {
            tone_hz: Some(1_000.0),
            tone_level_dbfs: -12.0,
            ssrc: 1_047_224_411,
            initial_seq: 1,
            initial_ts: 0,
        }
    }
}

/// Summary of the tone heard in received audio.
#[derive(Debug, Clone, PartialEq)]
pub struct ToneReport {
    /// Most frequent dominant frequency among frames with signal (25 Hz resolution).
    pub freq_hz: f64,
    /// Mean level of those frames.
    pub level_dbfs: f64,
    /// Frames whose dominant frequency is `freq_hz`.
    pub frames: u64,
}

/// What the phone received so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioReport {
    /// RTP packets received (all payload types).
    pub packets_received: u64,
    /// Opus frames decoded.
    pub audio_frames: u64,
    /// Opus frames above the silence threshold.
    pub frames_with_signal: u64,
    /// Packets missing from the sequence space.
    pub lost_packets: u64,
    /// Longest time between two consecutive received packets.
    pub longest_gap: Duration,
    /// The dominant tone, if any frame had signal.
    pub tone: Option<ToneReport>,
    /// RFC 4733 digits, each reported once per event.
    pub digits: String,
    /// Opus packets that failed to decode.
    pub decode_errors: u64,
}

/// Test signal generator and analyser for one call.
pub struct PhoneAudio {
    config: PhoneAudioConfig,
    encoder: Encoder,
    decoder: Decoder,
    phase: f64,
    seq: u16,
    ts: u32,
    dtmf_queue: VecDeque<u8>,
    dtmf: DtmfTx,
    rx: RxState,
}

impl std::fmt::Debug for PhoneAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneAudio")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DtmfTx {
    Idle,
    /// Sending `event` that started at RTP time `start_ts`; `frames` sent so far.
    Playing {
        event: u8,
        start_ts: u32,
        frames: u16,
    },
    /// Repeating the end packet.
    Ending {
        event: u8,
        start_ts: u32,
        duration: u16,
        sent: u8,
    },
    /// Silence between digits.
    Pause {
        left: u32,
    },
}

#[derive(Default)]
struct RxState {
    packets: u64,
    first_seq: Option<u64>,
    highest_seq: u64,
    last_arrival: Option<Instant>,
    longest_gap: Duration,
    audio_frames: u64,
    frames_with_signal: u64,
    level_sum: BTreeMap<u32, (u64, f64)>,
    digits: String,
    dtmf_seen: Vec<u32>,
    decode_errors: u64,
    pcm: Vec<i16>,
}

impl PhoneAudio {
    /// Creates the encoder (Opus VoIP, 16 kHz in, FEC on) and decoder (16 kHz out).
    pub fn new(config: PhoneAudioConfig) -> Result<Self, WaLegError> {
        let codec = |e: audiopus::Error| WaLegError::Config(format!("opus: {e}"));
        let mut encoder =
            Encoder::new(SampleRate::Hz16000, Channels::Mono, Application::Voip).map_err(codec)?;
        encoder.set_inband_fec(true).map_err(codec)?;
        let decoder = Decoder::new(SampleRate::Hz16000, Channels::Mono).map_err(codec)?;
        Ok(Self {
            seq: config.initial_seq,
            ts: config.initial_ts,
            config,
            encoder,
            decoder,
            phase: 0.0,
            dtmf_queue: VecDeque::new(),
            dtmf: DtmfTx::Idle,
            rx: RxState::default(),
        })
    }

    /// Changes the tone (`None`: silence).
    pub fn set_tone(&mut self, tone_hz: Option<f64>) {
        self.config.tone_hz = tone_hz;
    }

    /// Queues digits (`0-9*#A-D`) to send as RFC 4733 events; other characters are skipped.
    pub fn send_digits(&mut self, digits: &str) {
        self.dtmf_queue
            .extend(digits.chars().filter_map(digit_to_event));
    }

    /// Whether queued digits are still being sent.
    pub fn is_sending_dtmf(&self) -> bool {
        !self.dtmf_queue.is_empty() || self.dtmf != DtmfTx::Idle
    }

    /// One 20 ms tick: returns the packets to send (an Opus frame, or RFC 4733 packets while a
    /// digit plays, one to three of them at the end of a digit).
    pub fn handle_tick(&mut self, _now: Instant) -> Vec<RtpPacket> {
        let mut out = Vec::with_capacity(1);
        if let Some(p) = self.dtmf_step() {
            out.extend(p);
        } else {
            out.push(self.audio_packet());
        }
        self.ts = self.ts.wrapping_add(RTP_TICKS_PER_FRAME);
        out
    }

    /// Analyses one received packet.
    pub fn handle_rtp(&mut self, pkt: &RtpPacket, now: Instant) {
        let rx = &mut self.rx;
        rx.packets += 1;
        if let Some(last) = rx.last_arrival {
            rx.longest_gap = rx.longest_gap.max(now.saturating_duration_since(last));
        }
        rx.last_arrival = Some(now);
        let seq = u64::from(pkt.seq.0);
        match rx.first_seq {
            None => {
                rx.first_seq = Some(seq);
                rx.highest_seq = seq;
            }
            Some(_) => {
                #[allow(clippy::cast_possible_truncation)]
                let delta = i64::from(pkt.seq.0.wrapping_sub(rx.highest_seq as u16) as i16);
                if delta > 0 {
                    rx.highest_seq = rx.highest_seq.wrapping_add_signed(delta);
                }
            }
        }
        if pkt.pt == TELEPHONE_EVENT_PT {
            if pkt.payload.len() >= 4 && !rx.dtmf_seen.contains(&pkt.ts.0) {
                // RFC 4733 §2.5.1.3: one event per timestamp, however many updates arrive.
                if let Some(c) = event_to_digit(pkt.payload[0]) {
                    rx.dtmf_seen.push(pkt.ts.0);
                    rx.digits.push(c);
                }
            }
            return;
        }
        if pkt.pt != OPUS_PT {
            return;
        }
        rx.pcm.clear();
        rx.pcm.resize(FRAME_SAMPLES * 6, 0);
        let n = match self
            .decoder
            .decode(Some(pkt.payload.as_ref()), &mut rx.pcm[..], false)
        {
            Ok(n) => n,
            Err(_) => {
                rx.decode_errors += 1;
                return;
            }
        };
        rx.audio_frames += 1;
        let frame = &rx.pcm[..n];
        let level = level_dbfs(frame);
        if level > SILENCE_DBFS {
            rx.frames_with_signal += 1;
            let f = dominant_frequency(frame);
            let e = rx.level_sum.entry(f).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += level;
        }
    }

    /// The analysis so far.
    pub fn report(&self) -> AudioReport {
        let rx = &self.rx;
        let expected = rx
            .first_seq
            .map_or(0, |f| rx.highest_seq.wrapping_sub(f) + 1);
        let tone = rx
            .level_sum
            .iter()
            .max_by_key(|(_, (n, _))| *n)
            .map(|(f, (n, sum))| ToneReport {
                freq_hz: f64::from(*f),
                level_dbfs: sum / *n as f64,
                frames: *n,
            });
        AudioReport {
            packets_received: rx.packets,
            audio_frames: rx.audio_frames,
            frames_with_signal: rx.frames_with_signal,
            lost_packets: expected.saturating_sub(rx.packets),
            longest_gap: rx.longest_gap,
            tone,
            digits: rx.digits.clone(),
            decode_errors: rx.decode_errors,
        }
    }

    fn audio_packet(&mut self) -> RtpPacket {
        let mut pcm = [0i16; FRAME_SAMPLES];
        if let Some(hz) = self.config.tone_hz {
            let amp = 32_767.0 * 10f64.powf(self.config.tone_level_dbfs / 20.0);
            let step = 2.0 * PI * hz / f64::from(PCM_RATE_HZ);
            for s in &mut pcm {
                #[allow(clippy::cast_possible_truncation)]
                {
                    *s = (amp * self.phase.sin()) as i16;
                }
                self.phase = (self.phase + step) % (2.0 * PI);
            }
        }
        let mut buf = [0u8; 400];
        // An encode failure (cannot happen with valid sizes) degrades to an empty frame rather
        // than ending the call.
        let n = self.encoder.encode(&pcm, &mut buf).unwrap_or(0);
        self.packet(OPUS_PT, false, self.ts, Bytes::copy_from_slice(&buf[..n]))
    }

    fn dtmf_step(&mut self) -> Option<Vec<RtpPacket>> {
        match self.dtmf {
            DtmfTx::Idle => {
                let event = self.dtmf_queue.pop_front()?;
                self.dtmf = DtmfTx::Playing {
                    event,
                    start_ts: self.ts,
                    frames: 1,
                };
                let p = self.dtmf_packet(event, self.ts, DTMF_TICKS_PER_FRAME, false, true);
                Some(vec![p])
            }
            DtmfTx::Playing {
                event,
                start_ts,
                frames,
            } => {
                let frames = frames + 1;
                let duration = frames * DTMF_TICKS_PER_FRAME;
                if frames >= DTMF_FRAMES {
                    self.dtmf = DtmfTx::Ending {
                        event,
                        start_ts,
                        duration,
                        sent: 1,
                    };
                    Some(vec![
                        self.dtmf_packet(event, start_ts, duration, true, false),
                    ])
                } else {
                    self.dtmf = DtmfTx::Playing {
                        event,
                        start_ts,
                        frames,
                    };
                    Some(vec![
                        self.dtmf_packet(event, start_ts, duration, false, false),
                    ])
                }
            }
            DtmfTx::Ending {
                event,
                start_ts,
                duration,
                sent,
            } => {
                let p = self.dtmf_packet(event, start_ts, duration, true, false);
                self.dtmf = if sent + 1 >= DTMF_END_REPEATS {
                    DtmfTx::Pause {
                        left: DTMF_PAUSE_FRAMES,
                    }
                } else {
                    DtmfTx::Ending {
                        event,
                        start_ts,
                        duration,
                        sent: sent + 1,
                    }
                };
                Some(vec![p])
            }
            DtmfTx::Pause { left } => {
                self.dtmf = if left <= 1 {
                    DtmfTx::Idle
                } else {
                    DtmfTx::Pause { left: left - 1 }
                };
                None
            }
        }
    }

    fn dtmf_packet(
        &mut self,
        event: u8,
        start_ts: u32,
        duration: u16,
        end: bool,
        marker: bool,
    ) -> RtpPacket {
        let volume = 10u8; // -10 dBm0
        let d = duration.to_be_bytes();
        let payload =
            Bytes::copy_from_slice(&[event, if end { 0x80 | volume } else { volume }, d[0], d[1]]);
        self.packet(TELEPHONE_EVENT_PT, marker, start_ts, payload)
    }

    fn packet(&mut self, pt: u8, marker: bool, ts: u32, payload: Bytes) -> RtpPacket {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        RtpPacket {
            pt,
            seq: SeqNo(seq),
            ts: RtpTs(ts),
            ssrc: Ssrc(self.config.ssrc),
            marker,
            payload,
        }
    }
}

fn digit_to_event(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + (c as u8 - b'A')),
        _ => None,
    }
}

fn event_to_digit(e: u8) -> Option<char> {
    match e {
        0..=9 => Some(char::from(b'0' + e)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + e - 12)),
        _ => None,
    }
}

fn level_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / samples.len() as f64).sqrt();
    if rms < 1.0 {
        -120.0
    } else {
        20.0 * (rms * std::f64::consts::SQRT_2 / 32_767.0).log10()
    }
}

/// Goertzel power of `freq_hz` in `samples` at 16 kHz.
fn goertzel(samples: &[i16], freq_hz: f64) -> f64 {
    let k = 2.0 * (2.0 * PI * freq_hz / f64::from(PCM_RATE_HZ)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// Dominant frequency between 100 Hz and 4 kHz, on a 25 Hz grid.
fn dominant_frequency(samples: &[i16]) -> u32 {
    (4..=160u32)
        .map(|i| i * 25)
        .max_by(|a, b| {
            goertzel(samples, f64::from(*a)).total_cmp(&goertzel(samples, f64::from(*b)))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn tone_loops_back_through_opus_at_the_right_frequency() {
        let now = t0();
        let mut tx = PhoneAudio::new(PhoneAudioConfig {
            tone_hz: Some(1_000.0),
            ..Default::default()
        })
        .unwrap();
        let mut rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        for i in 0..50u32 {
            let at = now + Duration::from_millis(20 * u64::from(i));
            for p in tx.handle_tick(at) {
                assert_eq!(p.pt, OPUS_PT);
                rx.handle_rtp(&p, at);
            }
        }
        let r = rx.report();
        let tone = r.tone.clone().unwrap();
        assert_eq!(tone.freq_hz, 1_000.0);
        assert!(tone.frames >= 45, "{r:?}");
        assert!((tone.level_dbfs - -12.0).abs() < 3.0, "{r:?}");
        assert_eq!(r.lost_packets, 0);
        assert_eq!(r.longest_gap, Duration::from_millis(20));
    }

    #[test]
    fn digits_go_out_as_rfc4733_and_are_counted_once() {
        let now = t0();
        let mut tx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        let mut rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        tx.send_digits("1#x");
        let mut tele = Vec::new();
        for i in 0..40u32 {
            let at = now + Duration::from_millis(20 * u64::from(i));
            for p in tx.handle_tick(at) {
                if p.pt == TELEPHONE_EVENT_PT {
                    tele.push(p.clone());
                }
                rx.handle_rtp(&p, at);
            }
        }
        assert!(!tx.is_sending_dtmf());
        assert_eq!(rx.report().digits, "1#");
        // Per digit: 4 updates (first with marker) + 3 end packets, one timestamp.
        let first: Vec<_> = tele.iter().filter(|p| p.payload[0] == 1).collect();
        assert_eq!(first.len(), 7);
        assert!(first[0].marker && first[1..].iter().all(|p| !p.marker));
        assert!(first.iter().all(|p| p.ts == first[0].ts));
        assert_eq!(first.iter().filter(|p| p.payload[1] & 0x80 != 0).count(), 3);
        assert_eq!(
            u16::from_be_bytes([first[6].payload[2], first[6].payload[3]]),
            800
        );
    }

    #[test]
    fn loss_and_gaps_are_reported() {
        let now = t0();
        let mut tx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        let mut rx = PhoneAudio::new(PhoneAudioConfig::default()).unwrap();
        for i in 0..20u32 {
            let at = now + Duration::from_millis(20 * u64::from(i));
            for p in tx.handle_tick(at) {
                if !(5..8).contains(&i) {
                    rx.handle_rtp(&p, at);
                }
            }
        }
        let r = rx.report();
        assert_eq!(r.lost_packets, 3);
        assert_eq!(r.longest_gap, Duration::from_millis(80));
    }
}
